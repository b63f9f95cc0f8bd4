"""Fusion methods behind one protocol (:mod:`.base`), made by name in :mod:`.registry`: GACN (:mod:`.gacn`),
a classical pyramid method (:mod:`.wavelet`)."""

METHOD_NAMES = ("gacn", "wavelet")
DEFAULT_METHOD = "gacn"
