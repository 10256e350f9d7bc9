"""Rates per atom and picosecond over trusted segments, and Arrhenius fits with uncertainties.

Trust: a frame is trusted when the ensemble's max force deviation is below the trust level. An event
at frame ``e`` happened in the interval (e-1, e); with ``exclude_untrusted`` it counts only when both
frames are trusted, and the duration is the number of such intervals times the frame interval.

Arrhenius: ln k = ln nu0 - Ea / (kB T), weighted least squares with Poisson weights (var ln k = 1/N
for N events); the parameter errors are scaled by sqrt(chi2/dof) when the scatter exceeds the counting
noise. Temperatures with no event cannot enter a log fit and are reported as excluded.
"""

from __future__ import annotations

import math

import numpy as np

KB_EV = 8.617333262e-5  # Boltzmann constant, eV/K


def trusted_frames(deviation: np.ndarray | None, trust_level: float | None) -> np.ndarray | None:
    """Boolean mask of frames whose deviation is below ``trust_level``; None without a deviation."""
    if deviation is None or trust_level is None:
        return None
    deviation = np.asarray(deviation, dtype=float)
    return np.isfinite(deviation) & (deviation < trust_level)


def trusted_intervals(mask: np.ndarray | None, n_frames: int) -> np.ndarray:
    """Mask over intervals (frame e-1 -> e, indexed by e; entry 0 is always False)."""
    out = np.zeros(n_frames, dtype=bool)
    if n_frames < 2:
        return out
    out[1:] = True if mask is None else mask[1:] & mask[:-1]
    return out


def untrusted_segments(mask: np.ndarray | None, frame_interval_fs: float, limit: int = 50) -> list[list[float]]:
    """[start_ps, end_ps] of each run of untrusted frames (the first ``limit``)."""
    if mask is None or mask.all():
        return []
    bad = np.concatenate([[False], ~mask, [False]])
    starts = np.flatnonzero(bad[1:] & ~bad[:-1])
    ends = np.flatnonzero(~bad[1:] & bad[:-1]) - 1
    scale = frame_interval_fs / 1000.0
    return [[round(float(a * scale), 6), round(float(b * scale), 6)] for a, b in zip(starts[:limit], ends[:limit])]


def counted(frames: np.ndarray, intervals: np.ndarray) -> np.ndarray:
    """Which events (by frame) fall in a counted interval."""
    frames = np.asarray(frames, dtype=int)
    return intervals[np.clip(frames, 0, len(intervals) - 1)] if len(intervals) else np.zeros(len(frames), bool)


def rate(n_events: int, n_atoms: int, duration_ps: float) -> float | None:
    """Events per atom per ps; None when there is no atom or no time."""
    if n_atoms <= 0 or duration_ps <= 0:
        return None
    return n_events / (n_atoms * duration_ps)


def pool_by_temperature(points: list[tuple[float, int, float]]) -> list[tuple[float, int, float]]:
    """Sum (temperature, events, exposure in atom*ps) over runs at the same temperature."""
    pooled: dict[float, list[float]] = {}
    for temperature, n, exposure in points:
        if temperature is None or exposure is None or exposure <= 0:
            continue
        acc = pooled.setdefault(round(float(temperature), 6), [0, 0.0])
        acc[0] += int(n)
        acc[1] += float(exposure)
    return [(t, int(n), e) for t, (n, e) in sorted(pooled.items())]


def arrhenius_fit(temperatures, counts, exposures) -> dict | None:
    """Fit k = nu0 exp(-Ea / kB T) to event counts over exposures (atom*ps) at each temperature.

    Returns ``{"nu0_per_ps", "ea_ev", "ea_err_ev", "ln_nu0_err", "n_temperatures", "temperatures_K",
    "rates_per_ps", "excluded_K"}`` or None when fewer than two temperatures have events.
    """
    t = np.asarray(temperatures, dtype=float)
    n = np.asarray(counts, dtype=float)
    e = np.asarray(exposures, dtype=float)
    use = (n > 0) & (e > 0) & (t > 0)
    excluded = sorted(float(x) for x in t[~use])
    if len(np.unique(t[use])) < 2:
        return None
    x = 1.0 / (KB_EV * t[use])
    y = np.log(n[use] / e[use])
    w = n[use]  # 1 / var(ln k)
    design = np.column_stack([np.ones_like(x), -x])
    normal = design.T @ (design * w[:, None])
    cov = np.linalg.inv(normal)
    ln_nu0, ea = cov @ (design.T @ (w * y))
    dof = len(x) - 2
    if dof > 0:
        chi2 = float(np.sum(w * (y - design @ np.array([ln_nu0, ea])) ** 2))
        cov = cov * max(1.0, chi2 / dof)
    return {
        "nu0_per_ps": float(math.exp(ln_nu0)),
        "ea_ev": float(ea),
        "ea_err_ev": float(math.sqrt(cov[1, 1])),
        "ln_nu0_err": float(math.sqrt(cov[0, 0])),
        "n_temperatures": int(len(x)),
        "temperatures_K": [float(v) for v in t[use]],
        "rates_per_ps": [float(v) for v in n[use] / e[use]],
        "n_events": [int(v) for v in n[use]],
        "excluded_K": excluded,
    }


def arrhenius_from_points(points: list[tuple[float, int, float]]) -> dict | None:
    """Arrhenius fit of (temperature, events, exposure) points, pooled per temperature first."""
    pooled = pool_by_temperature(points)
    if not pooled:
        return None
    t, n, e = zip(*pooled)
    return arrhenius_fit(t, n, e)
