"""Figures of the analysis (matplotlib Agg, PNG): each function draws one figure and returns its path."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lfpo_al.analysis.rates import KB_EV  # noqa: E402

KIND_STYLE = {"fe_flip": ("tab:red", "o", "M flip"), "li_hop": ("tab:blue", "s", "Li hop"),
              "fe_flip_interfacial": ("tab:purple", "^", "M flip (interfacial)")}


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rate_points(ax, points: list[dict], color, marker, label, min_events: int, offset: float = 0.0, x=lambda t: t):
    """Rates with their intervals as error bars; a rate from fewer than ``min_events`` events is hollow."""
    points = [p for p in points if p["t"] and p["k"] is not None and p["ci"]]
    for thin in (False, True):
        chosen = [p for p in points if (p["n"] < min_events) == thin]
        if not chosen:
            continue
        t = np.array([p["t"] for p in chosen]) + offset
        k = np.array([p["k"] for p in chosen])
        lo, hi = np.array([p["ci"] for p in chosen], dtype=float).T
        ax.errorbar(x(t), k, yerr=[np.maximum(k - lo, 0), np.maximum(hi - k, 0)], fmt=marker, color=color, capsize=3,
                    mfc="white" if thin else color, alpha=0.8,
                    label=(f"{label} (< {min_events} events)" if thin else label) if label else None)


def arrhenius_plot(series: dict[str, list[dict]], fits: dict[str, dict | None], path: Path, metal: str,
                   min_events: int = 10) -> Path:
    """Rate per atom vs 1000/T per event kind, each point with its interval (hollow: thin statistics),
    and the fitted lines with Ea's interval (Fig. 1b)."""
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    for kind, points in series.items():
        points = [p for p in points if p["t"] and p["k"] is not None]
        if not points:
            continue
        color, marker, label = KIND_STYLE.get(kind, ("k", "x", kind))
        _rate_points(ax, [p for p in points if p["k"] > 0], color, marker, label.replace("M ", f"{metal} "),
                     min_events, x=lambda t: 1000 / t)
        bounds = [p for p in points if p["k"] == 0 and p["ci"]]
        if bounds:  # no events: the upper bound as a downward arrow
            ax.plot([1000 / p["t"] for p in bounds], [p["ci"][1] for p in bounds], "v", color=color, mfc="white")
        fit = fits.get(kind)
        if fit:
            t = np.array([p["t"] for p in points], dtype=float)
            grid = np.linspace(1000 / t.max() * 0.95, 1000 / t.min() * 1.05, 50)
            lo, hi = fit.get("ea_ci_ev", [None, None])
            interval = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else f"±{fit['ea_err_ev']:.3f}"
            note = " FLAGGED" if fit.get("flags") else ""
            ax.plot(grid, fit["nu0_per_ps"] * np.exp(-fit["ea_ev"] / (KB_EV * 1000 / grid)), "--" if note else "-",
                    color=color, label=f"  Ea={fit['ea_ev']:.3f}{interval} eV, {fit['n_temperatures']} T{note}")
    ax.set_yscale("log")
    ax.set_xlabel("1000 / T (1/K)")
    ax.set_ylabel("rate per atom (1/ps)")
    ax.legend(fontsize=6)
    ax.set_title("Arrhenius (bars: 95 % intervals; v: upper bound, no events)", fontsize=8)
    return save_figure(fig, path)


def bond_traces(time_ps: np.ndarray, bonds: np.ndarray, smooth: np.ndarray, labels: list[str],
                threshold: float, cores: tuple[float, float], path: Path, title: str) -> Path:
    """Mean M-O bond length against time for a few M (rows of ``bonds``/``smooth``), raw and smoothed,
    with d* and the gap between the two basin cores a committed flip crosses (Fig. 1c)."""
    fig, axes = plt.subplots(len(labels), 1, figsize=(7, 1.6 * len(labels) + 0.6), sharex=True, squeeze=False)
    for ax, raw, smoothed, label in zip(axes[:, 0], bonds, smooth, labels):
        ax.plot(time_ps, raw, lw=0.4, color="0.6")
        ax.plot(time_ps, smoothed, lw=1.2, color="tab:blue")
        ax.axhline(threshold, color="k", lw=0.8)
        ax.axhspan(cores[0], cores[1], color="tab:orange", alpha=0.15)
        ax.set_ylabel(label, fontsize=8)
    axes[-1, 0].set_xlabel("time (ps)")
    axes[0, 0].set_title(title, fontsize=9)
    return save_figure(fig, path)


