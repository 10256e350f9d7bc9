"""Fault injection: ``train`` SIGKILLed at every step boundary, resumed each time by the same command.

A real tiny run of two iterations (starter DPA-2, ASE MD, CHGNet labels through dpdispatcher) is killed,
with its whole process group, in the middle of each long step (the set-up's two labelings, train,
explore, label, validate) by a SIGKILL from outside, a second after that step's folder appears (for
label: after its first task result is home while others still run), and right after each step that the
next step is not killed inside (``LFPO_AL_KILL_AT_RECORDS``: the n-th record line). Every step boundary
of the set-up and iteration 0 is thus crossed by a resume: a kill inside a step leaves the steps before
it done, so the resume starts that step from their files, as a kill right after them would. The last
start runs iteration 1 on from the resumed iteration 0. The run is compared with the session's
uninterrupted run of the same config (``finished_run``, conftest):
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
import time
from pathlib import Path

import pytest

from conftest import start_train
from lfpo_al.loop.state import KILL_AT_RECORDS_ENV

pytestmark = pytest.mark.xdist_group("finished_run")  # the uninterrupted reference is the session's (conftest)

# the set-up's steps and iteration 0's, in record order; the last start runs iteration 1 and final uninterrupted
STEPS = ["init_data", "test_set", "teacher_dynamics", "train", "explore", "select", "label", "validate"]
ITERATION = ["train", "explore", "select", "label", "validate"]
# what shows that a step is under way: its folder, or for label a task result come home while others still run
MID_STEP = {"init_data": "data/init", "test_set": "data/test", "train": "iter.000000/00.train",
            "explore": "iter.000000/01.explore", "label": "iter.000000/03.label/task.*/labeled.extxyz",
            "validate": "iter.000000/04.validate"}
# a kill right after a step only where the next step is not killed inside: test_set, explore, validate
AFTER_STEP = [step for step, following in zip(STEPS, STEPS[1:] + ["final"]) if following not in MID_STEP]


def train(runs_dir: Path, log: Path, kill_at_records: int | None = None) -> subprocess.Popen:
    return start_train(runs_dir, log, "tracking=disabled",
                       env={KILL_AT_RECORDS_ENV: str(kill_at_records)} if kill_at_records else None)


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
    """Every label come home (dpdispatcher's own copies under .dispatch/ may be cleaned away)."""
    return {str(p.relative_to(run)): (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("task.*/labeled.extxyz")
            if ".dispatch" not in p.parts}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_killed_at_every_step_boundary_resumes_to_the_uninterrupted_result(finished_run, tmp_path):
    assert AFTER_STEP == ["test_set", "explore", "validate"]
    reference, _ = finished_run
    assert done_steps(reference) == STEPS + ITERATION + ["final"]

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

    for n, step in enumerate(STEPS, start=1):
        if step in MID_STEP:  # in the middle of the step: once its folder exists, from outside
            proc = train(tmp_path / "killed", tmp_path / f"killed.in_{step}.log")
            while proc.poll() is None and not any(run.glob(MID_STEP[step])):
                time.sleep(0.05)
            time.sleep(1.0)
            assert proc.poll() is None, f"train ended before the middle of {step}"
            os.killpg(proc.pid, signal.SIGKILL)
            after_kill(proc, f"in {step}")
            assert done_steps(run) == STEPS[:n - 1], f"the kill in {step} came after it was done"
            if step == "label":  # the resume must leave the labels already home untouched (after_kill)
                assert any(task.startswith("iter.000000") for task in finished_labels), "no label was home at the kill"
        if step in AFTER_STEP:
            proc = train(tmp_path / "killed", tmp_path / f"killed.after_{step}.log", kill_at_records=n)
            assert proc.wait(timeout=1200) == -signal.SIGKILL, (tmp_path / f"killed.after_{step}.log").read_text()[-3000:]
            after_kill(proc, f"after {step}")
            assert done_steps(run) == STEPS[:n]
    last = train(tmp_path / "killed", tmp_path / "killed.last.log")
    assert last.wait(timeout=1200) == 0, (tmp_path / "killed.last.log").read_text()[-3000:]
    assert len(kills) == len(AFTER_STEP) + len(MID_STEP)
    assert done_steps(run) == STEPS + ITERATION + ["final"]  # every step recorded once: none redone

    for pattern in ("data/*/data/*/*.raw", "data/*/data/*/set.*/*.npy", "iter.*/03.label/data/*/set.*/*.npy",
                    "iter.*/02.select/selected.extxyz", "data/dynamics/*.extxyz"):
        expected = files(reference, pattern)
        assert expected, f"the uninterrupted run wrote no {pattern}"
        assert files(run, pattern) == expected, f"{pattern} differs from the uninterrupted run"
    assert sorted(files(reference, "iter.*/02.select/selected.extxyz")) == [
        "iter.000000/02.select/selected.extxyz", "iter.000001/02.select/selected.extxyz"]
    whole_metrics = json.loads((reference / "final" / "metrics.json").read_text())
    killed_metrics = json.loads((run / "final" / "metrics.json").read_text())
    assert killed_metrics["force_rmse_ev_per_ang"] == whole_metrics["force_rmse_ev_per_ang"]
