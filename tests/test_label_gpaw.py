"""The GPAW labeler: inputs and command without DFT; then real GPAW (tests marked ``dft``), ending with a
real PBE+U label through the driver. The task command's decisions are in ``test_gpaw_task.py``.
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import dpdata
import numpy as np
import pytest
from ase import Atoms

from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.errors import UserError
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, read_labeled
from lfpo_al.label.driver import label_frames
from lfpo_al.label.gpaw import PARAMETERS_FILE, GpawLabeler, hubbard_setups, mpi_launcher
from lfpo_al.label.profile import ProgramProfile
from lfpo_al.structures import BuildSpec, build_structure


@pytest.fixture(scope="module")
def system(load_system):
    return load_system("lfpo")


# --- inputs -------------------------------------------------------------------------------------------

def test_config_instantiates_with_converged_defaults(system):
    labeler = instantiate_group(compose_config(["label=gpaw"]), "label")
    assert isinstance(labeler, GpawLabeler) and labeler.supports_relabel and labeler.mismatch_policy == "relabel"
    assert labeler.hubbard_u == system.hubbard_u and labeler.cores_per_task == 2
    params = labeler.gpaw_parameters()
    assert params["mode"] == {"name": "pw", "ecut": 800} and params["spinpol"] is True
    assert params["occupations"] == {"name": "fermi-dirac", "width": 0.05} and params["maxiter"] == 300
    assert labeler.core_seconds_per_atom > 0


def test_kpoint_mesh_from_spacing(system, unit_cells):
    labeler = GpawLabeler()
    full, delithiated = unit_cells
    assert labeler.frame_parameters(full, system.hubbard_u)["kpts"] == {"size": [1, 2, 2]}
    assert labeler.frame_parameters(delithiated, system.hubbard_u)["kpts"] == {"size": [1, 2, 2]}
    supercell = build_structure(system, BuildSpec(supercell=[1, 2, 2], x=0.5, seed=0))
    assert labeler.frame_parameters(supercell, system.hubbard_u)["kpts"] == {"size": [1, 1, 1]}
    heterosite = build_structure(system, BuildSpec(supercell=[2, 1, 1], x=0.5, li_order="interface_a"))
    assert labeler.frame_parameters(heterosite, system.hubbard_u)["kpts"] == {"size": [1, 2, 2]}


def test_hubbard_u_becomes_gpaw_setups(system, unit_cells):
    assert hubbard_setups({"Fe": 5.3}, ["Li", "Fe", "O"]) == {"Fe": ":d,5.3"}
    assert hubbard_setups({"Fe": 5.3, "Mn": 3.9}, ["Li", "Mn"]) == {"Mn": ":d,3.9"}  # only elements present
    assert hubbard_setups({"Fe": 0.0}, ["Fe"]) == {}
    assert GpawLabeler().frame_parameters(unit_cells[0], system.hubbard_u)["setups"] == {"Fe": ":d,5.3"}
    with pytest.raises(UserError, match=r"system.hubbard_u.Fe=-1.0 must be >= 0"):
        hubbard_setups({"Fe": -1.0}, ["Fe"])


def test_task_folder_carries_moments_valences_and_parameters(system, unit_cells, tmp_path):
    labeler = GpawLabeler()
    delithiated = unit_cells[1]
    labeler.write_inputs(delithiated, tmp_path, system)
    frame = ase.io.read(tmp_path / FRAME_FILE)
    np.testing.assert_array_equal(frame.get_initial_magnetic_moments(), delithiated.get_initial_magnetic_moments())
    np.testing.assert_array_equal(frame.arrays["valence"], delithiated.arrays["valence"])
    fe3 = int(np.flatnonzero(frame.arrays["valence"] == 3)[0])
    assert frame.get_initial_magnetic_moments()[fe3] == system.valence.initial_magmom[3]
    assert sorted(np.abs(frame.get_initial_magnetic_moments()[frame.arrays["valence"] == 2])) == [4.0, 4.0, 4.0]
    task = json.loads((tmp_path / PARAMETERS_FILE).read_text())
    assert task["gpaw"]["setups"] == {"Fe": ":d,5.3"} and task["gpaw"]["kpts"] == {"size": [1, 2, 2]}
    assert task["expected_magmom"] == {"2": 3.7, "3": 4.3} and task["mismatch_policy"] == "relabel"
    assert task["oxidised_bond_length"] == system.valence.bond_length[3] and task["metal"] == "Fe"


def test_initial_moments_fall_back_to_the_valence(system, unit_cells, tmp_path):
    unseeded = unit_cells[1].copy()
    unseeded.set_initial_magnetic_moments(None)  # an explored frame that lost its seeded moments
    GpawLabeler().write_inputs(unseeded, tmp_path, system)
    moments = ase.io.read(tmp_path / FRAME_FILE).get_initial_magnetic_moments()
    valence = unseeded.arrays["valence"]
    np.testing.assert_array_equal(moments[valence == 3], [5.0])
    np.testing.assert_array_equal(moments[valence == 2], [4.0, 4.0, 4.0])
    assert np.all(moments[valence == 0] == 0)


def test_command_runs_gpaw_under_mpi_with_the_setups(tmp_path):
    (tmp_path / "Fe.PBE.gz").write_bytes(b"")
    command = located(GpawLabeler(cores_per_task=4), data_dir=str(tmp_path)).command()
    assert command.startswith(f"GPAW_SETUP_PATH={tmp_path} ")
    assert "-m lfpo_al.label.gpaw_task" in command and "--ranks 4" in command
    assert "mpirun -np 4" in command and "-m gpaw python" in command
    # the MPI environment is the machine profile's, not the labeler's
    assert "OMPI_ALLOW_RUN_AS_ROOT" not in command
    assert instantiate_group(compose_config([]), "machine").envs["OMPI_ALLOW_RUN_AS_ROOT"] == "1"
    assert f"{Path(sys.executable).parent}/mpirun" not in command
    serial = located(GpawLabeler(), command="", data_dir=str(tmp_path)).command()
    assert "mpirun" not in serial and "--ranks 1" in serial


def located(labeler, **profile):
    """``labeler`` run with this profile (``machine.programs.gpaw``) instead of the default one."""
    labeler.profile = ProgramProfile(**{"command": labeler.default_launcher, **profile}, key="machine.programs.gpaw")
    return labeler


def test_mpi_launcher_skips_this_environments_own_mpirun(tmp_path, monkeypatch):
    env_bin, system_bin = Path(sys.executable).parent, tmp_path / "bin"
    system_bin.mkdir()
    (system_bin / "mpirun").write_text("#!/bin/sh\n")
    (system_bin / "mpirun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{env_bin}{os.pathsep}{system_bin}")
    assert mpi_launcher("A=1 mpirun -np 2 -x $B") == f"A=1 {system_bin}/mpirun -np 2 -x $B"
    assert mpi_launcher("srun -n 2") == "srun -n 2"  # other launchers are left as they are
    monkeypatch.setenv("PATH", str(env_bin))
    assert mpi_launcher("mpirun -np 2") == "mpirun -np 2"  # nothing else found: left to the shell


def test_setup_folder_must_hold_the_elements(system, unit_cells, tmp_path):
    (tmp_path / "Fe.PBE.gz").write_bytes(b"")
    labeler = located(GpawLabeler(), data_dir=str(tmp_path))
    assert labeler.setup_folder(["Fe"]) == tmp_path
    with pytest.raises(UserError, match=r"lacks Li\.PBE, O\.PBE, P\.PBE"):
        labeler.write_inputs(unit_cells[0], tmp_path, system)
    with pytest.raises(UserError, match=r"no GPAW PAW setup folder found.*machine.programs.gpaw.data_dir"):
        located(GpawLabeler(), data_dir=str(tmp_path / "absent")).command()


@pytest.mark.parametrize("fields,message", [
    ({"kpoint_spacing": 0}, r"label.kpoint_spacing=0 must be positive"),
    ({"ecut": -1}, r"label.ecut=-1 must be a positive plane-wave cutoff"),
    ({"maxiter": 2.5}, r"label.maxiter=2.5 must be a positive integer"),
    ({"parameters_file": "gpaw/absent.yaml"}, r"label.parameters_file=gpaw/absent.yaml: no file"),
    ({"parameters": {"kpts": [2, 2, 2]}}, r"set \['kpts'\]: the labeler sets those per frame"),
    ({"parameters": {"mode": "lcao"}}, r"mode must be \{name: pw"),
    ({"parameters": {"spinpol": False}}, r"spinpol must be true"),
    ({"mismatch_policy": "sometimes"}, r"label.mismatch_policy='sometimes' is unknown"),
])
def test_bad_config_is_refused_in_one_line(fields, message):
    with pytest.raises(UserError, match=message):
        GpawLabeler(**fields)


def test_in_process_calculator_needs_u():
    with pytest.raises(UserError, match="needs U"):
        GpawLabeler().ase_calculator()


# --- real GPAW ------------------------------------------------------------------------------------------

def gpaw_missing() -> str | None:
    """Why GPAW cannot run here, or None."""
    try:
        import gpaw  # noqa: F401
    except ImportError:
        return "GPAW is not installed (pip install -e '.[dft]' after make system-deps)"
    if shutil.which("mpirun") is None:
        return "no mpirun on PATH (Debian: openmpi-bin)"
    try:
        GpawLabeler().setup_folder(["Li", "Fe", "P", "O"])
    except UserError as exc:
        return str(exc)
    return None


needs_gpaw = pytest.mark.skipif(gpaw_missing() is not None, reason=str(gpaw_missing()))
# the MPI runs share one test worker, so two of them never split the two cores between four ranks
pytestmark = pytest.mark.xdist_group("gpaw")


@pytest.fixture(scope="module")
def gpaw_works():
    """GPAW's MPI build must start: a build against other MPI headers than the library it links crashes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "gpaw", "info"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, f"`python -m gpaw info` failed (rc {run.returncode}): {run.stderr[-500:]}"


