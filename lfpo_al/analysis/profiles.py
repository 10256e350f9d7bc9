"""Profiles along the stacking axis of a LiMPO4 | MPO4 interface (Fig. 4 of the paper).

M atoms are grouped into layers: planes along the axis, periodic, split wherever consecutive M are
more than ``layer_tolerance_ang`` apart. Each layer is labelled from its initial valence: Li-rich
(M2+), Li-poor (M3+) or mixed. Boundaries are mixed layers and the junctions between a Li-rich and a
Li-poor layer; interfacial layers are those within ``interface_layers`` layers of a boundary (1: the
mixed layers and the two layers that meet at a junction), bulk layers are the rest.
"""

from __future__ import annotations

import numpy as np

from lfpo_al.structures.system import AXES


def interface_axis(li_order: str | None) -> int | None:
    if li_order and str(li_order).startswith("interface_") and str(li_order)[-1] in AXES:
        return AXES.index(str(li_order)[-1])
    return None


def metal_layers(coordinate: np.ndarray, length: float, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(layer index per M, layer centre in A) for coordinates along a periodic axis of ``length``."""
    x = np.mod(coordinate, length)
    order = np.argsort(x)
    xs = x[order]
    gaps = np.diff(np.append(xs, xs[0] + length))  # gap after each sorted M, the last one wraps
    cut = gaps > tolerance
    if not cut.any():
        return np.zeros(len(x), dtype=int), np.array([float(np.mean(xs))])
    # start counting after the last cut so a layer straddling the boundary stays whole
    first = (np.flatnonzero(cut)[-1] + 1) % len(xs)
    rolled = np.roll(np.arange(len(xs)), -first)
    layer_sorted = np.concatenate([[0], np.cumsum(cut[rolled][:-1])])
    layer = np.empty(len(x), dtype=int)
    layer[order[rolled]] = layer_sorted
    n_layers = layer.max() + 1
    angle = 2 * np.pi * x / length
    centre = np.arctan2(np.bincount(layer, np.sin(angle), n_layers), np.bincount(layer, np.cos(angle), n_layers))
    centre = np.mod(centre, 2 * np.pi) * length / (2 * np.pi)
    reorder = np.argsort(centre)
    rank = np.empty(n_layers, dtype=int)
    rank[reorder] = np.arange(n_layers)
    return rank[layer], centre[reorder]


def layer_labels(initial_m3_fraction: np.ndarray, pure: float = 0.25) -> np.ndarray:
    """'rich' (Li-rich, M2+), 'poor' (Li-poor, M3+) or 'mixed' per layer from its initial M3+ fraction."""
    return np.where(initial_m3_fraction <= pure, "rich", np.where(initial_m3_fraction >= 1 - pure, "poor", "mixed"))


def interfacial_layers(labels: np.ndarray, width: int = 1) -> np.ndarray:
    """Mask of layers within ``width`` layers of a boundary (mixed layer or rich|poor junction), periodic."""
    n = len(labels)
    boundary = labels == "mixed"
    nxt = np.roll(labels, -1)
    junction = (labels != nxt) & (labels != "mixed") & (nxt != "mixed")
    boundary = boundary | junction | np.roll(junction, 1)
    if not boundary.any() or width < 1:
        return np.zeros(n, dtype=bool)
    idx = np.arange(n)
    distance = np.abs(idx[:, None] - np.flatnonzero(boundary)[None, :])
    distance = np.minimum(distance, n - distance).min(axis=1)
    return distance < width


def interface_profile(frac_along: np.ndarray, length: float, initial_m3: np.ndarray, m3_fraction: np.ndarray,
                      flips_per_m: np.ndarray, duration_ps: float, tolerance: float, width: int) -> dict:
    """Per-layer table and interfacial vs bulk flip rates.

    frac_along: fractional coordinate of each M along the axis; initial_m3: bool per M at the start;
    m3_fraction: time-averaged M3+ fraction per M; flips_per_m: counted flips per M.
    """
    layer, centre = metal_layers(frac_along * length, length, tolerance)
    n_layers = len(centre)
    n_m = np.bincount(layer, minlength=n_layers)
    init = np.bincount(layer, initial_m3.astype(float), n_layers) / n_m
    labels = layer_labels(init)
    interfacial = interfacial_layers(labels, width)
    flips = np.bincount(layer, flips_per_m, n_layers)
    frac3 = np.bincount(layer, m3_fraction, n_layers) / n_m

    def group_rate(mask):
        m = int(n_m[mask].sum())
        return (float(flips[mask].sum()) / (m * duration_ps)) if m and duration_ps > 0 else None, m, int(flips[mask].sum())

    rate_i, m_i, f_i = group_rate(interfacial)
    rate_b, m_b, f_b = group_rate(~interfacial)
    return {
        "layers": [
            {"layer": int(k), "position_ang": round(float(centre[k]), 4), "n_m": int(n_m[k]), "label": str(labels[k]),
             "interfacial": bool(interfacial[k]), "m3_fraction_initial": round(float(init[k]), 4),
             "m3_fraction": round(float(frac3[k]), 4), "m2_fraction": round(1 - float(frac3[k]), 4),
             "n_flips": int(flips[k]),
             "flip_rate_per_m_per_ps": float(flips[k]) / (n_m[k] * duration_ps) if duration_ps > 0 else None}
            for k in range(n_layers)
        ],
        "interfacial": {"n_m": m_i, "n_flips": f_i, "fe_flip_rate_per_fe_per_ps": rate_i},
        "bulk": {"n_m": m_b, "n_flips": f_b, "fe_flip_rate_per_fe_per_ps": rate_b},
        "layer_of_m": layer,
    }
