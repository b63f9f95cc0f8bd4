"""GACN (Ma et al., Gradient Aware Cascade Network): model, inference on a backend, decision maps, strategies."""

STRATEGY_NAMES = ("calibrated", "calibration", "serial")  # see .strategies
DEFAULT_STRATEGY = "calibrated"
