"""``python -m lfpo_al train``: set up the run folder, iterate until converged, freeze the final ensemble."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import ase.io
from omegaconf import DictConfig

from lfpo_al import atomic
from lfpo_al.config import shareable
from lfpo_al.layout import RunLayout
from lfpo_al.tracking import Tracker
from lfpo_al.watchdog import OWNER_ENV
from lfpo_al.label.driver import label_frames
from lfpo_al.loop.components import Components
from lfpo_al.loop.data import perturbed_frames, teacher_md_frames
from lfpo_al.loop.learning_curve import learning_curve_plot
from lfpo_al.loop.iteration import RunData, run_iteration, run_step
from lfpo_al.loop.outcomes import IterationRow
from lfpo_al.loop.report import print_summary
from lfpo_al.loop.state import SETUP, RunState
from lfpo_al.structures.builder import build_specs
from lfpo_al.train.pretrained import resolve_pretrained
from lfpo_al.validate.reference import dynamics_cases, teacher_dynamics, teacher_references
from lfpo_al.validate.settings import ValidateSettings

log = logging.getLogger(__name__)


def prepare_data(comp: Components, run_dir: Path, state: RunState, tracker) -> RunData:
    """Initial training data, the frozen test set and the teacher's relaxed polaron structures."""
    data_dir = RunLayout(run_dir).data
    loop = comp.loop

    def init_data():
        specs = build_specs(comp.explore.structures + loop.init_structures, comp.build_defaults)
        frames = perturbed_frames(comp.system, specs, loop.init_frames_per_structure, loop.init_rattle_ang, seed=1)
        report = label_frames(frames, comp.labeler, comp.machine.for_step("label"), data_dir / "init", comp.system)
        return {"n_frames": report.n_labeled, "n_failed": report.n_failed}

    def test_set():
        specs = build_specs(comp.validate.test_structures, comp.build_defaults)
        settings = comp.validate
        starts = perturbed_frames(comp.system, specs, 1, 0.0, seed=0)
        atomic.write_extxyz(data_dir / "polaron_starts.extxyz", starts)
        # the first test frame of each structure is its unperturbed start
        start_tasks = [data_dir / "test" / f"task.{j * settings.frames_per_structure:06d}" for j in range(len(starts))]
        with teacher_references(starts, comp.labeler, comp.system, settings, start_tasks) as references:
            test_frames = settings.test_frames_for(comp.labeler.core_seconds_per_atom)
            if test_frames == "teacher_md":
                frames = teacher_md_frames(comp.system, specs, settings.frames_per_structure, comp.labeler.ase_calculator(),
                                           settings.test_md_temperature_k, settings.test_md_interval_steps, seed=2)
            else:
                frames = perturbed_frames(comp.system, specs, settings.frames_per_structure, settings.rattle_ang, seed=2)
            report = label_frames(frames, comp.labeler, comp.machine.for_step("label"), data_dir / "test", comp.system)
            refs = references()
        atomic.write_extxyz(data_dir / "teacher_relaxed.extxyz", refs)
        return {"n_frames": report.n_labeled, "n_failed": report.n_failed, "n_polaron_structures": len(starts),
                "polaron_reference": settings.reference_for(comp.labeler.core_seconds_per_atom),
                "test_frames": test_frames}

    cases = dynamics_cases(comp.validate.dynamics, comp.system, comp.build_defaults, data_dir / "dynamics")
    with teacher_dynamics(cases, comp.labeler, state.done(SETUP, "teacher_dynamics") is not None) as wait:
        # the teacher's held-out MD runs on the core the set-up's labeling leaves free
        run_step(state, SETUP, "init_data", init_data, tracker)
        run_step(state, SETUP, "test_set", test_set, tracker)
        run_step(state, SETUP, "teacher_dynamics", wait, tracker)
    return RunData(
        run_dir=run_dir,
        pretrained=resolve_pretrained(comp.model.pretrained, comp.model.head),
        init_data=data_dir / "init" / "data",
        test_data=data_dir / "test" / "data",
        polaron_starts=ase.io.read(data_dir / "polaron_starts.extxyz", index=":"),
        teacher_relaxed=ase.io.read(data_dir / "teacher_relaxed.extxyz", index=":"),
        dynamics_cases=cases,
    )


