"""Validation tools: parity plots (and, later, E-V curves, phonons, MD stability)."""
