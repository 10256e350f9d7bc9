"""Packing dispatched tasks into jobs by their cost."""

from __future__ import annotations

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
