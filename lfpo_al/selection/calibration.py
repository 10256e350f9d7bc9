"""Calibrate trust levels against measured force errors instead of hand-tuning them.

Input, per labeled frame: the ensemble's max atomic force deviation ``d`` (``max_devi_f``, eV/A) and
the true max atomic force error ``e = max_i |F_model,i - F_DFT,i|`` (eV/A) of the model on that frame.

Method
------
1. Keep frames with finite, positive ``d`` and ``e`` (logarithms follow); the dropped count is reported.
2. Spearman's rank correlation rho (``scipy.stats.spearmanr``) says whether the deviation ranks frames
   by error at all, without assuming any functional form.
3. Fit ``ln e = a + b ln d`` with the Theil-Sen estimator (``scipy.stats.theilslopes``, intercept
   ``a = median(ln e - b ln d)``).

   *Why log-log*: deviations and errors are positive and span decades; the scatter of the error at a
   given deviation is multiplicative, which becomes additive and roughly constant in log space; and a
   power law ``e = A d^b`` is the empirical form of the error-deviation relation. The slope is fitted
   rather than fixed to 1 because members fine-tuned from one pretrained head share most of their
   errors: their deviation is compressed (0.06-0.11 eV/A on frames with 3.9 eV/A error, see the
   toolchain notes), so neither the scale ``A`` nor ``b = 1`` can be assumed. A single ratio quantile
   ``e/d`` is the special case ``b = 1`` and would misplace whichever level is far from the data's centre.

   *Why Theil-Sen*: it is the median of pairwise slopes, unaffected by up to ~29 % outliers (a frame
   with a broken SCF, an unphysical geometry) and needs no normality; least squares in log space would
   let a few such frames tilt the line.
4. The error at deviation ``d`` is modelled as ``ln e = a + b ln d + r`` with ``r`` distributed like the
   fit residuals. Its ``q``-quantile is ``a + b ln d + Q_q(r)``; ``q = 0.5`` (default) gives the median
   ("expected") error since ``Q_0.5(r) = 0`` by construction of ``a``, a larger ``q`` is more cautious.
5. ``trust_lo`` is the deviation at which that error quantile reaches ``target_force_error``:
   ``trust_lo = exp((ln target - a - Q_q(r)) / b)``. Frames below it are expected to be accurate
   enough; labeling them would spend DFT on frames the model already gets right.
   ``trust_hi`` is where it reaches ``trust_hi_factor x target`` (default 4x):
   ``trust_hi = trust_lo * trust_hi_factor^(1/b)``. Above it the model is so far off that the MD is
   exploring unphysical geometries, which DFT labels poorly (slow or unconverged SCF) and which would
   not occur in a sound trajectory. ``trust_hi`` is never set below the largest deviation of the
   calibration frames themselves: the teacher labeled those, so they are not failures (a young model
   whose error exceeds the target everywhere would otherwise select nothing).

Fallbacks (``fallback`` holds the reason; the levels then take the deviation as the error:
``trust_lo = target``, ``trust_hi = trust_hi_factor x target``): fewer than 3 usable frames, constant
deviation or constant error, or a fitted slope that is not positive (the deviation does not track
the error, so no level derived from it would mean anything). Warnings (levels kept) flag a rank
correlation that is not significant (p > 0.05) and levels extrapolated beyond the measured deviations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from lfpo_al.errors import UserError
from lfpo_al.selection.settings import SelectionSettings
from lfpo_al.stored import from_stored

MIN_FRAMES = 3
SIGNIFICANCE = 0.05
# Theil-Sen needs all n^2/2 pairwise slopes; beyond this many frames fit an evenly spread subset.
MAX_FIT_FRAMES = 3000


@dataclass(kw_only=True)
class Calibration:
    """The deviation-error relation of one validation and the trust levels it implies (see the module
    docstring); written as the validate step's ``calibration`` with ``dataclasses.asdict``."""

    method: str = "theil-sen fit of ln(error) vs ln(deviation)"
    n_frames: int = 0
    n_dropped: int = 0
    target_force_error: float
    trust_hi_factor: float
    error_quantile: float
    spearman_rho: float | None = None
    spearman_p: float | None = None
    slope: float | None = None
    slope_ci95: list[float] | None = None
    intercept: float | None = None
    prefactor: float | None = None
    quantile_offset: float | None = None
    residual_sigma: float | None = None
    median_error_over_deviation: float | None = None
    deviation_range: list[float] | None = None
    fallback: str | None = None
    warnings: list[str] = field(default_factory=list)
    plot: str | None = None
    trust_lo: float | None = None
    trust_hi: float | None = None
    trust_hi_derived: float | None = None  # the fitted trust_hi, where it was raised to the labelable frames
    n_test_frames: int | None = None  # the frames it was fitted on: test set, then the iteration's new labels
    n_new_frames: int | None = None

    @classmethod
    def from_record(cls, record: dict | None) -> Calibration | None:
        """A stored calibration read back: a key it lacks takes its default (None for the settings it was made
        with), a key a newer or older release wrote beside these is ignored."""
        return from_stored(cls, record) if isinstance(record, dict) else None


