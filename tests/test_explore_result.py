"""What travels between the explore step, its MD tasks and selection, typed: task.json, result.json,
summary.json (no models needed)."""

import dataclasses
import json

import numpy as np
import pytest
from ase import Atoms

from lfpo_al.errors import UserError
from lfpo_al.explore.md_common import Stop, stop_at, write_outputs
from lfpo_al.explore.md_task import MDResult, MDTask
from lfpo_al.explore.result import ExplorationResult, TrajectoryResult

# task.json's keys, in order, as the explore step wrote them before MDTask
TASK_KEYS = ["models", "driver", "system", "family", "temperature", "seed", "ensemble", "n_steps", "timestep_fs",
             "record_every", "friction_per_fs", "abort_deviation", "min_distance", "score_every"]


@pytest.fixture
def task(load_system):
    return MDTask(models=["/m/a.pth", "/m/b.pth"], system=load_system("lfpo"), family="x0.50-random-s0-1x1x1",
                  temperature=500.0, seed=7, ensemble="nvt", n_steps=20, timestep_fs=1.0, record_every=5,
                  friction_per_fs=0.01, abort_deviation=3.0, min_distance=0.8, score_every=2)


def test_task_json_round_trip_keeps_the_file(task, tmp_path):
    task.write(tmp_path)
    written = json.loads((tmp_path / "task.json").read_text())
    assert list(written) == TASK_KEYS and written["system"] == json.loads(json.dumps(dataclasses.asdict(task.system)))
    assert MDTask.read(tmp_path) == task and task.changed_keys(tmp_path) == []
    older = {key: value for key, value in written.items() if key not in ("score_every", "driver")}
    (tmp_path / "task.json").write_text(json.dumps(older))
    assert MDTask.read(tmp_path) == dataclasses.replace(task, score_every=1)
    # a key the older file lacks is not compared on resume; one it holds is
    assert task.changed_keys(tmp_path) == []
    assert dataclasses.replace(task, seed=8, n_steps=40).changed_keys(tmp_path) == ["seed", "n_steps"]


def test_stop_carries_its_step_and_result_json_gains_it(task, tmp_path):
    frame = Atoms("Li2", positions=[[0, 0, 0], [0.5, 0, 0]], cell=np.eye(3) * 6, pbc=True, info={"step": 15})
    assert stop_at(frame, None, task) == Stop("atoms 0.50 A apart at step 15", 15)
    row = np.array([15, 0, 0, 0, np.nan, 0, 0, 0])
    assert stop_at(frame, row, task).step == 15 and stop_at(frame, row, task).reason.startswith("deviation nan")
    frame.positions[1, 0] = 2.0
    assert stop_at(frame, None, task) is None
    rows = np.array([[0, 0, 0, 0, 0.1, 0, 0, 0], [15, 0, 0, 0, 9.0, 0, 0, 0]])
    result = write_outputs(tmp_path, [frame, frame], rows, "step", 15, Stop("stopped", 15), 1.234)
    assert result == MDResult(n_frames=2, n_steps_run=15, stop_reason="stopped", stop_step=15, wall_s=1.23)
    assert json.loads((tmp_path / "result.json").read_text()) == dataclasses.asdict(result)
    assert MDResult.read(tmp_path) == result
    assert write_outputs(tmp_path, [frame], rows[:1], "step", 20, None, 0.0).stop_step is None
    (tmp_path / "result.json").write_text(json.dumps({"n_frames": 1, "n_steps_run": 20, "stop_reason": "x",
                                                      "wall_s": 1.0}))  # an older release's: no stop_step
    assert MDResult.read(tmp_path).stop_step is None


def test_exploration_round_trip_and_counts(tmp_path):
    exploration = ExplorationResult(engine="ase", trajectories=[
        TrajectoryResult(dir="traj.000", family="a", temperature=300.0, n_frames=5, n_steps_run=20, wall_s=1.5),
        TrajectoryResult(dir="traj.001", family="a", temperature=900.0, n_frames=2, n_steps_run=5,
                         stop_reason="deviation 5.20 > 3.00 eV/A at step 5", stop_step=5, wall_s=0.5),
        TrajectoryResult(dir="traj.002", family="b", temperature=300.0, n_frames=0,
                         stop_reason="MD task failed: no output"),
    ])
    exploration.write(tmp_path)
    assert ExplorationResult.read(tmp_path) == exploration
    assert (exploration.n_trajectories, exploration.n_stopped) == (3, 2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary) == ["engine", "trajectories"]
    assert list(summary["trajectories"][0]) == ["dir", "family", "temperature", "n_frames", "n_steps_run",
                                                "stop_reason", "stop_step", "wall_s"]


def test_an_older_summary_reads_with_its_missing_keys_none(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"trajectories": [
        {"dir": "traj.000", "family": "a", "temperature": 300.0, "n_frames": 3, "n_steps_run": 10,
         "stop_reason": "atoms 0.61 A apart at step 10", "wall_s": 1.0, "a_later_key": 1},
        {"dir": "traj.001", "family": "b", "temperature": 300.0, "n_frames": 0, "stop_reason": "MD task failed: x"},
    ]}))
    exploration = ExplorationResult.read(tmp_path)
    assert exploration.engine is None and [t.stop_step for t in exploration.trajectories] == [None, None]
    assert exploration.trajectories[1] == TrajectoryResult(dir="traj.001", family="b", temperature=300.0, n_frames=0,
                                                           stop_reason="MD task failed: x")


def test_a_bad_summary_names_the_file(tmp_path):
    with pytest.raises(UserError, match="summary.json is missing; run the explore step first"):
        ExplorationResult.read(tmp_path)
    no_family = '{"trajectories": [{"dir": "traj.000"}]}'
    for text, message in (("{", "is not valid JSON"), ("[]", "has no 'trajectories' list"),
                          (no_family, r"trajectories\[0\] needs a 'dir' and a 'family'")):
        (tmp_path / "summary.json").write_text(text)
        with pytest.raises(UserError, match=message):
            ExplorationResult.read(tmp_path)
