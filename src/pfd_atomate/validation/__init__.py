"""Validation of fine-tuned and distilled models beyond RMSEs: parity plots, E-V curves, phonon bands, MD stability."""
