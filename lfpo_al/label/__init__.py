"""Labeling: a Labeler interface, one shared task driver (dpdispatcher), DFT and surrogate backends."""
