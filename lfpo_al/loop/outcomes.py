"""What each step of a run hands on, typed: the loop reads attributes, the record stores ``asdict``.

A step's outcome is written to ``record.jsonl`` when it finishes and read back from there on resume and
by ``status``, the learning curve and the W&B rows. ``from_record`` reads what any release wrote: a key
an older record lacks is None, a key it does not know is left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from lfpo_al.selection.calibration import Calibration
from lfpo_al.stored import from_stored
from lfpo_al.validate.dynamics import DynamicsSummary


class Recorded:
    """``from_record``: the outcome of a stored step (``lfpo_al.stored.from_stored``)."""

    @classmethod
    def from_record(cls, outputs: dict | None):
        return from_stored(cls, outputs if isinstance(outputs, dict) else {})


@dataclass
class LabeledSet(Recorded):
    """The set-up's initial data (and the first two counts of its test set)."""

    n_frames: int
    n_failed: int


@dataclass
class TestSet(LabeledSet):
    n_polaron_structures: int
    polaron_reference: str
    test_frames: str


@dataclass
class TeacherDynamics(Recorded):
    n_cases: int
    n_runs: int
    n_written: int


@dataclass
class TrainOutcome(Recorded):
    models: list[str]
    n_train_systems: int


@dataclass
class ExploreOutcome(Recorded):
    n_trajectories: int
    n_stopped: int

    @classmethod
    def from_result(cls, exploration) -> ExploreOutcome:
        """From the explore step's ``ExplorationResult``."""
        return cls(n_trajectories=exploration.n_trajectories, n_stopped=exploration.n_stopped)


@dataclass
class SelectOutcome(Recorded):
    n_accurate: int
    n_candidate: int
    n_failed: int
    n_selected: int
    accurate_ratio: float
    trust_lo: float
    trust_hi: float | None  # None: no upper cut (trust_hi: teacher, and the teacher never failed)
    source: str

    @classmethod
    def from_report(cls, report) -> SelectOutcome:
        """From the select step's ``SelectionReport``: its counts and the trust levels it used."""
        levels = report.trust_levels
        return cls(n_accurate=report.n_accurate, n_candidate=report.n_candidate, n_failed=report.n_failed,
                   n_selected=report.n_selected, accurate_ratio=report.accurate_ratio, trust_lo=levels.trust_lo,
                   trust_hi=levels.trust_hi, source=levels.source)


@dataclass
class LabelOutcome(Recorded):
    n_tasks: int
    n_labeled: int
    n_failed: int
    n_valence_mismatch: int

    @classmethod
    def from_report(cls, report) -> LabelOutcome:
        """From the labeling driver's ``LabelReport``."""
        return cls(report.n_tasks, report.n_labeled, report.n_failed, report.n_valence_mismatch)


@dataclass
class ValidateOutcome(Recorded):
    energy_rmse_mev_per_atom: float
    force_rmse_ev_per_ang: float
    virial_rmse_mev_per_atom: float | None
    valence_agreement: float
    mean_mo_bond_error_ang: float | None
    calibration: Calibration | None
    dynamics_summary: DynamicsSummary | None = None  # the worst held-out structure's dynamics, when validated

    @classmethod
    def from_record(cls, outputs: dict | None) -> ValidateOutcome:
        outcome = super().from_record(outputs)
        outcome.calibration = Calibration.from_record(outcome.calibration)
        outcome.dynamics_summary = DynamicsSummary.from_record(outcome.dynamics_summary)
        return outcome

    @classmethod
    def from_metrics(cls, metrics: dict) -> ValidateOutcome:
        """From the validate step's ``metrics.json`` (its calibration recorded)."""
        return cls.from_record(metrics)


@dataclass
class FinalOutcome(Recorded):
    final_dir: str
    reason: str


STEP_OUTCOMES = {"train": TrainOutcome, "explore": ExploreOutcome, "select": SelectOutcome, "label": LabelOutcome,
                 "validate": ValidateOutcome}
SETUP_OUTCOMES = {"init_data": LabeledSet, "test_set": TestSet, "teacher_dynamics": TeacherDynamics}


@dataclass
class IterationRow:
    """One iteration as the record holds it: the outcome of each step done so far (None: not yet)."""

    iter: int
    select: SelectOutcome | None = None
    label: LabelOutcome | None = None
    validate: ValidateOutcome | None = None
    train: TrainOutcome | None = None
    explore: ExploreOutcome | None = None
    steps: list[str] = field(default_factory=list)  # the steps done, in record order

    @property
    def finished(self) -> bool:
        return None not in (self.select, self.label, self.validate)

    @property
    def calibration(self) -> Calibration | None:
        return self.validate.calibration if self.validate else None

    @property
    def dynamics(self) -> DynamicsSummary | None:
        return self.validate.dynamics_summary if self.validate else None

    def flat(self) -> dict:
        """``{iter, selection counts and levels, label_<count>, validation metrics}``: the row of
        ``final/metrics.json`` and of the W&B history."""
        verdicts = self.dynamics.verdicts if self.dynamics else {}
        return {"iter": self.iter, **asdict(self.select), **{f"label_{k}": v for k, v in asdict(self.label).items()},
                **asdict(self.validate), **{f"dynamics_verdict_{k}": v for k, v in (verdicts or {}).items()}}
