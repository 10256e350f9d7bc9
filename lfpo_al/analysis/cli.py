"""``python -m lfpo_al analyze``: production MD with a final model, or existing trajectories, then events.

Modes (first match): ``analysis.trajectories=[...]`` analyses files; ``analysis.model=PATH`` or
``analysis.run_name=X`` runs the production matrix first; with none of them the top-level ``run_name``
is used when ``runs/<run_name>/final`` holds models. Outputs go to ``analysis.output_dir`` (default
``runs/<run>/analysis`` for a run); see ``lfpo_al.analysis.report`` for the layout.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig

from lfpo_al import atomic
from lfpo_al.analysis import report
from lfpo_al.analysis.pipeline import TRACKED_COLUMNS, analyze_trajectory
from lfpo_al.analysis.production import TrajectorySource, model_paths, run_production, trust_level
from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.analysis.trajectory import load_trajectory
from lfpo_al.config import instantiate_group, make_settings, shareable, to_plain
from lfpo_al.errors import UserError
from lfpo_al.layout import RunLayout
from lfpo_al.structures.builder import BuildSpec

log = logging.getLogger(__name__)


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return out


def resolve_mode(settings: AnalysisSettings, cfg: DictConfig) -> tuple[str, str | None, Path]:
    """(mode, run name, output folder); mode is ``trajectories`` or ``production``."""
    runs_dir = Path(cfg.get("runs_dir", "runs"))
    run_name = settings.run_name
    if settings.trajectories:
        mode = "trajectories"
    elif settings.model or settings.run_name:
        mode = "production"
    elif cfg.get("run_name") and RunLayout.of(runs_dir, cfg.run_name).final.is_dir():
        mode, run_name = "production", str(cfg.run_name)
        settings.run_name = run_name
    else:
        raise UserError("nothing to analyse: set analysis.trajectories=[a.extxyz,...], analysis.run_name=NAME "
                        "(runs/NAME/final/model.*.pth) or analysis.model=PATH")
    if settings.output_dir:
        out = Path(settings.output_dir)
    elif run_name:
        out = RunLayout.of(runs_dir, run_name).analysis
    else:
        raise UserError("set analysis.output_dir=DIR for the analysis outputs")
    return mode, run_name, out


def _sources(settings: AnalysisSettings, cfg: DictConfig, system, mode: str, run_name: str | None,
             out_dir: Path) -> tuple[list[TrajectorySource], dict]:
    runs_dir = Path(cfg.get("runs_dir", "runs"))
    if mode == "trajectories":
        temps = settings.temperatures or [None] * len(settings.trajectories)
        names = _unique_names([Path(p).stem if Path(p).stem not in ("frames", "traj", "dump") else Path(p).parent.name
                               for p in settings.trajectories])
        return [TrajectorySource(Path(p), t, n, settings.frame_interval_fs)
                for p, t, n in zip(settings.trajectories, temps, names)], {"mode": mode}
    models = model_paths(settings, runs_dir)
    explore = instantiate_group(cfg, "explore")
    machine = instantiate_group(cfg, "machine").for_step("explore")
    build_defaults = make_settings(BuildSpec, to_plain(cfg.build), "build") if "build" in cfg else None
    driver = production_driver(settings, runs_dir, run_name)
    sources = run_production(settings, explore, system, build_defaults, models, machine,
                             out_dir / ("md_student" if driver else "md"), driver)
    for src, name in zip(sources, _unique_names([s.name for s in sources])):
        src.name = name
    return sources, {"mode": mode, "models": [str(m) for m in models], "run_name": run_name,
                     "driver": str(driver) if driver else None}


def production_driver(settings: AnalysisSettings, runs_dir: Path, run_name: str | None) -> Path | None:
    """The distilled student that drives the production MD, if ``analysis.student`` takes one."""
    if settings.student is False:
        return None
    student = RunLayout.of(runs_dir, run_name).passed_student() if run_name else None
    if student is None and settings.student is True:
        raise UserError(f"analysis.student=true but run {run_name!r} has no distilled student that passed its gate; "
                        "run `python -m lfpo_al distill run_name=NAME` first or set analysis.student=auto")
    if student is not None:
        log.info("production MD driven by the distilled student %s; the ensemble scores the deviation", student)
    return student


def analyze_command(cfg: DictConfig) -> int:
    system = instantiate_group(cfg, "system")
    settings: AnalysisSettings = instantiate_group(cfg, "analysis").for_system(system)
    tracking = instantiate_group(cfg, "tracking")
    mode, run_name, out_dir = resolve_mode(settings, cfg)
    try:
        str(out_dir.resolve()).encode("utf-8")
    except UnicodeEncodeError:  # the figures' writers would fail after all the work
        raise UserError(f"the output folder {out_dir!r} is not valid UTF-8; give analysis.output_dir a UTF-8 path") from None
    created = _first_missing(out_dir)
    if created is None:  # its files may have come from someone else: nothing is written through a link
        atomic.refuse_planted_links(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _analyze(settings, system, tracking, cfg, mode, run_name, out_dir)
    except BaseException:
        if created is not None and not any(p.is_file() for p in created.rglob("*")):
            shutil.rmtree(created, ignore_errors=True)  # a failed analysis leaves no empty folders behind
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what ``mkdir(parents=True)`` creates)."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def _analyze(settings: AnalysisSettings, system, tracking, cfg: DictConfig, mode: str, run_name: str | None,
             out_dir: Path) -> int:
    sources, source_info = _sources(settings, cfg, system, mode, run_name, out_dir)
    run_dir = Path(cfg.get("runs_dir", "runs")) / run_name if run_name else None
    level, level_source = trust_level(settings, run_dir)
    source_info.update(trust_level=level, trust_level_source=level_source, exclude_untrusted=settings.exclude_untrusted)

    results, figures = [], []
    for src in sources:
        traj = load_trajectory(src.path, system, src.frame_interval_fs, src.temperature, src.name)
        if traj.temperature is None:
            raise UserError(f"{src.path} carries no temperature; set analysis.temperatures (one per trajectory)")
        if not src.has_ensemble:
            traj.deviation = None  # one model: its 'deviation' is zero by construction, not a trust measure
        res = analyze_trajectory(traj, system, settings, level if traj.deviation is not None else None)
        if settings.plots:
            figures += report.run_figures(res, settings, system, out_dir / "figures")
        results.append(res)
        r = res.row
        log.info("%s (%g K, %.3g ps, trusted %s): %d %s flips (%s /M/ps), %d Li hops (%s /Li/ps)", r["trajectory"],
                 r["temperature_K"], r["duration_ps"], r["trusted_fraction"], r["n_fe_flips"], system.metal,
                 _fmt(r["fe_flip_rate_per_fe_per_ps"]), r["n_li_hops"], _fmt(r["li_hop_rate_per_li_per_ps"]))
    summary = report.write_summary(results, settings, system, out_dir, source_info, figures)
    _track(tracking, out_dir, run_name, summary, cfg)
    _print_summary(summary, out_dir, system.metal)
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _track(tracking, out_dir: Path, run_name: str | None, summary: dict, cfg: DictConfig) -> None:
    from lfpo_al.tracking import Tracker

    tracker = Tracker(tracking, out_dir, f"{run_name or 'trajectories'}-analysis", shareable(cfg)[0])
    try:
        columns = list(TRACKED_COLUMNS)
        tracker.table("analysis/runs", columns, [[row.get(c) for c in columns] for row in summary["runs"]])
        metrics = {}
        for kind, fit in (summary.get("arrhenius") or {}).items():
            if isinstance(fit, dict) and "ea_ev" in fit:
                metrics.update({f"analysis/{kind}/{k}": fit[k] for k in ("nu0_per_ps", "ea_ev", "ea_err_ev")})
                metrics[f"analysis/{kind}/flags"] = len(fit["flags"])
        metrics["analysis/flags"] = len(summary.get("flags") or [])
        tracker.log(metrics, images={f"analysis/{Path(f).stem}": out_dir / f for f in summary["figures"]})
        tracker.artifact(f"{run_name or 'trajectories'}-analysis", "analysis",
                         [out_dir / "summary.json"] + [out_dir / t for t in summary["tables"]], root=out_dir)
    finally:
        tracker.finish()


def _print_summary(summary: dict, out_dir: Path, metal: str) -> None:
    print(f"analysis written to {out_dir}")
    for r in summary["runs"]:
        if r.get("valence_resolved") is False:
            flips = f"{metal} valence NOT resolved, flip rate withheld"
        else:
            floor = r.get("fe_flips_noise_floor")
            flips = (f"{r['n_fe_flips']} {metal} flips ({_fmt_ci(r['fe_flip_rate_per_fe_per_ps'], r.get('fe_flip_rate_ci'))}"
                     f"/{metal}/ps; noise alone {_fmt(floor)})")
        fit = r.get("valence_fit") or {}
        print(f"  {r['trajectory']}: {r['temperature_K']:g} K, {r['duration_ps']:.3g} ps, trusted {r['trusted_fraction']}, "
              f"D = {_fmt(fit.get('separation'))}, {flips}, "
              f"{r['n_li_hops']} Li hops ({_fmt_ci(r['li_hop_rate_per_li_per_ps'], r.get('li_hop_rate_ci'))}/Li/ps)")
    for kind, fit in (summary.get("arrhenius") or {}).items():
        if isinstance(fit, dict) and "ea_ev" in fit:
            lo, hi = fit["ea_ci_ev"]
            nlo, nhi = fit["nu0_ci_per_ps"]
            print(f"  Arrhenius {kind}: Ea = {fit['ea_ev']:.3f} eV [{lo:.3f}, {hi:.3f}], nu0 = {fit['nu0_per_ps']:.3g}/ps "
                  f"[{nlo:.3g}, {nhi:.3g}], {fit['n_temperatures']} temperatures, {sum(fit['n_events'])} events")
    flags = summary.get("flags") or []
    print(f"  statistical flags ({len(flags)}):" if flags else "  statistical flags: none")
    for flag in flags:
        print(f"    ! {flag}")
    print(f"  figures: {', '.join(summary['figures']) or 'none'}")


def _fmt_ci(value, interval) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if not interval else f"{value:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]"
