"""The learning curve of a run: test metrics and held-out dynamics against cumulative labels (PNG).

Read from ``record.jsonl`` only, like ``status``, so it can be redrawn for any run, finished or not.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lfpo_al.analysis.plots import save_figure  # noqa: E402
from lfpo_al.loop.report import VERDICT_LETTERS, iteration_rows  # noqa: E402
from lfpo_al.loop.state import SETUP  # noqa: E402

# (row key, axis label, target key in the validate settings)
PANELS = [
    ("force_rmse_ev_per_ang", "test force RMSE (eV/A)", "target_force_rmse"),
    ("energy_rmse_mev_per_atom", "test energy RMSE (meV/atom)", None),
    ("valence_agreement", "valence agreement", "target_valence_agreement"),
    ("dynamics_wasserstein_ang", "held-out M-O W1, worst cell (A)", "target_wasserstein_ang"),
    ("dynamics_m3_rel_error", "M3+ population rel. error", "target_m3_population_rel_error"),
    ("dynamics_flip_rate_ratio", "flip-rate ratio model/teacher", "target_flip_rate_ratio"),
]


PANEL_VERDICTS = {"dynamics_wasserstein_ang": "wasserstein", "dynamics_m3_rel_error": "m3_population",
                  "dynamics_flip_rate_ratio": "flip_rate"}


def curve_points(records: list[dict]) -> list[dict]:
    """One point per finished iteration: its metrics and the labels the training had seen."""
    setup = {r["step"]: r.get("outputs", {}) for r in records if r["iter"] == SETUP and r["status"] == "done"}
    labels = int(setup.get("init_data", {}).get("n_frames", 0))
    points = []
    for row in iteration_rows(records):
        # the models iteration k validates were trained before it labeled: on the labels of iterations < k
        point = {"iter": row["iter"], "labels": labels}
        for key, _, _ in PANELS:
            point[key] = row.get(key)
        summary = row.get("dynamics_summary") or {}
        point["dynamics_m3_rel_error"] = summary.get("m3_population_rel_error")
        point["verdicts"] = summary.get("verdicts") or {}
        # the teacher's seed-to-seed W1 of the cell with the worst W1 (older records: the largest of any cell)
        point["dynamics_noise_ang"] = summary.get("wasserstein_worst_cell_teacher_seeds_ang",
                                                  summary.get("wasserstein_teacher_seeds_ang"))
        points.append(point)
        labels += int(row.get("label_n_labeled") or 0)
    return points


def learning_curve_plot(records: list[dict], path: Path, targets: dict | None = None) -> Path | None:
    """Six panels against cumulative labels, with each target dashed; None before the first iteration."""
    points = curve_points(records)
    if not points:
        return None
    targets = targets or {}
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    x = [p["labels"] for p in points]
    for ax, (key, label, target_key) in zip(axes.ravel(), PANELS):
        ys = [p[key] for p in points]
        xs = [xi for xi, y in zip(x, ys) if y is not None]
        ax.plot(xs, [y for y in ys if y is not None], "o-", label="model")
        for xi, y, p in zip(x, ys, points):  # the equivalence verdict beside each point: P, F, I or U
            letter = VERDICT_LETTERS.get(p["verdicts"].get(PANEL_VERDICTS.get(key, "")), "")
            if y is not None and letter:
                ax.annotate(letter, (xi, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if key == "dynamics_wasserstein_ang":
            noise = [(xi, p["dynamics_noise_ang"]) for xi, p in zip(x, points) if p["dynamics_noise_ang"] is not None]
            if noise:
                ax.plot(*zip(*noise), "s:", color="grey", label="teacher seed-to-seed, same cell")
        target = targets.get(target_key) if target_key else None
        if target is not None:
            ax.axhline(target, ls="--", color="k", lw=0.8, label="target")
            if key == "dynamics_flip_rate_ratio":
                ax.axhline(1.0 / target, ls="--", color="k", lw=0.8)
        ax.set_xlabel("labels trained on")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("learning curve: each iteration's models against the labels they were trained on\n"
                 "dynamics verdicts by equivalence: P pass, F fail, I inconclusive, U unmeasurable")
    return save_figure(fig, path)  # lays the figure out
