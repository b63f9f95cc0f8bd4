"""Training GACN: pair generation (:mod:`.data`), the Dice + Q_g loss (:mod:`.loss`), the loop (:mod:`.loop`)."""
