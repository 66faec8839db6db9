"""Exploration (PFD step 3): MD with the current model through atomate2's ForceFieldMDMaker, over task groups."""
