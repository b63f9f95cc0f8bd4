"""Fusion methods behind one protocol (:mod:`.base`), made by name in :mod:`.registry`: GACN (:mod:`.gacn`),
a classical pyramid method (:mod:`.wavelet`), SESF-Fuse (:mod:`.sesf`), R-PSNN (:mod:`.rpsnn`)."""

METHOD_NAMES = ("gacn", "wavelet", "sesf", "rpsnn")
WITHOUT_MAPS = ("rpsnn",)  # methods that regress pixels: no index or decision maps
DEFAULT_METHOD = "gacn"
