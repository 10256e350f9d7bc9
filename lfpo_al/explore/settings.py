"""Settings of the MD exploration (``configs/explore/``); each engine is a subclass picked by ``_target_``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from lfpo_al.errors import UserError

ENSEMBLES = ("nvt", "npt")


@dataclass
class ExploreSettings:
    """MD over a matrix of builder structures x temperatures.

    ``structures`` are ``build`` sections (x, li_order, seed, supercell, ...), one per family; a section
    may carry its own ``temperatures`` (K) instead of ``temperatures``.
    A trajectory stops early when the deviation exceeds ``abort_deviation`` (eV/A) or two atoms come
    closer than ``min_distance`` (A); the reason is recorded. An engine names the module that runs one
    task folder (``python -m <task_module>``: ``task.json`` and ``start.extxyz`` in, the same outputs out).
    ``score_every``: the ensemble scores every n-th recorded frame (and the last); a frame in between gets
    the larger deviation of the two scored frames around it. 1 (the loop's) scores every frame; more
    lets a fast driver (the distilled student) run without waiting on the ensemble.
    """

    engine: ClassVar[str] = "ase"
    task_module: ClassVar[str] = "lfpo_al.explore.ase_md"
    # whether the MD can be driven by a model outside the ensemble that scores the deviation
    takes_driver: ClassVar[bool] = True

    ensemble: str = "nvt"
    temperatures: list[float] = field(default_factory=lambda: [300.0, 600.0])
    structures: list[dict] = field(default_factory=lambda: [{"x": 0.5, "li_order": "random", "seed": 0}])
    n_steps: int = 200
    timestep_fs: float = 1.0
    record_every: int = 10
    friction_per_fs: float = 0.01
    abort_deviation: float = 3.0
    min_distance: float = 0.8
    seed: int = 0
    score_every: int = 1

    def temperatures_of(self, structure: dict) -> list[float]:
        """The temperatures one structure runs at: its own ``temperatures``, else the matrix's."""
        return [float(t) for t in (structure.get("temperatures") or self.temperatures)]

    @property
    def n_trajectories(self) -> int:
        """MD tasks of one explore step: one per structure and temperature."""
        return sum(len(self.temperatures_of(s)) for s in self.structures)

    def replicas_per_process(self, parallel_jobs: int | None) -> int:
        """Trajectories one MD task advances together in one process (1: a task per trajectory), on a
        machine that runs ``parallel_jobs`` jobs at once (None: no limit)."""
        return 1

    @property
    def frames_per_trajectory(self) -> int:
        """Frames a trajectory that runs to the end records: the start, then one per ``record_every`` steps
        (the engines run whole records past ``n_steps``)."""
        return math.ceil(self.n_steps / self.record_every) + 1

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise UserError(f"explore.ensemble={self.ensemble!r} is unknown; choose one of {', '.join(ENSEMBLES)}")
        if not self.temperatures or min(self.temperatures) <= 0:
            raise UserError(f"explore.temperatures={self.temperatures} must be a non-empty list of positive kelvin")
        if self.record_every < 1 or self.n_steps < self.record_every:
            raise UserError(f"explore.record_every={self.record_every} must be >= 1 and <= explore.n_steps={self.n_steps}")
        if not self.structures:
            raise UserError("explore.structures is empty; list at least one build section, e.g. [{x: 0.5, li_order: random}]")
        for i, structure in enumerate(self.structures):
            own = structure.get("temperatures")
            if own is not None and (not isinstance(own, (list, tuple)) or not own or min(own) <= 0):
                raise UserError(f"explore.structures[{i}].temperatures={own} must be a non-empty list of positive kelvin")
        if self.score_every < 1:
            raise UserError(f"explore.score_every={self.score_every} must be >= 1 (recorded frames per ensemble scoring)")
        positive = {"timestep_fs": "fs", "abort_deviation": "eV/A"}
        for key, unit in positive.items():
            if not getattr(self, key) > 0:  # NaN fails it too
                raise UserError(f"explore.{key}={getattr(self, key)} must be a positive number ({unit})")
        for key in ("friction_per_fs", "min_distance"):
            if not getattr(self, key) >= 0:
                raise UserError(f"explore.{key}={getattr(self, key)} must be a number >= 0")
        if not all(t > 0 for t in self.temperatures):
            raise UserError(f"explore.temperatures={self.temperatures} must be positive kelvin")
        if self.n_steps < 1:
            raise UserError(f"explore.n_steps={self.n_steps} must be a positive number of MD steps")


@dataclass
class AseMdExplorer(ExploreSettings):
    """ASE molecular dynamics, every member loaded as a deepmd calculator (``lfpo_al.explore.ase_md``)."""


@dataclass
class LammpsExplorer(ExploreSettings):
    """LAMMPS with deepmd's ``pair_style deepmd`` plugin (``lfpo_al.explore.lammps_md``)."""

    engine: ClassVar[str] = "lammps"
    task_module: ClassVar[str] = "lfpo_al.explore.lammps_md"
    takes_driver: ClassVar[bool] = False  # pair_style deepmd drives with the first model of its deviation

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score_every != 1:
            raise UserError(f"explore.score_every={self.score_every}: pair_style deepmd scores every recorded frame; "
                            "use explore=ase_md or score_every=1")


@dataclass
class TorchSimExplorer(ExploreSettings):
    """torch-sim Langevin over batches of ``replicas_per_task`` trajectories in one process, one model call
    per step for each size of cell in the batch (``lfpo_al.explore.torchsim_md``). ``replicas_per_task:
    null`` splits the trajectories evenly over the machine's ``parallel_jobs`` (all in one batch when the
    machine sets no limit, as on a GPU queue): on a CPU a core per batch is worth more than a larger batch."""

    engine: ClassVar[str] = "torchsim"
    task_module: ClassVar[str] = "lfpo_al.explore.torchsim_md"

    replicas_per_task: int | None = None

    def replicas_per_process(self, parallel_jobs: int | None) -> int:
        if self.replicas_per_task is not None:
            return self.replicas_per_task
        return math.ceil(self.n_trajectories / parallel_jobs) if parallel_jobs else self.n_trajectories

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.ensemble != "nvt":
            raise UserError(f"explore.ensemble={self.ensemble!r}: the torch-sim engine runs nvt (Langevin) only; "
                            "use explore=ase_md for npt")
        if self.replicas_per_task is not None and self.replicas_per_task < 1:
            raise UserError(f"explore.replicas_per_task={self.replicas_per_task} must be >= 1, or null (split evenly over machine.parallel_jobs)")
