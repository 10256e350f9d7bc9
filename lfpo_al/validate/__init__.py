"""Validation: energy/force RMSE per composition, parity plots, polaron-geometry agreement."""
