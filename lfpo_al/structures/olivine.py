"""Olivine unit cells and supercells from the Wyckoff sites of a system config."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from pymatgen.core import Lattice, Structure

from lfpo_al.structures.system import OlivineSystem


def unit_cell(system: OlivineSystem) -> Structure:
    """The conventional Pnma cell (Z = 4), sites sorted in type-map order."""
    lattice = Lattice.orthorhombic(*system.lattice_abc())
    species = [site["species"] for site in system.sites]
    coords = [site["coords"] for site in system.sites]
    structure = Structure.from_spacegroup(system.spacegroup, lattice, species, coords)
    order = {symbol: i for i, symbol in enumerate(system.type_map)}
    return Structure.from_sites(sorted(structure, key=lambda site: order[site.specie.symbol]))


def metal_shells(system: OlivineSystem) -> tuple[float, float]:
    """The first two M-M neighbour distances (A) of the ideal lithiated crystal."""
    atoms = supercell(system, (2, 2, 2))
    metals = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == system.metal)
    shells = np.unique(np.round(atoms.get_distances(metals[0], metals[1:], mic=True), 2))
    return float(shells[0]), float(shells[1])


def supercell(system: OlivineSystem, repeats: tuple[int, int, int]) -> Atoms:
    """Tile the unit cell; keep which unit cell each atom came from and its AFM spin sign.

    ``cell_index`` (N, 3) lets interfaces assign whole unit cells to a slab; ``spin_sign`` is +1/-1 on
    M sites from the system's magnetic order (y < 1/2 of the unit cell: +1) and 0 elsewhere.
    """
    cell = unit_cell(system)
    frac = np.array(cell.frac_coords) % 1.0
    symbols = [site.specie.symbol for site in cell]
    is_metal = np.array([s == system.metal for s in symbols])
    sign = np.where(frac[:, 1] < 0.5, 1, -1) if system.magnetic_order == "afm" else np.ones(len(symbols), int)
    sign = np.where(is_metal, sign, 0)

    grid = np.array(np.meshgrid(*[np.arange(n) for n in repeats], indexing="ij")).reshape(3, -1).T
    n_cells, n_unit = len(grid), len(symbols)
    all_frac = (frac[None, :, :] + grid[:, None, :]).reshape(-1, 3) / np.array(repeats)
    abc = np.array(system.lattice_abc()) * np.array(repeats)
    atoms = Atoms(
        symbols=symbols * n_cells,
        scaled_positions=all_frac,
        cell=np.diag(abc),
        pbc=True,
    )
    atoms.new_array("cell_index", np.repeat(grid, n_unit, axis=0).astype(int))
    atoms.new_array("spin_sign", np.tile(sign, n_cells).astype(int))
    return atoms
