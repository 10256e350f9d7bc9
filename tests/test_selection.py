"""Frame selection (trust window, cap, families, near-duplicates, report) and the trust levels it takes
from the config, a calibration or the defaults (the calibration itself: ``test_calibration.py``)."""

import dataclasses
import json

import ase.io
import numpy as np
import pytest
from ase import Atoms

from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.errors import UserError
from lfpo_al.selection.calibration import Calibration
from test_calibration import power_law_frames
from lfpo_al.selection.report import SelectionReport
from lfpo_al.selection import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    SelectionSettings,
    calibrate,
    classify_frames,
    max_displacement,
    read_model_devi,
    select_step,
)

CELL = np.diag([6.0, 7.0, 8.0])
HEADER = "step max_devi_v min_devi_v avg_devi_v max_devi_f min_devi_f avg_devi_f devi_e"


def make_frames(n_frames, family, step_every=10, jump=0.3, seed=0):
    """Frames whose atoms move by ``jump`` A (max over atoms) between consecutive frames."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 5, size=(4, 3))
    frames = []
    for i in range(n_frames):
        positions = base.copy()
        positions[0, 0] += jump * i
        atoms = Atoms("LiFePO", positions=positions, cell=CELL, pbc=True)
        atoms.set_array("valence", np.array([0, 2, 0, 0], dtype=int))
        atoms.info.update(family=family, temperature=300.0, step=i * step_every)
        frames.append(atoms)
    return frames


def write_model_devi(path, steps, max_devi_f, columns=8):
    rows = np.zeros((len(steps), columns))
    rows[:, 0] = steps
    rows[:, 4] = max_devi_f
    rows[:, 5] = np.asarray(max_devi_f) / 2
    np.savetxt(path, rows, header=" ".join(HEADER.split()[:columns]))


def write_exploration(root, trajectories, columns=8):
    """``trajectories``: dicts with family, deviations and optional frames / stop_reason / stop_step (left
    out of summary.json when not given, as in a summary of an older release)."""
    entries = []
    for i, spec in enumerate(trajectories):
        name = f"traj.{i:03d}"
        deviations = np.asarray(spec["deviations"], dtype=float)
        frames = spec.get("frames") or make_frames(len(deviations), spec["family"], seed=i)
        (root / name).mkdir(parents=True)
        ase.io.write(root / name / "frames.extxyz", frames, format="extxyz")
        write_model_devi(root / name / "model_devi.out", [a.info["step"] for a in frames], deviations, columns)
        entries.append(
            {"dir": name, "family": spec["family"], "temperature": 300.0, "n_frames": len(frames),
             "stop_reason": spec.get("stop_reason"),
             **({"stop_step": spec["stop_step"]} if "stop_step" in spec else {})}
        )
    (root / "summary.json").write_text(json.dumps({"trajectories": entries}))
    return root


def settings(**overrides):
    values = dict(trust_lo=0.1, trust_hi=0.5, max_selected=20, min_frame_distance=0.05)
    return SelectionSettings(**{**values, **overrides})


# --- classification -------------------------------------------------------------------------------


def test_classify_frames_categories():
    deviation = np.array([0.05, 0.1, 0.3, 0.5, 2.0, np.nan, np.inf, 0.2])
    after_stop = np.array([False] * 7 + [True])
    category = classify_frames(deviation, 0.1, 0.5, after_stop)
    assert category.tolist() == [ACCURATE, CANDIDATE, CANDIDATE, FAILED, FAILED, FAILED, FAILED, FAILED]


def test_select_step_counts_per_category(tmp_path):
    explore = write_exploration(tmp_path / "explore", [
        {"family": "a", "deviations": [0.01, 0.02, 0.2, 0.3, 0.7, np.nan]},
        {"family": "b", "deviations": [0.05, 0.15, 0.9]},
    ])
    report = select_step(explore, tmp_path / "select", settings())
    assert (report.n_total, report.n_accurate, report.n_candidate, report.n_failed) == (9, 3, 3, 3)
    assert report.accurate_ratio == pytest.approx(3 / 9)
    assert report.failed_breakdown == {"after_stop": 0, "non_finite": 1, "above_trust_hi": 2}
    assert report.families["a"]["n_candidate"] == 2 and report.families["b"]["n_failed"] == 1
    assert report.n_selected == 3


def test_frames_after_stop_are_failed(tmp_path):
    explore = write_exploration(tmp_path / "explore", [
        {"family": "a", "deviations": [0.2] * 11, "stop_reason": "atoms 0.61 A apart at step 80", "stop_step": 80},
    ])
    report = select_step(explore, tmp_path / "select", settings())
    assert report.n_failed == 3 and report.failed_breakdown["after_stop"] == 3  # steps 80, 90, 100
    assert report.stop_reasons == {"traj.000": "atoms 0.61 A apart at step 80"}
    assert report.trajectories[0]["stop_step"] == 80
    assert all(entry["step"] < 80 for entry in report.selected)


def test_the_stop_step_not_the_sentence_marks_the_failed_frames(tmp_path):
    explore = write_exploration(tmp_path / "explore", [
        {"family": "a", "deviations": [0.2] * 11, "stop_reason": "the thermostat gave up", "stop_step": 50},
        {"family": "b", "deviations": [0.2] * 11},  # the control: ran to the end
    ])
    report = select_step(explore, tmp_path / "select", settings())
    stopped, control = report.trajectories
    assert stopped["stop_step"] == 50 and stopped["n_failed"] == 6  # steps 50, 60, ..., 100
    assert control["stop_step"] is None and control["n_failed"] == 0
    assert report.failed_breakdown["after_stop"] == 6 and not any("names no step" in w for w in report.warnings)
    assert all(entry["step"] < 50 for entry in report.selected if entry["family"] == "a")


# --- choice: cap, families, near-duplicates -------------------------------------------------------


def test_cap_keeps_the_most_uncertain(tmp_path):
    deviations = np.linspace(0.11, 0.49, 12)
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": deviations}])
    report = select_step(explore, tmp_path / "select", settings(max_selected=4))
    assert report.n_selected == 4 and report.n_candidate == 12
    assert [e["max_devi_f"] for e in report.selected] == pytest.approx(sorted(deviations)[::-1][:4])
    assert len(ase.io.read(tmp_path / "select" / "selected.extxyz", index=":")) == 4


def test_round_robin_spreads_over_families(tmp_path):
    explore = write_exploration(tmp_path / "explore", [
        {"family": "rich", "deviations": [0.40, 0.41, 0.42, 0.43, 0.44, 0.45]},
        {"family": "poor", "deviations": [0.12, 0.13]},
        {"family": "mid", "deviations": [0.30, 0.31, 0.32]},
    ])
    report = select_step(explore, tmp_path / "select", settings(max_selected=7))
    families = [entry["family"] for entry in report.selected]
    # visited by their most uncertain frame; each round takes one per family, most uncertain first
    assert families == ["rich", "mid", "poor", "rich", "mid", "poor", "rich"]
    assert [e["max_devi_f"] for e in report.selected[:2]] == pytest.approx([0.45, 0.32])
    assert {f: report.families[f]["n_selected"] for f in ("rich", "mid", "poor")} == {"rich": 3, "mid": 2, "poor": 2}


def test_near_duplicates_skipped(tmp_path):
    still = make_frames(5, "a", jump=0.01)  # max displacement between any two frames <= 0.04 A
    moving = make_frames(5, "b", jump=0.3)
    explore = write_exploration(tmp_path / "explore", [
        {"family": "a", "deviations": [0.2, 0.3, 0.25, 0.22, 0.21], "frames": still},
        {"family": "b", "deviations": [0.2, 0.3, 0.25, 0.22, 0.21], "frames": moving},
    ])
    report = select_step(explore, tmp_path / "select", settings())
    assert report.families["a"]["n_selected"] == 1 and report.families["b"]["n_selected"] == 5
    assert report.n_near_duplicates_skipped == 4
    assert report.selected[0]["source"] == "traj.000:frame 1"  # the most uncertain of the still ones
    assert select_step(explore, tmp_path / "keep", settings(min_frame_distance=0)).n_selected == 10


def test_max_displacement_uses_minimum_image():
    reference = np.array([[0.01, 1.0, 1.0], [3.0, 3.0, 3.0]])
    wrapped = reference.copy()
    wrapped[0, 0] = 5.98  # 0.03 A across the periodic boundary of a 6 A cell
    assert max_displacement(reference, wrapped[None], CELL, np.array([True] * 3)) == pytest.approx([0.03])
    assert max_displacement(reference, wrapped[None], CELL, np.array([False] * 3)) == pytest.approx([5.97])


def test_selected_extxyz_carries_source_and_arrays(tmp_path):
    explore = write_exploration(tmp_path / "explore", [{"family": "x0.50-random-s0", "deviations": [0.05, 0.3]}])
    select_step(explore, tmp_path / "select", settings())
    (atoms,) = ase.io.read(tmp_path / "select" / "selected.extxyz", index=":")
    assert atoms.info["source"] == "traj.000:frame 1" and atoms.info["max_devi_f"] == pytest.approx(0.3)
    assert atoms.info["family"] == "x0.50-random-s0" and atoms.info["step"] == 10
    assert atoms.get_array("valence").tolist() == [0, 2, 0, 0]


def test_selection_is_deterministic(tmp_path):
    specs = [{"family": f, "deviations": [0.2, 0.2, 0.3, 0.3]} for f in ("a", "b")]
    explore = write_exploration(tmp_path / "explore", specs)
    first = select_step(explore, tmp_path / "one", settings(max_selected=3)).selected
    assert select_step(explore, tmp_path / "two", settings(max_selected=3)).selected == first
    assert [e["source"] for e in first] == ["traj.000:frame 2", "traj.001:frame 2", "traj.000:frame 3"]


# --- files and report -----------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [7, 8])
def test_model_devi_7_and_8_columns(tmp_path, columns):
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.05, 0.3, 0.9]}], columns)
    steps, deviation = read_model_devi(explore / "traj.000" / "model_devi.out")
    assert steps.tolist() == [0, 10, 20] and deviation.tolist() == pytest.approx([0.05, 0.3, 0.9])
    report = select_step(explore, tmp_path / "select", settings())
    assert (report.n_accurate, report.n_candidate, report.n_failed) == (1, 1, 1)


def test_reads_deepmd_writer_output(tmp_path):
    from deepmd.infer.model_devi import write_model_devi_out

    devi = np.zeros((3, 8))
    devi[:, 0] = [0, 10, 20]
    devi[:, 4] = [0.01, 0.2, 0.7]
    write_model_devi_out(devi, str(tmp_path / "model_devi.out"))
    steps, deviation = read_model_devi(tmp_path / "model_devi.out")
    assert steps.tolist() == [0, 10, 20] and deviation.tolist() == pytest.approx([0.01, 0.2, 0.7])


# report.json's keys, in order, as written before SelectionReport
REPORT_KEYS = ["explore_dir", "selected_file", "n_total", "n_accurate", "n_candidate", "n_failed", "n_selected",
               "accurate_ratio", "candidate_ratio", "failed_ratio", "failed_breakdown", "n_near_duplicates_skipped",
               "trust_levels", "max_selected", "priority", "diversity", "min_frame_distance", "families",
               "trajectories", "stop_reasons", "selected", "calibration", "warnings"]
COUNT_KEYS = ["n_total", "n_accurate", "n_candidate", "n_failed", "n_selected"]


def test_report_keys_and_json(tmp_path):
    explore = write_exploration(tmp_path / "explore", [
        {"family": "a", "deviations": [0.01, 0.2, 0.3], "stop_reason": "deviation 5.20 > 3.00 eV/A at step 20",
         "stop_step": 20},
        {"family": "b", "deviations": [0.02]},
    ])
    returned = select_step(explore, tmp_path / "select", settings())
    report = json.loads((tmp_path / "select" / "report.json").read_text())
    assert report == returned.record() and SelectionReport.read(tmp_path / "select") == returned
    assert list(report) == REPORT_KEYS
    assert list(report["trust_levels"]) == ["trust_lo", "trust_hi", "source", "note"]
    assert list(report["trajectories"][0]) == ["dir", "family", "temperature", "stop_reason", "stop_step", *COUNT_KEYS]
    assert list(report["families"]["a"]) == COUNT_KEYS
    assert list(report["selected"][0]) == ["source", "family", "temperature", "step", "max_devi_f"]
    assert report["trust_levels"] == {"trust_lo": 0.1, "trust_hi": 0.5, "source": "config", "note": None}
    assert report["stop_reasons"] == {"traj.000": "deviation 5.20 > 3.00 eV/A at step 20"}
    assert report["failed_breakdown"]["after_stop"] == 1
    assert set(report["families"]) == {"a", "b"} and report["trajectories"][1]["n_accurate"] == 1


def test_report_is_read_back_after_the_run_folder_moved(tmp_path):
    explore = write_exploration(tmp_path / "run" / "explore", [{"family": "a", "deviations": [0.05, 0.3, 0.4]}])
    report = select_step(explore, tmp_path / "run" / "select", settings())
    (tmp_path / "run").rename(tmp_path / "moved")
    again = SelectionReport.read(tmp_path / "moved" / "select")
    assert again.selected_file == str(tmp_path / "moved" / "select" / "selected.extxyz")
    assert dataclasses.replace(again, selected_file=report.selected_file) == report
    frames = again.selected_frames()
    assert [f.info["source"] for f in frames] == [s["source"] for s in report.selected] == ["traj.000:frame 2",
                                                                                            "traj.000:frame 1"]
    assert select_step(tmp_path / "moved" / "explore", tmp_path / "none", settings(trust_lo=0.5, trust_hi=0.6)
                       ).selected_frames() == []
    with pytest.raises(UserError, match="report.json cannot be read"):
        SelectionReport.read(tmp_path / "run" / "select")


def test_an_exploration_passed_in_is_not_read_from_its_folder(tmp_path):
    from lfpo_al.explore.result import ExplorationResult

    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.05, 0.3, 0.4]},
                                                       {"family": "b", "deviations": [0.2, 0.3]}])
    exploration = ExplorationResult.read(explore)
    (explore / "summary.json").unlink()
    exploration.trajectories = exploration.trajectories[1:]
    report = select_step(explore, tmp_path / "select", settings(), exploration=exploration)
    assert report.n_total == 2 and list(report.families) == ["b"]


def test_bad_inputs_name_the_file(tmp_path):
    with pytest.raises(UserError, match="summary.json is missing"):
        select_step(tmp_path, tmp_path / "select", settings())
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.1, 0.2]}])
    np.savetxt(explore / "traj.000" / "model_devi.out", np.zeros((2, 5)))
    with pytest.raises(UserError, match=r"model_devi.out has 5 columns; expected 7 \(LAMMPS\) or 8"):
        select_step(explore, tmp_path / "select", settings())
    write_model_devi(explore / "traj.000" / "model_devi.out", [0], [0.1])
    with pytest.raises(UserError, match="frames.extxyz has 2 frames but .*model_devi.out has 1 rows"):
        select_step(explore, tmp_path / "select", settings())
    write_model_devi(explore / "traj.000" / "model_devi.out", [0, 5], [0.1, 0.2])
    with pytest.raises(UserError, match="step column of model_devi.out disagrees"):
        select_step(explore, tmp_path / "select", settings())


# --- trust levels: config, calibration, defaults -----------------------------------------------------


def test_auto_levels_come_from_calibration(tmp_path):
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.02, 0.03, 0.05, 0.3]}])
    auto = SelectionSettings(trust_lo="auto", trust_hi="auto")
    deviation, error = power_law_frames()
    calibration = calibrate(deviation * 0.1, error, 0.15)  # a compressed ensemble: levels 0.025 and 0.079 eV/A
    report = select_step(explore, tmp_path / "calibrated", auto, calibration)
    assert report.trust_levels.source == "calibration"
    assert report.trust_levels.trust_lo == pytest.approx(calibration.trust_lo)
    assert report.trust_levels.trust_hi == pytest.approx(calibration.trust_hi)
    assert (report.n_accurate, report.n_candidate, report.n_failed) == (1, 2, 1)
    assert report.calibration["slope"] == pytest.approx(calibration.slope)


def test_auto_without_calibration_uses_documented_defaults(tmp_path):
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.02, 0.2, 0.7]}])
    report = select_step(explore, tmp_path / "select", SelectionSettings(trust_lo="auto", trust_hi="auto"))
    assert report.trust_levels.source == "default" and "no calibration yet" in report.trust_levels.note
    assert (report.trust_levels.trust_lo, report.trust_levels.trust_hi) == pytest.approx((0.15, 0.6))
    assert (report.n_accurate, report.n_candidate, report.n_failed) == (1, 1, 1)


def test_mixed_auto_and_fixed_level(tmp_path):
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.02, 0.2]}])
    calibration = Calibration(target_force_error=0.15, trust_hi_factor=4.0, error_quantile=0.5, trust_lo=0.05,
                              trust_hi=0.2)
    report = select_step(explore, tmp_path / "select", SelectionSettings(trust_lo="auto", trust_hi=1.0), calibration)
    assert (report.trust_levels.trust_lo, report.trust_levels.trust_hi) == (0.05, 1.0)
    with pytest.raises(UserError, match="trust_lo=0.05 is not below trust_hi=0.04"):
        select_step(explore, tmp_path / "bad", SelectionSettings(trust_lo="auto", trust_hi=0.04), calibration)
    with pytest.raises(UserError, match="calibration has no positive trust_lo"):
        select_step(explore, tmp_path / "bad", SelectionSettings(trust_lo="auto"),
                    dataclasses.replace(calibration, trust_lo=None, trust_hi=None, slope=1.0))


def test_settings_validation_and_configs():
    for group_option in ("selection=auto", "selection=trust_window"):
        assert isinstance(instantiate_group(compose_config([group_option]), "selection"), SelectionSettings)
    with pytest.raises(UserError, match="selection.trust_hi_factor=1"):
        SelectionSettings(trust_hi_factor=1)
    with pytest.raises(UserError, match="selection.error_quantile=1.5"):
        SelectionSettings(error_quantile=1.5)
    with pytest.raises(UserError, match="selection.trust_lo='tight'"):
        SelectionSettings(trust_lo="tight")
    with pytest.raises(UserError, match="selection.min_frame_distance=-1"):
        SelectionSettings(min_frame_distance=-1)


def test_unusual_trajectories_are_reported_not_fatal(tmp_path):
    mixed = make_frames(3, "a", jump=0.0)
    mixed[2] = Atoms("LiFePS", positions=mixed[2].positions, cell=CELL, pbc=True, info=mixed[2].info)
    explore = write_exploration(tmp_path / "explore", [
        {"family": "a", "deviations": [0.2, 0.3, 0.25], "frames": mixed},
        {"family": "b", "deviations": [0.2, 0.3, 0.25], "stop_reason": "the thermostat gave up"},
    ])
    report = select_step(explore, tmp_path / "select", settings())
    assert report.families["a"]["n_selected"] == 3  # identical geometries, but not comparable: all kept
    assert report.trajectories[1]["stop_step"] == 20 and report.families["b"]["n_failed"] == 1
    assert any("different atoms" in w for w in report.warnings)
    assert any("names no step" in w for w in report.warnings)
