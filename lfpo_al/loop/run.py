"""``python -m lfpo_al train``: set up the run folder, then the loop (``active_learning``) on the real steps."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ase.io
from omegaconf import DictConfig

from lfpo_al import atomic
from lfpo_al.config import shareable
from lfpo_al.layout import RunLayout
from lfpo_al.tracking import Tracker
from lfpo_al.watchdog import OWNER_ENV
from lfpo_al.label.driver import label_frames
from lfpo_al.loop.active_learning import ActiveLearningLoop, StopRule, run_recorded
from lfpo_al.loop.components import Components
from lfpo_al.loop.data import perturbed_frames, teacher_md_frames
from lfpo_al.loop.iteration import RunData, RunSteps
from lfpo_al.loop.observers import TrackingObserver
from lfpo_al.loop.outcomes import SETUP_OUTCOMES, LabeledSet, TeacherDynamics, TestSet
from lfpo_al.loop.report import print_summary
from lfpo_al.loop.state import SETUP, RunState
from lfpo_al.structures.builder import build_specs
from lfpo_al.validate.reference import dynamics_cases, teacher_dynamics, teacher_references

log = logging.getLogger(__name__)


def prepare_data(comp: Components, run_dir: Path, state: RunState, observers=()) -> RunData:
    """Initial training data, the frozen test set and the teacher's relaxed polaron structures."""
    data_dir = RunLayout(run_dir).data
    loop = comp.loop

    def init_data():
        specs = build_specs(comp.explore.structures + loop.init_structures, comp.build_defaults)
        frames = perturbed_frames(comp.system, specs, loop.init_frames_per_structure, loop.init_rattle_ang, seed=1)
        report = label_frames(frames, comp.labeler, comp.machine.for_step("label"), data_dir / "init", comp.system)
        return LabeledSet(n_frames=report.n_labeled, n_failed=report.n_failed)

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
        return TestSet(n_frames=report.n_labeled, n_failed=report.n_failed, n_polaron_structures=len(starts),
                       polaron_reference=settings.reference_for(comp.labeler.core_seconds_per_atom), test_frames=test_frames)

    cases = dynamics_cases(comp.validate.dynamics, comp.system, comp.build_defaults, data_dir / "dynamics")
    with teacher_dynamics(cases, comp.labeler, state.done(SETUP, "teacher_dynamics") is not None) as wait:
        # the teacher's held-out MD runs on the core the set-up's labeling leaves free
        for name, run in (("init_data", init_data), ("test_set", test_set), ("teacher_dynamics", lambda: TeacherDynamics(**wait()))):
            run_recorded(state, SETUP, name, run, SETUP_OUTCOMES[name], observers)
    return RunData(
        run_dir=run_dir,
        pretrained=comp.pretrained,
        init_data=data_dir / "init" / "data",
        test_data=data_dir / "test" / "data",
        polaron_starts=ase.io.read(data_dir / "polaron_starts.extxyz", index=":"),
        teacher_relaxed=ase.io.read(data_dir / "teacher_relaxed.extxyz", index=":"),
        dynamics_cases=cases,
    )


def train_command(cfg: DictConfig) -> int:
    comp = Components.from_config(cfg, resolve_model=True)  # fails before any work or frozen config
    run_dir = RunLayout.of(cfg.runs_dir, cfg.run_name).run_dir
    state = RunState(run_dir)
    os.environ[OWNER_ENV] = str(os.getpid())  # jobs it dispatches on this machine stop if it is killed
    with state.lock():
        config, secrets = shareable(cfg)  # what is frozen and tracked holds no secret
        state.freeze_config(config, private=bool(secrets))
        tracker = Tracker(comp.tracking, run_dir, cfg.run_name, config)
        try:
            observers = (TrackingObserver(tracker, state, comp.validate),)
            data = prepare_data(comp, run_dir, state, observers)
            rule = StopRule(comp.loop.max_iters, comp.loop.label_budget, comp.validate)
            loop = ActiveLearningLoop(RunSteps(comp, data, tracker, cfg.run_name), state, rule, observers)
            end = loop.run()
        finally:
            tracker.finish()
    print_summary(state, run_dir, end.reason)
    return 0
