"""The iterative fine-tune loop (PFD steps 2-5) as a jobflow Response(replace=...) chain."""
