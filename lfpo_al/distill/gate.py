"""The student's gate: each check with its value, its limit and whether it passed."""

from __future__ import annotations

from lfpo_al.distill.settings import GateSettings
from lfpo_al.validate.dynamics import VERDICTS_KEY
from lfpo_al.validate.metrics import ENERGY_RMSE, FORCE_RMSE


def _check(name: str, value, limit, passed: bool, note: str = "") -> dict:
    return {"check": name, "value": value, "limit": limit, "passed": bool(passed), **({"note": note} if note else {})}


VERDICT_CHECKS = ("valence_resolved", "m3_population", "flip_rate", "wasserstein")


def verdict_check(name: str, entry: dict | None) -> dict:
    """A dynamics check passes only on an equivalence ``pass`` (``validate.equivalence``)."""
    entry = entry or {"verdict": "inconclusive", "note": "not measured"}
    note = entry["verdict"] + (f": {entry['note']}" if entry.get("note") else "")
    return _check(name, entry.get("value"), entry.get("tolerance"), entry["verdict"] == "pass", note)


def gate_checks(errors: dict, dynamics: dict[str, dict], gate: GateSettings, used: str) -> list[dict]:
    """Checks of the model ``used`` (a key of ``errors``) on the held-out frames, then per dynamics case the
    same equivalence verdicts as the validation (tolerances from the gate, ``GateSettings.targets``)."""
    e, f = errors[used][ENERGY_RMSE], errors[used][FORCE_RMSE]
    checks = [_check(FORCE_RMSE, round(f, 4), gate.max_force_rmse_ev_per_ang, f <= gate.max_force_rmse_ev_per_ang),
              _check(ENERGY_RMSE, round(e, 3), gate.max_energy_rmse_mev_per_atom,
                     e <= gate.max_energy_rmse_mev_per_atom)]
    for case, m in dynamics.items():
        verdicts = m.get(VERDICTS_KEY) or {}
        checks += [verdict_check(f"{case}: {key}", verdicts.get(key)) for key in VERDICT_CHECKS]
    return checks
