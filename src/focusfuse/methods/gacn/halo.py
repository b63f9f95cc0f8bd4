"""How far a pixel of GACN's final decision map reaches into its input: the halo tiles need."""

from __future__ import annotations

# Receptive radius of the final decision map, in pixels of the input:
FEATURE_RADIUS = 4  # four 3x3 convolutions
SF_REACH = 1 + 5  # one-sided gradient + 11x11 window
DECISION_RADIUS = 3 + 4 * (1 + 3)  # 7x7 SSE, then four (3x3 conv + 7x7 SSE)
REFINE_RADIUS = 3 + 3  # guided filter: box means of the inputs, then of a and b (Gaussian: 4)
NETWORK_RADIUS = FEATURE_RADIUS + SF_REACH + DECISION_RADIUS + REFINE_RADIUS  # 35
HALO = 40


def halo_for(reduce: int) -> int:
    """Halo of tiles when the decision path runs at 1/``reduce`` resolution (see :mod:`.decision`): the
    decision radius counts in reduced pixels, plus one for the blocks and one for the bilinear enlargement;
    a margin of 5 px as in HALO; a multiple of ``reduce`` so that tiles start on block boundaries."""
    if reduce == 1:
        return HALO
    reach = FEATURE_RADIUS + SF_REACH + reduce * (DECISION_RADIUS + 2) + REFINE_RADIUS + 5
    return -(-reach // reduce) * reduce


__all__ = ["HALO", "NETWORK_RADIUS", "halo_for"]
