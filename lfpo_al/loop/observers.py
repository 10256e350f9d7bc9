"""What watches a run's iterations: W&B rows and images, the learning curve, step times."""

from __future__ import annotations

from lfpo_al.layout import RunLayout
from lfpo_al.loop.learning_curve import learning_curve_plot
from lfpo_al.loop.outcomes import IterationRow
from lfpo_al.loop.state import RunState
from lfpo_al.selection.report import SelectionReport
from lfpo_al.tracking import Tracker
from lfpo_al.validate.settings import ValidateSettings

VALIDATE_PLOTS = ("parity", "calibration", "bond_parity", "dynamics")


class TrackingObserver:
    """Each step's wall time, and each iteration's row, plots and selected frames, to the tracker; the
    learning curve redrawn from the record after each iteration."""

    def __init__(self, tracker: Tracker, state: RunState, targets: ValidateSettings):
        self.tracker, self.state, self.targets = tracker, state, targets
        self.layout = RunLayout(state.run_dir)

    def step_done(self, k: int, step: str, wall_s: float) -> None:
        if k >= 0:
            self.tracker.log({f"time/{step}_s": wall_s}, step=k)
        else:  # a set-up step
            self.tracker.summary({f"time/{step}_s": wall_s})

    def iteration_done(self, k: int, row: IterationRow) -> None:
        validate_dir = self.layout.step_dir(k, "validate")
        images = {f"plots/{name}": validate_dir / f"{name}.png" for name in VALIDATE_PLOTS}
        images["plots/learning_curve"] = learning_curve_plot(self.state, self.layout.learning_curve, self.targets)
        self.tracker.log({key: v for key, v in row.flat().items() if key != "iter"}, step=k, images=images)
        select_dir = self.layout.step_dir(k, "select")
        if SelectionReport.exists(select_dir):
            columns, rows = SelectionReport.read(select_dir).selected_table()
            self.tracker.table("selected_frames", columns, rows, step=k)
