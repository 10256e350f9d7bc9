"""The run folder's layout, owned here: the loop writes it, ``status`` and the analysis read it.

    runs/<name>/config.yaml  record.jsonl  learning_curve.png  data/{init,test}/  iter.NNNNNN/<step folder>/  final/  distill/  analysis/
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lfpo_al.errors import UserError

# a plain folder name: letters, digits, ., _, - (not only dots), so the run stays one folder under runs_dir
RUN_NAME = re.compile(r"(?!\.+$)[A-Za-z0-9._-]{1,100}")


def check_run_name(run_name) -> None:
    if isinstance(run_name, int) and not isinstance(run_name, bool):  # run_name=7 arrives as a number
        run_name = str(run_name)
    if not isinstance(run_name, str) or not RUN_NAME.fullmatch(run_name):
        raise UserError(f"run_name={run_name!r} must be a plain folder name (letters, digits, '.', '_', '-'), so the run "
                        "stays one folder under runs_dir")


STEPS = ("train", "explore", "select", "label", "validate")  # one iteration, in order
STEP_DIRS = dict(zip(STEPS, ("00.train", "01.explore", "02.select", "03.label", "04.validate")))


REPORT_PASSED = "passed"  # the distill report's overall verdict: written by ``distill``, read by ``passed_student``


@dataclass(frozen=True)
class DistillLayout:
    """``runs/<name>/distill``: the distillation's stages (``lfpo_al.distill.step``), its report and student."""

    root: Path

    md = property(lambda self: self.root / "md")
    train_data = property(lambda self: self.root / "data" / "train")
    heldout_data = property(lambda self: self.root / "data" / "heldout")
    student_dir = property(lambda self: self.root / "student")
    dynamics = property(lambda self: self.root / "dynamics")
    report = property(lambda self: self.root / "report.json")
    student = property(lambda self: self.root / "student.pth")


@dataclass(frozen=True)
class RunLayout:
    """Where everything of the run in ``run_dir`` lives."""

    run_dir: Path

    @classmethod
    def of(cls, runs_dir: Path | str, run_name: str) -> RunLayout:
        check_run_name(run_name)
        return cls(Path(runs_dir) / str(run_name))

    @property
    def record(self) -> Path:
        return self.run_dir / "record.jsonl"

    @property
    def config(self) -> Path:
        return self.run_dir / "config.yaml"

    @property
    def data(self) -> Path:
        return self.run_dir / "data"

    @property
    def final(self) -> Path:
        return self.run_dir / "final"

    @property
    def learning_curve(self) -> Path:
        return self.run_dir / "learning_curve.png"

    @property
    def distill(self) -> Path:
        return self.run_dir / "distill"

    @property
    def distill_layout(self) -> DistillLayout:
        return DistillLayout(self.distill)

    @property
    def analysis(self) -> Path:
        return self.run_dir / "analysis"

    def iter_dir(self, k: int) -> Path:
        return self.run_dir / f"iter.{k:06d}"

    def step_dir(self, k: int, step: str) -> Path:
        return self.iter_dir(k) / STEP_DIRS[step]

    def validation_metrics(self) -> list[Path]:
        """Every iteration's ``metrics.json``, newest iteration first."""
        return sorted(self.run_dir.glob(f"iter.*/{STEP_DIRS['validate']}/metrics.json"), reverse=True)

    def final_models(self) -> list[Path]:
        return sorted(self.final.glob("model.*.pth"))

    def passed_student(self) -> Path | None:
        """The run's distilled student if its gate passed, else None."""
        layout = self.distill_layout
        if not (layout.report.is_file() and layout.student.is_file()):
            return None
        try:
            report = json.loads(layout.report.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{layout.report} is damaged ({exc}); rerun `python -m lfpo_al distill` "
                            "to rewrite it") from None
        return layout.student if report.get(REPORT_PASSED) else None
