"""The validate step: test-set errors per composition, calibration of deviation, polaron geometry."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import metal_valences
from lfpo_al.validate.geometry import TEACHER_VALENCE, compare_geometry, relax_all, second_process
from lfpo_al.validate.metrics import error_table, load_systems, predict
from lfpo_al.validate.plots import bond_parity_plot, parity_plot
from lfpo_al.validate.settings import ValidateSettings

log = logging.getLogger(__name__)


def deviation_and_error(predictions) -> tuple[np.ndarray, np.ndarray]:
    if not predictions:
        return np.array([]), np.array([])
    return (np.concatenate([p.max_force_deviation() for p in predictions]),
            np.concatenate([p.max_force_error() for p in predictions]))


def validate_step(
    models: list[Path],
    test_dirs: list[Path],
    polaron_starts: list[Atoms],
    teacher_relaxed: list[Atoms],
    system: OlivineSystem,
    settings: ValidateSettings,
    out_dir: Path,
    new_label_dirs: list[Path] = (),
    calibration_settings=None,
) -> dict:
    """Evaluate the ensemble; write ``metrics.json`` and plots in ``out_dir`` and return the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    from deepmd.calculator import DP

    # member 0 relaxes the polaron starts in a second process while the test set is scored
    with second_process() as pool:
        relaxing = pool.submit(relax_all, partial(DP, model=str(models[0])), polaron_starts, settings.relax_fmax,
                               settings.relax_steps)
        metrics = _score(models, test_dirs, new_label_dirs, calibration_settings, out_dir)
        relaxed = relaxing.result()
    ase.io.write(out_dir / "relaxed_model.extxyz", relaxed, format="extxyz")
    geometry = compare_geometry(relaxed, teacher_relaxed, system)
    metrics.update({k: geometry[k] for k in ("valence_agreement", "mean_mo_bond_error_ang", "max_mo_bond_error_ang")})
    metrics["geometry_by_structure"] = geometry["structures"]
    relaxed_refs = [i for i, a in enumerate(teacher_relaxed) if TEACHER_VALENCE not in a.arrays]
    if relaxed_refs:  # references from moments have no bonds to compare
        bonds_model = np.concatenate([metal_valences(relaxed[i], system)[0] for i in relaxed_refs])
        bonds_teacher = np.concatenate([metal_valences(teacher_relaxed[i], system)[0] for i in relaxed_refs])
        bond_parity_plot(bonds_model, bonds_teacher, system.valence.bond_threshold, out_dir / "bond_parity.png")

    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("validate: E %.2f meV/atom, F %.3f eV/A, valence agreement %.2f",
             metrics["energy_rmse_mev_per_atom"], metrics["force_rmse_ev_per_ang"], metrics["valence_agreement"])
    return metrics


def _score(models: list[Path], test_dirs: list[Path], new_label_dirs, calibration_settings, out_dir: Path) -> dict:
    """Test-set errors (overall, per composition, per member), parity plot, deviation-error calibration."""
    from deepmd.infer import DeepPot

    from lfpo_al.selection.calibration import calibrate

    members = [DeepPot(str(m)) for m in models]
    test = predict(members, load_systems(test_dirs))
    metrics = error_table(test)
    metrics["force_rmse_per_member"] = [error_table(test, member=i)["force_rmse_ev_per_ang"] for i in range(len(members))]
    parity_plot(test, out_dir / "parity.png", title="test set, member 0")

    new = predict(members, load_systems([d for d in new_label_dirs if Path(d).exists()]))
    dev_test, err_test = deviation_and_error(test)
    dev_new, err_new = deviation_and_error(new)
    deviation, error = np.concatenate([dev_test, dev_new]), np.concatenate([err_test, err_new])
    sel = calibration_settings
    calibration = calibrate(
        deviation, error, sel.target_force_error if sel else 0.15, out_png=out_dir / "calibration.png",
        **({"trust_hi_factor": sel.trust_hi_factor, "error_quantile": sel.error_quantile} if sel else {}),
    )
    calibration["n_test_frames"], calibration["n_new_frames"] = int(len(dev_test)), int(len(dev_new))
    metrics["calibration"] = calibration
    np.savetxt(out_dir / "deviation_vs_error.txt", np.column_stack([deviation, error]),
               header="max_devi_f(eV/A) max_force_error(eV/A); test frames first, then this iteration's labels")
    return metrics
