"""The chain of neighbour steps, in frame order: links, recovery of failed frames, composition to the reference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .geometry import largest_displacement, rescale_transform
from .model import FrameAlignment
from .reduce import Reduced
from .steps import Step, neighbour_step

RECOVERY_CANDIDATES = 3  # partners tried per failed frame, most similar focus first

# Near-identity results are snapped to the exact identity, so that warp_frame leaves them untouched.
SNAP_SHIFT_PX = 0.05  # largest corner/centre displacement (full resolution)
SNAP_GAIN = 0.002  # largest |gain - 1|
SNAP_OFFSET = 0.001  # largest |offset| (0..1 scale)

StepLookup = Callable[[int], "Step | None"]  # anchor index -> its step to the frame being linked, None if not known yet
Reread = Callable[[int], "Reduced | str"]  # frame index -> the frame reduced again, or why it cannot be used


@dataclass
class _Link:
    """One frame's step to the frame it was compared with (``parent``; None for the chain's root)."""

    parent: int | None
    step: np.ndarray  # 3x3 at working resolution: this frame's coordinates -> parent's
    photometric: np.ndarray  # 2x2 acting on (value, 1): this frame's values -> parent's
    ok: bool = True
    message: str = ""
    tried: tuple[int, ...] = ()  # frames a failed frame was already compared with
    note: str = ""


@dataclass
class _Chain:
    """Links so far, in frame order, and the few frames later frames are compared with (by index)."""

    links: list[_Link] = field(default_factory=list)
    recent: list[int] = field(default_factory=list)  # last two aligned frames, newest last
    pending: int | None = None  # the last frame that failed, if no frame aligned since
    orphans: list[int] = field(default_factory=list)  # unusable frames before the first usable one
    signatures: list[np.ndarray | None] = field(default_factory=list)  # per frame; None when unusable

    def candidates(self) -> list[int]:
        """The frames the next frame is compared with, in the order they are tried."""
        return list(reversed(self.recent)) + ([self.pending] if self.pending is not None else [])

    def needed(self) -> set[int]:
        """Frames already linked whose working-resolution images later frames may still be compared with."""
        return set(self.recent) | ({self.pending} if self.pending is not None else set())


def add_unusable(chain: _Chain, index: int, reason: str) -> None:
    """Append a frame that cannot be used for alignment (``reason`` says why)."""
    chain.signatures.append(None)
    parent = chain.recent[-1] if chain.recent else None
    chain.links.append(_Link(parent, np.eye(3), np.eye(2), False, f"frame {index}: {reason}"))
    if parent is None:
        chain.orphans.append(index)


def add_frame(chain: _Chain, index: int, signature: np.ndarray, step_of: StepLookup) -> int | None:
    """Append usable frame ``index``: link it to the first candidate whose step passed, else record the failure.

    Tried in turn: the last aligned frame; the one aligned before it (skips one odd frame, e.g. a
    frame out of focus order); the last frame that failed (a match there means the chain jumped
    between them and goes on from there; when the chain's very first frame is the one nothing
    matches, it is blamed instead of its successor). When all fail, the frame keeps its nearest
    aligned neighbour's transform and becomes the frame that failed last.

    Returns None when the frame was added, or the candidate whose step is not known yet (``step_of``
    gave None); then the chain is left unchanged, to be tried again once that step is known.
    """
    if not chain.recent:
        chain.signatures.append(signature)
        chain.links.append(_Link(None, np.eye(3), np.eye(2)))
        for orphan in chain.orphans:
            chain.links[orphan].parent = index  # unusable frames before the first usable one
        chain.recent = [index]
        return None
    candidates = chain.candidates()
    first_reason = ""
    for candidate in candidates:
        step = step_of(candidate)
        if step is None:
            return candidate
        if not step.reason:
            link_to(chain, index, signature, candidate, step)
            return None
        first_reason = first_reason or step.reason
    chain.signatures.append(signature)
    message = f"frame {index}: {first_reason}"
    chain.links.append(_Link(chain.recent[-1], np.eye(3), np.eye(2), False, message, tuple(candidates)))
    chain.pending = index
    return None


def link_to(chain: _Chain, index: int, signature: np.ndarray, candidate: int, step: Step) -> None:
    """Append frame ``index`` linked to ``candidate`` by ``step`` and move the chain on from there."""
    chain.signatures.append(signature)
    chain.links.append(_Link(candidate, step.geometry, step.photometric))
    newest = chain.recent[-1]
    if candidate == chain.pending and is_lonely_root(chain.links, newest):
        blame_root(chain.links, newest, candidate)
    chain.recent = [candidate, index]  # a skipped frame keeps its own earlier alignment
    chain.pending = None


def is_lonely_root(links: list[_Link], root: int) -> bool:
    """True when ``root`` starts the chain and no frame aligned to it."""
    return links[root].parent is None and not any(link.parent == root and link.ok for link in links)


def blame_root(links: list[_Link], root: int, successor: int) -> None:
    """Make ``successor`` the chain's root and mark the old root as the frame that failed."""
    message = links[successor].message.replace(f"frame {successor}:", f"frame {root}:", 1)
    links[successor] = _Link(None, np.eye(3), np.eye(2))
    links[root] = _Link(successor, np.eye(3), np.eye(2), False, message or f"frame {root}: no match", (successor,))


