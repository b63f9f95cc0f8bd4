"""Training: GACN's pair generation (:mod:`.data`), Dice + Q_g loss (:mod:`.loss`) and loop (:mod:`.loop`);
SESF-Fuse (:mod:`.sesf`), R-PSNN (:mod:`.rpsnn`) and the boundary blend's networks (:mod:`.blend`)."""
