"""Flip-pair correlation (Table 2 of the paper): opposite- vs same-sign pairs of flips on different M.

Every pair of flip events (i, j) on different M within the largest |dt| bin edge is counted once,
binned by |dt| and by the minimum-image M-M distance; R = N_opposite / N_same. Uncorrelated flips give
R -> 1 (long |dt|); a polaron moving from one M to a neighbour gives an opposite-sign pair at short
|dt| and short distance (R > 1). Pairs are generated in blocks from a time-sorted event list, so the
cost follows the number of pairs inside the window, not the square of the number of events.
"""

from __future__ import annotations

import numpy as np
from ase.geometry import get_distances

MAX_PAIRS_PER_BLOCK = 4_000_000


def metal_distances(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Minimum-image distance matrix (nM, nM) of the M positions of one frame."""
    _, dist = get_distances(positions, cell=cell, pbc=True)
    return dist


def pair_counts(times_ps: np.ndarray, columns: np.ndarray, signs: np.ndarray, distances: np.ndarray,
                dt_edges: list[float], r_edges: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(N_opposite, N_same), each (n_dt_bins, n_r_bins), over pairs of events on different M."""
    dt_edges, r_edges = np.asarray(dt_edges, dtype=float), np.asarray(r_edges, dtype=float)
    shape = (len(dt_edges) - 1, len(r_edges) - 1)
    opposite, same = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    n = len(times_ps)
    if n < 2:
        return opposite, same
    order = np.argsort(times_ps, kind="stable")
    t, col, sign = np.asarray(times_ps)[order], np.asarray(columns)[order], np.asarray(signs)[order]
    end = np.searchsorted(t, t + dt_edges[-1], side="left")  # partners j in (i, end): dt < last edge
    partners = end - np.arange(n) - 1
    partners = np.maximum(partners, 0)
    cum = np.cumsum(partners)
    start = 0
    while start < n:
        stop = int(np.searchsorted(cum, (cum[start - 1] if start else 0) + MAX_PAIRS_PER_BLOCK, side="right"))
        stop = min(max(stop, start + 1), n)
        counts = partners[start:stop]
        i = np.repeat(np.arange(start, stop), counts)
        offset = np.arange(len(i)) - np.repeat(np.cumsum(counts) - counts, counts)
        j = i + 1 + offset
        keep = col[i] != col[j]
        i, j = i[keep], j[keep]
        dt_bin = np.searchsorted(dt_edges, t[j] - t[i], side="right") - 1
        r_bin = np.searchsorted(r_edges, distances[col[i], col[j]], side="right") - 1
        inside = (dt_bin >= 0) & (dt_bin < shape[0]) & (r_bin >= 0) & (r_bin < shape[1])
        flat = dt_bin[inside] * shape[1] + r_bin[inside]
        opp = sign[i][inside] != sign[j][inside]
        opposite += np.bincount(flat[opp], minlength=shape[0] * shape[1]).reshape(shape)
        same += np.bincount(flat[~opp], minlength=shape[0] * shape[1]).reshape(shape)
        start = stop
    return opposite, same


def shuffled_pair_counts(times_ps: np.ndarray, columns: np.ndarray, signs: np.ndarray, distances: np.ndarray,
                         dt_edges: list[float], r_edges: list[float], shuffles: int = 20,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean (N_opposite, N_same) over ``shuffles`` permutations of the flip times among the flips: the
    table a run with the same flips, M and signs but no timing between them would give."""
    rng = np.random.default_rng(seed)
    shape = (len(dt_edges) - 1, len(r_edges) - 1)
    opposite, same = np.zeros(shape), np.zeros(shape)
    for _ in range(shuffles):
        o, s = pair_counts(rng.permutation(np.asarray(times_ps)), columns, signs, distances, dt_edges, r_edges)
        opposite += o
        same += s
    return opposite / shuffles, same / shuffles


def ratio(opposite: np.ndarray, same: np.ndarray) -> np.ndarray:
    """R = N_opposite / N_same (NaN where no same-sign pair)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(same > 0, opposite / np.maximum(same, 1), np.nan)


def table_rows(group: str, opposite: np.ndarray, same: np.ndarray, dt_edges, r_edges) -> list[dict]:
    """Rows of ``flip_pairs.csv``: one per (|dt| bin, distance bin)."""
    r = ratio(opposite, same)
    rows = []
    for a in range(opposite.shape[0]):
        for b in range(opposite.shape[1]):  # a few bins: tiny loop over table cells, not over data
            rows.append({
                "group": group, "dt_lo_ps": float(dt_edges[a]), "dt_hi_ps": float(dt_edges[a + 1]),
                "r_lo_ang": float(r_edges[b]), "r_hi_ang": float(r_edges[b + 1]),
                "n_opposite": int(opposite[a, b]), "n_same": int(same[a, b]),
                "ratio": None if np.isnan(r[a, b]) else round(float(r[a, b]), 4),
            })
    return rows
