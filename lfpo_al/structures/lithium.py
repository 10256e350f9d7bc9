"""Li/vacancy arrangements: random disorder, alternating Li planes and LiMPO4 | MPO4 interfaces."""

from __future__ import annotations

import numpy as np
from ase import Atoms

from lfpo_al.errors import UserError
from lfpo_al.structures.system import AXES, OlivineSystem

LI_ORDERS = ("random",) + tuple(f"planes_{a}" for a in AXES) + tuple(f"interface_{a}" for a in AXES)


def order_kind(li_order: str) -> tuple[str, int | None]:
    """Split ``planes_b`` into (``planes``, 1); ``random`` into (``random``, None)."""
    if li_order not in LI_ORDERS:
        raise UserError(f"build.li_order={li_order!r} is unknown; choose one of {', '.join(LI_ORDERS)}")
    if li_order == "random":
        return "random", None
    kind, axis = li_order.split("_")
    return kind, AXES.index(axis)


def n_vacancies(n_li_sites: int, x: float) -> int:
    """Li sites to empty for Li fraction x; x must be reachable with whole Li atoms."""
    if not 0.0 <= x <= 1.0:
        raise UserError(f"build.x={x} is outside [0, 1]; give the Li fraction x of LixMPO4")
    n_li = x * n_li_sites
    if abs(n_li - round(n_li)) > 1e-6:
        raise UserError(
            f"build.x={x} is not reachable with {n_li_sites} Li sites (x*{n_li_sites}={n_li:g}); "
            f"use a multiple of 1/{n_li_sites} or a larger build.supercell"
        )
    return n_li_sites - int(round(n_li))


def random_vacancies(li_indices: np.ndarray, n_empty: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(li_indices, size=n_empty, replace=False))


def plane_vacancies(atoms: Atoms, li_indices: np.ndarray, axis: int) -> np.ndarray:
    """Empty every other Li plane normal to ``axis`` (Li 4a sites sit at 0 and 1/2 of each cell)."""
    repeats = atoms.arrays["cell_index"].max(axis=0) + 1
    frac = atoms.get_scaled_positions(wrap=True)[li_indices, axis]
    plane = np.rint(frac * repeats[axis] * 2).astype(int) % (2 * repeats[axis])
    return np.sort(li_indices[plane % 2 == 1])


def interface_cells(atoms: Atoms, axis: int) -> np.ndarray:
    """Per-atom mask of the delithiated (MPO4) slab: the upper half of the cells along ``axis``."""
    repeats = atoms.arrays["cell_index"].max(axis=0) + 1
    n = int(repeats[axis])
    if n < 2 or n % 2:
        raise UserError(
            f"build.li_order=interface_{AXES[axis]} needs an even number (>= 2) of cells along {AXES[axis]}, "
            f"got build.supercell[{axis}]={n}"
        )
    return atoms.arrays["cell_index"][:, axis] >= n // 2


def rescale_delithiated_slab(atoms: Atoms, system: OlivineSystem, axis: int, in_slab: np.ndarray) -> None:
    """Stretch the MPO4 slab to the delithiated lattice constant along the stacking axis, in place.

    The cross-section keeps the LiMPO4 lattice (a coherent interface); along the axis each MPO4 cell
    takes the MPO4 length, so the cell grows by n/2 * (c_MPO4 - c_LiMPO4) in that direction.
    """
    n = int(atoms.arrays["cell_index"][:, axis].max() + 1)
    length_li = system.lattice_abc()[axis]
    length_de = system.lattice_abc(delithiated=True)[axis]
    pos = atoms.get_positions()
    # position in units of unit cells along the axis, measured from the unit cell each atom belongs to
    cell_idx = atoms.arrays["cell_index"][:, axis]
    offset = pos[:, axis] / length_li - cell_idx
    new = np.where(
        in_slab,
        (n // 2) * length_li + (cell_idx - n // 2 + offset) * length_de,
        (cell_idx + offset) * length_li,
    )
    pos[:, axis] = new
    cell = atoms.cell.array.copy()
    cell[axis, axis] = (n // 2) * (length_li + length_de)
    atoms.set_cell(cell, scale_atoms=False)
    atoms.set_positions(pos)
