"""The GPAW task command's decisions (``lfpo_al.label.gpaw_task``), with a stand-in worker.

Only the MPI worker, the one part that runs GPAW, is replaced, by a script that hands over prepared
results, so that the decisions (failed.json, re-seeding, which result labels the frame) run for real.
Real GPAW runs are in ``test_label_gpaw.py``.
"""

import json

import numpy as np
import pytest

from lfpo_al.label import gpaw_task
from lfpo_al.label.frames import LABELED_FILE, read_labeled
from lfpo_al.label.gpaw import GpawLabeler


@pytest.fixture(scope="module")
def system(load_system):
    return load_system("lfpo")


def scf_result(n_atoms, seeding, converged=True, magmoms=None, free_energy=-190.0, iterations=40, density_error=2e-5):
    result = {"seeding": seeding, "converged": converged, "iterations": iterations, "density_error": density_error,
              "wall_s": 100.0, "gpaw_version": "test", "setup_path": "/setups", "stage_iterations": [iterations]}
    if converged:
        result.update(energy=free_energy + 0.001, free_energy=free_energy, magmoms=list(magmoms),
                      forces=np.zeros((n_atoms, 3)).tolist(), stress=[0.01, 0.02, 0.03, 0.0, 0.0, 0.0])
    return result


@pytest.fixture
def task_dir(system, unit_cells, tmp_path, monkeypatch):
    """A task folder of the Li0.75FePO4 frame, entered; ``run(results, policy)`` runs the task command."""
    folder = tmp_path / "task"
    folder.mkdir()
    canned = tmp_path / "canned"
    canned.mkdir()
    worker = tmp_path / "worker.sh"  # called as: worker -m lfpo_al.label.gpaw_task --scf SEEDING --ranks N
    worker.write_text(f'echo "$4" >> {tmp_path}/calls.txt\ncp {canned}/scf."$4".json . 2>/dev/null\nexit 0\n')
    monkeypatch.chdir(folder)
    delithiated = unit_cells[1]
    valence = delithiated.arrays["valence"]
    fe3, fe2 = int(np.flatnonzero(valence == 3)[0]), int(np.flatnonzero(valence == 2)[0])

    def moments(hole_on):
        out = np.where(valence > 0, 3.7, 0.02)
        out[hole_on] = 4.3
        return out

    def run(results, policy="relabel"):
        GpawLabeler(mismatch_policy=policy).write_inputs(delithiated, folder, system)
        for result in results:
            (canned / f"scf.{result['seeding']}.json").write_text(json.dumps(result))
        status = gpaw_task.main(["--worker", f"sh {worker}", "--ranks", "2"])
        calls = (tmp_path / "calls.txt").read_text().split() if (tmp_path / "calls.txt").exists() else []
        return status, calls

    return {"dir": folder, "run": run, "n": len(delithiated), "right": moments(fe3), "wrong": moments(fe2)}


def test_unconverged_scf_writes_failed_json_not_a_label(task_dir):
    n = task_dir["n"]
    status, calls = task_dir["run"]([scf_result(n, "frame", converged=False, iterations=300, density_error=3.1e-3)],
                                    policy="keep")
    assert status == 0 and calls == ["frame"]
    reason = json.loads((task_dir["dir"] / "failed.json").read_text())["reason"]
    assert reason == "gpaw: SCF not converged within maxiter (seeding frame: 300 iterations, last density change 3.10e-03)"
    assert not (task_dir["dir"] / LABELED_FILE).exists()


def test_mismatch_is_relabeled_from_contracted_octahedra(task_dir):
    n = task_dir["n"]
    status, calls = task_dir["run"]([scf_result(n, "frame", magmoms=task_dir["wrong"], free_energy=-190.5),
                                     scf_result(n, "contracted", magmoms=task_dir["right"], free_energy=-190.2)])
    assert status == 0 and calls == ["frame", "contracted"]
    labeled = read_labeled(task_dir["dir"] / LABELED_FILE)
    assert labeled.info["seeding"] == "contracted" and labeled.info["scf_attempts"] == 2
    assert labeled.info["valence_match"] is True and labeled.get_potential_energy() == pytest.approx(-190.2)
    np.testing.assert_allclose(labeled.arrays["magmoms"], task_dir["right"])
    np.testing.assert_allclose(labeled.get_stress(), [0.01, 0.02, 0.03, 0, 0, 0])


