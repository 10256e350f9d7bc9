"""Olivine LixMPO4 structures: builder, Li orderings, polaron seeding, valence from M-O bonds."""

from lfpo_al.structures.builder import BuildSpec, build_structure, write_structure
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import classify, mean_bond_lengths, metal_valences

__all__ = [
    "BuildSpec", "OlivineSystem", "build_structure", "classify", "mean_bond_lengths", "metal_valences",
    "write_structure",
]
