"""The loop's control with stand-in steps, in seconds: when it stops (converged, label budget spent,
max_iters), that a finished run is never rewound, that each validation's calibration reaches the next
selection, and that a run killed after any step resumes to the same end, every step run once.

The record is the real one (``RunState`` in a temporary folder); only the steps are stand-ins.
"""

from dataclasses import asdict

import pytest

from lfpo_al.loop.active_learning import ActiveLearningLoop, StopRule
from lfpo_al.loop.outcomes import (
    ExploreOutcome,
    FinalOutcome,
    LabelOutcome,
    SelectOutcome,
    TrainOutcome,
    ValidateOutcome,
)
from lfpo_al.loop.state import RunState
from lfpo_al.selection.calibration import Calibration
from lfpo_al.validate.settings import ValidateSettings

TARGETS = ValidateSettings(target_accurate_ratio=0.9, target_force_rmse=0.1, target_valence_agreement=0.95)
STEPS = ("train", "explore", "select", "label", "validate")


class Killed(Exception):
    """A kill of the run between two recorded steps."""


class StandInSteps:
    """Outcomes as functions of the iteration: force RMSE ``force_rmse[k]``, accurate ratio
    ``accurate[k]``, ``per_iteration`` frames selected (at most what the budget leaves); a kill before the
    ``kill_before``-th step call."""

    def __init__(self, force_rmse=(0.5,) * 10, accurate=(0.5,) * 10, per_iteration=10, kill_before=None):
        self.force_rmse, self.accurate, self.per_iteration, self.kill_before = force_rmse, accurate, per_iteration, kill_before
        self.calls, self.calibration_seen, self.labels_left_seen, self.finished = [], {}, {}, []

    def _call(self, k, step):
        if self.kill_before is not None and len(self.calls) == self.kill_before:
            raise Killed(f"killed before iter {k} {step}")
        self.calls.append((k, step))

    def train(self, k):
        self._call(k, "train")
        return TrainOutcome(models=[f"iter{k}/member.000.pth"], n_train_systems=k + 1)

    def explore(self, k):
        self._call(k, "explore")
        return ExploreOutcome(n_trajectories=4, n_stopped=k % 2)

    def select(self, k, labels_left, calibration):
        self._call(k, "select")
        self.calibration_seen[k], self.labels_left_seen[k] = calibration, labels_left
        n = min(self.per_iteration, labels_left)
        return SelectOutcome(n_accurate=50, n_candidate=n, n_failed=0, n_selected=n, accurate_ratio=self.accurate[k],
                             trust_lo=calibration.trust_lo if calibration else 0.05, trust_hi=None,
                             source="calibration" if calibration else "default")

    def label(self, k, selection):
        self._call(k, "label")
        return LabelOutcome(n_tasks=selection.n_selected, n_labeled=selection.n_selected, n_failed=0, n_valence_mismatch=0)

    def validate(self, k):
        self._call(k, "validate")
        calibration = Calibration(target_force_error=0.1, trust_hi_factor=4.0, error_quantile=0.5, n_frames=20,
                                  spearman_rho=0.6, trust_lo=0.01 * (k + 1), trust_hi=0.04 * (k + 1))
        return ValidateOutcome(energy_rmse_mev_per_atom=5.0, force_rmse_ev_per_ang=self.force_rmse[k],
                               virial_rmse_mev_per_atom=None, valence_agreement=1.0, mean_mo_bond_error_ang=0.01,
                               calibration=calibration)

    def finish(self, k, row, reason):
        self._call(k, "finish")
        self.finished.append((k, reason))
        return FinalOutcome(final_dir="final", reason=reason)


def run_loop(tmp_path, steps, max_iters=5, label_budget=100):
    loop = ActiveLearningLoop(steps, RunState(tmp_path), StopRule(max_iters, label_budget, TARGETS))
    return loop.run()


def test_stops_when_converged(tmp_path):
    steps = StandInSteps(force_rmse=(0.5, 0.2, 0.08, 0.05), accurate=(0.5, 0.8, 0.95, 0.99))
    end = run_loop(tmp_path, steps)
    assert (end.iteration, end.reason, end.froze_final) == (2, "converged", True)
    assert steps.finished == [(2, "converged")]
    assert RunState(tmp_path).final_outcome() == (2, FinalOutcome(final_dir="final", reason="converged"))


