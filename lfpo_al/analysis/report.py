"""Write the analysis outputs: summary.json, events.csv, flip-pair table, profiles and figures.

Layout of the output folder::

    summary.json            runs (one row per trajectory, rates with intervals), flags of thin statistics,
                            arrhenius fits, flip-pair table, figures, tables
    events.csv              time_ps,kind,atom_index,sign,trajectory,trusted   (all runs, all events)
    runs/<name>/events.csv  time_ps,kind,atom_index,sign                       (counted events of one run)
    flip_pairs.csv          Table 2: opposite/same-sign flip pairs by |dt| and M-M distance, R
    interface_profile.csv   per-layer valence fractions and flips of every interface run
    figures/*.png           arrhenius, flip_rates_by_order, flip_pairs, interface_vs_bulk,
                            bond_traces_<run>, bond_histogram_<run>, interface_profile_<run>
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np

from lfpo_al.analysis import correlations, plots, rates
from lfpo_al.analysis.intervals import IntervalSettings, fit_intervals, ratio_interval
from lfpo_al.analysis.pipeline import RunResult
from lfpo_al.analysis.settings import AnalysisSettings

EVENT_COLUMNS = ["time_ps", "kind", "atom_index", "sign"]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "run"


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def event_rows(result: RunResult) -> list[tuple]:
    """(time_ps, kind, atom_index, sign, counted) of one run, ordered by time."""
    rows = []
    for kind, ev, counted, atoms in (("fe_flip", result.flips, result.flips_counted, result.metal),
                                     ("li_hop", result.hops, result.hops_counted, result.li)):
        times = result.time_ps(ev.frame)
        rows += list(zip(np.round(times, 6).tolist(), [kind] * len(ev), atoms[ev.column].tolist(),
                         ev.sign.tolist(), counted.tolist()))
    return sorted(rows, key=lambda r: (r[0], r[1], r[2]))


def write_events(results: list[RunResult], out_dir: Path) -> list[Path]:
    paths = [out_dir / "events.csv"]
    with open(paths[0], "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(EVENT_COLUMNS + ["trajectory", "trusted"])
        for res in results:
            for t, kind, atom, sign, ok in event_rows(res):
                writer.writerow([t, kind, atom, sign, res.row["trajectory"], int(ok)])
    for res in results:
        path = out_dir / "runs" / slug(res.row["trajectory"]) / "events.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(EVENT_COLUMNS)
            writer.writerows([r[:4] for r in event_rows(res) if r[4]])
        paths.append(path)
    return paths


def _is_interface(row: dict) -> bool:
    return str(row.get("li_order") or "").startswith("interface_")


def arrhenius_section(rows: list[dict], bounds: IntervalSettings) -> dict | None:
    """Fits over temperatures (only with >= 2 distinct temperatures among the runs).

    Bulk fits (``fe_flip``, ``li_hop``) use the disordered runs (li_order random or unknown) when they
    span >= 2 temperatures, else every non-interface run, else every run; ``fe_flip_interfacial`` uses
    the interfacial layers of interface runs; ``by_family`` fits each structure family alone. Every fit
    carries intervals on Ea, nu0 and its points, and flags where its statistics are thin.
    """
    temps = {r["temperature_K"] for r in rows if r.get("temperature_K") is not None}
    if len(temps) < 2:
        return None
    disordered = [r for r in rows if not _is_interface(r) and (r.get("li_order") in (None, "random"))]
    bulk = [r for r in rows if not _is_interface(r)]
    for name, chosen in (("disordered", disordered), ("non-interface", bulk), ("all", rows)):
        if len({r["temperature_K"] for r in chosen if r.get("temperature_K") is not None}) >= 2:
            break

    def fit(rs, n_key, count_key):
        if count_key == "n_fe_flips":  # a flip count means something only where the valence is resolved
            rs = [r for r in rs if r.get("valence_resolved", True)]
        points = [(r["temperature_K"], r[count_key], r[n_key] * r["trusted_duration_ps"]) for r in rs if r.get(n_key)]
        result = with_intervals(rates.arrhenius_from_points(points))
        if result is not None:
            result.update(seed_interval(points, bounds))
            seeds = result["ea_ci_seeds_ev"]
            result["ea_ci_counting_ev"] = result["ea_ci_ev"]
            if seeds:
                result["ea_ci_ev"] = [min(seeds[0], result["ea_ci_ev"][0]), max(seeds[1], result["ea_ci_ev"][1])]
        return result

    def with_intervals(result):
        return None if result is None else fit_intervals(result, bounds)

    section = {"runs_used": name, "fe_flip": fit(chosen, "n_fe", "n_fe_flips"),
               "li_hop": fit(chosen, "n_li", "n_li_hops"),
               "fe_flip_withheld": [r["trajectory"] for r in rows if r.get("valence_resolved") is False]}
    interfaces = [r for r in rows if _is_interface(r) and r.get("interface") and r.get("valence_resolved", True)]
    if interfaces:
        section["fe_flip_interfacial"] = with_intervals(rates.arrhenius_from_points([
            (r["temperature_K"], r["interface"]["interfacial"]["n_flips"],
             r["interface"]["interfacial"]["n_m"] * r["trusted_duration_ps"]) for r in interfaces]))
        section["fe_flip_interface_bulk"] = with_intervals(rates.arrhenius_from_points([
            (r["temperature_K"], r["interface"]["bulk"]["n_flips"],
             r["interface"]["bulk"]["n_m"] * r["trusted_duration_ps"]) for r in interfaces]))
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(str(r.get("family") or r.get("li_order") or "unknown"), []).append(r)
    section["by_family"] = {fam: {"fe_flip": fit(rs, "n_fe", "n_fe_flips"), "li_hop": fit(rs, "n_li", "n_li_hops")}
                            for fam, rs in sorted(families.items())
                            if len({r["temperature_K"] for r in rs if r.get("temperature_K") is not None}) >= 2}
    return section


def seed_interval(points: list[tuple[float, int, float]], bounds: IntervalSettings, samples: int = 1000) -> dict:
    """Ea's interval with independent runs as the unit: runs resampled within each temperature, refitted.

    Only where every temperature has two runs or more; the reported ``ea_ci_ev`` becomes the union of
    this and the counting interval (runs that disagree more than their counts allow widen it)."""
    by_t: dict[float, list[tuple[int, float]]] = {}
    for t, n, e in points:
        by_t.setdefault(float(t), []).append((int(n), float(e)))
    if len(by_t) < 2 or min(len(v) for v in by_t.values()) < 2:
        return {"ea_ci_seeds_ev": None, "runs_per_temperature": {f"{t:g}": len(v) for t, v in sorted(by_t.items())}}
    rng = np.random.default_rng(bounds.seed)
    eas = []
    for _ in range(samples):
        pooled = []
        for t, runs in by_t.items():
            pick = rng.integers(0, len(runs), len(runs))
            pooled.append((t, sum(runs[i][0] for i in pick), sum(runs[i][1] for i in pick)))
        fit = rates.arrhenius_from_points(pooled)
        if fit is not None and fit["n_temperatures"] == len(by_t):
            eas.append(fit["ea_ev"])
    alpha = 1 - bounds.level
    ci = [float(f"{v:.5g}") for v in np.quantile(eas, [alpha / 2, 1 - alpha / 2])] if len(eas) >= samples // 2 else None
    return {"ea_ci_seeds_ev": ci, "runs_per_temperature": {f"{t:g}": len(v) for t, v in sorted(by_t.items())}}


def statistical_flags(rows: list[dict], arrhenius: dict | None, settings: AnalysisSettings) -> list[str]:
    """Every thin-statistics flag of the runs and the main Arrhenius fits (per-family fits keep theirs)."""
    flags = [f"{r['trajectory']}: {flag}" for r in rows for flag in r.get("flags", [])]
    temps = {r["temperature_K"] for r in rows if r.get("temperature_K") is not None}
    if arrhenius is None and len(temps) < settings.min_temperatures:
        flags.append(f"{len(temps)} temperature(s) (< {settings.min_temperatures}): no Arrhenius fit")
    for kind, fit in (arrhenius or {}).items():
        if kind != "by_family" and isinstance(fit, dict):
            flags += [f"Arrhenius {kind}: {flag}" for flag in fit["flags"]]
    if arrhenius and arrhenius.get("fe_flip_withheld"):
        flags.append(f"Arrhenius fe_flip: {len(arrhenius['fe_flip_withheld'])} run(s) left out, valence not resolved: "
                     + ", ".join(arrhenius["fe_flip_withheld"]))
    return flags


def pair_section(results: list[RunResult], settings: AnalysisSettings, out_dir: Path) -> tuple[dict, np.ndarray, np.ndarray, list]:
    dt_edges = settings.pair_dt_bins_ps
    r_edges = [0.0, settings.pair_cutoff_ang, float("inf")]
    shape = (len(dt_edges) - 1, 2)
    total_opp, total_same = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    rows = []
    for res in results:
        if res.pairs is None:
            continue
        opp, same = res.pairs
        total_opp += opp
        total_same += same
        rows += correlations.table_rows(res.row["trajectory"], opp, same, dt_edges, r_edges)
    rows = correlations.table_rows("all", total_opp, total_same, dt_edges, r_edges) + rows
    with open(out_dir / "flip_pairs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    shuffled_opp = sum((res.pairs_shuffled[0] for res in results if res.pairs_shuffled is not None), np.zeros(shape))
    shuffled_same = sum((res.pairs_shuffled[1] for res in results if res.pairs_shuffled is not None), np.zeros(shape))
    r = correlations.ratio(total_opp, total_same)
    control = correlations.ratio(shuffled_opp, shuffled_same)
    table = {"dt_edges_ps": dt_edges, "r_edges_ang": [0.0, settings.pair_cutoff_ang, None],
             "n_opposite": total_opp.tolist(), "n_same": total_same.tolist(),
             "ratio": [[None if np.isnan(v) else round(float(v), 4) for v in line] for line in r],
             "ratio_ci": [[ratio_interval(int(a), int(b), settings.interval_level) for a, b in zip(la, lb)]
                          for la, lb in zip(total_opp, total_same)], "interval_level": settings.interval_level,
             # the same flips with their times shuffled among them: what the ratio is without any timing
             "ratio_time_shuffled": [[None if np.isnan(v) else round(float(v), 4) for v in line] for line in control],
             "runs_withheld": [res.row["trajectory"] for res in results if res.row.get("valence_resolved") is False]}
    return table, total_opp, total_same, r_edges


def write_profiles(results: list[RunResult], out_dir: Path) -> Path | None:
    rows = [{"trajectory": res.row["trajectory"], "temperature_K": res.row["temperature_K"], **layer}
            for res in results if res.profile for layer in res.profile["layers"]]
    if not rows:
        return None
    path = out_dir / "interface_profile.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_figures(res: RunResult, settings: AnalysisSettings, system, fig_dir: Path) -> list[Path]:
    """Per-run figures (bond traces, histogram, interface profile); drops the run's arrays afterwards."""
    paths = []
    name = slug(res.row["trajectory"])
    if res.bonds is not None and res.bonds.shape[1] > 1:
        counts = np.bincount(res.flips.column[res.flips_counted], minlength=res.bonds.shape[0])
        columns = [int(c) for c in np.argsort(-counts, kind="stable")[:settings.trace_metals]]
        labels = [f"{system.metal}{res.metal[c]} ({counts[c]} flips)" for c in columns]
        time = np.arange(res.bonds.shape[1]) * res.frame_interval_fs / 1000.0
        paths.append(plots.bond_traces(time, res.bonds[columns], res.smooth[columns], labels, res.threshold,
                                       res.cores, fig_dir / f"bond_traces_{name}.png",
                                       f"{res.row['trajectory']}: mean M-O bonds"))
        paths.append(plots.bond_histogram(res.bonds, res.smooth, res.threshold, res.row,
                                          fig_dir / f"bond_histogram_{name}.png", res.row["trajectory"]))
    if res.profile:
        paths.append(plots.interface_profile_plot(res.profile, fig_dir / f"interface_profile_{name}.png",
                                                  f"{res.row['trajectory']} ({res.row['interface']['axis']} axis)"))
    res.bonds = res.smooth = None
    return paths


