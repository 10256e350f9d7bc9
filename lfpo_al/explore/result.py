"""An exploration's outcome (``summary.json``): one entry per trajectory, its task's ``result.json``.

Kept apart from the dispatcher (:mod:`lfpo_al.explore.step`) so that selection reads it without
importing the MD machinery.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from lfpo_al import atomic
from lfpo_al.errors import UserError
from lfpo_al.stored import from_stored

SUMMARY = "summary.json"


@dataclass
class TrajectoryResult:
    dir: str  # the task folder, relative to the exploration's folder
    family: str
    temperature: float | None = None
    n_frames: int | None = None
    n_steps_run: int | None = None
    stop_reason: str | None = None  # in words; for a failed task, the tail of its error
    stop_step: int | None = None  # the recorded step it stopped at; None: ran to the end, failed, or an older summary
    wall_s: float | None = None

    @classmethod
    def from_record(cls, record: dict) -> TrajectoryResult:
        """A summary entry read back; keys other releases wrote beside these are ignored."""
        return from_stored(cls, record)


@dataclass
class ExplorationResult:
    engine: str | None  # None: a summary written without it
    trajectories: list[TrajectoryResult]

    @property
    def n_trajectories(self) -> int:
        return len(self.trajectories)

    @property
    def n_stopped(self) -> int:
        """Trajectories that stopped early or failed."""
        return sum(1 for t in self.trajectories if t.stop_reason)

    def write(self, folder: str | Path) -> None:
        atomic.write_text(Path(folder) / SUMMARY, json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, explore_dir: str | Path) -> ExplorationResult:
        """``explore_dir/summary.json``, checked: one-line errors name what is wrong and to rerun the explore step."""
        path = Path(explore_dir) / SUMMARY
        if not path.is_file():
            raise UserError(f"{path} is missing; run the explore step first (it writes {SUMMARY})")
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} is not valid JSON ({exc}); rerun the explore step") from exc
        trajectories = summary.get("trajectories") if isinstance(summary, dict) else None
        if not isinstance(trajectories, list):
            raise UserError(f"{path} has no 'trajectories' list; rerun the explore step")
        for position, entry in enumerate(trajectories):
            if not isinstance(entry, dict) or not isinstance(entry.get("dir"), str) or not entry.get("family"):
                raise UserError(f"{path}: trajectories[{position}] needs a 'dir' and a 'family'; rerun the explore step")
        return cls(engine=summary.get("engine"),
                   trajectories=[TrajectoryResult.from_record(entry) for entry in trajectories])
