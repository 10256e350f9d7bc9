"""What each step of an iteration hands on, typed: the loop reads attributes, the record stores ``asdict``.

A step's outcome is written to ``record.jsonl`` when it finishes and read back from there on resume, so
each class takes exactly the keys it records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lfpo_al.label.driver import LabelReport


@dataclass
class TrainOutcome:
    models: list[str]
    n_train_systems: int


@dataclass
class ExploreOutcome:
    n_trajectories: int
    n_stopped: int

    @classmethod
    def from_summary(cls, summary: dict) -> ExploreOutcome:
        stops = [t["stop_reason"] for t in summary["trajectories"] if t.get("stop_reason")]
        return cls(n_trajectories=len(summary["trajectories"]), n_stopped=len(stops))


@dataclass
class SelectOutcome:
    n_accurate: int
    n_candidate: int
    n_failed: int
    n_selected: int
    accurate_ratio: float
    trust_lo: float
    trust_hi: float | None  # None: no upper cut (trust_hi: teacher, and the teacher never failed)
    source: str

    @classmethod
    def from_report(cls, report: dict) -> SelectOutcome:
        counts = {key: report[key] for key in ("n_accurate", "n_candidate", "n_failed", "n_selected", "accurate_ratio")}
        return cls(**counts, **{key: report["trust_levels"][key] for key in ("trust_lo", "trust_hi", "source")})


@dataclass
class LabelOutcome:
    n_tasks: int
    n_labeled: int
    n_failed: int
    n_valence_mismatch: int

    @classmethod
    def from_report(cls, report: LabelReport) -> LabelOutcome:
        return cls(report.n_tasks, report.n_labeled, report.n_failed, report.n_valence_mismatch)


@dataclass
class ValidateOutcome:
    energy_rmse_mev_per_atom: float
    force_rmse_ev_per_ang: float
    virial_rmse_mev_per_atom: float | None
    valence_agreement: float
    mean_mo_bond_error_ang: float | None
    calibration: dict
    dynamics_summary: dict | None = None  # the worst held-out structure's dynamics metrics, when validated

    @classmethod
    def from_metrics(cls, metrics: dict) -> ValidateOutcome:
        return cls(**{name: metrics.get(name) for name in cls.__dataclass_fields__})


@dataclass
class IterationRow:
    """One finished iteration, as the loop judges it and the tables and W&B show it."""

    iter: int
    select: SelectOutcome
    label: LabelOutcome
    validate: ValidateOutcome

    def flat(self) -> dict:
        """``{iter, selection counts and levels, label_<count>, validation metrics}``: the row of
        ``final/metrics.json`` and of the W&B history."""
        verdicts = (self.validate.dynamics_summary or {}).get("verdicts") or {}
        return {"iter": self.iter, **asdict(self.select), **{f"label_{k}": v for k, v in asdict(self.label).items()},
                **asdict(self.validate), **{f"dynamics_verdict_{k}": v for k, v in verdicts.items()}}
