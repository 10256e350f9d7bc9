"""Dynamics metrics on trajectories with known answers (programmed bond traces), then one real short
teacher-versus-model run."""

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from lfpo_al.analysis.synthetic import synthetic_trajectory
from lfpo_al.validate.dynamics import (DynamicsSummary, compare_trajectories, flip_ea_by_structure, pair_rdf,
                                      rate_ratio, summarise, wasserstein)


def programmed(system, polaron_moves=4, seed=0, n_frames=600):
    traj, truth = synthetic_trajectory(system, (1, 2, 2), n_frames=n_frames, polaron_moves=polaron_moves, li_hops=0,
                                       seed=seed, min_gap_frames=60)
    return traj, truth


def scaled(traj, factor):
    """The same trajectory in a cell expanded by ``factor``: every bond length times ``factor``."""
    return replace(traj, positions=(traj.positions * factor).astype(np.float32), cells=traj.cells * factor)


def test_a_model_identical_to_its_teacher_scores_perfectly(load_system):
    system = load_system("lfpo")
    traj, truth = programmed(system)
    metrics, _, _ = compare_trajectories([traj], [traj], system, smoothing_fs=50)
    assert metrics["wasserstein_ang"] == 0 and metrics["m3_population_rel_error"] == 0
    assert metrics["rdf_mo_distance"] == 0 and metrics["rdf_lio_distance"] == 0
    ratio = metrics["flip_rate_ratio"]
    assert ratio["n_model"] == ratio["n_teacher"] == len(truth.flips) == 8
    assert ratio["ratio"] == 1 and ratio["low"] < 1 < ratio["high"]
    # the programmed cell: 16 Fe, x = 0.5, eight Fe3+ at every frame (a move keeps the count; the two
    # flips of a move are dated apart by a frame or two)
    assert metrics["m3_expected"] == 8 and metrics["m3_model"]["mean"] == pytest.approx(8, abs=0.05)
    assert all(v["resolved"] for v in metrics["valence_teacher"])
    verdicts = metrics["verdicts"]  # one seed a side: equal, but nothing has an interval to pass on
    assert verdicts["valence_resolved"]["verdict"] == "pass" and verdicts["m3_population"]["verdict"] == "inconclusive"
    assert verdicts["flip_rate"]["verdict"] == "inconclusive"  # 8 flips each: [0.4, 2.6] spans the +-1.5x tolerance


def test_wasserstein_of_an_expanded_model_is_its_mean_bond_shift(load_system):
    """W1(X, sX) = (s - 1) E[X] for positive X: a model whose octahedra are 1 % too large."""
    system = load_system("lfpo")
    traj, _ = programmed(system)
    metrics, _, teacher = compare_trajectories([scaled(traj, 1.01)], [traj], system, smoothing_fs=50)
    assert metrics["wasserstein_ang"] == pytest.approx(0.01 * teacher.smoothed_bonds().mean(), rel=1e-3)
    assert metrics["rdf_mo_distance"] > 0.1  # the first M-O shell moved by 0.02 A, half a bin
    assert wasserstein([1.0, 2.0], [1.0, 2.0]) == 0


def test_a_model_without_flips_is_slower_than_its_teacher_beyond_the_counting_noise(load_system):
    system = load_system("lfpo")
    moving, _ = programmed(system, polaron_moves=6)
    still, _ = programmed(system, polaron_moves=0)
    metrics, _, _ = compare_trajectories([still], [moving], system, 50)
    ratio = metrics["flip_rate_ratio"]
    assert (ratio["n_model"], ratio["n_teacher"], ratio["ratio"], ratio["low"]) == (0, 12, 0.0, 0.0)
    assert ratio["high"] < 0.5  # 0 against 12 flips: the interval excludes a rate even half the teacher's
    assert summarise({"a": metrics}).flip_rate_ratio == 0.0


def test_two_seeds_give_the_teachers_own_spread(load_system):
    system = load_system("lfpo")
    runs = [programmed(system, seed=s)[0] for s in (0, 1)]
    metrics, _, teacher = compare_trajectories(runs, runs, system, 50)
    spread = metrics["wasserstein_teacher_seeds_ang"]
    assert spread == pytest.approx(wasserstein(teacher.smoothed_bonds(0), teacher.smoothed_bonds(1)), abs=1e-5)
    assert spread > 0 and metrics["n_seeds"] == 2 and metrics["wasserstein_ang"] == 0


