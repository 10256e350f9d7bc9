"""A labeling run killed mid-round and rerun: nothing finished is labeled again, no job outlives its owner.

CHGNet through the shared driver and dpdispatcher's Shell machine, for real, on eight tiny frames.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dpdata
import pytest

from conftest import ROOT
from lfpo_al.label.frames import LABELED_FILE


KILL_SCRIPT = """
import os
import sys
from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.dispatch import MachineSettings
from lfpo_al.label.driver import label_frames
from lfpo_al.structures import BuildSpec, build_structure

# rounds of 2 jobs x 2 tasks (one process per task), or of one job of 3 tasks (batch): results land mid-run
if sys.argv[3] == "watched":  # as train does: its Shell jobs stop when it dies
    os.environ["LFPO_AL_OWNER_PID"] = str(os.getpid())
cfg = compose_config(["machine.resources.group_size=2", f"label.batch_size={sys.argv[2]}"])
system = instantiate_group(cfg, "system")
frames = [build_structure(system, BuildSpec(supercell=[1, 1, 1], x=0.5, seed=seed)) for seed in range(8)]
label_frames(frames, instantiate_group(cfg, "label"), instantiate_group(cfg, "machine"), sys.argv[1], system, progress=False)
"""


def start_labeling(script: Path, work_dir: Path, batch_size: int, watched: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [str(work_dir), str(batch_size), "watched" if watched else "free"]
    return subprocess.Popen([sys.executable, str(script), *args], cwd=script.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def finished_remotely_only(work_dir: Path) -> list[Path]:
    """Task folders under dpdispatcher's remote root that finished but have not come back yet."""
    return [tag.parent for tag in work_dir.glob(".dispatch/*/task.*/*_task_tag_finished")
            if not (work_dir / tag.parent.name / LABELED_FILE).exists()]


def fingerprint(path: Path) -> tuple[int, int, str]:
    return path.stat().st_ino, path.stat().st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest()


def pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        state = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
        if state != "Z":
            alive.append(pid)
    return alive


@pytest.mark.parametrize("kill, batch_size", [
    ("process_group", 1), ("process_group", 3), pytest.param("driver_only", 1, marks=pytest.mark.slow),
    pytest.param("driver_watched", 1, marks=pytest.mark.slow)])
def test_killed_run_resumes_without_redoing_tasks(tmp_path, kill, batch_size):
    """Kill a run once some results are home and others finished remotely only; rerun; nothing is redone.

    ``process_group`` kills the driver and the Shell jobs it launched (they share its process group);
    ``driver_only`` leaves the jobs running into the rerun, as after a lost login shell;
    ``driver_watched`` kills the driver alone as ``train`` runs it (owner pid exported), so its jobs
    stop within seconds and none writes into the folder meanwhile. With ``batch_size`` 3 one process
    labels a whole job's tasks.
    """
    script, work_dir = tmp_path / "label.py", tmp_path / "03.label"
    script.write_text(KILL_SCRIPT)
    watched = kill == "driver_watched"
    proc = start_labeling(script, work_dir, batch_size, watched)
    deadline = time.time() + 240
    while not (list(work_dir.glob(f"task.*/{LABELED_FILE}")) and finished_remotely_only(work_dir)):
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        assert time.time() < deadline, "no task finished in time"
        time.sleep(0.05)
    if kill == "process_group":
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    job_pids = [int(p.read_text()) for p in work_dir.glob(".dispatch/*/*_job_id")]
    if kill == "process_group":
        time.sleep(0.5)
        assert pids_alive(job_pids) == [], "Shell jobs outlived the kill of their process group"
    elif kill == "driver_only":
        assert pids_alive(job_pids), "the jobs should still run after only the driver was killed"
    else:
        deadline = time.time() + 20
        while pids_alive(job_pids) and time.time() < deadline:
            time.sleep(0.2)
        assert pids_alive(job_pids) == [], "jobs kept running after the train that dispatched them died"
        labels = {p: p.stat().st_mtime_ns for p in work_dir.rglob(LABELED_FILE)}
        time.sleep(2.0)
        assert {p: p.stat().st_mtime_ns for p in work_dir.rglob(LABELED_FILE)} == labels, "an orphan still writes"

    home = {p.parent.name: fingerprint(p) for p in work_dir.glob(f"task.*/{LABELED_FILE}")}
    remote = {d.name: hashlib.sha1((d / "outputs" / LABELED_FILE).read_bytes()).hexdigest()
              for d in finished_remotely_only(work_dir)}
    assert home and remote and not set(home) & set(remote)

    rerun = start_labeling(script, work_dir, batch_size, watched)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-3000:]

    report = json.loads((work_dir / "report.json").read_text())
    assert report["n_labeled"] == report["n_tasks"] == 8 and report["n_failed"] == 0
    assert report["n_skipped_finished"] == len(home)
    for task, before in home.items():  # results home before the kill were never touched again
        assert fingerprint(work_dir / task / LABELED_FILE) == before, task
    for task, digest in remote.items():  # results finished remotely came home as they were: not recomputed
        assert hashlib.sha1((work_dir / task / LABELED_FILE).read_bytes()).hexdigest() == digest, task
    logs = "".join((task_dir / "task.log").read_text() for task_dir in work_dir.glob("task.*"))
    for task_dir in work_dir.glob("task.*"):  # every task was labeled exactly once, by its own or a job mate's process
        assert logs.count(f"{task_dir.name}: labeled 26 atoms") == 1, task_dir.name
    if batch_size > 1:  # rounds of 3, 3 and 2 tasks; the kill came after a round's lead had ended
        assert logs.count("model load") == 3, "each batch job should load CHGNet once"
    assert dpdata.MultiSystems().from_deepmd_npy(str(work_dir / "data")).get_nframes() == 8
    assert pids_alive(job_pids) == []
