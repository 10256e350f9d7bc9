"""``status --check``: every dataset and model of a run is read back; a damaged file is named, nothing written."""

import dpdata
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from conftest import run_cli
from lfpo_al.loop.state import SETUP, RunState
from lfpo_al.loop.verify import check_text, run_problems
from lfpo_al.structures import BuildSpec, build_structure


@pytest.fixture
def run_dir(load_system, tmp_path):
    """A run folder with a record, init data, an iteration's label data and frozen models (tiny TorchScript)."""
    import torch

    system = load_system("lfpo")
    run = tmp_path / "run"
    RunState(run).append(SETUP, "init_data")
    for folder in ("data/init/data", "iter.000000/03.label/data"):
        multi = dpdata.MultiSystems(type_map=list(system.type_map))
        atoms = build_structure(system, BuildSpec(supercell=[1, 1, 1], x=0.5, seed=0))
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((len(atoms), 3)), stress=np.zeros(6))
        multi.append(dpdata.LabeledSystem(atoms, fmt="ase/structure", type_map=list(system.type_map)))
        multi.to_deepmd_npy(str(run / folder))
    model = torch.jit.script(torch.nn.Linear(2, 2))
    for path in (run / "iter.000000/00.train/member.000/frozen_model.pth", run / "final/model.000.pth"):
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(str(path))
    return run


def test_a_whole_run_passes(run_dir):
    problems, checked = run_problems(run_dir)
    assert problems == [] and checked == 5  # record, two datasets, two models
    text, whole = check_text(run_dir)
    assert whole and "5 files read back whole" in text


def test_damaged_files_are_each_named(run_dir):
    force = next((run_dir / "iter.000000/03.label/data").rglob("force.npy"))
    force.write_bytes(force.read_bytes()[:100])
    model = run_dir / "final/model.000.pth"
    model.write_bytes(model.read_bytes()[:50])
    (run_dir / "record.jsonl").write_text("garbage\n" + (run_dir / "record.jsonl").read_text())
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    problems, _ = run_problems(run_dir)
    assert len(problems) == 3
    assert any("record.jsonl line 1" in p for p in problems)
    assert any(str(force.parent.parent) in p and "unreadable" in p for p in problems)
    assert any(str(model) in p and "not a loadable frozen model" in p for p in problems)
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before  # nothing written


def test_cli_exit_status(run_dir):
    ok = run_cli("status", "--check", f"runs_dir={run_dir.parent}", "run_name=run")
    assert ok.returncode == 0 and "read back whole" in ok.stdout, ok.stderr[-2000:]
    (run_dir / "final/model.000.pth").write_bytes(b"not a model")
    bad = run_cli("status", "--check", f"runs_dir={run_dir.parent}", "run_name=run")
    assert bad.returncode == 1 and "1 of 5 files damaged" in bad.stdout
