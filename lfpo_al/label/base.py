"""The Labeler interface: what a teacher (DFT code or surrogate) must provide to the shared driver.

Like an ASE calculator *template*, a labeler only knows its own files: it writes the inputs of one
task folder, names the shell command that runs there, and reads the result back. Where the command
runs (this machine, Slurm) is the machine config's business; task folders, skipping finished work,
dispatch, quarantine and collection live once in ``lfpo_al.label.driver``.

Conventions every labeler follows:
- the command runs inside the task folder and exits 0 when it has decided the task, either way;
  it returns at once when the folder already holds a decision (a job resubmitted after a kill
  reruns every task it had not yet tagged finished);
- a batching labeler's command (``job_command``) also decides the other folders of its job that are
  still undecided, each exactly as its own command would;
- a deterministic failure (bad input, SCF that cannot converge) writes ``failed.json``
  (``{"reason": ...}``) instead of an exception, so that nobody retries it;
- ``read_outputs`` returns the frame with a ``SinglePointCalculator`` holding the total energy (eV),
  forces (eV/A) and stress (ASE convention: eV/A^3, positive under tension), and the teacher's
  magnetic moments as the per-atom array ``magmoms`` (muB).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ase import Atoms

from lfpo_al import atomic
from lfpo_al.errors import UserError
from lfpo_al.label.frames import LABELED_FILE, read_labeled
from lfpo_al.label.profile import ProgramProfile

if TYPE_CHECKING:  # the task commands import this module; they need no structure builder
    from lfpo_al.structures.system import OlivineSystem

MISMATCH_POLICIES = ("keep", "drop", "relabel")
FAILED_FILE = "failed.json"


@dataclass
class Labeler(ABC):
    """A teacher; its dataclass fields are its config (``configs/label/<name>.yaml``).

    magmom_tolerance: muB; a metal moment farther than this from every expected moment belongs to no
        valence and counts as a mismatch.
    expected_magmom: this teacher's own |m| per valence, by metal (``{Fe: {2: 3.92, 3: 4.40}}``),
        for teachers whose moments sit off the GGA+U values of ``system.valence.expected_magmom``
        (CHGNet does); metals not listed use the system's values.
    mismatch_policy: what to do with a frame whose moments contradict its intended valences:
        ``keep`` it and flag it in the report, ``drop`` it, or ``relabel`` it (labelers that can
        re-seed moments only).
    max_attempts: how often a task that ended without any result (crash, killed job) is run.
    max_failed_fraction: a label step whose quarantined share of tasks exceeds this stops the run (after
        writing its report): a teacher that fails that often is misconfigured, not unlucky.
    min_distance: A; a frame with two atoms closer than this is quarantined before dispatch.
    cores_per_task: cores one task occupies (threads x MPI ranks); a Shell machine runs
        ``cpu_per_node // cores_per_task`` jobs at once.
    core_seconds_per_atom: measured teacher cost per atom used for estimates (``train --dry-run``);
        None when not measured.
    batch_size: up to this many tasks share one job, and the job's first task labels them all in
        one process (the teacher loaded once); the others then find their folders decided. For
        teachers whose start-up outweighs one label (CHGNet: docs/costs.md); needs
        ``supports_batch``. 1: one process per task.
    """

    magmom_tolerance: float = 0.5
    mismatch_policy: str = "keep"
    max_attempts: int = 2
    max_failed_fraction: float = 0.5
    min_distance: float = 0.5
    cores_per_task: int = 1
    expected_magmom: dict | None = None
    core_seconds_per_atom: float | None = None
    batch_size: int = 1

    # the machine.programs entry whose launcher and data folder this labeler's command uses (None: none),
    # and the launcher it uses where the machine names none (a labeler built outside a run)
    program: ClassVar[str | None] = None
    default_launcher: ClassVar[str] = ""
    supports_relabel: ClassVar[bool] = False
    supports_batch: ClassVar[bool] = False  # job_command labels the job's other tasks too

    def __post_init__(self) -> None:
        if self.mismatch_policy not in MISMATCH_POLICIES:
            choices = ", ".join(MISMATCH_POLICIES)
            raise UserError(f"label.mismatch_policy={self.mismatch_policy!r} is unknown; choose one of {choices}")
        if self.mismatch_policy == "relabel" and not self.supports_relabel:
            raise UserError(
                f"label.mismatch_policy=relabel is not supported by this labeler ({type(self).__name__}); use keep or drop"
            )
        if not self.magmom_tolerance > 0:
            raise UserError(f"label.magmom_tolerance={self.magmom_tolerance} must be positive (muB)")
        if int(self.max_attempts) != self.max_attempts or self.max_attempts < 1:
            raise UserError(f"label.max_attempts={self.max_attempts} must be a positive integer")
        if self.min_distance < 0:
            raise UserError(f"label.min_distance={self.min_distance} must be >= 0 (Angstrom); 0 disables the check")
        if int(self.cores_per_task) != self.cores_per_task or self.cores_per_task < 1:
            raise UserError(f"label.cores_per_task={self.cores_per_task} must be a positive integer")
        if self.core_seconds_per_atom is not None:
            if not isinstance(self.core_seconds_per_atom, (int, float)) or not self.core_seconds_per_atom > 0:
                raise UserError(f"label.core_seconds_per_atom={self.core_seconds_per_atom!r} must be a positive number, or null when unknown")
            self.core_seconds_per_atom = float(self.core_seconds_per_atom)
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise UserError(f"label.batch_size={self.batch_size} must be a positive integer")
        if self.batch_size > 1 and not self.supports_batch:
            raise UserError(f"label.batch_size={self.batch_size}: {type(self).__name__} labels one task per process; use 1")
        self.batch_size = int(self.batch_size)
        self.max_attempts = int(self.max_attempts)
        if not 0 <= self.max_failed_fraction <= 1:
            raise UserError(f"label.max_failed_fraction={self.max_failed_fraction} must be a fraction in [0, 1]")
        self.cores_per_task = int(self.cores_per_task)
        self.profile = ProgramProfile(self.default_launcher, key=f"machine.programs.{self.program}") if self.program else None
        try:
            self.expected_magmom = {str(metal): {int(v): float(m) for v, m in per_valence.items()}
                                    for metal, per_valence in (self.expected_magmom or {}).items()}
        except (AttributeError, TypeError, ValueError):
            raise UserError(
                f"label.expected_magmom={self.expected_magmom!r} must map metal -> {{valence: |m| in muB}}, "
                "e.g. {Fe: {2: 3.9, 3: 4.4}}"
            ) from None

    def attach_profile(self, profiles: dict[str, ProgramProfile]) -> None:
        """Run with this machine's launcher and data folder (``machine.programs.<program>``)."""
        if self.program is None:
            return
        if self.program not in profiles:
            raise UserError(f"machine.programs has no {self.program} entry; add machine.programs.{self.program}.command "
                            f"(its launcher, e.g. {self.default_launcher!r})")
        self.profile = profiles[self.program]

    def expected_moments(self, system: OlivineSystem) -> dict[int, float]:
        """|m| per valence that this teacher gives the system's metal."""
        moments = self.expected_magmom.get(system.metal, system.valence.expected_magmom)
        rule = system.valence
        missing = {rule.reduced, rule.oxidised} - set(moments)
        if missing:
            raise UserError(
                f"label.expected_magmom.{system.metal} lacks valence {sorted(missing)}; "
                f"give both {rule.reduced} and {rule.oxidised}"
            )
        return {v: moments[v] for v in (rule.reduced, rule.oxidised)}

    def ase_calculator(self):
        """An in-process ASE calculator of the same teacher (to relax structures), where one exists."""
        raise UserError(f"{type(self).__name__} offers no in-process ASE calculator; use label=chgnet for that step")

    @property
    def name(self) -> str:
        """Short teacher name recorded with every label."""
        return type(self).__name__.removesuffix("Labeler").lower()

    @property
    @abstractmethod
    def forward_files(self) -> list[str]:
        """Inputs ``write_inputs`` puts in a task folder, sent to where the command runs."""

    @property
    def backward_files(self) -> list[str]:
        """Files the command may leave behind (results, ``failed.json``), brought back when present."""
        return [LABELED_FILE, FAILED_FILE]

    @abstractmethod
    def write_inputs(self, atoms: Atoms, task_dir: Path, system: OlivineSystem) -> None:
        """Write everything the command needs into ``task_dir`` (which exists)."""

    @abstractmethod
    def command(self) -> str:
        """Shell command run inside a task folder; exits 0 once the task is decided."""

    def job_command(self, job_tasks: list[str]) -> str:
        """The command of a task in a job of ``job_tasks`` (folder names, siblings of the task's folder).

        A batching labeler (``batch_size > 1``) labels its own folder and then every undecided one of
        ``job_tasks``, one after another in one process; the others run ``command()`` alone.
        """
        return self.command()

    def is_finished(self, task_dir: Path) -> bool:
        """Whether ``task_dir`` holds a decided task: a result or ``failed.json``."""
        return decided_file(task_dir) is not None

    def read_outputs(self, task_dir: Path) -> Atoms:
        """The labeled frame (see the module docstring); raises if the output is unreadable."""
        return read_labeled(Path(task_dir) / LABELED_FILE)


def decided_file(task_dir: Path) -> str | None:
    """The file that decides ``task_dir`` (the label or ``failed.json``), or None while it is undecided."""
    return next((name for name in (LABELED_FILE, FAILED_FILE) if (Path(task_dir) / name).is_file()), None)


def already_decided(task_dir: Path) -> bool:
    """Whether a task command finds its folder decided (and says so): a job resubmitted after a kill
    reruns every task it had not tagged finished."""
    decided = decided_file(task_dir)
    if decided:
        print(f"already decided ({decided} present): nothing to do")
    return decided is not None


def write_failure(task_dir: Path, reason: str) -> None:
    """Mark a task as failed for a deterministic reason (the driver quarantines it, nobody retries it)."""
    path = Path(task_dir) / FAILED_FILE
    atomic.write_text(path, json.dumps({"reason": reason}, indent=1) + "\n")


def read_failure(task_dir: Path) -> str | None:
    """The reason recorded in ``failed.json``, or None when the task did not fail that way."""
    path = Path(task_dir) / FAILED_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["reason"])
    except (ValueError, KeyError, TypeError):
        return f"{FAILED_FILE} present but unreadable: {path.read_text()[:200]!r}"
