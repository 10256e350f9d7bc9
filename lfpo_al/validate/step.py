"""The validate step: test-set errors per composition, deviation against error, polaron geometry.

It measures; judging what the deviation means (calibration, trust levels) is the selection's: the loop
hands ``Validation.deviation`` and ``force_error`` to ``lfpo_al.selection.calibration`` and records the
result with ``Validation.record``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from ase import Atoms

from lfpo_al import atomic
from lfpo_al.selection.calibration import Calibration
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import metal_valences
from lfpo_al.validate.dynamics import compare_trajectories, summarise
from lfpo_al.validate.equivalence import Tolerances
from lfpo_al.validate.geometry import TEACHER_VALENCE, compare_geometry, relax_all, second_process
from lfpo_al.validate.md import DynamicsCase, run_cases
from lfpo_al.validate.metrics import error_table, load_systems, predict
from lfpo_al.validate.plots import bond_parity_plot, dynamics_plot, parity_plot
from lfpo_al.validate.settings import ValidateSettings

log = logging.getLogger(__name__)
DYNAMICS_DIR = "dynamics"
CALIBRATION_KEY = "calibration"  # metrics.json's entry of the calibration, as ValidateOutcome's field  # member 0's held-out MD, inside the validate folder


def deviation_and_error(predictions) -> tuple[np.ndarray, np.ndarray]:
    if not predictions:
        return np.array([]), np.array([])
    return (np.concatenate([p.max_force_deviation() for p in predictions]),
            np.concatenate([p.max_force_error() for p in predictions]))


@dataclass
class Validation:
    """What the validate step measured, before its calibration is recorded.

    metrics: ``metrics.json`` but for its ``calibration`` entry.
    deviation, force_error: per-frame max force deviation of the members and max atomic force error of
        member 0 (eV/A): the test frames, then this iteration's new labels.
    """

    metrics: dict
    deviation: np.ndarray
    force_error: np.ndarray
    n_test_frames: int
    out_dir: Path

    def record(self, calibration: Calibration) -> dict:
        """Add the calibration of ``deviation`` against ``force_error`` (its frame counts filled in); write
        ``metrics.json``; return it."""
        calibration.n_test_frames = self.n_test_frames
        calibration.n_new_frames = int(len(self.deviation) - self.n_test_frames)
        metrics = {**self.metrics, CALIBRATION_KEY: asdict(calibration)}
        atomic.write_text(self.out_dir / "metrics.json", json.dumps(metrics, indent=2))
        return metrics


def recorded_calibration(metrics_path: Path) -> Calibration | None:
    """The calibration a validate step recorded in its ``metrics.json``; None where unreadable or absent."""
    try:
        metrics = json.loads(Path(metrics_path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return Calibration.from_record(metrics.get(CALIBRATION_KEY)) if isinstance(metrics, dict) else None


def validate_step(
    models: list[Path],
    test_dirs: list[Path],
    polaron_starts: list[Atoms],
    teacher_relaxed: list[Atoms],
    system: OlivineSystem,
    settings: ValidateSettings,
    out_dir: Path,
    new_label_dirs: list[Path] = (),
    dynamics_cases: list[DynamicsCase] = (),
) -> Validation:
    """Evaluate the ensemble; write the plots and ``deviation_vs_error.txt`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from deepmd.calculator import DP

    # member 0 relaxes the polaron starts, then runs the held-out MD, in a second process while the test
    # set is scored
    member0 = partial(DP, model=str(models[0]))
    runs = [case.single(i) for case in dynamics_cases for i in range(len(case.protocols))]
    with second_process(max(1, min(1 + len(runs), os.cpu_count() or 1))) as pool:
        relaxing = pool.submit(relax_all, member0, polaron_starts, settings.relax_fmax, settings.relax_steps)
        running = [pool.submit(run_cases, member0, [run], partial(DynamicsCase.model_paths, out_dir=out_dir / DYNAMICS_DIR))
                   for run in runs]
        metrics, deviation, error, n_test = _score(models, test_dirs, new_label_dirs, out_dir)
        relaxed = relaxing.result()
        for future in running:
            future.result()
    if dynamics_cases:
        metrics.update(compare_dynamics(dynamics_cases, system, settings, out_dir))
    atomic.write_extxyz(out_dir / "relaxed_model.extxyz", relaxed)
    geometry = compare_geometry(relaxed, teacher_relaxed, system)
    metrics.update(geometry.overall())
    metrics["geometry_by_structure"] = geometry.structures
    relaxed_refs = [i for i, a in enumerate(teacher_relaxed) if TEACHER_VALENCE not in a.arrays]
    if relaxed_refs:  # references from moments have no bonds to compare
        bonds_model = np.concatenate([metal_valences(relaxed[i], system)[0] for i in relaxed_refs])
        bonds_teacher = np.concatenate([metal_valences(teacher_relaxed[i], system)[0] for i in relaxed_refs])
        bond_parity_plot(bonds_model, bonds_teacher, system.valence.bond_threshold, out_dir / "bond_parity.png")

    return Validation(metrics, deviation, error, n_test, out_dir)


def compare_dynamics_cases(cases: list[DynamicsCase], system: OlivineSystem, smoothing_fs: float,
                           model_dir: Path, targets: Tolerances | None = None) -> tuple[dict, list]:
    """Per case, the model's runs (in ``model_dir``) against the teacher's: metrics by case name, and
    (name, metrics, model side, teacher side) for the figure."""
    from lfpo_al.analysis.trajectory import load_trajectory

    per_case, compared = {}, []
    for case in cases:
        read = lambda paths: [load_trajectory(p, system, key="validate.dynamics") for p in paths]  # noqa: E731
        metrics, model, teacher = compare_trajectories(read(case.model_paths(model_dir)), read(case.teacher_paths),
                                                       system, smoothing_fs, targets)
        per_case[case.name] = metrics
        compared.append((case.name, metrics, model, teacher))
    return per_case, compared


def compare_dynamics(cases: list[DynamicsCase], system: OlivineSystem, settings: ValidateSettings, out_dir: Path) -> dict:
    """Model against teacher per case (``dynamics``), their worst (``dynamics_summary``), ``dynamics.png``."""
    per_case, compared = compare_dynamics_cases(cases, system, settings.dynamics.smoothing_fs, out_dir / DYNAMICS_DIR,
                                                settings.targets())
    dynamics_plot(compared, system.valence.oxidised, out_dir / "dynamics.png")
    summary = summarise(per_case)
    log.info("validate dynamics: W1 %s A (teacher seeds %s), M3+ population error %s, flip rate ratio %s; verdicts %s",
             summary.wasserstein_ang, summary.wasserstein_teacher_seeds_ang, summary.m3_population_rel_error,
             summary.flip_rate_ratio, summary.verdicts)
    return {"dynamics": per_case, "dynamics_summary": asdict(summary)}


def _score(models: list[Path], test_dirs: list[Path], new_label_dirs,
           out_dir: Path) -> tuple[dict, np.ndarray, np.ndarray, int]:
    """Test-set errors (overall, per composition, per member), parity plot; deviation and error per frame
    of the test set and then of the new labels, and the number of test frames."""
    from deepmd.infer import DeepPot

    members = [DeepPot(str(m)) for m in models]
    test = predict(members, load_systems(test_dirs))
    metrics = asdict(error_table(test))
    metrics["force_rmse_per_member"] = [error_table(test, member=i).force_rmse_ev_per_ang for i in range(len(members))]
    parity_plot(test, out_dir / "parity.png", title="test set, member 0")

    new = predict(members, load_systems([d for d in new_label_dirs if Path(d).exists()]))
    dev_test, err_test = deviation_and_error(test)
    dev_new, err_new = deviation_and_error(new)
    deviation, error = np.concatenate([dev_test, dev_new]), np.concatenate([err_test, err_new])
    with atomic.atomic_path(out_dir / "deviation_vs_error.txt") as partial:
        np.savetxt(partial, np.column_stack([deviation, error]),
                   header="max_devi_f(eV/A) max_force_error(eV/A); test frames first, then this iteration's labels")
    return metrics, deviation, error, int(len(dev_test))
