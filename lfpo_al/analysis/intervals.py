"""Confidence intervals of rates and ratios, and the flags of thin statistics.

A rate's interval is the union of two: the exact Poisson (Garwood) interval of its count, right for
independent events, and a block bootstrap over contiguous stretches of the trajectory, which sees the
over-dispersion of correlated events (a polaron flipping back and forth counts several flips inside one
block). With few blocks or few events the bootstrap is too narrow and Poisson dominates; with bursty
events the bootstrap does. A rate from fewer than ``min_events`` events and an Arrhenius fit from fewer
than ``min_temperatures`` temperatures are flagged, so no number is reported bare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class IntervalSettings:
    level: float = 0.95
    block_fs: float = 500.0
    samples: int = 2000
    min_events: int = 10
    min_temperatures: int = 3
    seed: int = 0


def poisson_interval(n_events: int, exposure: float, level: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval of a Poisson rate: ``n_events`` over ``exposure`` (atom*ps)."""
    alpha = 1.0 - level
    lo = 0.0 if n_events == 0 else stats.chi2.ppf(alpha / 2, 2 * n_events) / 2
    hi = stats.chi2.ppf(1 - alpha / 2, 2 * n_events + 2) / 2
    return float(lo / exposure), float(hi / exposure)


def poisson_ci(n_events: int, exposure: float, level: float = 0.95) -> list[float] | None:
    """The rounded Poisson interval as reported, or None without exposure."""
    return [_round(v) for v in poisson_interval(n_events, exposure, level)] if exposure > 0 else None


def block_bootstrap_interval(event_frames: np.ndarray, counted_intervals: np.ndarray, n_atoms: int,
                             frame_interval_fs: float, settings: IntervalSettings) -> tuple[float, float] | None:
    """Percentile interval of the rate over non-overlapping blocks of ``settings.block_fs`` resampled
    with replacement; None with fewer than two blocks or no counted time."""
    n_frames = len(counted_intervals)
    per_block = max(1, int(round(settings.block_fs / frame_interval_fs)))
    n_blocks = n_frames // per_block
    if n_blocks < 2 or n_atoms <= 0 or not counted_intervals.any():
        return None
    edges = np.linspace(0, n_frames, n_blocks + 1).astype(int)
    counts = np.histogram(np.asarray(event_frames, dtype=float), bins=edges.astype(float))[0]
    exposure = np.add.reduceat(counted_intervals.astype(float), edges[:-1]) * frame_interval_fs / 1000.0 * n_atoms
    pick = np.random.default_rng(settings.seed).integers(0, n_blocks, size=(settings.samples, n_blocks))
    numerator, denominator = counts[pick].sum(axis=1), exposure[pick].sum(axis=1)
    ok = denominator > 0
    alpha = 1.0 - settings.level
    lo, hi = np.quantile(numerator[ok] / denominator[ok], [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def rate_interval(event_frames: np.ndarray, counted_intervals: np.ndarray, n_atoms: int,
                  frame_interval_fs: float, settings: IntervalSettings) -> dict | None:
    """``{"ci": [lo, hi], "poisson": [...], "bootstrap": [...] | None}`` of the counted events' rate."""
    exposure = float(counted_intervals.sum()) * frame_interval_fs / 1000.0 * n_atoms
    if exposure <= 0:
        return None
    poisson = poisson_interval(len(event_frames), exposure, settings.level)
    boot = block_bootstrap_interval(event_frames, counted_intervals, n_atoms, frame_interval_fs, settings)
    lo, hi = poisson if boot is None else (min(poisson[0], boot[0]), max(poisson[1], boot[1]))
    return {"ci": [_round(lo), _round(hi)], "poisson": [_round(v) for v in poisson],
            "bootstrap": None if boot is None else [_round(v) for v in boot]}


def count_flag(what: str, n_events: int, ci: list[float] | None, unit: str, settings: IntervalSettings) -> str | None:
    """A flag for a rate from fewer than ``min_events`` events, ``ci`` its [lo, hi] (an upper bound when
    there are none)."""
    if n_events >= settings.min_events or ci is None:
        return None
    pct = f"{settings.level:.0%}"
    if n_events == 0:
        return f"{what}: no events, rate < {ci[1]:.3g} {unit} ({pct} upper bound)"
    return f"{what}: {n_events} events (< {settings.min_events}), rate known only to [{ci[0]:.3g}, {ci[1]:.3g}] {unit}"


def fit_intervals(fit: dict, settings: IntervalSettings) -> dict:
    """The Arrhenius fit with intervals on Ea, nu0 and each temperature's pooled rate, and its flags."""
    z = stats.norm.ppf(0.5 + settings.level / 2)
    ea, ea_err, ln_err = fit["ea_ev"], fit["ea_err_ev"], fit["ln_nu0_err"]
    exposures = [n / k for n, k in zip(fit["n_events"], fit["rates_per_ps"])]
    flags = []
    if fit["n_temperatures"] < settings.min_temperatures:
        flags.append(f"fit from {fit['n_temperatures']} temperatures (< {settings.min_temperatures}): Arrhenius "
                     "behaviour untested, Ea interval from counting noise alone")
    for t, n in zip(fit["temperatures_K"], fit["n_events"]):
        if n < settings.min_events:
            flags.append(f"{t:g} K: {n} events (< {settings.min_events})")
    flags += [f"{t:g} K: no events, left out of the fit" for t in fit["excluded_K"]]
    return {**fit,
            "ea_ci_ev": [_round(ea - z * ea_err), _round(ea + z * ea_err)],
            "nu0_ci_per_ps": [_round(fit["nu0_per_ps"] * np.exp(-z * ln_err)), _round(fit["nu0_per_ps"] * np.exp(z * ln_err))],
            "rates_ci_per_ps": [poisson_ci(n, e, settings.level) for n, e in zip(fit["n_events"], exposures)],
            "interval_level": settings.level, "flags": flags}


def ratio_interval(n_a: int, n_b: int, level: float = 0.95) -> list[float | None]:
    """Interval of ``n_a / n_b`` for two Poisson counts (Clopper-Pearson on n_a / (n_a + n_b))."""
    total = n_a + n_b
    if total == 0:
        return [None, None]
    alpha = 1.0 - level
    p_lo = 0.0 if n_a == 0 else stats.beta.ppf(alpha / 2, n_a, n_b + 1)
    p_hi = 1.0 if n_b == 0 else stats.beta.ppf(1 - alpha / 2, n_a + 1, n_b)
    return [_round(p_lo / (1 - p_lo)), None if p_hi >= 1 else _round(p_hi / (1 - p_hi))]


def _round(value: float) -> float:
    return float(f"{value:.5g}")
