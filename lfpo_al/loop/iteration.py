"""One active-learning iteration: train -> explore -> select -> label -> validate.

Each step reads the previous step's files, writes its own folder, and is recorded in ``record.jsonl``
when done; a recorded step is skipped on resume (label tasks are skipped one by one inside ``label``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase.io

from lfpo_al.explore.step import explore_step
from lfpo_al.layout import RunLayout
from lfpo_al.label.driver import label_frames
from lfpo_al.loop.components import Components
from lfpo_al.loop.data import check_deepmd_systems, deepmd_systems
from lfpo_al.loop.outcomes import ExploreOutcome, IterationRow, LabelOutcome, SelectOutcome, TrainOutcome, ValidateOutcome
from lfpo_al.loop.state import RunState
from lfpo_al.selection.calibration import calibrate_for
from lfpo_al.selection.step import select_step
from lfpo_al.selection.teacher_failures import run_record
from lfpo_al.train.ensemble import Member, train_ensemble
from lfpo_al.validate.step import validate_step

log = logging.getLogger(__name__)


@dataclass
class RunData:
    """Paths fixed at run start."""

    run_dir: Path
    pretrained: Path
    init_data: Path
    test_data: Path
    polaron_starts: list
    teacher_relaxed: list
    dynamics_cases: list = field(default_factory=list)  # held-out MD against the teacher's (validate.dynamics)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    def step_dir(self, k: int, step: str) -> Path:
        return self.layout.step_dir(k, step)

    def label_data(self, k: int) -> Path:
        return self.step_dir(k, "label") / "data"

    def members(self, k: int, n: int) -> list[Member]:
        return [Member(i, self.step_dir(k, "train") / f"member.{i:03d}") for i in range(n)]


def run_step(state: RunState, k: int, step: str, fn, tracker=None) -> dict:
    """Run ``fn`` unless the record says this step is done; record its outputs and wall time."""
    rec = state.done(k, step)
    if rec is not None:
        log.info("iter %d %s: done earlier, skipped", k, step)
        return rec.get("outputs", {})
    start = time.perf_counter()
    log.info("iter %d %s ...", k, step)
    outputs = fn()
    wall = round(time.perf_counter() - start, 1)
    state.append(k, step, "done", outputs=outputs, wall_s=wall)
    if tracker is not None and k >= 0:
        tracker.log({f"time/{step}_s": wall}, step=k)
    elif tracker is not None:
        tracker.summary({f"time/{step}_s": wall})
    return outputs


def run_iteration(k: int, comp: Components, data: RunData, state: RunState, labels_left: int, calibration: dict | None,
                  tracker=None) -> IterationRow:
    n = comp.model.n_members

    def train():
        systems = deepmd_systems(data.init_data) + [s for j in range(k) for s in deepmd_systems(data.label_data(j))]
        check_deepmd_systems(systems)
        continue_members = k > 0 and not comp.model.from_pretrained_each_iteration
        previous = data.members(k - 1, n) if continue_members else None
        members = train_ensemble(comp.model, comp.system.type_map, systems, data.step_dir(k, "train"), comp.machine.for_step("train"),
                                 data.pretrained, previous=previous)
        return asdict(TrainOutcome(models=[str(m.frozen) for m in members], n_train_systems=len(systems)))

    run_step(state, k, "train", train, tracker)
    models = [m.frozen for m in data.members(k, n)]  # from the layout: a moved run folder finds its own

    def explore():
        summary = explore_step(comp.explore, comp.system, comp.build_defaults, models, data.step_dir(k, "explore"), comp.machine.for_step("explore"),
                               iteration=k)
        return asdict(ExploreOutcome.from_summary(summary))

    run_step(state, k, "explore", explore, tracker)

    def select():
        settings = comp.selection.capped(labels_left)
        record = run_record([(data.step_dir(j, "select"), data.step_dir(j, "label")) for j in range(k)])
        report = select_step(data.step_dir(k, "explore"), data.step_dir(k, "select"), settings, calibration=calibration,
                             models=models, system=comp.system, teacher_record=record)
        return asdict(SelectOutcome.from_report(report))

    selection = SelectOutcome(**run_step(state, k, "select", select, tracker))

    def label():
        path = data.step_dir(k, "select") / "selected.extxyz"
        frames = ase.io.read(path, index=":") if path.is_file() and selection.n_selected else []
        report = label_frames(frames, comp.labeler, comp.machine.for_step("label"), data.step_dir(k, "label"), comp.system)
        return asdict(LabelOutcome.from_report(report))

    labeling = LabelOutcome(**run_step(state, k, "label", label, tracker))

    def validate():
        validation = validate_step(models, [data.test_data], data.polaron_starts, data.teacher_relaxed, comp.system,
                                   comp.validate, data.step_dir(k, "validate"), new_label_dirs=[data.label_data(k)],
                                   dynamics_cases=data.dynamics_cases)
        calibration = calibrate_for(comp.selection, validation.deviation, validation.force_error,
                                    out_png=validation.out_dir / "calibration.png")
        return asdict(ValidateOutcome.from_metrics(validation.record(calibration)))

    validation = ValidateOutcome(**run_step(state, k, "validate", validate, tracker))
    return IterationRow(k, selection, labeling, validation)
