"""Active learning of polaron-accurate DPA-2 force fields for olivine LixMPO4."""

__version__ = "0.1.0"
