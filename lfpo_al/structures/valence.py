"""M valence from geometry: the mean of the six nearest M-O distances per M, vectorised over frames.

One frame: an exact minimum-image search over all O (ASE's ``find_mic``, valid for any triclinic
cell). A stack of frames (a trajectory of one structure): the ``n_candidates`` nearest O of every M are
found once, exactly, in the first frame; each later frame takes, per pair, the periodic image closest
to the first frame's bond vector, which stays exact while no atom moves by half a cell — true of any
solid. All frames are then handled by array operations, with no Python loop over atoms or frames.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import get_distances

N_OXYGEN = 6


def _frames(positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    positions = np.asarray(positions, dtype=float)
    single = positions.ndim == 2
    positions = positions[None] if single else positions
    cell = np.asarray(cell, dtype=float)
    cell = np.broadcast_to(cell, (len(positions), 3, 3)) if cell.ndim == 2 else cell
    if cell.shape != (len(positions), 3, 3):
        raise ValueError(f"cell must be (3, 3) or (n_frames, 3, 3), got {cell.shape}")
    return positions, cell, single


def nearest_oxygen(
    positions: np.ndarray, cell: np.ndarray, metal: np.ndarray, oxygen: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest O per M in one frame: (indices into ``oxygen`` (nM, k), bond vectors (nM, k, 3))."""
    vectors, dist = get_distances(positions[metal], positions[oxygen], cell=cell, pbc=True)
    k = min(k, len(oxygen))
    nearest = np.argsort(dist, axis=1)[:, :k]
    return nearest, np.take_along_axis(vectors, nearest[..., None], axis=1)


def mean_bond_lengths(
    positions: np.ndarray,
    cell: np.ndarray,
    metal: np.ndarray,
    oxygen: np.ndarray,
    n_neighbors: int = N_OXYGEN,
    n_candidates: int = 12,
    chunk: int = 2048,
) -> np.ndarray:
    """Mean distance from each M to its ``n_neighbors`` nearest O.

    positions (N, 3) or (F, N, 3); cell (3, 3) or (F, 3, 3); metal, oxygen: atom indices.
    Returns (nM,) for one frame or (F, nM) for a stack.
    """
    positions, cells, single = _frames(positions, cell)
    metal, oxygen = np.asarray(metal), np.asarray(oxygen)
    if n_neighbors > len(oxygen):
        raise ValueError(f"{n_neighbors} O neighbours requested but the structure has {len(oxygen)} O")
    candidates, ref_vectors = nearest_oxygen(positions[0], cells[0], metal, oxygen, n_candidates)
    if single:
        d = np.linalg.norm(ref_vectors[:, :n_neighbors], axis=-1)
        return d.mean(axis=1)

    o_index = oxygen[candidates]  # (nM, K) atom indices
    ref_frac = ref_vectors @ np.linalg.inv(cells[0])  # image-resolved bond vectors in fractions of frame 0
    out = np.empty((len(positions), len(metal)))
    for start in range(0, len(positions), chunk):
        pos, cel = positions[start : start + chunk], cells[start : start + chunk]
        frac = pos @ np.linalg.inv(cel)  # (f, N, 3)
        delta = frac[:, o_index] - frac[:, metal][:, :, None]  # (f, nM, K, 3)
        delta += np.rint(ref_frac - delta)  # the image nearest to frame 0's bond
        dist = np.linalg.norm(np.einsum("fmki,fij->fmkj", delta, cel), axis=-1)
        nearest = np.partition(dist, n_neighbors - 1, axis=-1)[..., :n_neighbors]
        out[start : start + chunk] = nearest.mean(axis=-1)
    return out


def classify(mean_bonds: np.ndarray, threshold: float, reduced: int = 2, oxidised: int = 3) -> np.ndarray:
    """Valence per M: ``oxidised`` where the mean M-O bond is shorter than ``threshold``."""
    return np.where(np.asarray(mean_bonds) < threshold, oxidised, reduced).astype(int)


def metal_valences(atoms: Atoms, system) -> tuple[np.ndarray, np.ndarray]:
    """(mean M-O bond per M, valence per M) of one structure, classified with the system's threshold."""
    symbols = np.array(atoms.get_chemical_symbols())
    metal = np.flatnonzero(symbols == system.metal)
    oxygen = np.flatnonzero(symbols == system.oxygen)
    bonds = mean_bond_lengths(atoms.positions, atoms.cell.array, metal, oxygen)
    rule = system.valence
    return bonds, classify(bonds, rule.bond_threshold, rule.reduced, rule.oxidised)
