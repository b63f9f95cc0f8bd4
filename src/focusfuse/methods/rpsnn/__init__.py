"""R-PSNN (Jiang et al., IET Image Processing 2021): a pseudo-siamese residual atrous pyramid network that
regresses the fused image directly (no decision map)."""

ARCHITECTURE = "rpsnn-v1"
DEFAULT_WEIGHTS_NAME = "focusfuse-rpsnn"
LEAK = 0.1  # LeakyReLU slope, the only non-linearity
RECEPTIVE_RADIUS = 39  # 79 px receptive field of the whole network
