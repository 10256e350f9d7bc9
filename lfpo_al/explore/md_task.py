"""What one MD task is asked to do (``task.json``) and what it did (``result.json``), typed.

The explore step writes a task folder's ``task.json``; every engine (:mod:`lfpo_al.explore.ase_md`,
:mod:`~lfpo_al.explore.lammps_md`, :mod:`~lfpo_al.explore.torchsim_md`) reads it back and writes
``result.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from lfpo_al import atomic
from lfpo_al.stored import from_stored
from lfpo_al.structures.system import OlivineSystem

TASK_FILE = "task.json"
RESULT_FILE = "result.json"
# what makes a finished trajectory the one asked for
RESUME_KEYS = ("family", "temperature", "seed", "driver", "models", "n_steps", "timestep_fs", "record_every",
               "score_every")
# what the replicas one process advances together must share (the torch-sim engine's batches)
BATCH_SHARED_KEYS = ("models", "driver", "system", "ensemble", "n_steps", "timestep_fs", "record_every", "score_every")


@dataclass(kw_only=True)
class MDTask:
    """One trajectory's settings; the field order is ``task.json``'s key order."""

    models: list[str]  # member 0 drives (unless ``driver``); all score every recorded frame
    driver: str | None = None  # a model outside the ensemble that drives the MD (a distilled student)
    system: OlivineSystem
    family: str
    temperature: float
    seed: int
    ensemble: str
    n_steps: int
    timestep_fs: float
    record_every: int
    friction_per_fs: float
    abort_deviation: float
    min_distance: float
    score_every: int = 1  # older task.json files lack it: every recorded frame was scored

    @classmethod
    def from_record(cls, record: dict) -> MDTask:
        """A task from ``task.json``'s dict (keys an older or newer release wrote beside these are ignored)."""
        names = {f.name for f in fields(cls)}
        values = {key: value for key, value in record.items() if key in names}
        if isinstance(values.get("system"), dict):
            values["system"] = OlivineSystem(**values["system"])
        return cls(**values)

    @classmethod
    def read(cls, task_dir: str | Path) -> MDTask:
        return cls.from_record(json.loads((Path(task_dir) / TASK_FILE).read_text()))

    def record(self) -> dict:
        """``task.json``'s dict (the system as a dict)."""
        return asdict(self)

    def write(self, task_dir: str | Path) -> None:
        atomic.write_text(Path(task_dir) / TASK_FILE, json.dumps(self.record(), indent=2))

    def changed_keys(self, task_dir: str | Path) -> list[str]:
        """Keys of ``RESUME_KEYS`` where the finished task in ``task_dir`` differs from this one (keys an
        older task.json lacks are not compared, so its file is read as it is, without defaults)."""
        try:
            done = json.loads((Path(task_dir) / TASK_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            return []
        wanted = self.record()
        return [key for key in RESUME_KEYS if key in done and done[key] != wanted[key]]


@dataclass
class MDResult:
    """A finished task's ``result.json``."""

    n_frames: int
    n_steps_run: int
    stop_reason: str | None  # why the trajectory stopped early, in words; None: it ran to the end
    stop_step: int | None  # the step of the recorded frame where it stopped; None: it ran to the end
    wall_s: float

    def write(self, task_dir: str | Path) -> None:
        atomic.write_text(Path(task_dir) / RESULT_FILE, json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, task_dir: str | Path) -> MDResult:
        """``result.json`` read back; a key an older release did not write (``stop_step``) is None."""
        return from_stored(cls, json.loads((Path(task_dir) / RESULT_FILE).read_text()))
