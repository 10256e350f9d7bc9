"""Parity plots of energies and forces (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lfpo_al.analysis.plots import save_figure  # noqa: E402
from lfpo_al.validate.dynamics import FLIP_RATE_RATIO_KEY, VERDICTS_KEY, W1_KEY  # noqa: E402
from lfpo_al.validate.metrics import Predictions  # noqa: E402


def parity_plot(predictions: list[Predictions], path: Path, member: int = 0, title: str = "") -> Path:
    fig, (ax_e, ax_f) = plt.subplots(1, 2, figsize=(9, 4.2))
    for p in predictions:
        ax_e.scatter(p.energy_ref / p.n_atoms, p.energy[member] / p.n_atoms, s=12, label=p.formula)
        ax_f.scatter(p.force_ref.ravel(), p.force[member].ravel(), s=2, alpha=0.4, label=p.formula)
    for ax, unit in ((ax_e, "energy (eV/atom)"), (ax_f, "force component (eV/A)")):
        lo, hi = ax.get_xlim()
        lo, hi = min(lo, ax.get_ylim()[0]), max(hi, ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"reference {unit}")
        ax.set_ylabel(f"model {unit}")
    ax_e.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bond_parity_plot(bonds_model: np.ndarray, bonds_teacher: np.ndarray, threshold: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(bonds_teacher, bonds_model, s=14)
    lo, hi = min(bonds_teacher.min(), bonds_model.min()) - 0.02, max(bonds_teacher.max(), bonds_model.max()) + 0.02
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.axvline(threshold, color="r", lw=0.8)
    ax.axhline(threshold, color="r", lw=0.8)
    ax.set_xlabel("teacher mean M-O (A)")
    ax.set_ylabel("model mean M-O (A)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def dynamics_plot(compared: list[tuple[str, dict, object, object]], oxidised: int, path: Path) -> Path:
    """Per held-out case (name, metrics, model side, teacher side): the smoothed mean M-O histograms overlaid,
    and the M3+ count per frame of each seed against charge balance."""
    fig, axes = plt.subplots(len(compared), 2, figsize=(10, 3.2 * len(compared)), squeeze=False)
    for (name, metrics, model, teacher), (ax_h, ax_t) in zip(compared, axes):
        bins = np.linspace(1.95, 2.35, 61)
        for side, label, style in ((teacher, "teacher", "-"), (model, "model", "--")):
            ax_h.hist(side.smoothed_bonds(), bins=bins, density=True, histtype="step", linestyle=style, label=label)
            for seed, (counts, result) in enumerate(zip(side.oxidised_counts(oxidised), side.results)):
                ax_t.plot(np.arange(len(counts)) * result.frame_interval_fs / 1000.0, counts, style, lw=1,
                          label=f"{label} seed {seed}")
        ax_h.axvline(metrics["threshold_ang"], color="grey", lw=0.8)
        ax_h.set(xlabel="smoothed mean M-O (A)", ylabel="density",
                 title=f"{name}: W1 {metrics[W1_KEY]:.4f} A")
        if metrics["m3_expected"] is not None:
            ax_t.axhline(metrics["m3_expected"], color="grey", lw=0.8, label="charge balance")
        ratio = metrics[FLIP_RATE_RATIO_KEY]["ratio"]
        rate = (metrics.get(VERDICTS_KEY) or {}).get("flip_rate", {}).get("verdict", "-")
        ax_t.set(xlabel="time (ps)", ylabel="M3+ count (committed)",
                 title=f"flip rate ratio {'withheld' if ratio is None else f'{ratio:.2f}'} ({rate})")
        ax_h.legend(fontsize=7)
        ax_t.legend(fontsize=7)
    return save_figure(fig, path)
