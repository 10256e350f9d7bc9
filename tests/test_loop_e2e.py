"""``python -m lfpo_al train`` end to end on tiny settings: a finished run's outputs, status, W&B files; a
finished run is never rewound; a copied run folder resumes where it now is.

Real components throughout: the shipped starter DPA-2 fine-tuned by deepmd-kit, ASE MD, CHGNet labels
dispatched through dpdispatcher, W&B offline. The run is the session's ``finished_run`` (conftest), which
the kill-and-resume test also takes as its reference; a kill during labeling and its resume are tested there
(``tests/reliability/test_kill_resume.py``) and at the labeling driver (``tests/test_label_resume.py``).
"""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TINY_RUN, run_cli, start_train

pytestmark = pytest.mark.xdist_group("finished_run")  # the session's finished run (conftest)


@pytest.mark.slow
def test_a_finished_run_has_every_iterations_outputs(finished_run):
    run, out = finished_run
    records = [json.loads(line) for line in (run / "record.jsonl").read_text().splitlines()]
    steps = [(r["iter"], r["step"]) for r in records if r["status"] == "done"]
    (reference,) = [r["outputs"]["polaron_reference"] for r in records if r["step"] == "test_set"]
    assert len(steps) == len(set(steps)), "a finished step was redone"
    for k in (0, 1):
        for step in ("train", "explore", "select", "label", "validate"):
            assert (k, step) in steps
        metrics = json.loads((run / f"iter.{k:06d}" / "04.validate" / "metrics.json").read_text())
        for key in ("energy_rmse_mev_per_atom", "force_rmse_ev_per_ang", "valence_agreement"):
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), (key, metrics.get(key))
        # bond errors need relaxed teacher references; references from moments compare the valence only
        bonds = metrics["mean_mo_bond_error_ang"]
        assert (isinstance(bonds, float) and math.isfinite(bonds)) == (reference == "teacher_relaxed"), (bonds, reference)
        (case,) = metrics["dynamics"].values()  # member 0's held-out MD against the teacher's, 20 fs
        assert case["duration_ps"] == 0.02 and case["wasserstein_ang"] > 0 and metrics["dynamics_summary"]["n_structures"] == 1
        assert (run / f"iter.{k:06d}" / "04.validate" / "dynamics.png").is_file()
        report = json.loads((run / f"iter.{k:06d}" / "02.select" / "report.json").read_text())
        assert {"n_accurate", "n_candidate", "n_failed", "n_selected", "accurate_ratio"} <= set(report)
        assert (run / f"iter.{k:06d}" / "04.validate" / "parity.png").is_file()
    assert sorted(p.name for p in (run / "final").glob("*.pth")) == ["model.000.pth", "model.001.pth"]
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "no offline W&B run files"
    assert "final ensemble" in out
    shown = run_cli("status", f"run_name={run.name}", f"runs_dir={run.parent}")
    assert shown.returncode == 0 and "finished" in shown.stdout


@pytest.mark.slow
def test_a_finished_run_is_never_rewound(finished_run, tmp_path):
    """A lower loop.max_iters, or the same command again, touches nothing."""
    run, _ = finished_run
    final_files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run / "final").iterdir()}
    n_records = len((run / "record.jsonl").read_text().splitlines())
    for extra in (["loop.max_iters=1"], []):
        log = tmp_path / "again.log"
        again = start_train(run.parent, log, "tracking.mode=offline", *extra)
        assert again.wait(timeout=600) == 0, log.read_text()[-3000:]
        assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (run / "final").iterdir()} == final_files
        assert len((run / "record.jsonl").read_text().splitlines()) == n_records, "a no-op resume appended records"


@pytest.mark.slow
def test_a_copied_run_folder_resumes_where_it_now_is(finished_run, tmp_path):
    """The copy resumes and reports its own final models while the original is away: nothing may point
    into it. The original is moved aside for the while and put back (the tests of this group run one at a
    time on one worker)."""
    run, _ = finished_run
    copy_root = tmp_path / "copied"
    copy_root.mkdir()
    shutil.copytree(run, copy_root / "moved", ignore=shutil.ignore_patterns("wandb", ".lock"))
    aside = run.with_name(run.name + ".aside")
    os.rename(run, aside)
    try:
        elsewhere = [a for a in TINY_RUN if not a.startswith("run_name=")] + [
            "run_name=moved", f"runs_dir={copy_root}", "tracking.mode=offline"]
        moved = subprocess.run([sys.executable, "-m", "lfpo_al", "train", *elsewhere],
                               cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert moved.returncode == 0, moved.stdout[-2000:] + moved.stderr[-2000:]
        shown = run_cli("status", "run_name=moved", f"runs_dir={copy_root}")
        assert shown.returncode == 0 and f"final models in {copy_root / 'moved' / 'final'}" in shown.stdout
        assert not run.exists(), "resuming the copy recreated the original run folder"
    finally:
        os.rename(aside, run)
