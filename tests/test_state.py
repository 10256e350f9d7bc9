"""Run state: record lines, lock, frozen config, status text."""

import multiprocessing

import pytest

from lfpo_al.errors import UserError
from lfpo_al.loop.report import status_text
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
    (row,) = state.rows()
    assert row.label.n_labeled == 4 and row.calibration.spearman_rho == 0.7 and row.steps == ["select", "label", "validate"]
    assert row.validate.dynamics_summary is None and row.train is None
    text = status_text(tmp_path)
    assert "0.300" in text and "not finished" in text


def test_a_torn_last_line_is_left_out_and_cut_off_by_the_next_append(tmp_path):
    state = RunState(tmp_path)
    state.append(SETUP, "init_data", outputs={"n_frames": 5})
    state.append(0, "train")
    whole = state.record_path.read_text()
    state.record_path.write_text(whole + '{"iter": 0, "step": "explo')  # killed in the middle of a write
    assert [r["step"] for r in state.records()] == ["init_data", "train"]
    assert "not finished" in status_text(tmp_path) and "iter 0 train" in status_text(tmp_path)
    state.append(0, "explore")
    assert state.record_path.read_text() == whole + state.record_path.read_text().splitlines(keepends=True)[-1]
    assert [r["step"] for r in state.records()] == ["init_data", "train", "explore"]


def test_an_unreadable_line_inside_the_record_names_the_file_and_line(tmp_path):
    state = RunState(tmp_path)
    state.append(SETUP, "init_data")
    state.record_path.write_text(state.record_path.read_text() + "not json\n")
    state.append(0, "train")
    with pytest.raises(UserError, match=r"record\.jsonl line 2 is not a record"):
        state.records()


def test_a_copied_run_folder_keeps_its_config(tmp_path):
    state = RunState(tmp_path / "copy")
    config = {"run_name": "demo", "runs_dir": "runs", "loop": {"max_iters": 3}}
    state.freeze_config(config)
    state.freeze_config({**config, "run_name": "copy", "runs_dir": str(tmp_path)})  # resumed where it now is


def test_status_of_a_copied_run_names_its_own_final_folder(tmp_path):
    original, copy = tmp_path / "original", tmp_path / "copy"
    RunState(original).append(1, "final", outputs={"final_dir": str(original / "final"), "reason": "max_iters reached"})
    import shutil

    shutil.copytree(original, copy)
    text = status_text(copy)
    assert f"final models in {copy / 'final'}" in text and str(original) not in text


def test_status_of_a_missing_run_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no run folder"):
        status_text(tmp_path / "absent")
