"""The real steps of an active-learning iteration: train -> explore -> select -> label -> validate.

Each step reads the previous step's files, writes its own folder and returns its typed outcome; the loop
(``lfpo_al.loop.active_learning``) records it and skips a recorded step on resume (label tasks are also
skipped one by one inside ``label``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from lfpo_al import atomic
from lfpo_al.explore.result import ExplorationResult
from lfpo_al.explore.step import explore_step
from lfpo_al.layout import RunLayout
from lfpo_al.label.driver import label_frames
from lfpo_al.loop.components import Components
from lfpo_al.loop.data import check_deepmd_systems, deepmd_systems
from lfpo_al.loop.outcomes import (
    ExploreOutcome,
    FinalOutcome,
    IterationRow,
    LabelOutcome,
    SelectOutcome,
    TrainOutcome,
    ValidateOutcome,
)
from lfpo_al.selection.calibration import Calibration, calibrate_for
from lfpo_al.selection.report import SelectionReport
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


class RunSteps:
    """The real steps of an iteration (:class:`lfpo_al.loop.active_learning.IterationSteps`) on the
    components and the run's data; each returns its outcome, typed."""

    def __init__(self, comp: Components, data: RunData, tracker=None, run_name: str = ""):
        self.comp, self.data, self.tracker, self.run_name = comp, data, tracker, run_name
        # what a step of this process handed on in memory; a resumed step's comes from its folder
        self.explorations: dict[int, ExplorationResult] = {}
        self.selections: dict[int, SelectionReport] = {}

    def models(self, k: int) -> list[Path]:
        # from the layout, not the record: a moved run folder finds its own
        return [m.frozen for m in self.data.members(k, self.comp.model.n_members)]

    def train(self, k: int) -> TrainOutcome:
        comp, data = self.comp, self.data
        systems = deepmd_systems(data.init_data) + [s for j in range(k) for s in deepmd_systems(data.label_data(j))]
        check_deepmd_systems(systems)
        continue_members = k > 0 and not comp.model.from_pretrained_each_iteration
        previous = data.members(k - 1, comp.model.n_members) if continue_members else None
        members = train_ensemble(comp.model, comp.system.type_map, systems, data.step_dir(k, "train"),
                                 comp.machine.for_step("train"), data.pretrained, previous=previous)
        return TrainOutcome(models=[str(m.frozen) for m in members], n_train_systems=len(systems))

    def explore(self, k: int) -> ExploreOutcome:
        comp = self.comp
        exploration = explore_step(comp.explore, comp.system, comp.build_defaults, self.models(k),
                                   self.data.step_dir(k, "explore"), comp.machine.for_step("explore"), iteration=k)
        self.explorations[k] = exploration
        return ExploreOutcome.from_result(exploration)

    def select(self, k: int, labels_left: int, calibration: Calibration | None) -> SelectOutcome:
        data = self.data
        record = run_record([(data.step_dir(j, "select"), data.step_dir(j, "label")) for j in range(k)])
        report = select_step(data.step_dir(k, "explore"), data.step_dir(k, "select"), self.comp.selection.capped(labels_left),
                             calibration=calibration, exploration=self.explorations.get(k), models=self.models(k),
                             system=self.comp.system, teacher_record=record)
        self.selections[k] = report
        return SelectOutcome.from_report(report)

    def label(self, k: int, selection: SelectOutcome) -> LabelOutcome:
        report = self.selections.get(k) or SelectionReport.read(self.data.step_dir(k, "select"))
        frames = report.selected_frames() if selection.n_selected else []
        report = label_frames(frames, self.comp.labeler, self.comp.machine.for_step("label"), self.data.step_dir(k, "label"),
                              self.comp.system)
        return LabelOutcome.from_report(report)

    def validate(self, k: int) -> ValidateOutcome:
        comp, data = self.comp, self.data
        validation = validate_step(self.models(k), [data.test_data], data.polaron_starts, data.teacher_relaxed, comp.system,
                                   comp.validate, data.step_dir(k, "validate"), new_label_dirs=[data.label_data(k)],
                                   dynamics_cases=data.dynamics_cases)
        calibration = calibrate_for(comp.selection, validation.deviation, validation.force_error,
                                    out_png=validation.out_dir / "calibration.png")
        outcome = ValidateOutcome.from_metrics(validation.record(calibration))
        log.info("validate: E %.2f meV/atom, F %.3f eV/A, valence agreement %.2f", outcome.energy_rmse_mev_per_atom,
                 outcome.force_rmse_ev_per_ang, outcome.valence_agreement)
        return outcome

    def finish(self, k: int, row: IterationRow, reason: str) -> FinalOutcome:
        """Iteration ``k``'s members and row in ``final/``; the models and data as tracker artifacts."""
        data = self.data
        final = data.layout.final
        final.mkdir(exist_ok=True)
        for member in data.members(k, self.comp.model.n_members):
            atomic.copy_file(member.frozen, final / f"model.{member.index:03d}.pth")
        atomic.write_text(final / "metrics.json", json.dumps(row.flat(), indent=2, default=float))
        if self.tracker is not None:
            self.tracker.artifact(f"{self.run_name}-models", "model", [final], root=data.run_dir)
            self.tracker.artifact(f"{self.run_name}-data", "dataset", [data.init_data, data.test_data] +
                                  [data.label_data(j) for j in range(k + 1)], root=data.run_dir)
        return FinalOutcome(final_dir=str(final), reason=reason)
