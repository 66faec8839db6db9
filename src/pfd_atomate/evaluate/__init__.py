"""PFD step 5: test a model on a labelled dataset, convergence criteria and trust window."""