def _point(row: dict, rate_key: str, count_key: str, ci_key: str) -> dict:
    return {"t": row["temperature_K"], "k": row.get(rate_key), "n": row.get(count_key, 0), "ci": row.get(ci_key)}


def summary_figures(rows: list[dict], arrhenius: dict | None, opp, same, settings, r_edges, fig_dir: Path,
                    metal: str) -> list[Path]:
    def interface_point(row, part):
        layer = row["interface"][part]
        return {"t": row["temperature_K"], "k": layer["fe_flip_rate_per_fe_per_ps"], "n": layer["n_flips"],
                "ci": layer.get("fe_flip_rate_ci")}

    flip = ("fe_flip_rate_per_fe_per_ps", "n_fe_flips", "fe_flip_rate_ci")
    paths = []
    if arrhenius:
        series = {"fe_flip": [_point(r, *flip) for r in rows if not _is_interface(r)],
                  "li_hop": [_point(r, "li_hop_rate_per_li_per_ps", "n_li_hops", "li_hop_rate_ci")
                             for r in rows if not _is_interface(r)]}
        inter = [interface_point(r, "interfacial") for r in rows if r.get("interface")]
        if inter:
            series["fe_flip_interfacial"] = inter
        paths.append(plots.arrhenius_plot(series, arrhenius, fig_dir / "arrhenius.png", metal, settings.min_events))
    if any(r.get("fe_flip_rate_per_fe_per_ps") is not None for r in rows):
        paths.append(plots.rates_by_order(rows, fig_dir / "flip_rates_by_order.png", settings.min_events))
    if opp.sum() + same.sum() > 0:
        paths.append(plots.pair_heatmap(opp, same, settings.pair_dt_bins_ps, r_edges, fig_dir / "flip_pairs.png"))
    inter_rows = [r for r in rows if r.get("interface")]
    if inter_rows:
        points = {"interfacial layers": [interface_point(r, "interfacial") for r in inter_rows],
                  "interface bulk layers": [interface_point(r, "bulk") for r in inter_rows]}
        for r in rows:
            if not _is_interface(r):
                points.setdefault(f"bulk {r.get('li_order') or 'unknown'}", []).append(_point(r, *flip))
        paths.append(plots.interface_vs_bulk(points, fig_dir / "interface_vs_bulk.png", settings.min_events))
    return paths


def write_summary(results: list[RunResult], settings: AnalysisSettings, system, out_dir: Path, source: dict,
                  figures: list[Path]) -> dict:
    """Assemble and write ``summary.json`` (plus the CSV tables and summary figures); return it."""
    out_dir = Path(out_dir)
    rows = [res.row for res in results]
    tables = write_events(results, out_dir)
    pairs, opp, same, r_edges = pair_section(results, settings, out_dir)
    tables.append(out_dir / "flip_pairs.csv")
    profile_csv = write_profiles(results, out_dir)
    if profile_csv:
        tables.append(profile_csv)
    arrhenius = arrhenius_section(rows, settings.intervals())
    if settings.plots:
        figures = figures + summary_figures(rows, arrhenius, opp, same, settings, r_edges, out_dir / "figures", system.metal)
    summary = {"runs": rows, "flags": statistical_flags(rows, arrhenius, settings)}
    if arrhenius is not None:
        summary["arrhenius"] = arrhenius
    summary.update(flip_pairs=pairs, source=source,
                   figures=[str(p.relative_to(out_dir)) for p in figures],
                   tables=[str(p.relative_to(out_dir)) for p in tables],
                   settings={k: v for k, v in vars(settings).items()})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    return summary
