"""Model against teacher by equivalence: a difference passes only when its interval lies inside the tolerance.

Failing to reject agreement is not agreement: an interval that reaches outside the tolerance is
``inconclusive`` (reported, never counted toward convergence); one entirely outside is ``fail``. Seeds are
the statistical unit (a Welch interval over per-seed values, so one seed per side gives no interval).
A goal tighter than the teacher's own seed-to-seed spread is ``unmeasurable`` at the run length, with
the length that would measure it (spread falling as 1/sqrt(length)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import stats

from lfpo_al.analysis.rates import arrhenius_fit

PASS, FAIL, INCONCLUSIVE, UNMEASURABLE = "pass", "fail", "inconclusive", "unmeasurable"
ORDER = (FAIL, UNMEASURABLE, INCONCLUSIVE, PASS)  # the worst first: a summary takes the worst case's verdict


@dataclass(frozen=True)
class Tolerances:
    """What each verdict of a case allows: ``m3_rel`` (relative to the teacher's M3+), ``centre_ang`` (basin
    centres), ``rate_factor`` (flip-rate ratio, a factor either way), ``wasserstein_ang`` (W1); None skips that
    check. The defaults are the tolerances where no target is set."""

    m3_rel: float | None = 0.10
    centre_ang: float | None = 0.01
    rate_factor: float | None = 1.5
    wasserstein_ang: float | None = None

    def or_defaults(self) -> Tolerances:
        """Each tolerance left None here taken from the defaults (a target that is set replaces only its own)."""
        default = Tolerances()
        return Tolerances(**{f.name: getattr(default if getattr(self, f.name) is None else self, f.name)
                             for f in fields(self)})


def verdict(interval: list[float] | None, tolerance: tuple[float, float]) -> str:
    """pass: interval inside the tolerance; fail: entirely outside; inconclusive: anything else."""
    if interval is None or any(v is None or not math.isfinite(v) for v in interval):
        return INCONCLUSIVE
    lo, hi = interval
    if tolerance[0] <= lo and hi <= tolerance[1]:
        return PASS
    if hi < tolerance[0] or lo > tolerance[1]:
        return FAIL
    return INCONCLUSIVE


def seed_difference(model: list[float], teacher: list[float], level: float = 0.95) -> tuple[float | None, list[float] | None]:
    """(mean(model) - mean(teacher), its Welch interval over seeds); no interval with < 2 seeds a side."""
    a, b = np.asarray([v for v in model if v is not None], float), np.asarray([v for v in teacher if v is not None], float)
    if not len(a) or not len(b):
        return None, None
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return round(diff, 5), None
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return round(diff, 5), [round(diff, 5), round(diff, 5)]
    dof = (va + vb) ** 2 / ((va ** 2 / (len(a) - 1) if va else 0) + (vb ** 2 / (len(b) - 1) if vb else 0) or 1e-300)
    half = stats.t.ppf(0.5 + level / 2, max(dof, 1.0)) * se
    return round(diff, 5), [round(diff - half, 5), round(diff + half, 5)]


def _entry(result: str, value, interval, tolerance, note: str = "") -> dict:
    return {"verdict": result, "value": value, "interval": interval,
            "tolerance": None if tolerance is None else [round(t, 5) for t in tolerance], **({"note": note} if note else {})}


def case_verdicts(model: list[dict], teacher: list[dict], ratio: dict, w1: float, w1_teacher_seeds: float | None,
                  duration_ps: float, tolerances: Tolerances) -> dict:
    """Verdicts of one held-out case from per-seed valence summaries (``resolved``, ``centre_ox``,
    ``centre_red``, ``m3``) of each side, the flip-rate ratio and the W1 distances; a tolerance that is None
    skips its check."""
    out: dict[str, dict] = {}
    resolved_m, resolved_t = all(s["resolved"] for s in model), all(s["resolved"] for s in teacher)
    out["valence_resolved"] = _entry(PASS if resolved_m == resolved_t else FAIL, [resolved_m, resolved_t], None, None,
                                     "model, teacher: every seed resolved")
    m3_teacher = float(np.mean([s["m3"] for s in teacher]))
    if tolerances.m3_rel is not None:
        diff, interval = seed_difference([s["m3"] for s in model], [s["m3"] for s in teacher])
        tol = tolerances.m3_rel * m3_teacher
        out["m3_population"] = _entry(verdict(interval, (-tol, tol)), diff, interval, (-tol, tol),
                                      "M3+ per cell from the two-state fit's weight, model - teacher")
    if tolerances.centre_ang is not None:
        tol = tolerances.centre_ang
        for key in ("centre_ox", "centre_red"):
            diff, interval = seed_difference([s[key] for s in model], [s[key] for s in teacher])
            out[key] = _entry(verdict(interval, (-tol, tol)), diff, interval, (-tol, tol), "basin centre, model - teacher (A)")
    if tolerances.rate_factor is not None:
        factor = tolerances.rate_factor
        tol = (-math.log(factor), math.log(factor))
        if not (resolved_m and resolved_t):
            out["flip_rate"] = _entry(INCONCLUSIVE, None, None, tol, "valence not resolved on both sides: rates withheld")
        elif ratio.get("low") is None:
            out["flip_rate"] = _entry(INCONCLUSIVE, None, None, tol, "no flips on either side: the rate is untested")
        else:
            low = math.log(ratio["low"]) if ratio["low"] > 0 else -math.inf
            high = math.log(ratio["high"]) if ratio.get("high") else math.inf
            value = None if not ratio.get("ratio") else round(math.log(ratio["ratio"]), 4)
            out["flip_rate"] = _entry(verdict([low, high], tol), value, [round(low, 4), round(high, 4)], tol,
                                      "ln(k_model / k_teacher), exact Poisson interval")
    if tolerances.wasserstein_ang is not None:
        out["wasserstein"] = w1_verdict(w1, w1_teacher_seeds, tolerances.wasserstein_ang, duration_ps)
    return out


def w1_verdict(w1: float, noise: float | None, target: float, duration_ps: float) -> dict:
    """W1 against its target, with the teacher's seed-to-seed W1 as the distance's own uncertainty."""
    if noise is None:
        return _entry(INCONCLUSIVE, w1, None, (0.0, target), "one teacher seed: the W1 noise floor is unknown")
    if target < noise:
        needed = duration_ps * (noise / target) ** 2
        return _entry(UNMEASURABLE, w1, [max(w1 - noise, 0.0), w1 + noise], (0.0, target),
                      f"target {target:g} A is below the teacher's own seed-to-seed W1 {noise:.4f} A at "
                      f"{duration_ps:g} ps; about {needed:.0f} ps per seed would measure it")
    return _entry(verdict([max(w1 - noise, 0.0), w1 + noise], (0.0, target)), w1,
                  [round(max(w1 - noise, 0.0), 5), round(w1 + noise, 5)], (0.0, target), "W1 -/+ the teacher's seed-to-seed W1")


def flip_ea_verdict(temperatures: list[float], flips: tuple[list[int], list[int]],
                    exposures: tuple[list[float], list[float]], tolerance_ev: float, level: float = 0.95) -> dict:
    """Ea of the committed flips, model - teacher, with the Arrhenius fits' errors combined, from the cases
    where both sides are resolved: per case its temperature, and per side (model, teacher) its flips and
    metal-picoseconds. Inconclusive with fewer than three temperatures with flips on both sides."""
    fits = [arrhenius_fit(temperatures, n, exposure) if temperatures else None for n, exposure in zip(flips, exposures)]
    if any(f is None or f["n_temperatures"] < 3 for f in fits):
        return _entry(INCONCLUSIVE, None, None, (-tolerance_ev, tolerance_ev),
                      "fewer than 3 temperatures with resolved flips on both sides")
    z = stats.norm.ppf(0.5 + level / 2)
    diff = fits[0]["ea_ev"] - fits[1]["ea_ev"]
    half = z * math.hypot(fits[0]["ea_err_ev"], fits[1]["ea_err_ev"])
    interval = [round(diff - half, 4), round(diff + half, 4)]
    return _entry(verdict(interval, (-tolerance_ev, tolerance_ev)), round(diff, 4), interval,
                  (-tolerance_ev, tolerance_ev), "flip Ea, model - teacher (eV)")


def worst(per_case: list[dict]) -> dict[str, str]:
    """Per check, the worst verdict over the cases."""
    keys = sorted({k for case in per_case for k in case})
    return {k: min((case[k]["verdict"] for case in per_case if k in case), key=ORDER.index) for k in keys}