@pytest.mark.dft
@needs_gpaw
def test_real_gpaw_scf_at_maxiter_is_failed_by_both_seedings(gpaw_works, system, tmp_path):
    """A 2-atom FeO cell at a tiny cutoff and maxiter=3: GPAW really stops, the task records why."""
    cell = Atoms("FeO", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[2.5, 2.5, 2.5], pbc=True)
    cell.new_array("valence", np.array([3, 0]))
    labeler = GpawLabeler(ecut=300, maxiter=3, kpoint_spacing=2.0, mismatch_policy="relabel")
    labeler.write_inputs(cell, tmp_path, system)
    start = time.perf_counter()
    env = {**os.environ, **instantiate_group(compose_config([]), "machine").envs}  # as a job of the local machine
    run = subprocess.run(labeler.command(), shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env=env)
    print(f"two GPAW seedings (2 ranks, maxiter 3): {time.perf_counter() - start:.1f} s")
    assert run.returncode == 0, run.stderr[-2000:]
    reason = json.loads((tmp_path / "failed.json").read_text())["reason"]
    assert "seeding frame: 3 iterations" in reason and "seeding contracted: 3 iterations" in reason
    assert (tmp_path / "gpaw.frame.txt").is_file() and not (tmp_path / LABELED_FILE).exists()


