"""Distillation: the gate's checks on known metrics, and one real tiny distil-compress-gate run."""

import json
from pathlib import Path

import pytest

from lfpo_al.distill.gate import flip_check, gate_checks
from lfpo_al.distill.settings import DistillSettings, GateSettings
from lfpo_al.errors import UserError

CASE = {"wasserstein_ang": 0.004, "wasserstein_teacher_seeds_ang": 0.009, "m3_population_rel_error": 0.05,
        "flip_rate_ratio": {"ratio": 1.1, "low": 0.7, "high": 1.8}}
ERRORS = {"compressed": {"energy_rmse_mev_per_atom": 1.0, "force_rmse_ev_per_ang": 0.03}}


def test_gate_passes_a_student_within_every_limit():
    checks = gate_checks(ERRORS, {"c": CASE}, GateSettings(), "compressed")
    assert [c["passed"] for c in checks] == [True] * 5


def test_gate_fails_each_limit_it_names():
    errors = {"compressed": {"energy_rmse_mev_per_atom": 3.0, "force_rmse_ev_per_ang": 0.2}}
    bad = {**CASE, "wasserstein_ang": 0.02, "m3_population_rel_error": 0.3,
           "flip_rate_ratio": {"ratio": 3.0, "low": 1.9, "high": 5.0}}
    checks = gate_checks(errors, {"c": bad}, GateSettings(), "compressed")
    assert [c["passed"] for c in checks] == [False] * 5


def test_wasserstein_limit_is_the_teachers_own_seed_spread_when_larger():
    checks = gate_checks(ERRORS, {"c": {**CASE, "wasserstein_ang": 0.008}}, GateSettings(), "compressed")
    w1 = next(c for c in checks if c["check"].endswith("wasserstein_ang"))
    assert w1["passed"] and w1["limit"] == 0.009
    checks = gate_checks(ERRORS, {"c": {**CASE, "wasserstein_ang": 0.0095}}, GateSettings(), "compressed")
    assert not next(c for c in checks if c["check"].endswith("wasserstein_ang"))["passed"]


def test_flip_check_reads_the_interval():
    assert flip_check("f", {"ratio": None, "low": None, "high": None}, 1.3)["passed"]  # no flips either side
    assert flip_check("f", {"ratio": 0.0, "low": 0.0, "high": 0.9}, 1.3)["passed"]  # interval reaches 1/1.3
    assert not flip_check("f", {"ratio": 0.2, "low": 0.05, "high": 0.6}, 1.3)["passed"]
    assert flip_check("f", {"ratio": 4.0, "low": 1.2, "high": None}, 1.3)["passed"]


def test_settings_refuse_a_student_compress_cannot_tabulate():
    base = dict(md_structures=[{"x": 0.5}], md_temperatures=[600], dynamics_structures=[{"x": 0.5}],
                dynamics_temperatures=[600])
    with pytest.raises(UserError, match="compressible"):
        DistillSettings(descriptor={"type": "dpa2"}, **base)
    with pytest.raises(UserError, match="attn_layer"):
        DistillSettings(descriptor={"type": "se_atten_v2", "attn_layer": 2}, **base)
    with pytest.raises(UserError, match="md_steps"):
        DistillSettings(descriptor={"type": "se_e2_a"}, md_steps=0, **base)


def test_student_input_names_its_data_by_absolute_path(tmp_path, monkeypatch):
    from lfpo_al.distill.step import student_input

    monkeypatch.chdir(tmp_path)
    settings = DistillSettings(descriptor={"type": "se_e2_a", "sel": "auto", "rcut": 6.0}, fitting_net={"neuron": [8]})
    systems = student_input(settings, ["Li", "Fe", "P", "O"], [Path("runs/x/distill/data/train/LiFePO4")])
    assert systems["training"]["training_data"]["systems"] == [str(tmp_path / "runs/x/distill/data/train/LiFePO4")]


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_members")  # shares the session's trained members (conftest)
def test_distill_tiny_real_run(tmp_path, tiny_members, machine):
    """Teacher: a tiny fine-tuned member. MD, batched labels, dp train + freeze + compress, dynamics against
    the teacher, the report; a rerun trains nothing; the student then drives MD that the ensemble scores."""
    import numpy as np
    from deepmd.infer import DeepPot

    from lfpo_al.config import compose_config
    from lfpo_al.distill.cli import distill_command, passed_student
    from lfpo_al.layout import RunLayout

    cell = "supercell: [1, 1, 1]"
    cfg = compose_config([
        f"runs_dir={tmp_path}", "run_name=d", f"distill.teacher={tiny_members[0].frozen}",
        f"distill.md_structures=[{{x: 0.5, li_order: random, seed: 0, {cell}}}]", "distill.md_temperatures=[600]",
        "distill.md_steps=20", "distill.md_record_every=2", "distill.numb_steps=30",
        f"distill.dynamics_structures=[{{x: 0.5, li_order: random, seed: 3, {cell}}}]",
        "distill.dynamics_temperatures=[600]", "distill.dynamics_steps=20", "distill.dynamics_record_every=2",
        "distill.smoothing_fs=4"])
    assert distill_command(cfg) == 0
    root = RunLayout.of(tmp_path, "d").distill
    report = json.loads((root / "report.json").read_text())
    assert report["n_train_frames"] == 11 and report["heldout"]["n_frames"] == 2 * 11  # two seeds
    assert {c["check"].split(": ")[-1] for c in report["checks"]} >= {"force_rmse_ev_per_ang", "wasserstein_ang",
                                                                       "flip_rate_ratio", "m3_population_rel_error"}
    assert report["passed"] == all(c["passed"] for c in report["checks"])
    # the compressed student is the frozen one, tabulated: the same forces to the table's accuracy
    frozen, compressed = DeepPot(str(root / "student" / "model.pth")), DeepPot(str(root / "student.pth"))
    types = frozen.get_type_map()
    import ase.io
    frame = ase.io.read(root / "dynamics" / next(iter(report["dynamics"])).__add__(".s0.teacher.extxyz"), index=-1)
    args = (frame.positions.reshape(1, -1), frame.cell.array.reshape(1, 9),
            [types.index(s) for s in frame.get_chemical_symbols()])
    assert np.abs(frozen.eval(*args)[1] - compressed.eval(*args)[1]).max() < 1e-2
    mtime = (root / "student" / "model.pth").stat().st_mtime
    assert distill_command(cfg) == 0 and (root / "student" / "model.pth").stat().st_mtime == mtime  # resumed
    assert (passed_student(RunLayout.of(tmp_path, "d")) is not None) == report["passed"]

    from lfpo_al.config import instantiate_group
    from lfpo_al.explore.step import explore_step

    explore = instantiate_group(compose_config([
        f"explore.structures=[{{x: 0.5, li_order: random, seed: 0, {cell}}}]", "explore.temperatures=[600]",
        "explore.n_steps=4", "explore.record_every=2"]), "explore")
    summary = explore_step(explore, instantiate_group(cfg, "system"), None, [m.frozen for m in tiny_members],
                           tmp_path / "md", machine, driver=root / "student.pth")
    assert summary["trajectories"][0]["n_frames"] == 3
    devi = np.loadtxt(tmp_path / "md" / "traj.000" / "model_devi.out")
    assert (devi[:, 4] > 0).all()  # both members score every frame, none of them drove it
