"""Production MD with a final model through the loop's own explorer, and the trust level to apply.

``analysis.run_name=X`` takes ``runs/X/final/model.*.pth`` (the frozen ensemble); ``analysis.model`` a
frozen model file or a folder of ``model.*.pth``. The matrix ``md_structures x md_temperatures`` runs
as one ``explore_step`` (same task folders, dispatcher and deviation file as the loop) with an abort
deviation so large that nothing stops; the deviation of every recorded frame is kept and judged later.
"""

from __future__ import annotations


import logging
from dataclasses import dataclass, replace
from pathlib import Path

from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.errors import UserError
from lfpo_al.layout import RunLayout
from lfpo_al.explore.settings import ExploreSettings
from lfpo_al.structures.builder import BuildSpec

log = logging.getLogger(__name__)


@dataclass
class TrajectorySource:
    """A trajectory file to analyse with what is known about it."""

    path: Path
    temperature: float | None
    name: str
    frame_interval_fs: float | None = None
    has_ensemble: bool = True


def run_models(runs_dir: Path, run_name: str) -> list[Path]:
    layout = RunLayout.of(runs_dir, run_name)
    models = layout.final_models()
    if not models:
        raise UserError(f"analysis.run_name={run_name}: no frozen models in {layout.final} (model.000.pth, ...); "
                        "finish the run with `python -m lfpo_al train` or pass analysis.model=PATH")
    return models


def model_paths(settings: AnalysisSettings, runs_dir: Path) -> list[Path]:
    """The frozen model(s) for production MD, from ``analysis.model`` or ``analysis.run_name``."""
    if settings.model:
        path = Path(settings.model)
        if path.is_dir():
            models = sorted(path.glob("model.*.pth")) or sorted(path.glob("*.pth"))
            if not models:
                raise UserError(f"analysis.model={path} is a folder without frozen models (*.pth)")
            return models
        if not path.is_file():
            raise UserError(f"analysis.model={path} does not exist; give a frozen deepmd model (.pth) or a folder of them")
        return [path]
    return run_models(runs_dir, settings.run_name)


def calibrated_trust(run_dir: Path) -> float | None:
    """``calibration.trust_hi`` of the run's last validated iteration, if any."""
    from lfpo_al.validate.step import recorded_calibration

    for metrics in RunLayout(Path(run_dir)).validation_metrics():
        calibration = recorded_calibration(metrics)
        if calibration is not None and calibration.trust_hi is not None:
            return float(calibration.trust_hi)
    return None


def trust_level(settings: AnalysisSettings, run_dir: Path | None) -> tuple[float, str]:
    """(trust level in eV/A, where it came from)."""
    if not isinstance(settings.trust_level, str):
        return float(settings.trust_level), "config"
    if run_dir is not None:
        value = calibrated_trust(run_dir)
        if value is not None:
            return value, f"calibration ({run_dir})"
    return float(settings.fallback_trust_level), "fallback_trust_level"


def production_explore_settings(settings: AnalysisSettings, explore: ExploreSettings) -> ExploreSettings:
    """The loop's explorer settings with the analysis matrix, length and a non-aborting deviation."""
    if not settings.md_structures:
        raise UserError("analysis.md_structures is empty; list build sections, e.g. [{x: 0.5, li_order: random, seed: 0}]")
    return replace(  # the same engine with its own settings (replicas per process, ...)
        explore, temperatures=list(settings.md_temperatures),
        structures=[dict(s) for s in settings.md_structures], n_steps=settings.md_steps,
        timestep_fs=settings.md_timestep_fs, record_every=settings.md_record_every,
        abort_deviation=settings.md_abort_deviation, seed=settings.md_seed, score_every=settings.md_score_every,
    )


def run_production(settings: AnalysisSettings, explore: ExploreSettings, system, build_defaults: BuildSpec | None,
                   models: list[Path], machine, work_dir: Path, driver: Path | None = None) -> list[TrajectorySource]:
    """Run (or resume) the production matrix in ``work_dir`` (MD driven by ``driver`` when given, else by
    ``models[0]``); return the trajectories it wrote."""
    from lfpo_al.explore.step import explore_step

    md = production_explore_settings(settings, explore)
    log.info("production MD: %d trajectories of %d structures, %d steps each, %d model(s)",
             md.n_trajectories, len(md.structures), md.n_steps, len(models))
    exploration = explore_step(md, system, build_defaults, models, Path(work_dir), machine, driver=driver)
    sources = []
    for entry in exploration.trajectories:
        path = Path(work_dir) / entry.dir / "frames.extxyz"
        if not path.is_file() or (entry.n_frames or 0) < 2:
            log.warning("production MD %s (%s, %g K) left no trajectory: %s", entry.dir, entry.family,
                        entry.temperature, entry.stop_reason)
            continue
        if entry.stop_reason:
            log.warning("production MD %s stopped early: %s", entry.dir, entry.stop_reason)
        sources.append(TrajectorySource(
            path=path, temperature=float(entry.temperature),
            name=f"{entry.family}-{entry.temperature:g}K",
            frame_interval_fs=settings.md_timestep_fs * settings.md_record_every, has_ensemble=len(models) > 1))
    if not sources:
        raise UserError(f"production MD in {work_dir} produced no trajectory; see the task.err files there")
    return sources
