"""The learning curve of a run: test metrics and held-out dynamics against cumulative labels (PNG).

Read from ``record.jsonl`` only, like ``status``, so it can be redrawn for any run, finished or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lfpo_al.analysis.plots import save_figure  # noqa: E402
from lfpo_al.loop.outcomes import IterationRow  # noqa: E402
from lfpo_al.loop.report import VERDICT_LETTERS  # noqa: E402
from lfpo_al.loop.state import RunState  # noqa: E402
from lfpo_al.validate.settings import ValidateSettings  # noqa: E402

@dataclass
class CurvePoint:
    """One finished iteration's models: the labels they were trained on and what validate measured."""

    iter: int
    labels: int
    force_rmse: float | None
    energy_rmse: float | None
    valence: float | None
    dynamics_w1: float | None
    dynamics_m3_rel_error: float | None
    dynamics_flip_rate_ratio: float | None
    dynamics_noise: float | None  # the teacher's seed-to-seed W1 of the cell with the worst W1
    verdicts: dict


# (point field, axis label, target in the validate settings, the equivalence verdict shown beside it)
PANELS = [
    ("force_rmse", "test force RMSE (eV/A)", lambda t: t.target_force_rmse, None),
    ("energy_rmse", "test energy RMSE (meV/atom)", lambda t: None, None),
    ("valence", "valence agreement", lambda t: t.target_valence_agreement, None),
    ("dynamics_w1", "held-out M-O W1, worst cell (A)", lambda t: t.target_wasserstein_ang, "wasserstein"),
    ("dynamics_m3_rel_error", "M3+ population rel. error", lambda t: t.target_m3_population_rel_error, "m3_population"),
    ("dynamics_flip_rate_ratio", "flip-rate ratio model/teacher", lambda t: t.target_flip_rate_ratio, "flip_rate"),
]


def curve_points(rows: list[IterationRow], init_labels: int) -> list[CurvePoint]:
    """One point per iteration that validated, with the labels the training had seen."""
    labels, points = init_labels, []
    for row in rows:
        if row.validate is not None:
            # the models iteration k validates were trained before it labeled: on the labels of iterations < k
            metrics, dynamics = row.validate, row.dynamics
            points.append(CurvePoint(
                iter=row.iter, labels=labels, force_rmse=metrics.force_rmse_ev_per_ang,
                energy_rmse=metrics.energy_rmse_mev_per_atom, valence=metrics.valence_agreement,
                dynamics_w1=dynamics.wasserstein_ang if dynamics else None,
                dynamics_m3_rel_error=dynamics.m3_population_rel_error if dynamics else None,
                dynamics_flip_rate_ratio=dynamics.flip_rate_ratio if dynamics else None,
                dynamics_noise=dynamics.noise_of_worst_cell_ang if dynamics else None,
                verdicts=(dynamics.verdicts if dynamics else None) or {}))
        labels += int(row.label.n_labeled or 0) if row.label else 0
    return points


def learning_curve_plot(state: RunState, path: Path, targets: ValidateSettings | None = None) -> Path | None:
    """Six panels against cumulative labels, with each target dashed; None before the first iteration."""
    init = state.setup_outcome("init_data")
    points = curve_points(state.rows(), int(init.n_frames or 0) if init else 0)
    if not points:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    x = [p.labels for p in points]
    for ax, (key, label, target_of, verdict_name) in zip(axes.ravel(), PANELS):
        ys = [getattr(p, key) for p in points]
        xs = [xi for xi, y in zip(x, ys) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], "o-", label="model")
        for xi, y, p in zip(x, ys, points):  # the equivalence verdict beside each point: P, F, I or U
            letter = VERDICT_LETTERS.get(p.verdicts.get(verdict_name or ""), "")
            if y is not None and letter:
                ax.annotate(letter, (xi, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if key == "dynamics_w1":
            noise = [(xi, p.dynamics_noise) for xi, p in zip(x, points) if p.dynamics_noise is not None]
            if noise:
                ax.plot(*zip(*noise), "s:", color="grey", label="teacher seed-to-seed, same cell")
        target = target_of(targets) if targets is not None else None
        if target is not None:
            ax.axhline(target, ls="--", color="k", lw=0.8, label="target")
            if key == "dynamics_flip_rate_ratio":  # a ratio is held to the target either way
                ax.axhline(1.0 / target, ls="--", color="k", lw=0.8)
        ax.set_xlabel("labels trained on")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("learning curve: each iteration's models against the labels they were trained on\n"
                 "dynamics verdicts by equivalence: P pass, F fail, I inconclusive, U unmeasurable")
    return save_figure(fig, path)  # lays the figure out
