"""SESF-Fuse (Ma et al., Neural Computing and Applications 2020): an autoencoder trained without labels; the
spatial frequency of its encoder's features decides, consistency verification and a guided filter refine."""

ARCHITECTURE = "sesf-v1"
DEFAULT_WEIGHTS_NAME = "focusfuse-sesf"
GRAY_MEAN, GRAY_STD = 0.4500517361627943, 0.26465333914691797  # input normalisation of the published model
SF_RADIUS = 5  # 11x11 window of summed squared feature differences
CV_DISK_RADIUS = 5  # consistency verification: opening and closing with this disk
CV_AREA_FRACTION = 0.01  # ...and regions smaller than this share of the image flipped
GUIDED_RADIUS = 4
GUIDED_EPS = 0.1  # on the 0..255 scale
STRATEGIES = ("calibrated", "serial")  # running champion (default) or pairwise in series (the paper)
