"""Errors that the CLI turns into one clear line on stderr and an exit code."""

from __future__ import annotations


class FocusFuseError(Exception):
    """Base class: a problem the user can act on. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class UsageError(FocusFuseError):
    """Bad arguments or unusable input paths (exit code 2)."""

    exit_code = 2


class InputError(FocusFuseError):
    """An input image that cannot be read or used (exit code 1)."""


class WeightsError(FocusFuseError):
    """Missing or incompatible model weights (exit code 2)."""

    exit_code = 2