# --------------------------------------------------------------------------------------------
# Recovery: failed frames aligned to a similar-focus partner


def anchored_frames(links: list[_Link]) -> list[bool]:
    """Per frame: True when its link and every link on its way to the chain's root aligned (ok)."""
    state: list[bool | None] = [None] * len(links)
    for start in range(len(links)):
        path, index = [], start
        while index is not None and state[index] is None:
            path.append(index)
            index = links[index].parent
        value = True if index is None else bool(state[index])
        for item in reversed(path):
            value = value and links[item].ok
            state[item] = value
    return [bool(value) for value in state]


def chained_through(links: list[_Link], index: int) -> set[int]:
    """Frames whose way to the chain's root passes through frame ``index`` (``index`` included)."""
    children: dict[int, list[int]] = {}
    for other, link in enumerate(links):
        if link.parent is not None:
            children.setdefault(link.parent, []).append(other)
    result, queue = {index}, [index]
    while queue:
        for child in children.get(queue.pop(), []):
            if child not in result:
                result.add(child)
                queue.append(child)
    return result


def partner_candidates(signatures: list[np.ndarray | None], links: list[_Link], index: int) -> list[int]:
    """Up to RECOVERY_CANDIDATES frames for failed frame ``index`` to align to, most similar focus first.

    Left out: unusable frames (no signature), the frames it was already compared with, and frames
    chained through it (after a jump in the chain), which can never anchor it.
    """
    own = signatures[index]
    if own is None:
        return []
    excluded = chained_through(links, index) | set(links[index].tried)
    scored = sorted(
        (float(np.linalg.norm(signature - own)), other)
        for other, signature in enumerate(signatures)
        if signature is not None and other not in excluded
    )
    return [other for _, other in scored[:RECOVERY_CANDIDATES]]


def partner_link(index: int, failed: _Link, partner: int, step: Step) -> _Link:
    """The aligned link that replaces frame ``index``'s failed one, with a note on how it was found."""
    reason = failed.message.split(": ", 1)[-1]
    note = f"frame {index}: aligned via frame {partner} (neighbour step: {reason})"
    return _Link(partner, step.geometry, step.photometric, note=note)


def try_partners(links: list[_Link], index: int, partners: list[int], reread: Reread, motion: int) -> bool:
    """Align frame ``index`` to the first of ``partners`` that passes every check; True when one did."""
    if not partners:
        return False
    frame = reread(index)
    if isinstance(frame, str):
        return False
    for partner_index in partners:
        partner = reread(partner_index)
        if isinstance(partner, str):
            continue
        step = neighbour_step(partner, frame, motion)
        if not step.reason:
            links[index] = partner_link(index, links[index], partner_index, step)
            return True
    return False


