"""``python -m lfpo_al train`` end to end on tiny settings: killed during labeling, resumed, finished.

Real components throughout: the shipped starter DPA-2 fine-tuned by deepmd-kit, ASE MD, CHGNet labels
dispatched through dpdispatcher, W&B offline.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

TINY = [
    "experiment=demo", "run_name=e2e", "model.n_members=2", "model.numb_steps=20", "model.member0_numb_steps=30",
    "explore.temperatures=[700]", "explore.n_steps=60", "explore.record_every=10",
    "explore.structures=[{x: 0.5, li_order: random, seed: 0, supercell: [1, 1, 1]},"
    "{x: 0.5, li_order: planes_c, supercell: [1, 1, 2]}]",
    "selection=trust_window", "selection.trust_lo=0.0", "selection.trust_hi=100.0", "selection.max_selected=6",
    "validate.test_structures=[{x: 1.0, supercell: [1, 1, 1]}, {x: 0.5, seed: 3, supercell: [1, 1, 1]}]",
    "validate.frames_per_structure=2", "validate.relax_steps=30",
    "loop.max_iters=2", "loop.label_budget=100", "loop.init_frames_per_structure=2",
    "tracking.mode=offline",
    "machine.resources.group_size=1",  # label rounds of 2 tasks: results come home while others still run
    "validate.dynamics.structures=[{x: 0.5, seed: 4, supercell: [1, 1, 1]}]", "validate.dynamics.seeds=[0]",
    "validate.dynamics.n_steps=40", "validate.dynamics.record_every=4", "validate.dynamics.smoothing_fs=8",
]


def train(runs_dir, *extra, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lfpo_al", "train", *TINY, f"runs_dir={runs_dir}", *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **kwargs)


def labeled_tasks(label_dir):
    return {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in label_dir.glob("task.*/labeled.extxyz")}


@pytest.mark.slow
def test_train_killed_during_labeling_resumes_without_relabeling(tmp_path):
    label_dir = tmp_path / "e2e" / "iter.000000" / "03.label"
    first = train(tmp_path)
    deadline = time.time() + 900
    while time.time() < deadline and first.poll() is None and not labeled_tasks(label_dir):
        time.sleep(0.5)
    assert first.poll() is None, f"train ended before labeling: {first.stdout.read()[-3000:]}"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    done_before = labeled_tasks(label_dir)
    assert done_before, "no label task had finished at the kill"

    second = train(tmp_path)
    out, _ = second.communicate(timeout=1500)
    assert second.returncode == 0, out[-3000:]
    after = labeled_tasks(label_dir)
    for task, (mtime, content) in done_before.items():
        assert after[task] == (mtime, content), f"{task} was labeled again after the resume"

    run = tmp_path / "e2e"
    records = [json.loads(line) for line in (run / "record.jsonl").read_text().splitlines()]
    steps = [(r["iter"], r["step"]) for r in records if r["status"] == "done"]
    assert len(steps) == len(set(steps)), "a finished step was redone"
    for k in (0, 1):
        for step in ("train", "explore", "select", "label", "validate"):
            assert (k, step) in steps
        metrics = json.loads((run / f"iter.{k:06d}" / "04.validate" / "metrics.json").read_text())
        for key in ("energy_rmse_mev_per_atom", "force_rmse_ev_per_ang", "valence_agreement", "mean_mo_bond_error_ang"):
            assert metrics[key] == metrics[key]  # present and not NaN
        (case,) = metrics["dynamics"].values()  # member 0's held-out MD against the teacher's, 40 fs
        assert case["duration_ps"] == 0.04 and case["wasserstein_ang"] > 0 and metrics["dynamics_summary"]["n_structures"] == 1
        assert (run / f"iter.{k:06d}" / "04.validate" / "dynamics.png").is_file()
        report = json.loads((run / f"iter.{k:06d}" / "02.select" / "report.json").read_text())
        assert {"n_accurate", "n_candidate", "n_failed", "n_selected", "accurate_ratio"} <= set(report)
        assert (run / f"iter.{k:06d}" / "04.validate" / "parity.png").is_file()
    assert sorted(p.name for p in (run / "final").glob("*.pth")) == ["model.000.pth", "model.001.pth"]
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run files"
    assert "final ensemble" in out

    status = subprocess.run([sys.executable, "-m", "lfpo_al", "status", "run_name=e2e", f"runs_dir={tmp_path}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert status.returncode == 0 and "finished" in status.stdout

    # a finished run is never rewound: a lower loop.max_iters, or the same command again, touches nothing
    final_files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run / "final").iterdir()}
    n_records = len((run / "record.jsonl").read_text().splitlines())
    for extra in (["loop.max_iters=1"], []):
        again = train(tmp_path, *extra)
        out, _ = again.communicate(timeout=600)
        assert again.returncode == 0, out[-3000:]
        assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run / "final").iterdir()} == final_files
        assert len((run / "record.jsonl").read_text().splitlines()) == n_records, "a no-op resume appended records"

    # a copied run folder resumes where it now is and reports its own final models
    copy_root = tmp_path / "copied"
    copy_root.mkdir()
    shutil.copytree(run, copy_root / "moved", ignore=shutil.ignore_patterns("wandb", ".lock"))
    shutil.rmtree(run)  # the original is gone: nothing may still point into it
    elsewhere = [a for a in TINY if not a.startswith("run_name=")] + ["run_name=moved", f"runs_dir={copy_root}"]
    moved = subprocess.run([sys.executable, "-m", "lfpo_al", "train", *elsewhere],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
    status = subprocess.run([sys.executable, "-m", "lfpo_al", "status", "run_name=moved", f"runs_dir={copy_root}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert status.returncode == 0 and f"final models in {copy_root / 'moved' / 'final'}" in status.stdout
