"""The labeling step: CHGNet through the shared driver and dpdispatcher's Shell machine, for real.

One module-scoped run labels seven tiny frames (1x1x1, x = 0.5, 26 atoms) covering the normal path,
a strained pair for the stress sign, a deliberately wrong valence, two failures (atoms on top of
each other; an unreadable input); the tests below inspect it, rerun it and re-collect it without
labeling again. Killed and resumed labeling runs: ``test_label_resume.py``.
"""

import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import dpdata
import numpy as np
import pytest

from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.dispatch import MachineSettings
from lfpo_al.errors import UserError
from lfpo_al.label.chgnet import ChgnetLabeler
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, read_labeled
from lfpo_al.label.checks import valence_from_moments, valence_mismatch
from lfpo_al.label.driver import TooManyFailures, label_frames, plan_round
from lfpo_al.label.tasks import exclusive
from lfpo_al.structures import BuildSpec, build_structure

STRAIN = 0.002


@dataclasses.dataclass
class GarbageInputLabeler(ChgnetLabeler):
    """A broken input writer: frames marked ``info['garbage']`` get an unreadable frame.extxyz."""

    def write_inputs(self, atoms, task_dir, system):
        if atoms.info.get("garbage"):
            (Path(task_dir) / FRAME_FILE).write_text("this is not an extxyz file\n")
        else:
            super().write_inputs(atoms, task_dir, system)


@dataclasses.dataclass
class CrashingLabeler(ChgnetLabeler):
    """A teacher that dies without deciding the task (as an out-of-memory kill would)."""

    def command(self):
        return f"{sys.executable} -c 'import sys; sys.exit(\"teacher ran out of memory\")'"


@dataclasses.dataclass
class OneAtATimeLabeler(ChgnetLabeler):
    supports_batch = False


def tiny_frame(system, seed):
    return build_structure(system, BuildSpec(supercell=[1, 1, 1], x=0.5, seed=seed))


def strained(atoms, eps):
    out = atoms.copy()
    out.set_cell(atoms.cell * (1 + eps), scale_atoms=True)
    return out


@pytest.fixture(scope="module")
def parts():
    cfg = compose_config([])
    return instantiate_group(cfg, "system"), instantiate_group(cfg, "machine"), instantiate_group(cfg, "label")


@pytest.fixture(scope="module")
def labeled_run(parts, tmp_path_factory):
    system, machine, labeler = parts
    base, other = tiny_frame(system, 0), tiny_frame(system, 1)
    swapped = other.copy()  # the hole put on an M2+ site: charge still balanced, valence wrong on 2 sites
    valence = swapped.arrays["valence"]
    swap_sites = [int(np.flatnonzero(valence == 3)[0]), int(np.flatnonzero(valence == 2)[0])]
    valence[swap_sites] = valence[swap_sites[::-1]]
    overlapping = base.copy()
    overlapping.positions[1] = overlapping.positions[0] + [0.1, 0.0, 0.0]
    garbage = other.copy()
    garbage.info["garbage"] = True
    frames = [base, other, strained(base, STRAIN), strained(base, -STRAIN), swapped, overlapping, garbage]
    work_dir = tmp_path_factory.mktemp("label") / "03.label"
    labeler = GarbageInputLabeler(**{f.name: getattr(labeler, f.name) for f in dataclasses.fields(labeler)})
    start = time.perf_counter()
    report = label_frames(frames, labeler, machine, work_dir, system, progress=False)
    wall = time.perf_counter() - start
    print(f"labeled {len(frames)} frames ({report.n_dispatched} dispatched) in {wall:.1f} s")
    return {"frames": frames, "report": report, "work_dir": work_dir, "labeler": labeler, "swap_sites": sorted(swap_sites)}


def test_labels_have_shapes_units_and_moments(labeled_run):
    report, work_dir = labeled_run["report"], labeled_run["work_dir"]
    assert report.n_tasks == 7 and report.n_labeled == 5 and report.n_failed == 2 and report.n_skipped_finished == 0
    for i in range(5):
        atoms = read_labeled(work_dir / f"task.{i:06d}" / LABELED_FILE)
        n = len(labeled_run["frames"][i])
        assert atoms.get_forces().shape == (n, 3) and atoms.get_stress().shape == (6,)
        assert -8.5 < atoms.get_potential_energy() / n < -6.5  # total energy, eV (CHGNet gives it per atom)
        assert np.all(np.isfinite(atoms.get_forces())) and np.abs(atoms.get_stress()).max() < 0.1  # eV/A^3, not GPa
        fe = atoms.arrays["valence"] > 0
        assert atoms.arrays["magmoms"].shape == (n,) and np.all(np.abs(atoms.arrays["magmoms"][fe]) > 3.5)


