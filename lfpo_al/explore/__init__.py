"""Exploration: MD with the ensemble, every recorded frame scored by the members' force deviation."""
