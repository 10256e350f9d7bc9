"""The select step: read an exploration, classify its frames, choose candidates, write them and a report.

Reads (the exploration step's contract)::

    EXPLORE_DIR/summary.json              :class:`~lfpo_al.explore.result.ExplorationResult` (dir, family,
                                          temperature, n_frames, stop_reason, stop_step per trajectory)
    EXPLORE_DIR/<dir>/frames.extxyz       recorded frames (info: family, temperature, step)
    EXPLORE_DIR/<dir>/model_devi.out      deepmd model deviation, one row per recorded frame, same order

Writes ``OUT_DIR/selected.extxyz`` (chosen frames, info adds ``source`` = "traj.000:frame 12" and
``max_devi_f``; the explorer's model energies/forces are dropped so they cannot be taken for labels)
and ``OUT_DIR/report.json`` (:class:`~lfpo_al.selection.report.SelectionReport`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from lfpo_al import atomic
from lfpo_al.errors import UserError
from lfpo_al.explore.result import SUMMARY, ExplorationResult, TrajectoryResult
from lfpo_al.selection.calibration import Calibration, default_trust_levels
from lfpo_al.selection.diversity import farthest_point_order
from lfpo_al.selection.ensemble_scores import EnsembleScores, score_frames
from lfpo_al.selection.report import SELECTED, SELECTED_COLUMNS, VALENCE_COLUMN, SelectionReport, TrustLevels
from lfpo_al.selection.settings import AUTO, TEACHER, SelectionSettings
from lfpo_al.selection.teacher_failures import teacher_failure_level
from lfpo_al.selection.trust import (
    CANDIDATE,
    CATEGORY_NAMES,
    FAILED,
    FramePool,
    TrajectoryGeometry,
    category_counts,
    choose_candidates,
    classify_frames,
    frames_after_stop,
)

FRAMES = "frames.extxyz"
MODEL_DEVI = "model_devi.out"
# deepmd: step, max/min/avg devi_v, max/min/avg devi_f, devi_e (+ per-atom columns with --atomic);
# LAMMPS pair_style deepmd writes the same without devi_e.
MAX_DEVI_F_COLUMN = 4
MIN_DEVI_COLUMNS = 7


@dataclass
class ExploredTrajectory:
    name: str
    family: str
    temperature: float | None
    stop_reason: str | None
    stop_step: int | None
    frames: list[Atoms]
    steps: np.ndarray  # (n_frames,) int
    max_devi_f: np.ndarray  # (n_frames,) eV/A


def read_model_devi(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, max_devi_f)`` from a deepmd (8 columns) or LAMMPS (7 columns) model-deviation file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is missing; the exploration must write one model-deviation row per recorded frame")
    column = MAX_DEVI_F_COLUMN
    for line in path.read_text().splitlines():  # a header, if any, names the column
        names = line.lstrip("#").split()
        if line.startswith("#") and "max_devi_f" in names:
            column = names.index("max_devi_f")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data" for a trajectory with no frames
            table = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise UserError(f"{path} is not a numeric model-deviation table ({exc}); rewrite it with write_model_devi_out") from exc
    if table.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if table.shape[1] < max(MIN_DEVI_COLUMNS, column + 1):
        raise UserError(
            f"{path} has {table.shape[1]} columns; expected 7 (LAMMPS) or 8 (deepmd): "
            "step, max/min/avg devi_v, max/min/avg devi_f[, devi_e]"
        )
    return table[:, 0].astype(np.int64), table[:, column].astype(float)


def _load_trajectory(explore_dir: Path, entry: TrajectoryResult, report_warnings: list[str]) -> ExploredTrajectory:
    folder = explore_dir / entry.dir
    frames_path = folder / FRAMES
    steps, max_devi_f = read_model_devi(folder / MODEL_DEVI)
    if frames_path.is_file():
        frames = ase.io.read(frames_path, index=":", format="extxyz")
    elif steps.size == 0:
        frames = []
    else:
        raise UserError(f"{frames_path} is missing but {folder / MODEL_DEVI} lists {steps.size} frames; rerun the explore step")
    if len(frames) != steps.size:
        raise UserError(
            f"{frames_path} has {len(frames)} frames but {folder / MODEL_DEVI} has {steps.size} rows; "
            "both must list the same recorded frames"
        )
    expected = entry.n_frames
    if expected is not None and expected != len(frames):
        raise UserError(f"{explore_dir / SUMMARY} says {entry.dir} has n_frames={expected} "
                        f"but {frames_path} has {len(frames)}")
    info_steps = [atoms.info.get("step") for atoms in frames]
    if frames and all(step is not None for step in info_steps) and not np.array_equal(np.asarray(info_steps), steps):
        raise UserError(
            f"{folder}: the step column of {MODEL_DEVI} disagrees with the 'step' info of {FRAMES}; the rows must follow the frames"
        )
    stop_reason, stop_step = entry.stop_reason, entry.stop_step
    if stop_reason and stop_step is None and steps.size:
        stop_step = int(steps[-1])  # no step given (an older summary): the last recorded frame is the closest to the failure
        report_warnings.append(f"{entry.dir}: stop reason {stop_reason!r} names no step; its last frame counts as failed")
    return ExploredTrajectory(
        name=entry.dir,
        family=str(entry.family),
        temperature=entry.temperature,
        stop_reason=stop_reason,
        stop_step=stop_step,
        frames=frames,
        steps=steps,
        max_devi_f=max_devi_f,
    )


def _geometry(trajectory: ExploredTrajectory, report_warnings: list[str]) -> TrajectoryGeometry:
    frames = trajectory.frames
    if len({tuple(atoms.numbers) for atoms in frames}) > 1:  # breaks the contract; frames then are never compared
        report_warnings.append(f"{trajectory.name}: frames hold different atoms; its near-duplicates are not skipped")
        frames = []
    if not frames:
        n_frames = len(trajectory.frames)
        return TrajectoryGeometry(np.zeros((n_frames, 0, 3)), np.zeros((n_frames, 3, 3)), np.zeros(3, bool))
    return TrajectoryGeometry(
        positions=np.stack([atoms.positions for atoms in frames]),
        cells=np.stack([atoms.cell.array for atoms in frames]),
        pbc=np.asarray(frames[0].pbc, dtype=bool),
    )


def resolve_trust_levels(settings: SelectionSettings, calibration: Calibration | None,
                         teacher_record: tuple[np.ndarray, np.ndarray] | None = None) -> TrustLevels:
    """The levels from the config, a calibration, or the defaults; ``trust_hi: teacher`` from
    ``teacher_record`` (deviation and failed flag of every frame labeled so far), None (no upper cut)
    while the teacher has not failed."""
    notes = []
    if not settings.auto:
        derived, source = (None, None), "config"
    elif calibration is None:
        derived = default_trust_levels(settings.target_force_error, settings.trust_hi_factor)
        source = "default"
        notes.append(
            "no calibration yet: auto levels take the deviation as the force error "
            "(trust_lo = target_force_error, trust_hi = trust_hi_factor x target_force_error)"
        )
    else:
        derived = (calibration.trust_lo, calibration.trust_hi)
        if not all(isinstance(level, (int, float)) and math.isfinite(level) and level > 0 for level in derived):
            raise UserError(
                f"the calibration has no positive trust_lo/trust_hi (got {derived}); "
                "pass the Calibration returned by lfpo_al.selection.calibrate"
            )
        source = "calibration"
        if calibration.fallback:
            notes.append(f"calibration fell back: {calibration.fallback}")
    trust_lo = derived[0] if settings.trust_lo == AUTO else float(settings.trust_lo)
    if settings.trust_hi == TEACHER:
        deviation, failed = teacher_record if teacher_record is not None else (np.zeros(0), np.zeros(0, dtype=bool))
        trust_hi = teacher_failure_level(deviation, failed)
        notes.append(f"trust_hi from the teacher: {int(np.sum(failed))} of {len(failed)} labeled frames failed"
                     + ("; no upper cut" if math.isinf(trust_hi) else ""))
    else:
        trust_hi = derived[1] if settings.trust_hi == AUTO else float(settings.trust_hi)
    if not trust_lo < trust_hi:
        raise UserError(
            f"trust_lo={trust_lo:.4g} is not below trust_hi={trust_hi:.4g} eV/A once auto levels are filled in; "
            "set both selection.trust_lo and selection.trust_hi to auto, or widen the fixed one"
        )
    return TrustLevels(trust_lo=float(trust_lo), trust_hi=float(trust_hi) if math.isfinite(trust_hi) else None,
                       source=source, note="; ".join(notes) or None)


def _counts(category: np.ndarray, selected: np.ndarray) -> dict[str, int]:
    return {"n_total": int(category.size), **category_counts(category), "n_selected": int(selected.sum())}


def _choose(pool: FramePool, frames: list[Atoms], eligible: np.ndarray, settings: SelectionSettings,
            models: list | None, system, scores: EnsembleScores | None) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Chosen pool indices, near-duplicates skipped, and the valence disagreement per frame (NaN where
    not computed; None without ``priority: valence``)."""
    priority, valence = None, None
    if settings.needs_models and eligible.any():
        index = np.flatnonzero(eligible)
        if scores is not None:
            scores = EnsembleScores(scores.max_devi_f[index], scores.valence_disagreement[index],
                                    None if scores.descriptors is None else scores.descriptors[index])
        elif not models or system is None:
            raise UserError(f"selection.priority={settings.priority} / selection.diversity={settings.diversity} "
                            "score candidates with the ensemble: pass its models and the system to select_step")
        else:
            scores = score_frames(models, [frames[i] for i in index], system.metal, system.oxygen,
                                  descriptors=settings.diversity == "descriptor")
        if settings.priority == "valence":
            valence = np.full(eligible.size, np.nan)
            valence[index] = scores.valence_disagreement
            priority = np.where(eligible, valence, -np.inf)
        if settings.diversity == "descriptor":
            ranking = (priority if priority is not None else pool.max_devi_f)[index]
            order = farthest_point_order(scores.descriptors, ranking, settings.max_selected)
            return index[order], 0, valence
    chosen, n_near_duplicates = choose_candidates(pool, eligible, settings.max_selected, settings.min_frame_distance,
                                                  priority=priority)
    return chosen, n_near_duplicates, valence


