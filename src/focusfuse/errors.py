"""Errors that the CLI turns into one clear line on stderr and an exit code."""

from __future__ import annotations


class FocusFuseError(Exception):
    """Base class: a problem the user can act on. ``exit_code`` is what the CLI returns; ``option`` names the
    library option at fault (e.g. ``"tile_size"``), so that a front end can point at its own flag."""

    exit_code = 1

    def __init__(self, message: str = "", *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class UsageError(FocusFuseError):
    """Bad arguments or unusable input paths (exit code 2)."""

    exit_code = 2


class InputError(FocusFuseError):
    """An input image that cannot be read or used (exit code 1)."""


class WeightsError(FocusFuseError):
    """Missing or incompatible model weights (exit code 2)."""

    exit_code = 2