def bond_histogram(bonds: np.ndarray, smooth: np.ndarray, threshold: float, row: dict, path: Path, title: str) -> Path:
    """Histogram of instantaneous and smoothed mean M-O bonds with d*, the two-state fit and its verdict."""
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    lo, hi = np.percentile(bonds, [0.1, 99.9])
    bins = np.linspace(lo, hi, 90)
    ax.hist(np.ravel(bonds), bins=bins, density=True, alpha=0.45, color="0.5", label="instantaneous")
    ax.hist(np.ravel(smooth), bins=bins, density=True, histtype="step", lw=1.5, color="tab:blue", label="smoothed")
    ax.axvline(threshold, color="k", label=f"d* = {threshold:.3f} A")
    fit = row.get("valence_fit") or {}
    if fit:
        grid = np.linspace(lo, hi, 300)
        for mu, sd, w in ((fit["centre_ox"], fit["width_ox"], fit["weight_ox"]), (fit["centre_red"], fit["width_red"], 1 - fit["weight_ox"])):
            ax.plot(grid, w * np.exp(-0.5 * ((grid - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), lw=0.8, ls="--", color="tab:red")
    verdict = "resolved" if row.get("valence_resolved") else "NOT resolved: rates withheld"
    barrier = fit.get("barrier_kt")
    ax.set_title(f"{title}\nD = {fit.get('separation', float('nan')):.2f}, barrier "
                 + (f"{barrier:.2f} kT" if barrier is not None else "-") + f"; {verdict}", fontsize=8)
    ax.set_xlabel("mean M-O bond (A)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def rates_by_order(rows: list[dict], path: Path, min_events: int = 10, key: str = "fe_flip_rate_per_fe_per_ps",
                   count_key: str = "n_fe_flips", ci_key: str = "fe_flip_rate_ci") -> Path:
    """Flip rate against temperature for each Li ordering (Fig. 3), every run with its interval (hollow:
    fewer than ``min_events`` flips); seeds of one ordering side by side."""
    fig, ax = plt.subplots(figsize=(5.6, 3.9))
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row.get(key) is not None and row.get("temperature_K") is not None:
            groups.setdefault(row.get("li_order") or "unknown", []).append(
                {"t": row["temperature_K"], "k": row[key], "n": row.get(count_key, 0), "ci": row.get(ci_key)})
    spread = 8.0  # K between orderings at one temperature, so the bars do not hide each other
    for i, (order, points) in enumerate(sorted(groups.items())):
        color = f"C{i % 10}"
        _rate_points(ax, points, color, "o", order, min_events, offset=(i - (len(groups) - 1) / 2) * spread)
        by_t: dict[float, list[float]] = {}
        for p in points:
            by_t.setdefault(p["t"], []).append(p["k"])
        t = sorted(by_t)
        ax.plot(np.array(t) + (i - (len(groups) - 1) / 2) * spread, [np.mean(by_t[v]) for v in t], "-", color=color, lw=0.8)
    ax.set_xlabel("T (K)")
    ax.set_ylabel("flips per M per ps")
    ax.set_title("flip rate by Li ordering (bars: 95 % intervals)", fontsize=9)
    ax.legend(fontsize=6)
    return save_figure(fig, path)


def interface_profile_plot(profile: dict, path: Path, title: str) -> Path:
    """Valence fractions (top) and flip counts (bottom) per layer along the interface axis (Fig. 4a/b)."""
    layers = profile["layers"]
    x = np.array([layer["position_ang"] for layer in layers])
    f3 = np.array([layer["m3_fraction"] for layer in layers])
    flips = np.array([layer["n_flips"] for layer in layers])
    inter = np.array([layer["interfacial"] for layer in layers])
    width = 0.8 * (np.min(np.diff(x)) if len(x) > 1 else 1.0)
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 4.6), sharex=True)
    a1.bar(x, 1 - f3, width=width, color="tab:blue", label="M2+")
    a1.bar(x, f3, width=width, bottom=1 - f3, color="tab:red", label="M3+")
    a1.set_ylabel("valence fraction")
    a1.legend(fontsize=7, loc="upper right")
    a2.bar(x, flips, width=width, color=np.where(inter, "tab:purple", "0.5"))
    a2.set_ylabel("flips")
    a2.set_xlabel("position along the interface axis (A)")
    a1.set_title(title, fontsize=9)
    return save_figure(fig, path)


def interface_vs_bulk(points: dict[str, list[dict]], path: Path, min_events: int = 10) -> Path:
    """Interfacial vs bulk flip rates against temperature with intervals, and the bulk orderings for
    comparison (Fig. 4c)."""
    fig, ax = plt.subplots(figsize=(5.6, 3.9))
    for i, (label, pts) in enumerate(points.items()):
        pts = sorted((p for p in pts if p["t"] is not None and p["k"] is not None), key=lambda p: p["t"])
        if pts:
            _rate_points(ax, pts, f"C{i % 10}", "o", label, min_events)
            ax.plot([p["t"] for p in pts], [p["k"] for p in pts], "-", color=f"C{i % 10}",
                    lw=2 if "interfacial" in label else 0.8)
    ax.set_xlabel("T (K)")
    ax.set_ylabel("flips per M per ps")
    ax.set_title("interfacial vs bulk flip rates (bars: 95 % intervals)", fontsize=9)
    ax.legend(fontsize=6)
    return save_figure(fig, path)


def pair_heatmap(opposite: np.ndarray, same: np.ndarray, dt_edges, r_edges, path: Path) -> Path:
    """R = N_opposite / N_same binned by |dt| (rows) and M-M distance (columns), Table 2 as a heat map."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(same > 0, opposite / np.maximum(same, 1), np.nan)
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    im = ax.imshow(r, cmap="coolwarm", vmin=0, vmax=max(2.0, np.nanmax(r) if np.isfinite(r).any() else 2.0),
                   aspect="auto", origin="lower")
    for a in range(r.shape[0]):
        for b in range(r.shape[1]):
            value = "-" if opposite[a, b] + same[a, b] == 0 else "inf" if np.isnan(r[a, b]) else f"{r[a, b]:.2f}"
            text = f"{value}\n({opposite[a, b]}/{same[a, b]})"
            ax.text(b, a, text, ha="center", va="center", fontsize=7)
    ax.set_yticks(range(r.shape[0]), [f"{dt_edges[i]:g}-{dt_edges[i + 1]:g}" for i in range(r.shape[0])])
    ax.set_xticks(range(r.shape[1]), [f"{r_edges[i]:g}-{r_edges[i + 1]:g}" for i in range(r.shape[1])])
    ax.set_ylabel("|dt| (ps)")
    ax.set_xlabel("M-M distance (A)")
    ax.set_title("flip pairs: R = N_opp / N_same", fontsize=9)
    fig.colorbar(im, ax=ax)
    return save_figure(fig, path)