def converged(row: IterationRow, targets: ValidateSettings) -> bool:
    return (row.select.accurate_ratio >= targets.target_accurate_ratio
            and row.validate.force_rmse_ev_per_ang <= targets.target_force_rmse
            and row.validate.valence_agreement >= targets.target_valence_agreement
            and targets.dynamics_converged(row.validate.dynamics_summary))


def log_selected_frames(tracker, report_path: Path, k: int) -> None:
    if not report_path.is_file():
        return
    columns = ["source", "family", "temperature", "step", "max_devi_f"]
    rows = [[frame.get(c) for c in columns] for frame in json.loads(report_path.read_text()).get("selected", [])]
    tracker.table("selected_frames", columns, rows, step=k)


def freeze_final(data: RunData, k: int, n_members: int, row: IterationRow) -> Path:
    final = data.layout.final
    final.mkdir(exist_ok=True)
    for member in data.members(k, n_members):
        atomic.copy_file(member.frozen, final / f"model.{member.index:03d}.pth")
    atomic.write_text(final / "metrics.json", json.dumps(row.flat(), indent=2, default=float))
    return final


def train_command(cfg: DictConfig) -> int:
    if cfg.loop.get("dry_run"):  # before the lock: a dry run leaves no trace in the run folder
        from lfpo_al.loop.plan_text import print_plan

        return print_plan(cfg)
    comp = Components.from_config(cfg)
    run_dir = RunLayout.of(cfg.runs_dir, cfg.run_name).run_dir
    state = RunState(run_dir)
    os.environ[OWNER_ENV] = str(os.getpid())  # jobs it dispatches on this machine stop if it is killed
    with state.lock():
        resolve_pretrained(comp.model.pretrained, comp.model.head)  # fail before any work or frozen config
        config, secrets = shareable(cfg)  # what is frozen and tracked holds no secret
        state.freeze_config(config, private=bool(secrets))
        tracker = Tracker(comp.tracking, run_dir, cfg.run_name, config)
        try:
            data = prepare_data(comp, run_dir, state, tracker)
            calibration, labels_used = None, 0
            max_iters, budget = comp.loop.max_iters, comp.loop.label_budget
            for k in range(max_iters):
                row = run_iteration(k, comp, data, state, budget - labels_used, calibration, tracker)
                labels_used += row.label.n_labeled
                calibration = row.validate.calibration
                images = {f"plots/{name}": data.step_dir(k, "validate") / f"{name}.png"
                          for name in ("parity", "calibration", "bond_parity", "dynamics")}
                images["plots/learning_curve"] = learning_curve_plot(state.records(), data.layout.learning_curve,
                                                                     asdict(comp.validate))
                tracker.log({key: v for key, v in row.flat().items() if key != "iter"}, step=k, images=images)
                log_selected_frames(tracker, data.step_dir(k, "select") / "report.json", k)
                stop = ("converged" if converged(row, comp.validate) else
                        "label budget spent" if labels_used >= budget else
                        "max_iters reached" if k == max_iters - 1 else None)
                if stop:
                    break
            finished = state.final()
            if finished is not None and finished["iter"] >= k:  # a finished run is never rewound
                if finished["iter"] > k:
                    print(f"run {run_dir} finished at iteration {finished['iter']} before; a resume that would stop "
                          f"at iteration {k} ({stop}) leaves {data.layout.final} as it is")
                stop = finished["outputs"].get("reason")
            else:
                final = freeze_final(data, k, comp.model.n_members, row)
                state.append(k, "final", "done", outputs={"final_dir": str(final), "reason": stop})
                tracker.artifact(f"{cfg.run_name}-models", "model", [final], root=run_dir)
                tracker.artifact(f"{cfg.run_name}-data", "dataset", [data.init_data, data.test_data] +
                                 [data.label_data(j) for j in range(k + 1)], root=run_dir)
        finally:
            tracker.finish()
    print_summary(state, run_dir, stop)
    return 0
