"""The end-of-run table and ``python -m lfpo_al status``: both read only ``record.jsonl``."""

from __future__ import annotations

from pathlib import Path

from lfpo_al.errors import UserError
from lfpo_al.layout import STEP_DIRS, RunLayout
from lfpo_al.loop.outcomes import IterationRow
from lfpo_al.loop.state import SETUP, RunState


def _unless_missing(read):
    """``read(row)``, or None where the step it reads is not done yet (its outcome is None)."""
    def value(row: IterationRow):
        try:
            return read(row)
        except AttributeError:
            return None
    return value


# (header, value of an IterationRow, format)
COLUMNS = [
    ("iter", lambda row: row.iter, "{}"),
    ("labels", _unless_missing(lambda row: row.label.n_labeled), "{}"),
    ("selected", _unless_missing(lambda row: row.select.n_selected), "{}"),
    ("accurate", _unless_missing(lambda row: row.select.accurate_ratio), "{:.2f}"),
    ("E meV/at", _unless_missing(lambda row: row.validate.energy_rmse_mev_per_atom), "{:.2f}"),
    ("F eV/A", _unless_missing(lambda row: row.validate.force_rmse_ev_per_ang), "{:.3f}"),
    ("valence", _unless_missing(lambda row: row.validate.valence_agreement), "{:.2f}"),
    ("M-O err A", _unless_missing(lambda row: row.validate.mean_mo_bond_error_ang), "{:.3f}"),
    ("rho", _unless_missing(lambda row: row.calibration.spearman_rho), "{:.2f}"),
    ("W1 A", _unless_missing(lambda row: row.dynamics.wasserstein_ang), "{:.4f}"),
    ("flips x", _unless_missing(lambda row: row.dynamics.flip_rate_ratio), "{:.2f}"),
    ("dynamics", _unless_missing(lambda row: verdict_cell(row.dynamics.verdicts or {})), "{}"),
]
VERDICT_LETTERS = {"pass": "P", "fail": "F", "inconclusive": "I", "unmeasurable": "U"}


def verdict_cell(verdicts: dict) -> str | None:
    """Each dynamics check's verdict as a letter (P pass, F fail, I inconclusive, U unmeasurable)."""
    return " ".join(f"{k}:{VERDICT_LETTERS.get(v, '?')}" for k, v in sorted(verdicts.items())) or None


def iteration_table(rows: list[IterationRow]) -> str:
    header = [name for name, _, _ in COLUMNS] + ["steps done"]
    body = []
    for row in rows:
        cells = []
        for _, value_of, fmt in COLUMNS:
            value = value_of(row)
            cells.append("-" if value is None else fmt.format(value))
        cells.append(",".join(row.steps))
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
    final = state.final_outcome()
    lines = [f"run {run_dir}", f"setup done: {', '.join(setup) or 'none'}",
             f"last step: iter {last['iter']} {last['step']} {last['status']} at {last['time']}"]
    lines.append(iteration_table(state.rows()))
    if final:
        lines.append(f"finished ({final[1].reason}): final models in {RunLayout(run_dir).final}")
    else:
        lines.append("not finished: rerun the same train command to resume")
    return "\n".join(lines)


def print_summary(state: RunState, run_dir: Path, reason: str | None) -> None:
    print(f"\nrun {run_dir} finished: {reason}")
    print(iteration_table(state.rows()))
    print(f"plots: {run_dir}/iter.*/{STEP_DIRS['validate']}/{{parity,calibration,bond_parity,dynamics}}.png")
    print(f"learning curve: {RunLayout(run_dir).learning_curve}")
    print(f"final ensemble: {RunLayout(run_dir).final}/")
