"""PFD step 1: random perturbation of input structures (cell strain and atomic displacements)."""
