"""Distillation: the gate's checks on known metrics, and one real tiny distil-compress-gate run."""

import json
from pathlib import Path

import pytest

from lfpo_al.distill.gate import gate_checks
from lfpo_al.validate.equivalence import case_verdicts, seed_difference, verdict, w1_verdict
from lfpo_al.distill.settings import DistillSettings, GateSettings
from lfpo_al.errors import UserError

ERRORS = {"compressed": {"energy_rmse_mev_per_atom": 1.0, "force_rmse_ev_per_ang": 0.03}}
SEEDS = [{"resolved": True, "centre_ox": 2.085, "centre_red": 2.180, "m3": 4.0},
         {"resolved": True, "centre_ox": 2.087, "centre_red": 2.182, "m3": 4.1}]


def case(model=SEEDS, teacher=SEEDS, ratio=None, w1=0.002, noise=0.003):
    ratio = ratio or {"ratio": 1.05, "low": 0.9, "high": 1.2}
    return {"verdicts": case_verdicts(model, teacher, ratio, w1, noise, 2.0, GateSettings().targets())}


def checks_of(dynamics, errors=ERRORS):
    return {c["check"]: c["passed"] for c in gate_checks(errors, dynamics, GateSettings(), "compressed")}


def test_gate_passes_only_what_is_shown_equivalent():
    assert all(checks_of({"c": case()}).values())


def test_gate_fails_each_limit_it_names():
    errors = {"compressed": {"energy_rmse_mev_per_atom": 3.0, "force_rmse_ev_per_ang": 0.2}}
    off = [dict(s, m3=s["m3"] + 2.0, resolved=False) for s in SEEDS]
    checks = checks_of({"c": case(model=off, ratio={"ratio": 3.0, "low": 1.9, "high": 5.0}, w1=0.02)}, errors)
    assert not any(checks.values()), checks


def test_an_interval_that_spans_the_tolerance_is_inconclusive_not_passed():
    """Failing to reject agreement is not agreement: a ratio interval holding 1 but reaching beyond 1.3."""
    verdicts = case(ratio={"ratio": 1.0, "low": 0.4, "high": 2.5})["verdicts"]
    assert verdicts["flip_rate"]["verdict"] == "inconclusive"
    assert not checks_of({"c": {"verdicts": verdicts}})["c: flip_rate"]
    one_seed = case(model=SEEDS[:1], teacher=SEEDS[:1])["verdicts"]  # one seed a side: no interval at all
    assert one_seed["m3_population"]["verdict"] == "inconclusive"


def test_a_w1_goal_below_the_teachers_seed_spread_is_unmeasurable():
    w1 = case(w1=0.002, noise=0.012)["verdicts"]["wasserstein"]
    assert w1["verdict"] == "unmeasurable" and "ps per seed would measure it" in w1["note"]
    assert w1_verdict(0.002, 0.002, 0.005, 2.0)["verdict"] == "pass"
    assert w1_verdict(0.02, 0.002, 0.005, 2.0)["verdict"] == "fail"


def test_verdict_reads_the_interval_against_the_tolerance():
    assert verdict([-0.1, 0.1], (-0.2, 0.2)) == "pass"
    assert verdict([-0.1, 0.3], (-0.2, 0.2)) == "inconclusive"
    assert verdict([0.3, 0.5], (-0.2, 0.2)) == "fail"
    assert verdict(None, (-0.2, 0.2)) == "inconclusive"
    diff, interval = seed_difference([1.0, 1.2], [1.1, 1.1])
    assert diff == pytest.approx(0.0) and interval[0] < 0 < interval[1]


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
    from lfpo_al.distill.cli import distill_command
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
    assert {c["check"].split(": ")[-1] for c in report["checks"]} >= {"force_rmse_ev_per_ang", "wasserstein", "flip_rate",
                                                                       "m3_population", "valence_resolved"}
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
    assert (RunLayout.of(tmp_path, "d").passed_student() is not None) == report["passed"]

    from lfpo_al.config import instantiate_group
    from lfpo_al.explore.step import explore_step

    explore = instantiate_group(compose_config([
        f"explore.structures=[{{x: 0.5, li_order: random, seed: 0, {cell}}}]", "explore.temperatures=[600]",
        "explore.n_steps=4", "explore.record_every=2"]), "explore")
    exploration = explore_step(explore, instantiate_group(cfg, "system"), None, [m.frozen for m in tiny_members],
                               tmp_path / "md", machine, driver=root / "student.pth")
    assert exploration.trajectories[0].n_frames == 3
    devi = np.loadtxt(tmp_path / "md" / "traj.000" / "model_devi.out")
    assert (devi[:, 4] > 0).all()  # both members score every frame, none of them drove it
