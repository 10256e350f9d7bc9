"""The student's gate: each check with its value, its limit and whether it passed."""

from __future__ import annotations

from lfpo_al.distill.settings import GateSettings


def _check(name: str, value, limit, passed: bool, note: str = "") -> dict:
    return {"check": name, "value": value, "limit": limit, "passed": bool(passed), **({"note": note} if note else {})}


def flip_check(name: str, ratio: dict, factor: float) -> dict:
    """Passes when the ratio's 95 % interval reaches into [1/factor, factor]: the student's flip rate is not
    shown to differ from the teacher's by more than the factor."""
    if ratio.get("low") is None:  # no flip on either side: nothing to tell them apart
        return _check(name, None, factor, True, "no flips in either run")
    high = ratio["high"] if ratio.get("high") is not None else float("inf")
    return _check(name, [ratio.get("ratio"), ratio["low"], ratio.get("high")], [round(1 / factor, 4), factor],
                  ratio["low"] <= factor and high >= 1 / factor)


def gate_checks(errors: dict, dynamics: dict[str, dict], gate: GateSettings, used: str) -> list[dict]:
    """Checks of the model ``used`` (a key of ``errors``) on the held-out frames, then per dynamics case."""
    e, f = errors[used]["energy_rmse_mev_per_atom"], errors[used]["force_rmse_ev_per_ang"]
    checks = [_check("force_rmse_ev_per_ang", round(f, 4), gate.max_force_rmse_ev_per_ang, f <= gate.max_force_rmse_ev_per_ang),
              _check("energy_rmse_mev_per_atom", round(e, 3), gate.max_energy_rmse_mev_per_atom,
                     e <= gate.max_energy_rmse_mev_per_atom)]
    for case, m in dynamics.items():
        noise = m.get("wasserstein_teacher_seeds_ang")
        limit = max(gate.max_wasserstein_ang, noise or 0.0)
        checks.append(_check(f"{case}: wasserstein_ang", m["wasserstein_ang"], limit, m["wasserstein_ang"] <= limit,
                             "" if limit == gate.max_wasserstein_ang else "limit: the teacher model's seed-to-seed W1"))
        rel = m.get("m3_population_rel_error")
        checks.append(_check(f"{case}: m3_population_rel_error", rel, gate.max_m3_rel_error,
                             rel is None or rel <= gate.max_m3_rel_error, "" if rel is not None else "teacher has no M3+"))
        checks.append(flip_check(f"{case}: flip_rate_ratio", m["flip_rate_ratio"], gate.flip_rate_ratio))
    return checks
