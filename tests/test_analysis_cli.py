"""``analyze``: files on disk -> summary.json, events.csv, tables and figures; production MD plumbing; errors."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from lfpo_al.analysis.cli import analyze_command
from lfpo_al.analysis.synthetic import synthetic_trajectory, write_extxyz
from lfpo_al.config import compose_config
from lfpo_al.errors import UserError

ROW_KEYS = {"trajectory", "temperature_K", "n_frames", "duration_ps", "n_fe_flips", "n_li_hops",
            "fe_flip_rate_per_fe_per_ps", "li_hop_rate_per_li_per_ps", "trusted_fraction"}


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory, load_system):
    """Two bulk runs (600, 800 K) and an interface run (600 K) as extxyz with time_fs, plus their truth."""
    system = load_system("lfpo")
    root = tmp_path_factory.mktemp("traj")
    out = []
    for i, (order, cells, moves, hops) in enumerate((("random", (1, 2, 2), 3, 2), ("random", (1, 2, 2), 5, 3),
                                                     ("interface_c", (1, 2, 4), 4, 0))):
        traj, truth = synthetic_trajectory(system, cells, n_frames=600, polaron_moves=moves, li_hops=hops, seed=10 + i,
                                           li_order=order, wrap=True)
        path = root / f"run{i}.extxyz"
        write_extxyz(traj, path)
        out.append((path, truth))
    return out


def analyze(*overrides):
    return analyze_command(compose_config(["tracking=disabled", *overrides]))


def test_trajectories_to_summary_events_tables_and_figures(trajectories, tmp_path):
    paths = ",".join(str(p) for p, _ in trajectories)
    assert analyze(f"analysis.trajectories=[{paths}]", "analysis.temperatures=[600,800,600]",
                   f"analysis.output_dir={tmp_path}", "analysis.smoothing_fs=0", "analysis.li_dwell_fs=100") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["runs"]) == 3 and all(ROW_KEYS <= set(row) for row in summary["runs"])
    for row, (_, truth) in zip(summary["runs"], trajectories):
        assert row["n_fe_flips"] == len(truth.flips) and row["n_li_hops"] == len(truth.hops)
        assert row["n_frames"] == 600 and row["duration_ps"] == pytest.approx(5.99) and row["trusted_fraction"] is None
    assert {"fe_flip", "li_hop", "fe_flip_interfacial"} <= set(summary["arrhenius"])
    assert {"nu0_per_ps", "ea_ev", "ea_err_ev"} <= set(summary["arrhenius"]["fe_flip"])
    assert summary["runs"][2]["interface"]["axis"] == "c"
    # every rate with its interval; two temperatures and thin counts are flagged, in the summary and per fit
    for row in summary["runs"]:
        lo, hi = row["fe_flip_rate_ci"]
        assert lo <= row["fe_flip_rate_per_fe_per_ps"] <= hi and row["li_hop_rate_ci"][1] > 0
        assert all(f in summary["flags"] for f in (f"{row['trajectory']}: {g}" for g in row["flags"]))
        if row["n_li_hops"] < 10:
            assert any(g.startswith("Li hops: ") for g in row["flags"])
    fit = summary["arrhenius"]["fe_flip"]
    assert fit["ea_ci_ev"][0] < fit["ea_ev"] < fit["ea_ci_ev"][1] and any("(< 3)" in f for f in fit["flags"])
    assert any(f.startswith("Arrhenius fe_flip: fit from 2 temperatures (< 3)") for f in summary["flags"])
    assert len(summary["flip_pairs"]["ratio_ci"]) == 4

    with open(tmp_path / "events.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["time_ps", "kind", "atom_index", "sign"]
    run0 = sorted((round(float(r["time_ps"]) * 100), int(r["atom_index"]), int(r["sign"]))
                  for r in rows if r["trajectory"] == "run0" and r["kind"] == "fe_flip")
    assert run0 == sorted(trajectories[0][1].flips)  # 10 fs frames: time_ps * 100 = frame
    hops = sorted((round(float(r["time_ps"]) * 100), int(r["atom_index"])) for r in rows if r["kind"] == "li_hop"
                  and r["trajectory"] == "run1")
    assert hops == sorted(trajectories[1][1].hops) and all(r["sign"] == "0" for r in rows if r["kind"] == "li_hop")
    per_run = (tmp_path / "runs" / "run0" / "events.csv").read_text().splitlines()
    truth = trajectories[0][1]
    assert per_run[0] == "time_ps,kind,atom_index,sign" and len(per_run) == 1 + len(truth.flips) + len(truth.hops)

    pairs = list(csv.DictReader(open(tmp_path / "flip_pairs.csv")))
    assert {r["group"] for r in pairs} == {"all", "run0", "run1", "run2"}
    assert summary["flip_pairs"]["n_opposite"] and len(summary["flip_pairs"]["ratio"]) == 4
    for name in ("arrhenius", "flip_rates_by_order", "flip_pairs", "interface_vs_bulk", "bond_traces_run0",
                 "bond_histogram_run0", "interface_profile_run2"):
        assert f"figures/{name}.png" in summary["figures"], name
    assert all((tmp_path / f).is_file() for f in summary["figures"] + summary["tables"])
    assert (tmp_path / "interface_profile.csv").is_file()


def test_one_temperature_has_no_arrhenius_and_header_temperature(trajectories, tmp_path):
    assert analyze(f"analysis.trajectories=[{trajectories[0][0]}]", f"analysis.output_dir={tmp_path}") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "arrhenius" not in summary and summary["runs"][0]["temperature_K"] == 600.0  # from the header
    assert "1 temperature(s) (< 3): no Arrhenius fit" in summary["flags"]


def test_bad_inputs_name_the_key(trajectories, tmp_path, load_system):
    path = trajectories[0][0]
    with pytest.raises(UserError, match="analysis.temperatures has 1 values for 2"):
        analyze(f"analysis.trajectories=[{path},{path}]", "analysis.temperatures=[600]", f"analysis.output_dir={tmp_path}")
    with pytest.raises(UserError, match="analysis.trajectories.*does not exist"):
        analyze(f"analysis.trajectories=[{tmp_path / 'missing.extxyz'}]", f"analysis.output_dir={tmp_path}")
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("not a trajectory\n")
    with pytest.raises(UserError, match="cannot read trajectory"):
        analyze(f"analysis.trajectories=[{garbage}]", f"analysis.output_dir={tmp_path}")
    traj, _ = synthetic_trajectory(load_system("lfpo"), (1, 2, 2), n_frames=50, polaron_moves=0, li_hops=0, seed=0)
    untimed = tmp_path / "untimed.extxyz"
    write_extxyz(traj, untimed, with_time=False)
    with pytest.raises(UserError, match="analysis.frame_interval_fs"):
        analyze(f"analysis.trajectories=[{untimed}]", f"analysis.output_dir={tmp_path}")
    with pytest.raises(UserError, match="nothing to analyse"):
        analyze("run_name=no_such_run", f"runs_dir={tmp_path}")
    with pytest.raises(UserError, match="analysis.run_name=gone"):
        analyze("analysis.run_name=gone", f"runs_dir={tmp_path}")


def test_lammps_dump_with_types(load_system, tmp_path):
    """A LAMMPS text dump (types, no elements): symbols from system.type_map, time from frame_interval_fs."""
    system = load_system("lfpo")
    traj, truth = synthetic_trajectory(system, (1, 2, 2), n_frames=300, polaron_moves=2, li_hops=1, seed=3,
                                       min_gap_frames=50)
    types = np.array([system.type_map.index(s) + 1 for s in traj.symbols])
    lengths = np.diag(traj.cells[0])
    lines = []
    for f in range(traj.n_frames):  # writing the file frame by frame
        lines += ["ITEM: TIMESTEP", str(10 * f), "ITEM: NUMBER OF ATOMS", str(len(types)),
                  "ITEM: BOX BOUNDS pp pp pp"] + [f"0.0 {v:.8f}" for v in lengths] + ["ITEM: ATOMS id type x y z"]
        lines += [f"{i + 1} {t} {x:.6f} {y:.6f} {z:.6f}" for i, (t, (x, y, z)) in enumerate(zip(types, traj.positions[f]))]
    dump = tmp_path / "md.lammpstrj"
    dump.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    assert analyze(f"analysis.trajectories=[{dump}]", "analysis.temperatures=[700]", "analysis.frame_interval_fs=10",
                   f"analysis.output_dir={out}", "analysis.smoothing_fs=0", "analysis.li_dwell_fs=100") == 0
    row = json.loads((out / "summary.json").read_text())["runs"][0]
    assert row["n_fe_flips"] == len(truth.flips) and row["n_li_hops"] == len(truth.hops) and row["n_fe"] == 16


def test_production_matrix_uses_the_explorer_and_the_calibrated_trust(monkeypatch, load_system, tmp_path):
    """run_name -> final models, explore_step with the analysis matrix, deviation -> trusted fraction."""
    import lfpo_al.explore.step as step
    from lfpo_al.explore.result import ExplorationResult, TrajectoryResult

    system = load_system("lfpo")
    run = tmp_path / "runs" / "demo"
    (run / "final").mkdir(parents=True)
    for i in range(2):
        (run / "final" / f"model.00{i}.pth").write_text("frozen model")
    validate = run / "iter.000001" / "04.validate"
    validate.mkdir(parents=True)
    (validate / "metrics.json").write_text(json.dumps({"calibration": {"trust_lo": 0.1, "trust_hi": 0.45}}))
    calls = {}

    def fake_explore(settings, system_, build_defaults, models, work_dir, machine, iteration=0, driver=None):
        calls.update(settings=settings, models=models, work_dir=work_dir, driver=driver)
        entries = []
        for index, temperature in enumerate(settings.temperatures):
            traj, _ = synthetic_trajectory(system, (1, 2, 2), n_frames=settings.n_steps // settings.record_every + 1,
                                           polaron_moves=2, li_hops=1, seed=index, min_gap_frames=40,
                                           temperature=temperature)
            task = Path(work_dir) / f"traj.{index:03d}"
            task.mkdir(parents=True)
            traj.info.update(step=0)
            write_extxyz(traj, task / "frames.extxyz", with_time=False)
            import ase.io
            frames = ase.io.read(task / "frames.extxyz", index=":")
            for k, frame in enumerate(frames):
                frame.info.update(step=k * settings.record_every, temperature=temperature)
            ase.io.write(task / "frames.extxyz", frames)
            devi = np.zeros((len(frames), 8))
            devi[:, 0] = np.arange(len(frames)) * settings.record_every
            devi[:, 4] = np.where(np.arange(len(frames)) < len(frames) // 4, 0.9, 0.1)  # first quarter untrusted
            np.savetxt(task / "model_devi.out", devi)
            entries.append(TrajectoryResult(dir=task.name, family="x0.50-random-s0-1x2x2", temperature=temperature,
                                            n_frames=len(frames), stop_reason=None))
        return ExplorationResult(engine="ase", trajectories=entries)

    monkeypatch.setattr(step, "explore_step", fake_explore)
    assert analyze(f"runs_dir={tmp_path / 'runs'}", "run_name=demo", "analysis.md_temperatures=[500,900]",
                   "analysis.md_steps=4000", "analysis.md_record_every=10",
                   "analysis.md_structures=[{x: 0.5, li_order: random, seed: 0, supercell: [1, 2, 2]}]") == 0
    md = calls["settings"]
    assert md.temperatures == [500, 900] and md.abort_deviation >= 1e5 and md.n_steps == 4000
    assert [p.name for p in calls["models"]] == ["model.000.pth", "model.001.pth"]
    assert calls["driver"] is None  # no distilled student in the run: member 0 drives
    summary = json.loads((run / "analysis" / "summary.json").read_text())
    assert summary["source"]["trust_level"] == 0.45 and "calibration" in summary["source"]["trust_level_source"]
    for row in summary["runs"]:
        assert row["trusted_fraction"] == pytest.approx(0.75, abs=0.01)
        assert row["trusted_duration_ps"] < 0.76 * row["duration_ps"]
    assert "arrhenius" in summary and summary["runs"][0]["trajectory"].endswith("500K")


def test_production_cpu_matrix_gives_structures_their_own_temperatures(load_system):
    from lfpo_al.analysis.production import production_explore_settings
    from lfpo_al.config import instantiate_group

    cfg = compose_config(["analysis=production_cpu"])
    settings, explore = instantiate_group(cfg, "analysis"), instantiate_group(cfg, "explore")
    md = production_explore_settings(settings, explore)
    temps = [md.temperatures_of(s) for s in md.structures]
    assert temps[0] == temps[1] == [500, 650, 800, 1000] and all(t == [650, 800] for t in temps[2:])
    assert md.n_trajectories == 16 and md.score_every == 5 and md.n_steps == 8000
    assert settings.output_dir.endswith("/analysis_production_cpu")


def test_cli_entry_point(trajectories, tmp_path):
    res = run_cli("analyze", "tracking=disabled", f"analysis.trajectories=[{trajectories[0][0]}]",
                  f"analysis.output_dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    assert "analysis written to" in res.stdout and (tmp_path / "summary.json").is_file()
    res = run_cli("analyze", "tracking=disabled", f"analysis.trajectories=[{tmp_path / 'nope.extxyz'}]",
                  f"analysis.output_dir={tmp_path}")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "analysis.trajectories" in res.stderr


def test_tracking_offline_logs_the_analysis(trajectories, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert analyze_command(compose_config(["tracking=wandb", "tracking.mode=offline",
                                           f"analysis.trajectories=[{trajectories[0][0]}]",
                                           f"analysis.output_dir={tmp_path}", "analysis.plots=false"])) == 0
    assert (tmp_path / "wandb_id.txt").is_file() and (tmp_path / "wandb").is_dir()


@pytest.mark.slow
def test_production_md_with_the_packaged_starter_model(tmp_path):
    """Real MD through the explorer (dpdispatcher, deepmd): one model -> no trust measure."""
    from lfpo_al.train.pretrained import STARTER

    if not STARTER.is_file():
        pytest.skip("no packaged starter model")
    assert analyze(f"analysis.model={STARTER}", f"analysis.output_dir={tmp_path}", "analysis.md_temperatures=[600]",
                   "analysis.md_structures=[{x: 0.5, li_order: random, seed: 0, supercell: [1, 1, 1]}]",
                   "analysis.md_steps=40", "analysis.md_record_every=2") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    (row,) = summary["runs"]
    assert row["n_frames"] == 21 and row["trusted_fraction"] is None and row["temperature_K"] == 600
    assert (tmp_path / "md" / "traj.000" / "model_devi.out").is_file() and summary["source"]["models"] == [str(STARTER)]


def test_one_frame_foreign_species_and_failed_runs_leave_nothing(trajectories, tmp_path, load_system):
    import ase.io

    frames = ase.io.read(trajectories[0][0], index=":2")
    single = tmp_path / "single.extxyz"
    ase.io.write(single, frames[:1], format="extxyz")
    with pytest.raises(UserError, match=r"holds 1 frame\(s\): a trajectory needs at least two"):
        analyze(f"analysis.trajectories=[{single}]", "analysis.temperatures=[600]", f"analysis.output_dir={tmp_path / 'a'}")
    copper = tmp_path / "copper.extxyz"
    for frame in frames:
        frame.symbols[0] = "Cu"
    ase.io.write(copper, frames, format="extxyz")
    with pytest.raises(UserError, match=r"species \['Cu', 'Fe', 'Li', 'O', 'P'\] outside"):
        analyze(f"analysis.trajectories=[{copper}]", "analysis.temperatures=[600]", f"analysis.output_dir={tmp_path / 'b'}")
    with pytest.raises(UserError, match="analysis.run_name=nope"):
        analyze("analysis.run_name=nope", f"runs_dir={tmp_path / 'runs'}")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "runs").exists()


def _distilled(runs_dir: Path, name: str, report: str) -> Path:
    """A run folder with a distilled student and its report (the report's text as given)."""
    from lfpo_al.layout import RunLayout

    layout = RunLayout.of(runs_dir, name).distill_layout
    layout.root.mkdir(parents=True)
    layout.student.write_bytes(b"student")
    layout.report.write_text(report)
    return layout.student


def test_the_student_drives_production_only_when_its_gate_passed(tmp_path):
    from lfpo_al.analysis.cli import production_driver
    from lfpo_al.analysis.settings import AnalysisSettings
    from lfpo_al.layout import RunLayout

    student = _distilled(tmp_path, "passed", json.dumps({"passed": True}))
    _distilled(tmp_path, "failed", json.dumps({"passed": False}))
    _distilled(tmp_path, "damaged", '{"passed": tr')
    assert RunLayout.of(tmp_path, "passed").passed_student() == student
    assert RunLayout.of(tmp_path, "failed").passed_student() is None
    assert RunLayout.of(tmp_path, "none").passed_student() is None
    with pytest.raises(UserError, match=r"report.json is damaged .*; rerun `python -m lfpo_al distill`"):
        RunLayout.of(tmp_path, "damaged").passed_student()
    assert production_driver(AnalysisSettings(), tmp_path, "passed") == student
    assert production_driver(AnalysisSettings(student=False), tmp_path, "passed") is None
    with pytest.raises(UserError, match=r"analysis.student=true but run 'failed' has no distilled student"):
        production_driver(AnalysisSettings(student=True), tmp_path, "failed")


def test_analyze_finds_the_student_without_loading_the_loop_trainer_or_distillation(tmp_path):
    """The analysis reads the run layout only: ``lfpo_al.distill``, ``.loop`` and ``.train`` stay unloaded."""
    import subprocess
    import sys

    student = _distilled(tmp_path, "passed", json.dumps({"passed": True}))
    script = ("import sys; from lfpo_al.analysis.cli import production_driver; "
              "from lfpo_al.analysis.settings import AnalysisSettings; "
              f"print(production_driver(AnalysisSettings(), {str(tmp_path)!r}, 'passed')); "
              "print(sorted(m for m in sys.modules "
              "if m.split('.')[:2] in (['lfpo_al', 'distill'], ['lfpo_al', 'loop'], ['lfpo_al', 'train'])))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.splitlines() == [str(student), "[]"]
