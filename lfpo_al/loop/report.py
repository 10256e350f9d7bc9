"""The end-of-run table and ``python -m lfpo_al status``: both read only ``record.jsonl``."""

from __future__ import annotations

from pathlib import Path

from lfpo_al.errors import UserError
from lfpo_al.layout import STEP_DIRS, RunLayout
from lfpo_al.loop.state import SETUP, RunState

COLUMNS = [
    ("iter", "iter", "{}"),
    ("labels", "label_n_labeled", "{}"),
    ("selected", "n_selected", "{}"),
    ("accurate", "accurate_ratio", "{:.2f}"),
    ("E meV/at", "energy_rmse_mev_per_atom", "{:.2f}"),
    ("F eV/A", "force_rmse_ev_per_ang", "{:.3f}"),
    ("valence", "valence_agreement", "{:.2f}"),
    ("M-O err A", "mean_mo_bond_error_ang", "{:.3f}"),
    ("rho", "spearman_rho", "{:.2f}"),
    ("W1 A", "dynamics_wasserstein_ang", "{:.4f}"),
    ("flips x", "dynamics_flip_rate_ratio", "{:.2f}"),
    ("dynamics", "dynamics_verdict", "{}"),
]
VERDICT_LETTERS = {"pass": "P", "fail": "F", "inconclusive": "I", "unmeasurable": "U"}


def verdict_cell(verdicts: dict) -> str | None:
    """Each dynamics check's verdict as a letter (P pass, F fail, I inconclusive, U unmeasurable)."""
    return " ".join(f"{k}:{VERDICT_LETTERS.get(v, '?')}" for k, v in sorted(verdicts.items())) or None


def iteration_rows(records: list[dict]) -> list[dict]:
    rows: dict[int, dict] = {}
    for rec in records:
        if rec["iter"] == SETUP or rec["status"] != "done":
            continue
        row = rows.setdefault(rec["iter"], {"iter": rec["iter"], "steps": []})
        row["steps"].append(rec["step"])
        outputs = rec.get("outputs", {})
        if rec["step"] == "label":
            row.update({f"label_{k}": v for k, v in outputs.items()})
        else:
            row.update(outputs)
        if isinstance(outputs.get("calibration"), dict):
            row["spearman_rho"] = outputs["calibration"].get("spearman_rho")
        if isinstance(outputs.get("dynamics_summary"), dict):  # held-out MD against the teacher's, worst case
            row["dynamics_wasserstein_ang"] = outputs["dynamics_summary"].get("wasserstein_ang")
            row["dynamics_flip_rate_ratio"] = outputs["dynamics_summary"].get("flip_rate_ratio")
            row["dynamics_verdict"] = verdict_cell(outputs["dynamics_summary"].get("verdicts") or {})
    return [rows[k] for k in sorted(rows)]


def iteration_table(records: list[dict]) -> str:
    rows = iteration_rows(records)
    header = [name for name, _, _ in COLUMNS] + ["steps done"]
    body = []
    for row in rows:
        cells = []
        for _, key, fmt in COLUMNS:
            value = row.get(key)
            cells.append("-" if value is None else fmt.format(value))
        cells.append(",".join(row["steps"]))
        body.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)] if body else [len(h) for h in header]
    line = lambda cells: "  ".join(str(c).rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header)] + [line(c) for c in body])


def status_text(run_dir: Path) -> str:
    if not Path(run_dir).is_dir():
        raise UserError(f"no run folder {run_dir}; check run_name= and runs_dir= (ls runs/ lists the runs)")
    state = RunState(run_dir)
    records = state.records()
    if not records:
        return f"{run_dir}: no record yet (nothing has run)"
    last = records[-1]
    setup = [r["step"] for r in records if r["iter"] == SETUP and r["status"] == "done"]
    final = [r for r in records if r["step"] == "final"]
    lines = [f"run {run_dir}", f"setup done: {', '.join(setup) or 'none'}",
             f"last step: iter {last['iter']} {last['step']} {last['status']} at {last['time']}"]
    lines.append(iteration_table(records))
    if final:
        out = final[-1]["outputs"]
        lines.append(f"finished ({out.get('reason')}): final models in {RunLayout(run_dir).final}")
    else:
        lines.append("not finished: rerun the same train command to resume")
    return "\n".join(lines)


def print_summary(state: RunState, run_dir: Path, reason: str | None) -> None:
    print(f"\nrun {run_dir} finished: {reason}")
    print(iteration_table(state.records()))
    print(f"plots: {run_dir}/iter.*/{STEP_DIRS['validate']}/{{parity,calibration,bond_parity,dynamics}}.png")
    print(f"learning curve: {RunLayout(run_dir).learning_curve}")
    print(f"final ensemble: {RunLayout(run_dir).final}/")