def recover_failed(links: list[_Link], signatures: list[np.ndarray | None], reread: Reread, motion: int) -> None:
    """Align each failed (but usable) frame to a similar-focus partner and chain it through that partner.

    A failed frame's candidates are its RECOVERY_CANDIDATES most similar focus signatures (see
    :func:`partner_candidates`); one is tried once it is anchored (it and its whole way to the root
    aligned), so no frame is chained through itself. A recovery can anchor further frames (those
    that had matched the recovered frame), so passes repeat until one recovers nothing; each pair
    is tried at most once. Frames chained to a recovered frame, and failed frames that copy its
    transform, follow it automatically when the chain is composed. Frames left failed keep their
    link, with the partners tried added to the message.
    """
    remaining = {index: partner_candidates(signatures, links, index)
                 for index, link in enumerate(links) if not link.ok and signatures[index] is not None}
    attempted: dict[int, list[int]] = {index: [] for index in remaining}
    recovered = True
    while recovered:
        recovered = False
        for index in remaining:
            if links[index].ok:
                continue
            anchored = anchored_frames(links)
            ready = [other for other in remaining[index] if anchored[other]]
            remaining[index] = [other for other in remaining[index] if not anchored[other]]
            attempted[index] += ready
            recovered = try_partners(links, index, ready, reread, motion) or recovered
    for index, partners in attempted.items():
        if partners and not links[index].ok:
            tried = ", ".join(str(partner) for partner in partners)
            links[index].message += f"; no similar-focus frame matched either (tried {tried})"


# --------------------------------------------------------------------------------------------
# Composition


def chain_to_root(links: list[_Link]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per frame: geometry (3x3) and exposure (2x2) composed along the links up to the chain's root."""
    geometry: list[np.ndarray | None] = [None] * len(links)
    exposure: list[np.ndarray | None] = [None] * len(links)

    def resolve(index: int) -> None:
        path = []
        while index is not None and geometry[index] is None:
            path.append(index)
            index = links[index].parent
        for item in reversed(path):
            parent = links[item].parent
            parent_geometry = np.eye(3) if parent is None else geometry[parent]
            parent_exposure = np.eye(2) if parent is None else exposure[parent]
            geometry[item] = parent_geometry @ links[item].step
            exposure[item] = parent_exposure @ links[item].photometric

    for index in range(len(links)):
        resolve(index)
    return geometry, exposure  # type: ignore[return-value]


def frame_alignments(links: list[_Link], reference: int, to_small: np.ndarray) -> list[FrameAlignment]:
    """Chain the links to ``reference`` and express the transforms at full resolution."""
    geometry, exposure = chain_to_root(links)
    reference_geometry = np.linalg.inv(geometry[reference])
    reference_exposure = np.linalg.inv(exposure[reference])
    result = []
    for link, frame_geometry, frame_exposure in zip(links, geometry, exposure):
        transform = rescale_transform(reference_geometry @ frame_geometry, to_small)
        photometric = reference_exposure @ frame_exposure
        result.append(FrameAlignment(
            transform, float(photometric[0, 0]), float(photometric[0, 1]), link.ok, link.message, link.note
        ))
    return result


def snap_to_identity(frame: FrameAlignment, shape: tuple[int, int]) -> FrameAlignment:
    """The alignment with a near-identity geometry and/or exposure replaced by the exact identity.

    Geometry: no frame corner nor the centre moves by more than SNAP_SHIFT_PX (full resolution).
    Exposure: |gain - 1| <= SNAP_GAIN and |offset| <= SNAP_OFFSET. The two are snapped separately;
    when both are, :func:`warp_frame` returns the frame itself (no resampling).
    """
    near_identity = largest_displacement(frame.transform, np.eye(3), shape) <= SNAP_SHIFT_PX
    transform = np.eye(3) if near_identity else frame.transform
    same_exposure = abs(frame.gain - 1.0) <= SNAP_GAIN and abs(frame.offset) <= SNAP_OFFSET
    gain, offset = (1.0, 0.0) if same_exposure else (frame.gain, frame.offset)
    return replace(frame, transform=transform, gain=gain, offset=offset)
