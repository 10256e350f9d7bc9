"""Dispatch through a real Slurm: the one-node loopback cluster of scripts/local_slurm.py and machine=slurm.

A label step labels three built LixFePO4 frames with CHGNet (one process per task) as two Slurm jobs
(group_size 2); the tests
check the labels, that each task ran inside a job the controller scheduled and completed, and that a
cluster leaves no daemon behind when stopped. With machine=slurm_gpu on the cluster's two partitions, a
two-member deepmd fine-tune and an MD task go to the GPU partition with one GPU per job, and a label to
the CPU partition, each job with its own header lines.
"""

import dataclasses
import re
import shutil
import socket
import time
from pathlib import Path

import ase.io
import dpdata
import numpy as np
import pytest

from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.explore.settings import ExploreSettings
from lfpo_al.explore.step import explore_step
from lfpo_al.label.frames import LABELED_FILE
from lfpo_al.label.driver import label_frames
from lfpo_al.structures import BuildSpec, build_structure
from lfpo_al.train.ensemble import train_ensemble
from lfpo_al.train.pretrained import resolve_pretrained
from lfpo_al.train.settings import ModelSettings
from slurm_cluster import GPU_PARTITION, load_local_slurm, slurm_cluster, start_cluster  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm")]  # one loopback cluster per run

FRAMES = ((1.0, 0), (0.5, 0), (0.5, 1))  # (x, seed): 28- and 26-atom cells, two compositions
GROUP_SIZE = 2
# each task writes the job it ran in to its task.log, which comes back with the task
REPORT_JOB = 'echo "slurm job ${SLURM_JOB_ID:-none}";'


def slurm_settings(cluster, *overrides):
    cfg = compose_config(["machine=slurm", f"machine.resources.queue_name={cluster.partition}", *overrides])
    return cfg, instantiate_group(cfg, "machine")


def jobs_submitted_from(cluster, work_dir: Path) -> list[dict[str, str]]:
    """The controller's records of the jobs dpdispatcher submitted from ``work_dir`` (each job's working
    directory is its submission folder in ``work_dir/.dispatch``; finished jobs stay listed MinJobAge),
    with the batch script the controller stored for each."""
    dispatch = (work_dir / ".dispatch").resolve()
    listed = cluster.client("squeue", "--states=all", "--noheader", "--format=%i|%Z").stdout.split()
    jobs = []
    for job_id, job_dir in (line.split("|") for line in listed):
        if Path(job_dir).is_relative_to(dispatch):
            record = dict(re.findall(r"(\w+)=(\S*)", cluster.client("scontrol", "show", "job", job_id).stdout))
            script = cluster.client("scontrol", "write", "batch_script", job_id, "-").stdout
            jobs.append({**record, "script": script})
    return jobs


@pytest.fixture(scope="module")
def label_run(slurm_cluster, tmp_path_factory):
    # one process per task, so that group_size makes the jobs (a batching CHGNet would put a round in one job)
    cfg, machine = slurm_settings(slurm_cluster, f"machine.resources.group_size={GROUP_SIZE}", "label.batch_size=1")
    machine = dataclasses.replace(machine, command_prefix=REPORT_JOB)
    system, labeler = instantiate_group(cfg, "system"), instantiate_group(cfg, "label")
    frames = [build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=seed)) for x, seed in FRAMES]
    work_dir = tmp_path_factory.mktemp("slurm") / "03.label"
    start = time.perf_counter()
    report = label_frames(frames, labeler, machine, work_dir, system, progress=False)
    print(f"labeled {len(frames)} frames through Slurm in {time.perf_counter() - start:.1f} s")
    return {"frames": frames, "report": report, "work_dir": work_dir, "system": system}


def test_labels_come_back_as_deepmd_npy(label_run):
    report, work_dir = label_run["report"], label_run["work_dir"]
    assert (report.n_tasks, report.n_labeled, report.n_failed, report.n_dispatched) == (3, 3, 0, 3), report
    multi = dpdata.MultiSystems().from_deepmd_npy(report.data_dir)
    assert multi.get_nframes() == 3 and len(multi.systems) == 2
    for name, tasks in report.data_index.items():
        stored = dpdata.LabeledSystem(str(Path(report.data_dir) / name), fmt="deepmd/npy")
        teacher = [ase.io.read(work_dir / task / LABELED_FILE).get_potential_energy() for task in tasks]
        assert stored["energies"] == pytest.approx(teacher, abs=1e-6)
        assert stored["atom_names"] == list(label_run["system"].type_map)
        assert stored["forces"].shape == (len(tasks), len(stored["atom_types"]), 3)
        assert np.all(np.isfinite(stored["forces"]))


