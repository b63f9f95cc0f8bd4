"""focusfuse: GPU-accelerated focus stacking with GACN (Gradient Aware Cascade Network).

Pipeline, one module per step: :mod:`~focusfuse.io.images` (read/write) -> :mod:`~focusfuse.ops.color` (gray) ->
:mod:`~focusfuse.methods.gacn.model` (features, decision logit) -> :mod:`~focusfuse.methods.gacn.decision` (decision maps,
Eq. 4 blend) -> :mod:`~focusfuse.engine.pair` (pairs) / :mod:`~focusfuse.engine.stack` (stacks) -> write.

    >>> import focusfuse
    >>> result = focusfuse.fuse_pair("a.png", "b.png")          # doctest: +SKIP
    >>> stack = focusfuse.fuse_stack("frames/", strategy="calibrated")  # doctest: +SKIP
"""

__version__ = "0.1.0"

from .errors import FocusFuseError, InputError, UsageError, WeightsError
from .engine.pair import PairResult, fuse_pair
from .io.images import read_image, write_image
from .methods.gacn.model import GACN
from .engine.stack import StackResult, fuse_stack
from .methods.gacn.weights import load_model, save_weights

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
