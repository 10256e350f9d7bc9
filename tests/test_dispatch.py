"""Packing dispatched tasks into jobs by their cost."""

from __future__ import annotations

import pytest

from lfpo_al.dispatch import MachineSettings, TaskSpec, packed, run_tasks


def test_packed_puts_the_long_task_alone_and_keeps_task_order():
    # the demo's ensemble: member 0 trains 1000 steps, the others 200 (+100 start-up each)
    assert packed([1100, 300, 300, 300], 2) == [[0], [1, 2, 3]]
    assert packed([1.0] * 5, 2) == [[0, 2, 4], [1, 3]]
    assert packed([1.0, 2.0], 4) == [[1], [0]]
    assert packed([3.0], 2) == [[0]]


def test_run_tasks_runs_each_group_as_one_job(tmp_path):
    machine = MachineSettings(machine={"batch_type": "Shell", "context_type": "LocalContext", "local_root": "./"},
                              resources={"number_node": 1, "cpu_per_node": 2, "gpu_per_node": 0, "group_size": 8},
                              parallel_jobs=2)
    durations = {"long": 1.2, "short.0": 0.4, "short.1": 0.4}
    tasks = []
    for name, seconds in durations.items():
        (tmp_path / name).mkdir()
        tasks.append(TaskSpec(task_dir=name, command=f"date +%s.%N > start; sleep {seconds}; date +%s.%N > end",
                              forward_files=[], backward_files=["start", "end"], cost=seconds))
    run_tasks(machine, tmp_path, tasks, check_interval=0.2)
    span = {name: (float((tmp_path / name / "start").read_text()), float((tmp_path / name / "end").read_text()))
            for name in durations}
    # the two short tasks share a job (one after the other), and both run beside the long one
    first, second = sorted((span["short.0"], span["short.1"]))
    assert first[1] <= second[0]
    assert span["long"][0] < first[1] and second[0] < span["long"][1]


SHELL = {"batch_type": "Shell", "context_type": "LocalContext", "local_root": "./"}
ONE_CORE = {"number_node": 1, "cpu_per_node": 1, "gpu_per_node": 0, "group_size": 1}
DISPATCH_ONE = """
import sys
from pathlib import Path
from lfpo_al.dispatch import MachineSettings, TaskSpec, run_tasks
run_tasks(MachineSettings(machine={machine}, resources={resources}), Path(sys.argv[1]),
          [TaskSpec(task_dir="task", command={command!r}, forward_files=[], backward_files=["out"])], check_interval=0.2)
"""


@pytest.mark.timeout(120)  # before the fix the planted id also names a live process (pid 1): the wait never ends
def test_a_recovered_job_id_is_never_run_as_a_command(tmp_path):
    """dpdispatcher puts a recovered job id unquoted into `ps -p`: an id planted in the record of an
    interrupted submission is blanked, the job is submitted afresh, and the planted command never runs."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "task").mkdir()
    command = "sleep 2; touch out"
    script = DISPATCH_ONE.format(machine=SHELL, resources=ONE_CORE, command=command)
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((tmp_path / ".dispatch").glob("*/*.json")):  # submitted: the record holds the job's pid
        assert time.monotonic() < deadline and first.poll() is None, "the first submission wrote no record"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # interrupted: the record stays, as after a kill
    first.wait()
    (record,) = (tmp_path / ".dispatch").glob("*/*.json")
    planted = tmp_path / "planted"
    content = json.loads(record.read_text())
    job = next(iter(content["belonging_jobs"][0].values()))
    assert str(job["job_id"]).isdigit(), job  # what a Shell job id looks like
    job["job_id"] = f"1; touch {planted}; true"
    record.write_text(json.dumps(content))

    run_tasks(MachineSettings(machine=SHELL, resources=ONE_CORE), tmp_path,
              [TaskSpec(task_dir="task", command=command, forward_files=[], backward_files=["out"])], check_interval=0.2)
    assert not planted.exists()
    assert (tmp_path / "task" / "out").exists()  # the job ran afresh