def test_every_task_ran_in_a_completed_slurm_job(label_run, slurm_cluster):
    work_dir = label_run["work_dir"]
    jobs = {job["JobId"]: job for job in jobs_submitted_from(slurm_cluster, work_dir)}
    assert len(jobs) == 2, f"3 tasks in jobs of {GROUP_SIZE} make 2 Slurm jobs: {jobs}"
    controller_log = slurm_cluster.log_file("slurmctld").read_text()
    for job_id, job in jobs.items():
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Partition"] == slurm_cluster.partition and job["NodeList"] == "localhost", job
        assert f"_job_complete: JobId={job_id} done" in controller_log
        script = job["script"]  # dpdispatcher's batch script as the controller received it
        assert f"#SBATCH --partition {slurm_cluster.partition}" in script and "#SBATCH --ntasks-per-node 1" in script
        assert "export OMP_NUM_THREADS=1" in script and "export OMPI_ALLOW_RUN_AS_ROOT=1" in script
    ran_in = {}
    for i in range(len(FRAMES)):
        found = re.findall(r"^slurm job (\S+)$", (work_dir / f"task.{i:06d}" / "task.log").read_text(), re.M)
        assert len(found) == 1 and found[0] in jobs, (i, found, sorted(jobs))
        ran_in[i] = found[0]
    assert sorted(list(ran_in.values()).count(job_id) for job_id in jobs) == [1, 2]


def test_a_batching_teacher_labels_a_round_in_one_slurm_job(label_run, slurm_cluster, tmp_path):
    """CHGNet's default batch_size: the three tasks go to one job, whose first task labels them all."""
    cfg, machine = slurm_settings(slurm_cluster, f"machine.resources.group_size={GROUP_SIZE}")
    labeler = instantiate_group(cfg, "label")
    assert labeler.batch_size >= len(FRAMES)
    report = label_frames(label_run["frames"], labeler, machine, tmp_path / "03.label", label_run["system"], progress=False)
    assert (report.n_labeled, report.n_failed) == (3, 0), report
    jobs = jobs_submitted_from(slurm_cluster, tmp_path / "03.label")
    assert len(jobs) == 1 and jobs[0]["JobState"] == "COMPLETED", jobs
    logs = "".join((tmp_path / "03.label" / f"task.{i:06d}" / "task.log").read_text() for i in range(len(FRAMES)))
    assert logs.count("model load") == 1
    for i, frame in enumerate(label_run["frames"]):  # the same teacher, batched or not
        batched = ase.io.read(tmp_path / "03.label" / f"task.{i:06d}" / LABELED_FILE)
        alone = ase.io.read(label_run["work_dir"] / f"task.{i:06d}" / LABELED_FILE)
        assert batched.get_potential_energy() == pytest.approx(alone.get_potential_energy(), abs=1e-6)


@pytest.fixture(scope="module")
def gpu_cpu_machine(slurm_cluster):
    """``machine=slurm_gpu`` as shipped, its two partitions renamed to the loopback cluster's."""
    cfg = compose_config(["machine=slurm_gpu", f"machine.resources.queue_name={slurm_cluster.partition}",
                          f"machine.train.resources.queue_name={GPU_PARTITION}",
                          f"machine.explore.resources.queue_name={GPU_PARTITION}"])
    return instantiate_group(cfg, "machine")


def assert_jobs_on(jobs: list[dict], partition: str, gpus: int, time_limit: str) -> None:
    for job in jobs:
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        assert job["Partition"] == partition, job
        script = job["script"]
        assert f"#SBATCH --partition {partition}" in script and f"#SBATCH --time={time_limit}" in script, script
        assert ("#SBATCH --gres=gpu:1" in script) == (gpus == 1), script
        assert job["RunTime"] != "00:00:00", job  # the task ran inside the job, not before or after it


