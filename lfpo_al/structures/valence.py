"""M valence from geometry: the mean of the six nearest M-O distances per M, vectorised over frames.

One frame: an exact minimum-image search over all O (ASE's ``find_mic``, valid for any triclinic
cell). A stack of frames (a trajectory of one structure): candidate O of every M are found once, in the
first frame, with a periodic neighbour list: every O within ``shell_margin`` of the M's n-th nearest O
(olivine: the six O of the octahedron; the next O is > 1 A further out), or exactly ``n_candidates``
when given. Each later frame takes, per pair, the periodic image closest to the first frame's bond
vector, which stays exact while no atom moves by half a cell and no O from beyond the margin enters the
first shell -- true of any solid. All frames are then handled by array operations in blocks of
``chunk`` frames, atom-major (one contiguous row of frames per atom and coordinate), with no Python
loop over atoms or frames; orthorhombic cells skip the fractional-coordinate round trip, and
``dtype=np.float32`` halves the memory traffic (bond lengths to ~1e-6 A).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import get_distances
from ase.neighborlist import primitive_neighbor_list

N_OXYGEN = 6
SHELL_MARGIN = 0.5  # A beyond the n-th nearest O that a candidate may sit in the first frame


def _frames(positions: np.ndarray, cell: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    positions = np.asarray(positions)
    if not np.issubdtype(positions.dtype, np.floating):
        positions = positions.astype(float)
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


def oxygen_shell(
    positions: np.ndarray, cell: np.ndarray, metal: np.ndarray, oxygen: np.ndarray, n_neighbors: int = N_OXYGEN,
    n_candidates: int | None = None, shell_margin: float = SHELL_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate O per M in one frame, nearest first, from a periodic neighbour list (any cell, any size).

    Returns (indices into ``oxygen`` (nM, K), bond vectors (nM, K, 3)); K = ``n_candidates`` or the most
    O any M has within ``shell_margin`` of its ``n_neighbors``-th nearest O (each M gets its K nearest).
    """
    n_metal = len(metal)
    points = np.concatenate([positions[metal], positions[oxygen]])
    lengths = np.linalg.norm(cell, axis=1)
    cutoff = 3.0
    while True:
        i, j, d, vec = primitive_neighbor_list("ijdD", (True, True, True), cell, points, cutoff)
        keep = (i < n_metal) & (j >= n_metal)
        i, j, d, vec = i[keep], j[keep] - n_metal, d[keep], vec[keep]
        counts = np.bincount(i, minlength=n_metal)
        if counts.min() >= n_neighbors:
            order = np.lexsort((d, i))
            i, j, d, vec = i[order], j[order], d[order], vec[order]
            first = np.concatenate([[0], np.cumsum(counts)[:-1]])
            d_n = d[first + n_neighbors - 1]
            if n_candidates is not None:
                k = int(n_candidates)
            else:
                k = int(np.bincount(i, weights=d <= d_n[i] + shell_margin, minlength=n_metal).max())
            reach = d_n.max() + (0.0 if n_candidates is not None else shell_margin)
            if counts.min() >= k and (cutoff > reach or cutoff > 4 * lengths.max()):
                rank = first[:, None] + np.arange(k)[None, :]
                return j[rank], vec[rank]
        if cutoff > 4 * lengths.max() + 10:
            raise ValueError(f"fewer than {n_candidates or n_neighbors} O around some M in this cell")
        cutoff *= 1.5


def _block(positions: np.ndarray, start: int, stop: int, dtype) -> np.ndarray:
    """Frames start..stop atom-major, (3, N, n_frames): every later gather copies contiguous rows."""
    out = np.empty((3, positions.shape[1], stop - start), dtype=dtype)
    out[...] = positions[start:stop].transpose(2, 1, 0)
    return out


