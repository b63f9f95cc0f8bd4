"""A classical multi-scale method (no learning): Laplacian pyramids, the locally most energetic detail wins."""

LEVELS = 5  # detail levels; the base (1/32 scale) is the mean of the frames
ACTIVITY_SIZE = 5  # side of the window over which a detail coefficient's energy is summed
VOTE_SIZE = 5  # side of the majority vote that makes a frame's wins at a level consistent