@pytest.mark.parametrize("accurate", [0.5, 0.95])
def test_every_target_must_hold(tmp_path, accurate):
    """A force RMSE below target is not enough while the accurate ratio is not (and the converse)."""
    steps = StandInSteps(force_rmse=(0.05,) * 3 if accurate < 0.9 else (0.5,) * 3, accurate=(accurate,) * 3)
    assert run_loop(tmp_path, steps, max_iters=3).reason == "max_iters reached"


def test_stops_when_the_label_budget_is_spent(tmp_path):
    steps = StandInSteps(per_iteration=10)
    end = run_loop(tmp_path, steps, label_budget=25)
    assert (end.iteration, end.reason) == (2, "label budget spent")
    assert steps.labels_left_seen == {0: 25, 1: 15, 2: 5}  # the last selection is capped by what is left


def test_stops_at_max_iters(tmp_path):
    steps = StandInSteps()
    end = run_loop(tmp_path, steps, max_iters=3)
    assert (end.iteration, end.reason) == (2, "max_iters reached")
    assert [k for k, step in steps.calls if step == "validate"] == [0, 1, 2]


def test_each_calibration_reaches_the_next_selection(tmp_path):
    steps = StandInSteps()
    run_loop(tmp_path, steps, max_iters=3)
    assert steps.calibration_seen[0] is None
    assert [steps.calibration_seen[k].trust_lo for k in (1, 2)] == pytest.approx([0.01, 0.02])
    rows = RunState(tmp_path).rows()
    assert [row.select.source for row in rows] == ["default", "calibration", "calibration"]


def test_a_finished_run_is_never_rewound(tmp_path):
    run_loop(tmp_path, StandInSteps(), max_iters=3)
    record = (tmp_path / "record.jsonl").read_text()
    for max_iters in (1, 3):  # a lower max_iters, and the same command again
        again = StandInSteps()
        end = run_loop(tmp_path, again, max_iters=max_iters)
        assert again.calls == [] and not end.froze_final and end.reason == "max_iters reached"
        assert (tmp_path / "record.jsonl").read_text() == record, "a finished run's record changed"


def test_a_finished_run_goes_on_when_allowed_more_iterations(tmp_path):
    run_loop(tmp_path, StandInSteps(), max_iters=2)
    more = StandInSteps()
    end = run_loop(tmp_path, more, max_iters=3)
    assert more.calls == [(2, step) for step in STEPS] + [(2, "finish")] and end.froze_final


def test_a_run_killed_after_any_step_resumes_to_the_same_end(tmp_path):
    whole = StandInSteps(per_iteration=10)
    reference = run_loop(tmp_path / "whole", whole, max_iters=3, label_budget=25)
    n_calls = len(whole.calls)  # 3 iterations x 5 steps + finish
    assert n_calls == 16
    for kill_before in range(1, n_calls):
        folder = tmp_path / f"killed.{kill_before}"
        first = StandInSteps(per_iteration=10, kill_before=kill_before)
        with pytest.raises(Killed):
            run_loop(folder, first, max_iters=3, label_budget=25)
        second = StandInSteps(per_iteration=10)
        end = run_loop(folder, second, max_iters=3, label_budget=25)
        assert first.calls + second.calls == whole.calls, f"killed before call {kill_before}: a step ran twice or not at all"
        assert (end.iteration, end.reason) == (reference.iteration, reference.reason)
        assert asdict(end.row.validate) == asdict(reference.row.validate)
        # what a resumed selection is handed: the labels left and the calibration, read back from the record
        seen = {**first.labels_left_seen, **second.labels_left_seen}
        assert seen == whole.labels_left_seen
        calibrations = {**first.calibration_seen, **second.calibration_seen}
        assert {k: c and c.trust_lo for k, c in calibrations.items()} == {k: c and c.trust_lo for k, c in
                                                                          whole.calibration_seen.items()}