def select_step(
    explore_dir: str | Path, out_dir: str | Path, settings: SelectionSettings,
    calibration: Calibration | None = None, *, exploration: ExplorationResult | None = None, models: list | None = None, system=None,
    teacher_record: tuple[np.ndarray, np.ndarray] | None = None, scores: EnsembleScores | None = None,
) -> SelectionReport:
    """Classify every explored frame, choose the candidates to label, write them and ``report.json``;
    returns the report (see :class:`SelectionReport`).

    ``explore_dir`` holds the trajectories; ``exploration`` is its summary, read from ``explore_dir``'s
    ``summary.json`` when not given. ``calibration`` sets the auto levels (kept in the report as a dict).
    ``models`` (the ensemble that explored) and ``system`` are needed by ``priority: valence`` and
    ``diversity: descriptor``, which evaluate the candidates; ``scores`` (:class:`EnsembleScores` of
    every frame, in summary order) replaces that evaluation where it was done already. ``teacher_record``
    (deviation, failed) of the frames labeled so far sets ``trust_hi: teacher``.
    """
    explore_dir, out_dir = Path(explore_dir), Path(out_dir)
    report_warnings: list[str] = []
    trust = resolve_trust_levels(settings, calibration, teacher_record)
    if exploration is None:
        exploration = ExplorationResult.read(explore_dir)
    trajectories = [_load_trajectory(explore_dir, entry, report_warnings) for entry in exploration.trajectories]

    sizes = [len(t.frames) for t in trajectories]
    pool = FramePool(
        max_devi_f=np.concatenate([t.max_devi_f for t in trajectories] or [np.zeros(0)]),
        family=np.asarray([t.family for t, size in zip(trajectories, sizes) for _ in range(size)], dtype=str),
        trajectory=np.repeat(np.arange(len(trajectories)), sizes).astype(np.int64),
        frame=np.concatenate([np.arange(size) for size in sizes] or [np.zeros(0)]).astype(np.int64),
        geometries=[_geometry(t, report_warnings) for t in trajectories],
    )
    after_stop = np.concatenate([frames_after_stop(t.steps, t.stop_step) for t in trajectories] or [np.zeros(0, bool)])
    category = classify_frames(pool.max_devi_f, trust.trust_lo, trust.upper_cut, after_stop)
    all_frames = [atoms for t in trajectories for atoms in t.frames]
    chosen, n_near_duplicates, valence = _choose(pool, all_frames, category == CANDIDATE, settings, models, system, scores)
    selected = np.zeros(category.size, dtype=bool)
    selected[chosen] = True

    out_dir.mkdir(parents=True, exist_ok=True)
    chosen_frames, selected_entries = [], []
    for index in chosen:
        trajectory = trajectories[pool.trajectory[index]]
        frame = int(pool.frame[index])
        atoms = trajectory.frames[frame].copy()  # copy() drops the explorer's calculator results
        atoms.info.update(source=f"{trajectory.name}:frame {frame}", max_devi_f=float(pool.max_devi_f[index]))
        chosen_frames.append(atoms)
        entry = dict(zip(SELECTED_COLUMNS, (atoms.info["source"], trajectory.family, trajectory.temperature,
                                            int(trajectory.steps[frame]), float(pool.max_devi_f[index]))))
        if valence is not None:
            entry[VALENCE_COLUMN] = float(valence[index])
        selected_entries.append(entry)
    atomic.write_extxyz(out_dir / SELECTED, chosen_frames)

    failed = category == FAILED
    non_finite = failed & ~after_stop & ~np.isfinite(pool.max_devi_f)
    n_total = int(category.size)
    totals = _counts(category, selected)
    if n_total == 0:
        report_warnings.append(f"no recorded frames in {explore_dir}; nothing to select")
    starts = np.cumsum([0, *sizes])
    report = SelectionReport(
        explore_dir=str(explore_dir),
        selected_file=str(out_dir / SELECTED),
        **totals,
        **{f"{name}_ratio": totals[f"n_{name}"] / n_total if n_total else 0.0 for name in CATEGORY_NAMES},
        failed_breakdown={
            "after_stop": int(after_stop.sum()),
            "non_finite": int(non_finite.sum()),
            "above_trust_hi": int((failed & ~after_stop & ~non_finite).sum()),
        },
        n_near_duplicates_skipped=int(n_near_duplicates),
        trust_levels=trust,
        max_selected=settings.max_selected,
        priority=settings.priority,
        diversity=settings.diversity,
        min_frame_distance=settings.min_frame_distance,
        families={
            family: _counts(category[pool.family == family], selected[pool.family == family])
            for family in sorted({t.family for t in trajectories})
        },
        trajectories=[
            {
                "dir": t.name,
                "family": t.family,
                "temperature": t.temperature,
                "stop_reason": t.stop_reason,
                "stop_step": t.stop_step,
                **_counts(category[start:stop], selected[start:stop]),
            }
            for t, start, stop in zip(trajectories, starts[:-1], starts[1:])
        ],
        stop_reasons={t.name: t.stop_reason for t in trajectories if t.stop_reason},
        selected=selected_entries,
        calibration=None if calibration is None else asdict(calibration),
        warnings=report_warnings,
    )
    report.write(out_dir)  # report.json appears only complete
    return report
