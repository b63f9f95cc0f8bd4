"""Aligning a focus bracket: estimating how each frame maps onto the reference (geometry and exposure), and
warping frames onto it."""

from .estimate import AlignmentEstimator, estimate_alignment
from .model import MODES, FrameAlignment, StackAlignment
from .warp import crop_to_box, warp_frame

__all__ = ["AlignmentEstimator", "estimate_alignment", "MODES", "FrameAlignment", "StackAlignment", "warp_frame",
           "crop_to_box"]
