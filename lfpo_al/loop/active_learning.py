"""The loop's control: iterations of train -> explore -> select -> label -> validate until the stop rule
holds, each step recorded and skipped on resume, a finished run never rewound.

The steps themselves (:class:`IterationSteps`) and what watches the iterations (:class:`IterationObserver`:
tracking, images, the learning curve) are handed in, so the control is tested with stand-in steps in
seconds (``tests/test_loop_control.py``) and runs the real ones in ``lfpo_al.loop.iteration``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Callable, Protocol

from lfpo_al.layout import STEPS
from lfpo_al.loop import outcomes
from lfpo_al.loop.outcomes import STEP_OUTCOMES, IterationRow
from lfpo_al.loop.state import RunState
from lfpo_al.selection.calibration import Calibration
from lfpo_al.validate.settings import ValidateSettings

log = logging.getLogger(__name__)


class IterationSteps(Protocol):
    """One iteration's steps, each run at most once per iteration and run; ``finish`` once per run."""

    def train(self, k: int) -> outcomes.TrainOutcome: ...

    def explore(self, k: int) -> outcomes.ExploreOutcome: ...

    def select(self, k: int, labels_left: int, calibration: Calibration | None) -> outcomes.SelectOutcome: ...

    def label(self, k: int, selection: outcomes.SelectOutcome) -> outcomes.LabelOutcome: ...

    def validate(self, k: int) -> outcomes.ValidateOutcome: ...

    def finish(self, k: int, row: IterationRow, reason: str) -> outcomes.FinalOutcome:
        """Freeze iteration ``k``'s ensemble as the run's final models."""


class IterationObserver(Protocol):
    def step_done(self, k: int, step: str, wall_s: float) -> None: ...

    def iteration_done(self, k: int, row: IterationRow) -> None: ...


@dataclass(frozen=True)
class StopRule:
    """When the loop stops: targets met, the label budget spent, or ``max_iters`` iterations run."""

    max_iters: int
    label_budget: int
    targets: ValidateSettings

    def converged(self, row: IterationRow) -> bool:
        targets, metrics = self.targets, row.validate
        return (row.select.accurate_ratio >= targets.target_accurate_ratio
                and metrics.force_rmse_ev_per_ang <= targets.target_force_rmse
                and metrics.valence_agreement >= targets.target_valence_agreement
                and targets.dynamics_converged(row.dynamics))

    def reason(self, k: int, row: IterationRow, labels_used: int) -> str | None:
        """Why the loop stops after iteration ``k``, or None to go on."""
        if self.converged(row):
            return "converged"
        if labels_used >= self.label_budget:
            return "label budget spent"
        if k >= self.max_iters - 1:
            return "max_iters reached"
        return None


@dataclass
class LoopEnd:
    """Where the run ended: the iteration, why, and whether this call froze the final models."""

    iteration: int
    reason: str
    row: IterationRow
    froze_final: bool


def run_recorded(state: RunState, k: int, name: str, run: Callable[[], object], outcome_type,
                 observers: tuple[IterationObserver, ...] = ()):
    """``run()`` unless the record says step ``name`` of iteration ``k`` is done, then its recorded outcome
    (read back as ``outcome_type``); a new outcome is recorded with its wall time."""
    rec = state.done(k, name)
    if rec is not None:
        log.info("iter %d %s: done earlier, skipped", k, name)
        return outcome_type.from_record(rec.get("outputs"))
    start = time.perf_counter()
    log.info("iter %d %s ...", k, name)
    outcome = run()
    wall = round(time.perf_counter() - start, 1)
    state.append(k, name, "done", outputs=asdict(outcome), wall_s=wall)
    for observer in observers:
        observer.step_done(k, name, wall)
    return outcome


class ActiveLearningLoop:
    def __init__(self, steps: IterationSteps, state: RunState, rule: StopRule,
                 observers: tuple[IterationObserver, ...] = ()):
        self.steps, self.state, self.rule, self.observers = steps, state, rule, observers

    def step(self, k: int, name: str, run: Callable[[], object]):
        return run_recorded(self.state, k, name, run, STEP_OUTCOMES[name], self.observers)

    def iteration(self, k: int, labels_left: int, calibration: Calibration | None) -> IterationRow:
        steps = self.steps
        row = IterationRow(k)
        row.train = self.step(k, "train", lambda: steps.train(k))
        row.explore = self.step(k, "explore", lambda: steps.explore(k))
        row.select = self.step(k, "select", lambda: steps.select(k, labels_left, calibration))
        row.label = self.step(k, "label", lambda: steps.label(k, row.select))
        row.validate = self.step(k, "validate", lambda: steps.validate(k))
        row.steps = list(STEPS)
        return row

    def run(self) -> LoopEnd:
        """Iterate until the stop rule holds; freeze the final models unless the run finished there or
        later before (a finished run is never rewound)."""
        calibration, labels_used = None, 0
        for k in range(self.rule.max_iters):
            row = self.iteration(k, self.rule.label_budget - labels_used, calibration)
            labels_used += row.label.n_labeled
            calibration = row.validate.calibration  # the next selection's trust levels
            for observer in self.observers:
                observer.iteration_done(k, row)
            reason = self.rule.reason(k, row, labels_used)
            if reason:
                break
        finished = self.state.final_outcome()
        if finished is not None and finished[0] >= k:
            if finished[0] > k:
                print(f"run {self.state.run_dir} finished at iteration {finished[0]} before; a resume that would "
                      f"stop at iteration {k} ({reason}) leaves its final models as they are")
            return LoopEnd(k, finished[1].reason, row, froze_final=False)
        final = self.steps.finish(k, row, reason)
        self.state.append(k, "final", "done", outputs=asdict(final))
        return LoopEnd(k, reason, row, froze_final=True)
