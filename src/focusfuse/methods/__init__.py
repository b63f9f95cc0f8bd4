"""Fusion methods behind one protocol (:mod:`.base`), made by name in :mod:`.registry`: GACN (:mod:`.gacn`)."""