@pytest.mark.dft
@needs_gpaw
def test_in_process_calculator_is_the_same_teacher(gpaw_works, system, tmp_path):
    """Rock-salt FeO (2 atoms, 300 eV): the task (serial) and ``ase_calculator`` give the same numbers."""
    cell = Atoms("FeO", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], pbc=True,
                 cell=[[0, 2.165, 2.165], [2.165, 0, 2.165], [2.165, 2.165, 0]])
    cell.new_array("valence", np.array([2, 0]))
    labeler = located(GpawLabeler(ecut=300, kpoint_spacing=2.0, mismatch_policy="keep"), command="")
    labeler.write_inputs(cell, tmp_path, system)
    run = subprocess.run(labeler.command(), shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and (tmp_path / LABELED_FILE).is_file(), run.stderr[-2000:]
    labeled = read_labeled(tmp_path / LABELED_FILE)
    atoms = ase.io.read(tmp_path / FRAME_FILE)  # with the start moments the task used
    atoms.calc = labeler.ase_calculator(system, atoms)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(labeled.get_potential_energy(), abs=1e-3)
    np.testing.assert_allclose(atoms.get_stress(), labeled.get_stress(), atol=1e-4)
    np.testing.assert_allclose(atoms.calc.get_magnetic_moments(), labeled.arrays["magmoms"], atol=1e-2)
    assert abs(labeled.arrays["magmoms"][0]) > 3.0  # high-spin Fe2+


# The label test checks the pipeline and the polaron's moments, not the basis: at 600 eV and a density change
# of 1e-3 the same frame reaches the intended polaron in ~0.6 of the configured settings' time (docs/costs.md).
TEST_LABEL = ["label.ecut=600", "label.parameters={convergence: {energy: 0.0005, density: 0.001, eigenstates: 1.0e-6}}"]


@pytest.mark.dft
@pytest.mark.slow
@needs_gpaw
def test_real_pbe_u_label_of_a_delithiated_frame_through_the_driver(gpaw_works, system, unit_cells, tmp_path):
    """Li0.75FePO4 (one contracted Fe3+, three Fe2+) labeled by GPAW under mpirun through dpdispatcher's Shell
    machine with the configured PBE+U settings, at the test's cutoff and SCF tolerances (``TEST_LABEL``).
    One frame: its three Fe2+ check what LiFePO4's four did."""
    cfg = compose_config(["label=gpaw", *TEST_LABEL])
    labeler, machine = instantiate_group(cfg, "label"), instantiate_group(cfg, "machine")
    frame = unit_cells[1]
    start = time.perf_counter()
    report = label_frames([frame], labeler, machine, tmp_path / "03.label", system, progress=False)
    wall = time.perf_counter() - start
    assert report.n_labeled == 1 and report.n_failed == 0, report.failed
    atoms = read_labeled(tmp_path / "03.label" / "task.000000" / LABELED_FILE)
    valence = frame.arrays["valence"]
    fe = np.flatnonzero(valence > 0)
    print(f"{atoms.get_chemical_formula()}: E {atoms.get_potential_energy():.4f} eV, seeding {atoms.info['seeding']}, "
          f"{atoms.info['scf_iterations']} SCF iterations, {atoms.info['gpaw_wall_s']} s; Fe moments "
          f"{np.round(atoms.arrays['magmoms'][fe], 3).tolist()} (valence {valence[fe].tolist()}); max |F| "
          f"{np.abs(atoms.get_forces()).max():.3f} eV/A; stress {np.round(atoms.get_stress() / 0.0062415, 2).tolist()} GPa; "
          f"labeled in {wall:.0f} s (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

    n = len(atoms)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert math.isfinite(energy) and -9.0 < energy / n < -5.0  # GPAW: relative to its reference atoms
    assert np.abs(forces.sum(axis=0)).max() < 0.05  # no net force on a periodic cell
    assert 0.01 < np.abs(forces).max() < 5.0  # built cells are not relaxed, nor torn apart
    assert np.all(np.isfinite(stress)) and np.abs(stress).max() < 30 * 0.0062415  # below 30 GPa, in eV/A^3
    assert atoms.info["teacher"].startswith("gpaw-") and atoms.info["seeding"] in ("frame", "contracted")

    moments = np.abs(atoms.arrays["magmoms"])
    fe3 = np.flatnonzero(valence == 3)
    hole = fe[np.argmax(moments[fe])]
    # every Fe but the one holding the hole is high-spin Fe2+
    assert np.all(np.abs(moments[[i for i in fe if i != hole]] - 3.7) < 0.5), moments[fe]
    on_intended_site = hole == fe3[0]
    flagged = [m for m in report.mismatches if m["task"] == "task.000000"]
    assert on_intended_site or flagged, "the Fe3+ moment is elsewhere and the driver did not report it"
    assert on_intended_site == (not flagged)  # the driver's verdict and the moments agree

    # the label comes back through dpdata's deepmd/npy as the task wrote it
    assert report.data_dir is not None and sum(map(len, report.data_index.values())) == 1 - report.n_dropped
    if not report.n_dropped:
        (formula,) = report.data_index
        data = dpdata.LabeledSystem(str(Path(report.data_dir) / formula), fmt="deepmd/npy")
        assert data.get_nframes() == 1 and data["atom_names"] == system.type_map
        assert data["energies"][0] == pytest.approx(energy, abs=1e-6)
        np.testing.assert_allclose(data["forces"][0], forces, atol=1e-6)
        np.testing.assert_allclose(data["virials"][0], -atoms.get_volume() * atoms.get_stress(voigt=False), atol=1e-5)
