"""Distillation (PFD step 6): teacher MD, teacher labels, a student trained once, compressed and tested."""