def test_members_train_on_the_gpu_partition_and_see_their_gpu(label_run, slurm_cluster, gpu_cpu_machine, tmp_path):
    """Two deepmd fine-tunes of 2 steps each from the starter model, one GPU job per member."""
    systems = sorted(p.parent for p in Path(label_run["report"].data_dir).rglob("type.raw"))
    settings = ModelSettings(n_members=2, numb_steps=2, bootstrap_fraction=1.0)
    members = train_ensemble(settings, label_run["system"].type_map, systems, tmp_path / "00.train",
                             gpu_cpu_machine.for_step("train"), resolve_pretrained("starter"))
    assert all(m.frozen.is_file() and m.checkpoint.is_file() for m in members)
    jobs = jobs_submitted_from(slurm_cluster, tmp_path / "00.train")
    assert len(jobs) == 2, jobs
    assert_jobs_on(jobs, GPU_PARTITION, gpus=1, time_limit="04:00:00")
    for member in members:  # deepmd-kit reports the GPU Slurm gave the job (a stand-in here: it computes on CPU)
        assert "CUDA_VISIBLE_DEVICES: 0" in (member.frozen.parent / "train.log").read_text()


def test_md_on_the_gpu_partition_and_labels_on_the_cpu_partition(label_run, slurm_cluster, gpu_cpu_machine, tmp_path):
    model = resolve_pretrained("starter")
    explore = ExploreSettings(temperatures=[500.0], structures=[{"x": 0.5, "seed": 0, "supercell": [1, 1, 1]}],
                              n_steps=10, record_every=5)
    system = label_run["system"]
    exploration = explore_step(explore, system, BuildSpec(supercell=[1, 1, 1]), [model, model], tmp_path / "01.explore",
                               gpu_cpu_machine.for_step("explore"))
    assert (exploration.trajectories[0].n_frames or 0) >= 2, exploration
    assert_jobs_on(jobs_submitted_from(slurm_cluster, tmp_path / "01.explore"), GPU_PARTITION, gpus=1,
                   time_limit="04:00:00")

    labeler = instantiate_group(compose_config([]), "label")
    report = label_frames(label_run["frames"][:1], labeler, gpu_cpu_machine.for_step("label"), tmp_path / "03.label",
                          system, progress=False)
    assert report.n_labeled == 1, report
    assert_jobs_on(jobs_submitted_from(slurm_cluster, tmp_path / "03.label"), slurm_cluster.partition, gpus=0,
                   time_limit="24:00:00")


def test_a_stopped_cluster_leaves_no_daemon_and_others_run_on(slurm_cluster, tmp_path):
    """A second cluster (own folder, ports, munged) runs a job, stops, and leaves the session's one idle."""
    local_slurm = load_local_slurm()
    other = start_cluster(local_slurm, partition="lfpo_other")
    try:
        assert set(other.pids()) == {"munged", "slurmctld", "slurmd"}
        submit = ("sbatch", "--parsable", f"--chdir={tmp_path}", "--wrap", "echo $SLURM_JOB_ID")
        job_id = other.client(*submit).stdout.strip()
        deadline = time.monotonic() + 30
        while not (tmp_path / f"slurm-{job_id}.out").is_file() or not (tmp_path / f"slurm-{job_id}.out").read_text():
            assert time.monotonic() < deadline, f"job {job_id} did not run\n{other.log_tails()}"
            time.sleep(0.2)
        assert (tmp_path / f"slurm-{job_id}.out").read_text().strip() == job_id
    finally:
        other.down()
    assert other.pids() == {}
    ports = re.findall(r"^Slurm(?:ctld|d)Port=(\d+)$", other.conf.read_text(), re.M)
    assert len(ports) == 2
    for port in map(int, ports):  # nothing answers on the stopped cluster's ports any more
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    assert not other.munge_socket.exists() or not _accepts(other.munge_socket)
    shutil.rmtree(other.root)
    assert slurm_cluster.node_state() == "idle"


def _accepts(unix_socket: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(unix_socket))
        except OSError:
            return False
    return True


def test_a_queue_job_asks_for_the_cores_of_its_task():
    cfg = compose_config(["machine=slurm"])
    machine = instantiate_group(cfg, "machine")
    assert machine.resources["cpu_per_node"] is None  # from the task, not from the label config
    assert machine.resources_for(16)["cpu_per_node"] == 16 and machine.resources_for(1)["cpu_per_node"] == 1
    local = instantiate_group(compose_config([]), "machine")
    assert local.resources_for(16)["cpu_per_node"] == local.resources["cpu_per_node"] == 2  # a node's own count stays