def test_rate_ratio_interval():
    equal = rate_ratio(100, 10.0, 100, 10.0)
    assert equal["ratio"] == 1 and 0.74 < equal["low"] < 0.78 and 1.28 < equal["high"] < 1.35
    half = rate_ratio(10, 5.0, 40, 10.0)  # 2 against 4 per unit: a ratio of 0.5
    assert half["ratio"] == 0.5 and half["low"] < 0.5 < half["high"]
    assert rate_ratio(3, 1.0, 0, 1.0)["ratio"] is None  # no teacher flips: no ratio, and no upper bound
    assert rate_ratio(3, 1.0, 0, 1.0)["high"] is None


def test_rdf_of_the_crystal_has_its_first_shells_where_the_system_puts_them(load_system):
    system = load_system("lfpo")
    traj, _ = programmed(system, polaron_moves=0, n_frames=130)
    g = pair_rdf(traj, "Fe", "O")
    r = np.arange(0.025, 4.0, 0.05)
    assert 1.9 < r[np.argmax(g)] < 2.3  # the Fe-O octahedron
    assert g[r < 1.8].sum() == 0


# --- real MD: the CHGNet teacher and the shipped starter from the same held-out start -------------------

@pytest.mark.slow
def test_teacher_and_model_md_compared_end_to_end(tmp_path, load_system):
    """The set-up's teacher runs (second process) and the validate step's model runs, on a 26-atom cell for
    60 fs: files, metrics with their intervals, and the figure. A rerun finds every file and runs nothing."""
    from functools import partial

    from deepmd.calculator import DP

    from lfpo_al.config import compose_config
    from lfpo_al.loop.components import Components
    from lfpo_al.validate.md import DynamicsCase, run_cases
    from lfpo_al.validate.reference import dynamics_cases, teacher_dynamics
    from lfpo_al.validate.step import DYNAMICS_DIR, compare_dynamics

    comp = Components.from_config(compose_config([
        "validate.dynamics.structures=[{x: 0.5, li_order: random, seed: 103, supercell: [1, 1, 1]}]",
        "validate.dynamics.temperatures=[800]", "validate.dynamics.seeds=[0,1]", "validate.dynamics.n_steps=60",
        "validate.dynamics.record_every=2", "validate.dynamics.smoothing_fs=10"]))
    cases = dynamics_cases(comp.validate.dynamics, comp.system, comp.build_defaults, tmp_path / "teacher")
    with teacher_dynamics(cases, comp.labeler, done=False) as wait:
        record = wait()
    assert record == {"n_cases": 1, "n_runs": 2, "n_written": 2}
    starter = str(Path(__file__).parents[1] / "lfpo_al" / "starter" / "starter_dpa2.pt")
    out = tmp_path / "validate"
    assert len(run_cases(partial(DP, model=starter), cases, partial(DynamicsCase.model_paths, out_dir=out / DYNAMICS_DIR))) == 2
    metrics = compare_dynamics(cases, comp.system, comp.validate, out)
    (case,) = metrics["dynamics"].values()
    assert case["n_seeds"] == 2 and case["n_metal"] == 4 and case["m3_expected"] == 2 and case["duration_ps"] == 0.06
    assert case["wasserstein_ang"] > 0 and case["wasserstein_teacher_seeds_ang"] > 0
    assert 0 <= case["rdf_mo_distance"] < 2 and 0 <= case["rdf_lio_distance"] < 2
    assert (out / "dynamics.png").stat().st_size > 10_000
    assert metrics["dynamics_summary"]["wasserstein_ang"] == case["wasserstein_ang"]
    with teacher_dynamics(cases, comp.labeler, done=False) as wait:
        assert wait()["n_written"] == 0


# --- settings and convergence -----------------------------------------------------------------------------

@pytest.mark.parametrize("override,message", [
    ("validate.dynamics.n_steps=5", r"validate.dynamics.n_steps=5 records fewer than three frames"),
    ("validate.dynamics.seeds=[]", r"validate.dynamics.seeds is empty"),
    ("validate.dynamics.reference_md=[/nonexistent.extxyz]", r"validate.dynamics.reference_md: no file /nonexistent"),
    ("validate.target_flip_rate_ratio=0.5", r"validate.target_flip_rate_ratio=0.5 must be >= 1"),
    ("validate.dynamics.structures=[{x: 0.5, supercell: [1, 0, 1]}]", r"validate.dynamics.structures\[0\]"),
])
def test_bad_dynamics_settings_are_refused_before_any_work(override, message):
    from lfpo_al.config import compose_config
    from lfpo_al.errors import UserError
    from lfpo_al.loop.components import Components

    structures = "validate.dynamics.structures=[{x: 0.5, li_order: random, seed: 103}]"
    overrides = [override] if override.startswith("validate.dynamics.structures") else [structures, override]
    with pytest.raises(UserError, match=message):
        Components.from_config(compose_config(overrides))


