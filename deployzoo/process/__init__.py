"""Pure numpy pre/post-processing shared by training, export, calibration and every engine. No torch here."""
