"""focusfuse: GPU-accelerated focus stacking with GACN (Gradient Aware Cascade Network).

Pipeline, one module per step: :mod:`~focusfuse.io` (read/write) -> :mod:`~focusfuse.color` (gray) ->
:mod:`~focusfuse.model` (features, decision logit) -> :mod:`~focusfuse.decision` (decision maps,
Eq. 4 blend) -> :mod:`~focusfuse.fusion` (pairs) / :mod:`~focusfuse.stack` (stacks) -> write.

    >>> import focusfuse
    >>> result = focusfuse.fuse_pair("a.png", "b.png")          # doctest: +SKIP
    >>> stack = focusfuse.fuse_stack("frames/", strategy="calibrated")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .errors import FocusFuseError, InputError, UsageError, WeightsError
from .fusion import PairResult, fuse_pair
from .io import read_image, write_image
from .model import GACN
from .stack import StackResult, fuse_stack
from .weights import load_model, save_weights

__all__ = [
    "__version__",
    "GACN",
    "PairResult",
    "StackResult",
    "fuse_pair",
    "fuse_stack",
    "load_model",
    "save_weights",
    "read_image",
    "write_image",
    "FocusFuseError",
    "InputError",
    "UsageError",
    "WeightsError",
]