def test_a_dft_teacher_needs_its_own_aimd():
    from lfpo_al.config import compose_config
    from lfpo_al.errors import UserError
    from lfpo_al.loop.components import Components

    with pytest.raises(UserError, match=r"pass its AIMD as validate.dynamics.reference_md"):
        Components.from_config(compose_config(["label=gpaw"]))  # the demo validates dynamics with CHGNet


def test_dynamics_targets_gate_convergence_only_when_set():
    from lfpo_al.validate.settings import ValidateSettings

    passed = {"valence_resolved": "pass", "m3_population": "pass", "flip_rate": "pass", "wasserstein": "pass"}
    stored = {"m3_population_rel_error": 0.08, "wasserstein_ang": 0.004, "flip_rate_ratio": 0.8, "verdicts": passed}
    summary = DynamicsSummary.from_record(stored)
    assert ValidateSettings().dynamics_converged(None)  # no targets: nothing to hold
    strict = ValidateSettings(target_m3_population_rel_error=0.1, target_wasserstein_ang=0.005, target_flip_rate_ratio=1.3)
    assert strict.dynamics_converged(summary) and strict.dynamics_converged(stored)  # as recorded, too
    for key in passed:  # an inconclusive check is not agreement
        for other in ("inconclusive", "fail", "unmeasurable"):
            assert not strict.dynamics_converged(replace(summary, verdicts={**passed, key: other}))
    assert not strict.dynamics_converged(replace(summary, verdicts={}))
    assert not strict.dynamics_converged(None)
    only_m3 = ValidateSettings(target_m3_population_rel_error=0.1)
    assert only_m3.dynamics_converged(replace(summary, verdicts={**passed, "flip_rate": "inconclusive"}))


def test_targets_are_the_verdicts_tolerances_and_unset_ones_fall_back_to_the_defaults():
    from lfpo_al.distill.settings import GateSettings
    from lfpo_al.validate.equivalence import Tolerances
    from lfpo_al.validate.settings import ValidateSettings

    assert ValidateSettings().targets() == Tolerances(None, None, None, None)
    assert ValidateSettings(target_wasserstein_ang=0.005).targets().or_defaults() == Tolerances(wasserstein_ang=0.005)
    assert Tolerances() == Tolerances(m3_rel=0.10, centre_ang=0.01, rate_factor=1.5, wasserstein_ang=None)
    assert GateSettings().targets() == Tolerances(m3_rel=0.10, centre_ang=None, rate_factor=1.3, wasserstein_ang=0.005)


def test_a_users_aimd_becomes_the_teacher_side(load_system, tmp_path):
    """reference_md: the model starts from the file's first frame, at its temperature, for as long as it."""
    import ase.io

    from lfpo_al.errors import UserError
    from lfpo_al.structures import BuildSpec, build_structure
    from lfpo_al.validate.reference import dynamics_cases
    from lfpo_al.validate.settings import DynamicsSettings

    system = load_system("lfpo")
    frames = []
    for i in range(5):
        frame = build_structure(system, BuildSpec(supercell=[1, 1, 1], x=0.5))
        frame.info.update(time_fs=4.0 * i, temperature=700.0)
        frames.append(frame)
    aimd = tmp_path / "aimd.extxyz"
    ase.io.write(aimd, frames)
    (case,) = dynamics_cases(DynamicsSettings(reference_md=[str(aimd)], timestep_fs=2.0), system, None, tmp_path)
    (protocol,) = case.protocols
    assert case.user_reference and case.teacher_paths == [aimd] and case.name == "r0.aimd.T700"
    assert (protocol.temperature_k, protocol.n_steps, protocol.record_every) == (700.0, 8, 2)
    with pytest.raises(UserError, match=r"4 fs apart, not a multiple of validate.dynamics.timestep_fs=3"):
        dynamics_cases(DynamicsSettings(reference_md=[str(aimd)], timestep_fs=3.0), system, None, tmp_path)


def test_the_worst_w1_is_shown_with_its_own_cells_teacher_noise():
    """The campaign's case: the random cell is noisy (0.011) but close, the ordered cell quiet (0.006) and off."""
    row = {"m3_population_rel_error": 0.1, "flip_rate_ratio": {"ratio": 1.0}}
    summary = summarise({"random": {**row, "wasserstein_ang": 0.003, "wasserstein_teacher_seeds_ang": 0.011},
                         "planes_c": {**row, "wasserstein_ang": 0.0125, "wasserstein_teacher_seeds_ang": 0.0056}})
    assert summary.wasserstein_ang == 0.0125 and summary.wasserstein_teacher_seeds_ang == 0.011
    assert summary.wasserstein_worst_cell_teacher_seeds_ang == summary.noise_of_worst_cell_ang == 0.0056


