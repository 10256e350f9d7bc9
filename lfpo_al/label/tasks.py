"""Task folders of a labeling step: ``work_dir/task.%06d/``, one frame each.

A folder is complete once ``task.json`` exists (written last); a rerun reuses it after checking it
holds the same frame. An attempt that ended without any result (crash, killed job) is moved, not
deleted, into ``attempt.K/`` with its reason, so the next attempt starts clean and the history stays.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from lfpo_al import atomic
from lfpo_al.errors import UserError
from lfpo_al.label.base import Labeler, write_failure
from lfpo_al.label.checks import closest_pair
from lfpo_al.structures.system import OlivineSystem

TASK_FILE = "task.json"
EXIT_CODE_FILE = "exit_code"
LOG_FILES = ("task.log", "task.err")  # the outlog/errlog names lfpo_al.dispatch gives dpdispatcher
OUTPUTS_DIR = "outputs"  # the labeler's outputs travel back in this folder (see driver.task_command)
REASON_FILE = "reason.txt"
PROVENANCE_KEYS = ("family", "source", "max_devi_f")


@dataclass
class Task:
    index: int
    dir: Path
    frame: Atoms

    @property
    def name(self) -> str:
        return self.dir.name

    def attempt_dirs(self) -> list[Path]:
        return sorted((p for p in self.dir.glob("attempt.*") if p.suffix[1:].isdigit()), key=lambda p: int(p.suffix[1:]))

    def attempts_done(self) -> int:
        """Attempts that ended without a result (each archived in ``attempt.K/``)."""
        return len(self.attempt_dirs())

    def last_attempt_reason(self) -> str:
        dirs = self.attempt_dirs()
        path = dirs[-1] / REASON_FILE if dirs else None
        return path.read_text().strip() if path is not None and path.is_file() else "unknown"


def frame_identity(atoms: Atoms) -> dict:
    """What must match for a task folder to be reused for ``atoms``: species exactly, geometry to rounding.

    Positions enter as two weighted sums rather than a hash, so that a frame that went through a
    text file (8 decimals) still matches its in-memory original.
    """
    weights = np.arange(1, len(atoms) + 1, dtype=float)[:, None]
    return {
        "formula": atoms.get_chemical_formula(),
        "n_atoms": len(atoms),
        "numbers_sha1": hashlib.sha1(np.asarray(atoms.numbers, dtype=np.int64).tobytes()).hexdigest(),
        "cell": np.asarray(atoms.cell, dtype=float).tolist(),
        "position_sums": [atoms.positions.sum(axis=0).tolist(), (atoms.positions * weights).sum(axis=0).tolist()],
    }


def same_frame(stored: dict, identity: dict) -> bool:
    if stored.get("numbers_sha1") != identity["numbers_sha1"]:
        return False
    n_atoms = identity["n_atoms"]
    # a text round trip moves each coordinate by < 1e-8 A; sums of N (weights up to N) add that up
    tolerances = (1e-6 * n_atoms, 1e-6 * n_atoms * n_atoms)
    sums_ok = all(
        np.allclose(a, b, rtol=0, atol=tol)
        for a, b, tol in zip(stored["position_sums"], identity["position_sums"], tolerances, strict=True)
    )
    return bool(np.allclose(stored["cell"], identity["cell"], rtol=0, atol=1e-5) and sums_ok)


def prepare_task(index: int, frame: Atoms, labeler: Labeler, work_dir: Path, system: OlivineSystem) -> tuple[Task, bool]:
    """The task folder of ``frame``: reused when complete (True), else (re)written (False)."""
    task = Task(index=index, dir=work_dir / f"task.{index:06d}", frame=frame)
    meta_path = task.dir / TASK_FILE
    identity = frame_identity(frame)
    if meta_path.is_file():
        stored = json.loads(meta_path.read_text())
        if not same_frame(stored.get("identity", {}), identity):
            raise UserError(
                f"{task.dir} holds a different frame than frames[{index}]; label these frames in a new work_dir "
                f"(or move that folder away)"
            )
        return task, True
    task.dir.mkdir(parents=True, exist_ok=True)
    labeler.write_inputs(frame, task.dir, system)
    pair = closest_pair(frame, labeler.min_distance)
    if pair is not None:  # a DFT code would burn hours on it or crash: decide it here
        i, j, d = pair
        reason = f"atoms {i} and {j} are {d:.3f} A apart, below label.min_distance={labeler.min_distance}"
        write_failure(task.dir, reason + "; not sent to the teacher")
    meta = {
        "index": index,
        "teacher": labeler.name,
        "identity": identity,
        "provenance": {k: _plain(frame.info[k]) for k in PROVENANCE_KEYS if k in frame.info},
    }
    atomic.write_text(meta_path, json.dumps(meta, indent=1) + "\n")
    return task, False


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def unpack_outputs(task_dir: Path) -> None:
    """Move what came back in ``outputs/`` to the task folder, where the labeler looks for it.

    Idempotent, and run before any task is judged, so a run killed between download and unpacking
    loses nothing.
    """
    folder = task_dir / OUTPUTS_DIR
    if not folder.is_dir():
        return
    for item in folder.iterdir():
        item.replace(task_dir / item.name)
    folder.rmdir()


def archive_failed_attempt(task: Task, labeler: Labeler) -> str:
    """Move what an attempt without result left into ``attempt.K/``; return why it produced nothing."""
    reason = attempt_reason(task.dir)
    done = task.attempt_dirs()
    dest = task.dir / f"attempt.{int(done[-1].suffix[1:]) + 1 if done else 1}"
    dest.mkdir()
    (dest / REASON_FILE).write_text(reason + "\n")
    for name in (EXIT_CODE_FILE, *LOG_FILES, *labeler.backward_files):
        if (task.dir / name).exists():
            shutil.move(task.dir / name, dest / name)
    return reason


def attempt_reason(task_dir: Path) -> str:
    exit_file = task_dir / EXIT_CODE_FILE
    if not exit_file.is_file():
        return "the job ended before the task did (killed, or never started); see the dispatch log"
    code = exit_file.read_text().strip()
    err = task_dir / LOG_FILES[1]
    lines = [line.strip() for line in err.read_text(errors="replace").splitlines() if line.strip()] if err.is_file() else []
    tail = f": {lines[-1][:300]}" if lines else ""
    return f"the command exited with status {code} and left no result{tail}"


@contextmanager
def exclusive(work_dir: Path) -> Iterator[None]:
    """Hold ``work_dir/.lock`` so that two labeling runs never share task folders (released on any exit)."""
    path = work_dir / ".lock"
    with os.fdopen(atomic.open_no_follow(path, os.O_WRONLY | os.O_CREAT), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{work_dir} is being labeled by another process (lock {path}); wait for it or use another work_dir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
