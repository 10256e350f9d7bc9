"""Selection of uncertain frames: trust window, per-iteration cap, diversity, report."""
