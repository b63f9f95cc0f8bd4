"""Fusion methods behind one protocol (:mod:`.base`), made by name in :mod:`.registry`: GACN (:mod:`.gacn`),
a classical pyramid method (:mod:`.wavelet`), SESF-Fuse (:mod:`.sesf`)."""

METHOD_NAMES = ("gacn", "wavelet", "sesf")
DEFAULT_METHOD = "gacn"