def test_matching_moments_need_one_seeding(task_dir):
    status, calls = task_dir["run"]([scf_result(task_dir["n"], "frame", magmoms=task_dir["right"])])
    assert status == 0 and calls == ["frame"]
    labeled = read_labeled(task_dir["dir"] / LABELED_FILE)
    assert labeled.info["seeding"] == "frame" and labeled.info["scf_attempts"] == 1 and labeled.info["valence_match"]


def test_persistent_mismatch_is_labeled_with_the_lower_energy_and_recorded(task_dir):
    n = task_dir["n"]
    status, calls = task_dir["run"]([scf_result(n, "frame", magmoms=task_dir["wrong"], free_energy=-190.5),
                                     scf_result(n, "contracted", magmoms=task_dir["wrong"], free_energy=-190.1)])
    assert status == 0 and calls == ["frame", "contracted"]
    labeled = read_labeled(task_dir["dir"] / LABELED_FILE)
    assert labeled.info["valence_match"] is False and labeled.info["seeding"] == "frame"
    assert labeled.get_potential_energy() == pytest.approx(-190.5)


def test_keep_policy_does_not_reseed(task_dir):
    status, calls = task_dir["run"]([scf_result(task_dir["n"], "frame", magmoms=task_dir["wrong"])], policy="keep")
    assert status == 0 and calls == ["frame"]
    assert read_labeled(task_dir["dir"] / LABELED_FILE).info["valence_match"] is False


def test_unconverged_frame_seeding_is_reseeded_under_relabel(task_dir):
    n = task_dir["n"]
    status, calls = task_dir["run"]([scf_result(n, "frame", converged=False, iterations=300, density_error=None),
                                     scf_result(n, "contracted", converged=False, iterations=300, density_error=1e-3)])
    assert status == 0 and calls == ["frame", "contracted"]
    reason = json.loads((task_dir["dir"] / "failed.json").read_text())["reason"]
    assert "seeding frame: 300 iterations, last density change n/a" in reason
    assert "seeding contracted: 300 iterations, last density change 1.00e-03" in reason


def test_worker_without_result_is_a_retry_not_a_failure(task_dir):
    status, calls = task_dir["run"]([])
    assert status != 0 and calls == ["frame"]
    assert not (task_dir["dir"] / "failed.json").exists() and not (task_dir["dir"] / LABELED_FILE).exists()


def test_decided_folder_is_left_alone(task_dir):
    task_dir["run"]([scf_result(task_dir["n"], "frame", magmoms=task_dir["right"])])
    before = (task_dir["dir"] / LABELED_FILE).stat().st_mtime_ns
    status, calls = task_dir["run"]([])
    assert status == 0 and calls == ["frame"] and (task_dir["dir"] / LABELED_FILE).stat().st_mtime_ns == before


def test_contracted_seed_shortens_the_intended_bonds_only(system, unit_cells):
    from lfpo_al.structures import mean_bond_lengths

    frame = unit_cells[1].copy()
    frame.positions += np.random.default_rng(0).normal(0, 0.05, frame.positions.shape)  # an MD-like frame
    task = {"metal": "Fe", "oxygen": "O", "oxidised": 3, "oxidised_bond_length": 2.06,
            "initial_magmom": {"2": 4.0, "3": 5.0}}
    seeded = gpaw_task.contracted_copy(frame, task)
    symbols = np.array(frame.get_chemical_symbols())
    metal, oxygen = np.flatnonzero(symbols == "Fe"), np.flatnonzero(symbols == "O")
    bonds = mean_bond_lengths(seeded.positions, seeded.cell, metal, oxygen)
    fe3 = frame.arrays["valence"][metal] == 3
    assert bonds[fe3] == pytest.approx([2.06], abs=2e-3)
    np.testing.assert_array_equal(seeded.get_initial_magnetic_moments(), frame.get_initial_magnetic_moments())
    moved = np.linalg.norm(seeded.positions - frame.positions, axis=1) > 1e-9
    assert set(symbols[moved]) == {"O"}


