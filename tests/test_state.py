"""Run state: record lines, lock, frozen config, status text."""

import multiprocessing

import pytest

from lfpo_al.errors import UserError
from lfpo_al.loop.report import iteration_rows, status_text
from lfpo_al.loop.state import SETUP, RunState


def test_record_roundtrip(tmp_path):
    state = RunState(tmp_path / "run")
    assert state.done(0, "train") is None
    state.append(SETUP, "init_data", outputs={"n_frames": 5})
    state.append(0, "train", "done", outputs={"models": ["a.pth"]})
    state.append(0, "explore", "failed")
    assert state.done(0, "train")["outputs"]["models"] == ["a.pth"]
    assert state.done(0, "explore") is None
    assert [r["step"] for r in state.records()] == ["init_data", "train", "explore"]


def _hold_lock(run_dir, ready, release):
    with RunState(run_dir).lock():
        ready.set()
        release.wait(10)


def test_lock_refuses_second_run(tmp_path):
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(UserError, match="is in use by pid"):
            with RunState(tmp_path).lock():
                pass
    finally:
        release.set()
        holder.join(10)
    with RunState(tmp_path).lock():  # free again once the holder is gone
        pass


def test_lock_released_when_holder_is_killed(tmp_path):
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(tmp_path, ready, release))
    holder.start()
    assert ready.wait(10)
    holder.kill()
    holder.join(10)
    with RunState(tmp_path).lock():
        pass


def test_config_change_refused_unless_allowed(tmp_path):
    state = RunState(tmp_path)
    config = {"system": {"metal": "Fe"}, "loop": {"max_iters": 3}, "model": {"numb_steps": 100}}
    state.freeze_config(config)
    state.freeze_config({**config, "loop": {"max_iters": 5}})  # allowed: more iterations
    with pytest.raises(UserError, match=r"model\.numb_steps=100, now 200"):
        state.freeze_config({**config, "model": {"numb_steps": 200}})


def test_status_text(tmp_path):
    assert "no record yet" in status_text(tmp_path)
    state = RunState(tmp_path)
    state.append(SETUP, "init_data")
    state.append(0, "select", outputs={"n_selected": 4, "accurate_ratio": 0.5})
    state.append(0, "label", outputs={"n_labeled": 4})
    state.append(0, "validate", outputs={"force_rmse_ev_per_ang": 0.3, "valence_agreement": 1.0,
                                         "calibration": {"spearman_rho": 0.7}})
    rows = iteration_rows(state.records())
    assert rows[0]["label_n_labeled"] == 4 and rows[0]["spearman_rho"] == 0.7
    text = status_text(tmp_path)
    assert "0.300" in text and "not finished" in text