def _stack(positions, cells, metal, candidates, ref_vectors, n_neighbors, chunk, dtype, metal_major) -> np.ndarray:
    """Mean of the n_neighbors shortest candidate bonds per M and frame; pairs are K-major (k, m)."""
    n_metal, k = candidates.shape
    m_row, o_row = metal, candidates.T.ravel()
    ref_frac = (ref_vectors @ np.linalg.inv(cells[0])).transpose(1, 0, 2).reshape(-1, 3).T.astype(dtype)  # (3, P)
    n_pairs, n_frames = len(o_row), len(positions)
    same_cell = bool(np.all(cells == cells[0]))
    diag = np.abs(np.diagonal(cells, axis1=1, axis2=2))
    offdiag = np.abs(cells - np.einsum("fi,ij->fij", np.diagonal(cells, axis1=1, axis2=2), np.eye(3)))
    orthorhombic = bool(offdiag.max() <= 1e-12 * diag.max())
    out = np.empty((n_metal, n_frames) if metal_major else (n_frames, n_metal), dtype=dtype)
    ref_full = {}
    for start in range(0, n_frames, chunk):
        stop = min(start + chunk, n_frames)
        f = stop - start
        if f not in ref_full:  # the frame-0 image of each bond, repeated along the frames axis
            ref_full[f] = np.repeat(ref_frac[:, :, None], f, axis=2)
        ref = ref_full[f]
        pos = _block(positions, start, stop, dtype)
        cel = (cells[start] if same_cell else cells[start:stop].transpose(1, 2, 0)).astype(dtype)  # (3,3) or (3,3,f)
        sq = np.zeros((n_pairs, f), dtype=dtype)
        tmp = np.empty_like(sq)
        if orthorhombic:
            for c in range(3):
                length = cel[c, c]
                d = pos[c][o_row]
                d.reshape(k, n_metal, f)[...] -= pos[c][m_row]
                np.multiply(d, 1.0 / length, out=tmp)
                np.subtract(ref[c], tmp, out=tmp)
                np.rint(tmp, out=tmp)
                tmp *= length
                d += tmp
                d *= d
                sq += d
        else:
            inv = np.linalg.inv(cells[start] if same_cell else cells[start:stop]).astype(dtype)
            inv = inv if same_cell else inv.transpose(1, 2, 0)
            frac = [pos[0] * inv[0, j] + pos[1] * inv[1, j] + pos[2] * inv[2, j] for j in range(3)]
            delta = []
            for j in range(3):
                d = frac[j][o_row]
                d.reshape(k, n_metal, f)[...] -= frac[j][m_row]
                np.subtract(ref[j], d, out=tmp)
                np.rint(tmp, out=tmp)
                d += tmp
                delta.append(d)
            for c in range(3):
                d = delta[0] * cel[0, c] + delta[1] * cel[1, c] + delta[2] * cel[2, c]
                d *= d
                sq += d
        np.sqrt(sq, out=sq)
        bonds = sq.reshape(k, n_metal, f)
        if k > n_neighbors:
            bonds = np.sort(bonds, axis=0)[:n_neighbors]
        mean = bonds.sum(axis=0) / n_neighbors
        if metal_major:
            out[:, start:stop] = mean
        else:
            out[start:stop] = mean.T
    return out


def mean_bond_lengths(
    positions: np.ndarray,
    cell: np.ndarray,
    metal: np.ndarray,
    oxygen: np.ndarray,
    n_neighbors: int = N_OXYGEN,
    n_candidates: int | None = None,
    chunk: int = 48,
    shell_margin: float = SHELL_MARGIN,
    dtype=np.float64,
    metal_major: bool = False,
) -> np.ndarray:
    """Mean distance from each M to its ``n_neighbors`` nearest O.

    positions (N, 3) or (F, N, 3); cell (3, 3) or (F, 3, 3); metal, oxygen: atom indices.
    Returns (nM,) for one frame or (F, nM) for a stack -- (nM, F) with ``metal_major``, the layout
    time-series work wants -- in ``dtype`` (float32 is faster and good to ~1e-6 A).
    """
    positions, cells, single = _frames(positions, cell)
    metal, oxygen = np.asarray(metal), np.asarray(oxygen)
    if n_neighbors > len(oxygen):
        raise ValueError(f"{n_neighbors} O neighbours requested but the structure has {len(oxygen)} O")
    if single:
        _, vectors = nearest_oxygen(positions[0].astype(float), cells[0], metal, oxygen, n_neighbors)
        return np.linalg.norm(vectors, axis=-1).mean(axis=1)
    if n_candidates is not None and n_candidates < n_neighbors:
        raise ValueError(f"n_candidates={n_candidates} must be >= n_neighbors={n_neighbors}")
    candidates, ref_vectors = oxygen_shell(positions[0].astype(float), cells[0], metal, oxygen, n_neighbors,
                                           n_candidates, shell_margin)
    return _stack(positions, cells, metal, oxygen[candidates], ref_vectors, n_neighbors, max(1, int(chunk)), dtype,
                  metal_major)


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