def default_trust_levels(target_force_error: float, trust_hi_factor: float = 4.0) -> tuple[float, float]:
    """Levels with the deviation taken at face value as the force error (no calibration available)."""
    return float(target_force_error), float(trust_hi_factor * target_force_error)


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _check_arguments(deviation, force_error, target_force_error, trust_hi_factor, error_quantile):
    deviation = np.asarray(deviation, dtype=float).ravel()
    force_error = np.asarray(force_error, dtype=float).ravel()
    if deviation.shape != force_error.shape:
        raise UserError(
            f"calibrate: {deviation.size} deviations but {force_error.size} force errors; pass one of each per labeled frame"
        )
    if not (math.isfinite(target_force_error) and target_force_error > 0):
        raise UserError(f"calibrate: target_force_error={target_force_error} must be a positive force error (eV/A)")
    if not (math.isfinite(trust_hi_factor) and trust_hi_factor > 1):
        raise UserError(f"calibrate: trust_hi_factor={trust_hi_factor} must be > 1")
    if not 0 < error_quantile < 1:
        raise UserError(f"calibrate: error_quantile={error_quantile} must lie strictly between 0 and 1")
    return deviation, force_error


def _fit_subset(log_deviation: np.ndarray) -> np.ndarray:
    """Indices to fit on: all frames, or an even spread over the deviation range when there are too many."""
    n = log_deviation.size
    if n <= MAX_FIT_FRAMES:
        return np.arange(n)
    by_deviation = np.argsort(log_deviation, kind="stable")
    return by_deviation[np.linspace(0, n - 1, MAX_FIT_FRAMES).round().astype(int)]


def calibrate_for(settings: SelectionSettings, deviation, force_error, out_png: str | Path | None = None) -> Calibration:
    """``calibrate`` with the selection's own target error and levels (``configs/selection/``)."""
    return calibrate(deviation, force_error, settings.target_force_error, out_png,
                     trust_hi_factor=settings.trust_hi_factor, error_quantile=settings.error_quantile)


def calibrate(
    deviation,
    force_error,
    target_force_error: float,
    out_png: str | Path | None = None,
    *,
    trust_hi_factor: float = 4.0,
    error_quantile: float = 0.5,
) -> Calibration:
    """Relation between ensemble deviation and true force error, and the trust levels it implies.

    ``deviation`` and ``force_error`` are per-frame max force deviation and max atomic force error
    (eV/A). Returns a :class:`Calibration` (see the module docstring); ``out_png`` gets a log-log plot.
    """
    deviation, force_error = _check_arguments(deviation, force_error, target_force_error, trust_hi_factor, error_quantile)
    usable = np.isfinite(deviation) & np.isfinite(force_error) & (deviation > 0) & (force_error > 0)
    x, y = deviation[usable], force_error[usable]
    result = Calibration(
        target_force_error=float(target_force_error), trust_hi_factor=float(trust_hi_factor),
        error_quantile=float(error_quantile), n_frames=int(x.size), n_dropped=int(deviation.size - x.size),
        median_error_over_deviation=_finite_or_none(np.median(y / x)) if x.size else None,
        deviation_range=[float(x.min()), float(x.max())] if x.size else None,
    )
    fallback = _degenerate_reason(x, y)
    if fallback is None:
        log_x, log_y = np.log(x), np.log(y)
        rho, p_value = stats.spearmanr(x, y)
        result.spearman_rho, result.spearman_p = _finite_or_none(rho), _finite_or_none(p_value)
        subset = _fit_subset(log_x)
        fit = stats.theilslopes(log_y[subset], log_x[subset], method="joint")
        slope, intercept = float(fit.slope), float(fit.intercept)
        if not (math.isfinite(slope) and slope > 0):
            fallback = f"the fitted slope {slope:.3g} is not positive: the error does not grow with the deviation"
        else:
            residuals = log_y - (intercept + slope * log_x)
            offset = float(np.quantile(residuals, error_quantile))
            log_lo = (math.log(target_force_error) - intercept - offset) / slope
            result.slope, result.slope_ci95 = slope, [float(fit.low_slope), float(fit.high_slope)]
            result.intercept, result.prefactor, result.quantile_offset = intercept, math.exp(intercept), offset
            result.residual_sigma = float(1.4826 * np.median(np.abs(residuals - np.median(residuals))))
            result.trust_lo = math.exp(log_lo)
            result.trust_hi = math.exp(log_lo) * trust_hi_factor ** (1.0 / slope)
            result.warnings += _fit_warnings(result, x.size < deviation.size, x.size > MAX_FIT_FRAMES)
    if fallback is not None:
        result.method = "fallback: deviation taken as the force error"
        result.fallback = fallback
        result.trust_lo, result.trust_hi = default_trust_levels(target_force_error, trust_hi_factor)
    _keep_labelable_frames_below_trust_hi(result)
    if out_png is not None:
        result.plot = str(plot_calibration(x, y, result, out_png))
    return result


