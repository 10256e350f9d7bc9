"""Distillation: the final model taught to a small compressible student, gated on held-out frames and dynamics."""