def test_the_stored_summary_keeps_its_keys_their_order_and_values():
    """``metrics.json`` and ``record.jsonl`` hold ``asdict`` of the summary: byte for byte what the dict was."""
    verdicts = {"flip_rate": {"verdict": "pass"}, "wasserstein": {"verdict": "inconclusive"}}
    row = {"m3_population_rel_error": 0.1, "flip_rate_ratio": {"ratio": 0.8}, "verdicts": verdicts}
    summary = summarise({"random": {**row, "wasserstein_ang": 0.003, "wasserstein_teacher_seeds_ang": 0.011},
                         "planes_c": {**row, "m3_population_rel_error": 0.2, "flip_rate_ratio": {"ratio": 1.1},
                                      "wasserstein_ang": 0.0125, "wasserstein_teacher_seeds_ang": 0.0056}})
    expected = {"m3_population_rel_error": 0.2, "wasserstein_ang": 0.0125, "wasserstein_teacher_seeds_ang": 0.011,
                "wasserstein_worst_cell_teacher_seeds_ang": 0.0056, "flip_rate_ratio": 0.8, "flip_ea": {},
                "verdicts": {"flip_rate": "pass", "wasserstein": "inconclusive"}, "n_structures": 2}
    assert json.dumps(asdict(summary), indent=2) == json.dumps(expected, indent=2)
    assert DynamicsSummary.from_record(json.loads(json.dumps(asdict(summary)))) == summary


def test_an_older_record_reads_back_with_its_missing_keys_empty():
    """Records before the worst cell's own noise: the largest teacher noise stands in for it."""
    old = {"m3_population_rel_error": 0.1, "wasserstein_ang": 0.006, "wasserstein_teacher_seeds_ang": 0.005,
           "flip_rate_ratio": 1.2, "n_structures": 1}
    summary = DynamicsSummary.from_record(old)
    assert summary.wasserstein_worst_cell_teacher_seeds_ang is None and summary.noise_of_worst_cell_ang == 0.005
    assert summary.flip_ea == {} and summary.verdicts == {} and summary.n_structures == 1
    assert DynamicsSummary.from_record({}).noise_of_worst_cell_ang is None
    assert DynamicsSummary.from_record(None) is None and DynamicsSummary.from_record("damaged") is None


def test_flip_ea_of_model_and_teacher_compared_by_equivalence_over_three_temperatures():
    from lfpo_al.analysis.rates import KB_EV

    def cases(ea_model, exposure, resolved=True):
        out = {}
        for t in (500.0, 700.0, 1000.0):
            n_teacher = int(round(exposure * 2.0 * np.exp(-0.10 / (KB_EV * t))))
            n_model = int(round(exposure * 2.0 * np.exp(-ea_model / (KB_EV * t)) * np.exp((ea_model - 0.10) / (KB_EV * 1000))))
            out[f"d0.x0.50-random.T{t:g}"] = {"temperature_K": t, "flips_resolved": resolved,
                                              "flip_exposure_metal_ps": [exposure, exposure],
                                              "flip_rate_ratio": {"n_model": n_model, "n_teacher": n_teacher, "ratio": 1.0},
                                              "m3_population_rel_error": 0.0, "wasserstein_ang": 0.0,
                                              "wasserstein_teacher_seeds_ang": None, "verdicts": {}}
        return out

    assert flip_ea_by_structure(cases(0.10, 20000.0), 0.03)["d0.x0.50-random"]["verdict"] == "pass"
    assert flip_ea_by_structure(cases(0.20, 20000.0), 0.03)["d0.x0.50-random"]["verdict"] == "fail"
    assert flip_ea_by_structure(cases(0.10, 20.0), 0.03)["d0.x0.50-random"]["verdict"] == "inconclusive"  # few flips
    withheld = flip_ea_by_structure(cases(0.10, 20000.0, resolved=False), 0.03)["d0.x0.50-random"]
    assert withheld["verdict"] == "inconclusive" and "resolved" in withheld["note"]
    two = {k: v for k, v in cases(0.10, 20000.0).items() if not k.endswith("T700")}
    assert flip_ea_by_structure(two, 0.03) == {}  # two temperatures: no Ea check at all
    summary = summarise(cases(0.20, 20000.0))
    assert summary.verdicts["flip_ea"] == "fail" and summary.flip_ea["d0.x0.50-random"]["value"] > 0.05