def _keep_labelable_frames_below_trust_hi(result: Calibration) -> None:
    """Never put trust_hi below the largest deviation of the calibration frames.

    Every calibration frame carries a valid teacher label, so geometries up to that deviation are
    demonstrably labelable; a lower trust_hi (a young model whose error exceeds the target
    everywhere) would call all explored frames 'failed' and select nothing to learn from.
    """
    if not result.deviation_range:
        return
    labelable = result.deviation_range[1]
    if result.trust_hi < labelable:
        result.trust_hi_derived = result.trust_hi
        result.trust_hi = labelable
        result.warnings.append(
            f"trust_hi raised from {result.trust_hi_derived:.3g} to {labelable:.3g} eV/A, the largest deviation "
            "among frames the teacher labeled: below it frames are labelable, not failed"
        )


def _degenerate_reason(x: np.ndarray, y: np.ndarray) -> str | None:
    if x.size < MIN_FRAMES:
        return f"only {x.size} frame(s) with finite positive deviation and error; need at least {MIN_FRAMES}"
    if np.ptp(x) == 0:
        return f"all {x.size} deviations are equal ({x[0]:.3g} eV/A): no relation to fit"
    if np.ptp(y) == 0:
        return f"all {y.size} force errors are equal ({y[0]:.3g} eV/A): no relation to fit"
    return None


def _fit_warnings(result: Calibration, dropped: bool, subsampled: bool) -> list[str]:
    warnings = []
    p_value = result.spearman_p
    if p_value is None or p_value > SIGNIFICANCE:
        warnings.append(
            f"weak rank correlation (rho={result.spearman_rho}, p={p_value}): the deviation barely ranks frames "
            "by error, so the derived levels are uncertain; label more frames or diversify the ensemble"
        )
    low, high = result.deviation_range
    for key, level in (("trust_lo", result.trust_lo), ("trust_hi", result.trust_hi)):
        if not low <= level <= high:
            warnings.append(f"{key}={level:.3g} eV/A is extrapolated outside the measured deviations [{low:.3g}, {high:.3g}]")
    if dropped:
        warnings.append(f"{result.n_dropped} frame(s) with non-finite or non-positive deviation or error were left out")
    if subsampled:
        warnings.append(f"slope fitted on {MAX_FIT_FRAMES} frames spread over the deviation range of {result.n_frames}")
    return warnings


def plot_calibration(deviation: np.ndarray, force_error: np.ndarray, result: Calibration, out_png: str | Path) -> Path:
    """Log-log scatter of error vs deviation with the fit, the target and the derived trust levels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # Agg without touching the global backend
    from matplotlib.figure import Figure

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(5.0, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_xscale("log")
    axes.set_yscale("log")
    if deviation.size:
        axes.scatter(deviation, force_error, s=12, alpha=0.6, color="tab:blue", label=f"labeled frames (n={deviation.size})")
    target, factor = result.target_force_error, result.trust_hi_factor
    levels = [deviation.min(), deviation.max()] if deviation.size else []
    levels = np.asarray(levels + [result.trust_lo, result.trust_hi])
    if result.slope is not None:
        grid = np.geomspace(levels.min(), levels.max(), 100)
        axes.plot(grid, result.prefactor * grid ** result.slope, color="black",
                  label=f"median fit: {result.prefactor:.3g} d^{result.slope:.2f}")
        if result.error_quantile != 0.5:
            axes.plot(grid, result.prefactor * math.exp(result.quantile_offset) * grid ** result.slope,
                      color="black", linestyle=":", label=f"{result.error_quantile:.2f} quantile")
    axes.axhline(target, color="tab:green", linestyle="--", label=f"target {target:.3g} eV/A")
    axes.axhline(factor * target, color="tab:red", linestyle="--", label=f"{factor:g} x target")
    axes.axvline(result.trust_lo, color="tab:green", label=f"trust_lo {result.trust_lo:.3g}")
    axes.axvline(result.trust_hi, color="tab:red", label=f"trust_hi {result.trust_hi:.3g}")
    rho = result.spearman_rho
    title = f"Spearman rho = {rho:.2f}" if rho is not None else "no fit"
    axes.set_title(title + (f" (fallback: {result.fallback})" if result.fallback else ""), fontsize=8, wrap=True)
    axes.set_xlabel("ensemble max force deviation (eV/A)")
    axes.set_ylabel("max atomic force error (eV/A)")
    axes.legend(fontsize=7)
    figure.savefig(out_png, dpi=120)
    return out_png