def test_stress_sign_is_ase_convention(labeled_run):
    """dE/d(strain) = V * trace(stress) for isotropic strain: fails if the sign or the unit is off."""
    work_dir = labeled_run["work_dir"]
    base, plus, minus = (read_labeled(work_dir / f"task.{i:06d}" / LABELED_FILE) for i in (0, 2, 3))
    slope = (plus.get_potential_energy() - minus.get_potential_energy()) / (2 * STRAIN)
    expected = base.get_volume() * np.trace(base.get_stress(voigt=False))
    assert abs(expected) > 1.0  # the built cell is far from equilibrium: the check has teeth
    assert slope == pytest.approx(expected, rel=0.05)


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")  # inside CHGNet
def test_in_process_calculator_is_the_same_teacher(labeled_run):
    work_dir = labeled_run["work_dir"]
    labeled = read_labeled(work_dir / "task.000000" / LABELED_FILE)
    atoms = labeled_run["frames"][0].copy()
    atoms.calc = labeled_run["labeler"].ase_calculator()
    assert atoms.get_potential_energy() == pytest.approx(labeled.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(atoms.get_stress(), labeled.get_stress(), atol=1e-6)
    np.testing.assert_allclose(atoms.get_forces(), labeled.get_forces(), atol=1e-4)


def test_data_written_by_dpdata_reads_back(labeled_run, parts):
    system = parts[0]
    report, work_dir = labeled_run["report"], labeled_run["work_dir"]
    assert report.data_dir == str(work_dir / "data")
    assert report.data_index == {"Li2Fe4P4O16": [f"task.{i:06d}" for i in range(5)]}
    data = dpdata.LabeledSystem(str(work_dir / "data" / "Li2Fe4P4O16"), fmt="deepmd/npy")
    assert data.get_nframes() == 5 and data["atom_names"] == system.type_map
    multi = dpdata.MultiSystems().from_deepmd_npy(str(work_dir / "data"))
    assert multi.get_nframes() == 5
    for k, task in enumerate(report.data_index["Li2Fe4P4O16"]):
        atoms = read_labeled(work_dir / task / LABELED_FILE)
        assert data["energies"][k] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(data["virials"][k], -atoms.get_volume() * atoms.get_stress(voigt=False), atol=1e-5)


def test_failures_are_quarantined_with_reasons_and_kept_on_disk(labeled_run):
    work_dir = labeled_run["work_dir"]
    quarantine = {q["task"]: q["reason"] for q in json.loads((work_dir / "quarantine.json").read_text())}
    assert set(quarantine) == {"task.000005", "task.000006"}
    assert "min_distance" in quarantine["task.000005"] and "0.100 A apart" in quarantine["task.000005"]
    assert quarantine["task.000006"].startswith("chgnet: ")
    assert labeled_run["report"].failed == json.loads((work_dir / "quarantine.json").read_text())
    for task in quarantine:
        assert (work_dir / task / FRAME_FILE).is_file() and (work_dir / task / "failed.json").is_file()
        assert not (work_dir / task / LABELED_FILE).exists()


def test_wrong_intended_valence_is_a_mismatch(labeled_run):
    report = labeled_run["report"]
    assert report.n_valence_mismatch == 1
    (mismatch,) = report.mismatches
    assert mismatch["task"] == "task.000004" and mismatch["sites"] == labeled_run["swap_sites"]
    assert sorted(mismatch["intended"]) == [2, 3] and mismatch["assigned"] == mismatch["intended"][::-1]
    assert mismatch["kept"] is True and "task.000004" in report.data_index["Li2Fe4P4O16"]
    saved = json.loads((labeled_run["work_dir"] / "report.json").read_text())
    assert saved == json.loads(json.dumps(report.to_dict()))


def reuse(labeled_run, tmp_path):
    """A copy of the labeled work_dir (mtimes kept), so that reruns leave the module's run alone."""
    copy = tmp_path / "03.label"
    shutil.copytree(labeled_run["work_dir"], copy)
    return copy


def test_one_process_labels_a_whole_batch_job(labeled_run):
    """The default CHGNet labeler batches: the round's one job loads the model once, labels each task once."""
    work_dir, report = labeled_run["work_dir"], labeled_run["report"]
    assert labeled_run["labeler"].batch_size > 1
    logs = "".join(p.read_text() for p in work_dir.glob("task.*/task.log"))
    assert logs.count("model load") == 1
    labeled = [t.parent.name for t in work_dir.glob(f"task.*/{LABELED_FILE}")]
    assert len(labeled) == report.n_labeled
    assert all(logs.count(f"{name}: labeled ") == 1 for name in labeled)
    garbage = next(item for item in report.failed if "XYZError" in item["reason"] or "extxyz" in item["reason"].lower())
    assert garbage  # a mate's bad frame is that task's failure, not the job's


def test_rerun_skips_finished_tasks(labeled_run, parts, tmp_path):
    system, machine, _ = parts
    work_dir = reuse(labeled_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in work_dir.glob("task.*/*")}
    report = label_frames(labeled_run["frames"], labeled_run["labeler"], machine, work_dir, system, progress=False)
    assert report.n_skipped_finished == 7 and report.n_dispatched == 0
    assert (report.n_labeled, report.n_failed, report.n_valence_mismatch) == (5, 2, 1)
    assert {p: p.stat().st_mtime_ns for p in work_dir.glob("task.*/*")} == before


def test_drop_policy_excludes_the_mismatched_frame(labeled_run, parts, tmp_path):
    system, machine, _ = parts
    work_dir = reuse(labeled_run, tmp_path)
    drop = dataclasses.replace(labeled_run["labeler"], mismatch_policy="drop")
    report = label_frames(labeled_run["frames"], drop, machine, work_dir, system, progress=False)
    assert report.n_dispatched == 0 and report.n_dropped == 1 and report.mismatches[0]["kept"] is False
    assert "task.000004" not in report.data_index["Li2Fe4P4O16"]
    assert dpdata.LabeledSystem(str(work_dir / "data" / "Li2Fe4P4O16"), fmt="deepmd/npy").get_nframes() == 4
    assert (work_dir / "task.000004" / LABELED_FILE).is_file()  # dropped from the data, not deleted


def test_other_frames_in_an_existing_work_dir_are_refused(labeled_run, parts, tmp_path):
    system, machine, _ = parts
    work_dir = reuse(labeled_run, tmp_path)
    frames = list(labeled_run["frames"])
    frames[1] = tiny_frame(system, 7)
    with pytest.raises(UserError, match=r"task\.000001 holds a different frame than frames\[1\]"):
        label_frames(frames, labeled_run["labeler"], machine, work_dir, system, progress=False)


def test_frames_round_tripped_through_extxyz_reuse_their_tasks(labeled_run, parts, tmp_path):
    import ase.io

    system, machine, _ = parts
    work_dir = reuse(labeled_run, tmp_path)
    ase.io.write(tmp_path / "frames.extxyz", labeled_run["frames"], format="extxyz")
    frames = ase.io.read(tmp_path / "frames.extxyz", index=":")
    report = label_frames(frames, labeled_run["labeler"], machine, work_dir, system, progress=False)
    assert report.n_dispatched == 0 and report.n_labeled == 5


def test_crashing_teacher_is_retried_then_quarantined(parts, tmp_path):
    system, machine, labeler = parts
    crashing = CrashingLabeler(max_attempts=2, max_failed_fraction=1.0)
    report = label_frames([tiny_frame(system, 0)], crashing, machine, tmp_path / "w", system, progress=False)
    assert report.n_failed == 1 and report.n_dispatched == 2
    reason = report.failed[0]["reason"]
    assert reason.startswith("no result after 2 attempt(s)") and "status 1" in reason and "out of memory" in reason
    task = tmp_path / "w" / "task.000000"
    assert (task / "attempt.1" / "reason.txt").is_file() and (task / "attempt.2" / "task.err").is_file()
    again = label_frames([tiny_frame(system, 0)], crashing, machine, tmp_path / "w", system, progress=False)
    assert again.n_dispatched == 0 and again.n_failed == 1


def test_a_teacher_failing_too_often_stops_the_step_after_its_report(parts, tmp_path):
    """Two frames, both quarantined before dispatch (overlapping atoms): 100 % > the default 50 %."""
    system, machine, labeler = parts
    frames = [tiny_frame(system, 0), tiny_frame(system, 1)]
    for frame in frames:
        frame.positions[1] = frame.positions[0] + 0.1
    with pytest.raises(TooManyFailures, match=r"2 of 2 label tasks in .* failed \(100% > label.max_failed_fraction=0.5\): "
                                                r"atoms 0 and 1 are 0\.\d+ A apart.*quarantine.json") as stop:
        label_frames(frames, labeler, machine, tmp_path / "w", system, progress=False)
    assert "\n" not in str(stop.value)
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["n_failed"] == 2 and len(json.loads((tmp_path / "w" / "quarantine.json").read_text())) == 2
    tolerant = ChgnetLabeler(max_failed_fraction=1.0)
    assert label_frames(frames, tolerant, machine, tmp_path / "w", system, progress=False).n_failed == 2
    with pytest.raises(UserError, match=r"label.max_failed_fraction=1.5 must be a fraction"):
        ChgnetLabeler(max_failed_fraction=1.5)


def test_bad_input_is_refused_in_one_line(parts, tmp_path):
    system, machine, labeler = parts
    frame = tiny_frame(system, 0)
    del frame.arrays["valence"]
    with pytest.raises(UserError, match=r"frames\[0\] lacks the per-atom 'valence' array"):
        label_frames([frame], labeler, machine, tmp_path, system, progress=False)
    with pytest.raises(UserError, match="mismatch_policy=relabel is not supported by this labeler"):
        ChgnetLabeler(mismatch_policy="relabel")
    with pytest.raises(UserError, match="label.mismatch_policy='sometimes' is unknown"):
        ChgnetLabeler(mismatch_policy="sometimes")
    with pytest.raises(UserError, match="label.batch_size=0 must be a positive integer"):
        ChgnetLabeler(batch_size=0)
    with pytest.raises(UserError, match="label.batch_size=4: OneAtATimeLabeler labels one task per process; use 1"):
        OneAtATimeLabeler(batch_size=4)
    with exclusive(tmp_path), pytest.raises(UserError, match="is being labeled by another process"):
        label_frames([tiny_frame(system, 0)], labeler, machine, tmp_path, system, progress=False)


def test_no_frames_gives_an_empty_report(parts, tmp_path):
    system, machine, labeler = parts
    report = label_frames([], labeler, machine, tmp_path, system, progress=False)
    assert report.n_tasks == 0 and report.data_dir is None


def test_rounds_spread_tasks_over_the_cores():
    machine = MachineSettings(machine={"batch_type": "Shell", "context_type": "LocalContext", "local_root": "./"},
                              resources={"number_node": 1, "cpu_per_node": 2, "gpu_per_node": 0, "group_size": 8},
                              parallel_jobs=2)
    tasks = list(range(40))
    assert plan_round(tasks[:6], machine) == (tasks[:6], 3)
    assert plan_round(tasks, machine) == (tasks[:16], 8)
    assert plan_round(tasks[:6], dataclasses.replace(machine, parallel_jobs=None), cores_per_task=2) == (tasks[:6], 6)
    # two-rank DFT tasks on the 2-core Shell machine: one job at a time even with parallel_jobs=2
    assert plan_round(tasks[:6], machine, cores_per_task=2) == (tasks[:6], 6)
    slurm = dataclasses.replace(machine, machine={**machine.machine, "batch_type": "Slurm"}, parallel_jobs=None,
                                resources={**machine.resources, "group_size": 1})
    assert plan_round(tasks, slurm) == (tasks, 1)
    assert plan_round(tasks, dataclasses.replace(slurm, resources={**slurm.resources, "group_size": 0})) == (tasks, 40)
    # a batching labeler: rounds of one job, on any machine (dpdispatcher would shuffle tasks over jobs)
    assert plan_round(tasks, machine, batch_size=12) == (tasks[:12], 12)
    assert plan_round(tasks[:5], slurm, batch_size=12) == (tasks[:5], 5)


def test_batch_command_names_the_job_mates():
    labeler = ChgnetLabeler(batch_size=8)
    assert labeler.job_command(["task.000000", "task.000001"]).endswith("--batch task.000000 task.000001")
    assert ChgnetLabeler(batch_size=1).job_command(["task.000000"]) == labeler.command()


def test_valence_from_moments_uses_nearest_expected_moment():
    expected = {2: 3.9, 3: 4.4}
    np.testing.assert_array_equal(valence_from_moments(np.array([3.85, -4.42, 4.1, 2.0]), expected, 0.5), [2, 3, 2, 0])
    intended = np.array([0, 2, 3, 0])
    assert valence_mismatch(intended, np.array([0.0, 3.9, -4.4, 0.0]), expected, 0.5) is None
    assert valence_mismatch(intended, np.array([0.0, 4.4, 3.9, 0.0]), expected, 0.5)["sites"] == [1, 2]
