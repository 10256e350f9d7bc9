"""Fault injection: ``train`` SIGKILLed at every step boundary, resumed each time by the same command.

A real tiny run (starter DPA-2, ASE MD, CHGNet labels through dpdispatcher) is killed, with its whole
process group, right after each step is recorded done (``LFPO_AL_KILL_AT_RECORDS``: the n-th record
line), and once more in the middle of each long step (the set-up's two labelings, train, explore, label,
validate) by a SIGKILL from outside, a second after that step's folder appears. The same command then resumes it. The run is compared with an uninterrupted run of the same config:
- every resume goes on from the record (no finished step is redone) and the run finishes;
- no finished label task is run again (its output's mtime and bytes are unchanged);
- the training data, the test set and the selected frames equal the uninterrupted run's, to the byte;
- no process dispatched by a killed ``train`` is still running after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lfpo_al.loop.state import KILL_AT_RECORDS_ENV

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "experiment=demo", "run_name=r", "model.n_members=2", "model.numb_steps=10", "model.member0_numb_steps=null",
    "explore.temperatures=[700]", "explore.n_steps=40", "explore.record_every=10",
    "explore.structures=[{x: 0.5, li_order: random, seed: 0, supercell: [1, 1, 1]}]",
    "selection=trust_window", "selection.trust_lo=0.0", "selection.trust_hi=100.0", "selection.max_selected=3",
    "validate.test_structures=[{x: 0.5, seed: 3, supercell: [1, 1, 1]}]", "validate.frames_per_structure=2",
    "validate.relax_steps=10",
    "validate.dynamics.structures=[{x: 0.5, seed: 4, supercell: [1, 1, 1]}]", "validate.dynamics.seeds=[0]",
    "validate.dynamics.n_steps=20", "validate.dynamics.record_every=4", "validate.dynamics.smoothing_fs=8",
    "loop.max_iters=1", "loop.label_budget=100", "loop.init_frames_per_structure=2",
    "loop.init_structures=[{x: 0.0, supercell: [1, 1, 1]}]",
    "tracking=disabled",
]
STEPS = ["init_data", "test_set", "teacher_dynamics", "train", "explore", "select", "label", "validate", "final"]
MID_STEP = {"init_data": "data/init", "test_set": "data/test", "train": "iter.000000/00.train", "explore": "iter.000000/01.explore", "label": "iter.000000/03.label",
            "validate": "iter.000000/04.validate"}


def train(runs_dir: Path, log: Path, kill_at_records: int | None = None) -> subprocess.Popen:
    """``train`` in its own process group, its output to ``log`` (a pipe nobody reads could fill and block it)."""
    # one thread, as make test sets it: torch's multi-threaded sums differ in the last bits between runs,
    # and MD makes that a different trajectory
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1",
           "DP_INTER_OP_PARALLELISM_THREADS": "1"}
    if kill_at_records:
        env[KILL_AT_RECORDS_ENV] = str(kill_at_records)
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "lfpo_al", "train", *TINY, f"runs_dir={runs_dir}"], cwd=ROOT,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def done_steps(run: Path) -> list[str]:
    path = run / "record.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines()
            if line.strip().endswith("}") and '"status": "done"' in line]


def processes_in(run: Path) -> list[str]:
    """Command lines of live processes working in the run folder or naming it (dispatched jobs run in it)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(run) in cmdline or cwd.startswith(str(run)):
            found.append(f"{cwd}: {cmdline}")
    return found


def files(run: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob(pattern)) if p.is_file()}


def label_outputs(run: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("task.*/labeled.extxyz")}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_killed_at_every_step_boundary_resumes_to_the_uninterrupted_result(tmp_path):
    whole = train(tmp_path / "whole", tmp_path / "whole.log")
    assert whole.wait(timeout=1200) == 0, (tmp_path / "whole.log").read_text()[-3000:]
    reference = tmp_path / "whole" / "r"
    assert done_steps(reference) == STEPS

    run, kills, finished_labels = tmp_path / "killed" / "r", [], {}

    def after_kill(proc: subprocess.Popen, what: str) -> None:
        nonlocal finished_labels
        proc.wait()
        kills.append(what)
        time.sleep(3)  # a Shell job's watchdog polls its owner every second
        assert not processes_in(run), f"after the kill {what}: {processes_in(run)}"
        for task, (mtime, content) in finished_labels.items():
            assert label_outputs(run)[task] == (mtime, content), f"{task} was labeled again after the kill {what}"
        finished_labels = label_outputs(run)

    for n, step in enumerate(STEPS[:-1], start=1):
        if step in MID_STEP:  # in the middle of the step: once its folder exists, from outside
            proc = train(tmp_path / "killed", tmp_path / f"killed.in_{step}.log")
            while proc.poll() is None and not (run / MID_STEP[step]).exists():
                time.sleep(0.05)
            time.sleep(1.0)
            assert proc.poll() is None, f"train ended before the middle of {step}"
            os.killpg(proc.pid, signal.SIGKILL)
            after_kill(proc, f"in {step}")
            assert len(done_steps(run)) == n - 1, f"the kill in {step} came after it was done"
        proc = train(tmp_path / "killed", tmp_path / f"killed.after_{step}.log", kill_at_records=n)
        assert proc.wait(timeout=1200) == -signal.SIGKILL, (tmp_path / f"killed.after_{step}.log").read_text()[-3000:]
        after_kill(proc, f"after {step}")
        assert done_steps(run) == STEPS[:n]
    last = train(tmp_path / "killed", tmp_path / "killed.last.log")
    assert last.wait(timeout=1200) == 0, (tmp_path / "killed.last.log").read_text()[-3000:]
    assert len(kills) == len(STEPS) - 1 + len(MID_STEP)
    assert done_steps(run) == STEPS  # every step recorded once: none redone

    for pattern in ("data/*/data/*/*.raw", "data/*/data/*/set.*/*.npy", "iter.000000/03.label/data/*/set.*/*.npy",
                    "iter.000000/02.select/selected.extxyz", "data/dynamics/*.extxyz"):
        expected = files(reference, pattern)
        assert expected, f"the uninterrupted run wrote no {pattern}"
        assert files(run, pattern) == expected, f"{pattern} differs from the uninterrupted run"
    whole_metrics = json.loads((reference / "final" / "metrics.json").read_text())
    killed_metrics = json.loads((run / "final" / "metrics.json").read_text())
    assert killed_metrics["force_rmse_ev_per_ang"] == whole_metrics["force_rmse_ev_per_ang"]
