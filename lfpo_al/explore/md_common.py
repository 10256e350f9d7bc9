"""What every MD engine shares: the deviation file's columns, the per-frame annotation, the stop check
and the task folder's outputs (``frames.extxyz``, ``model_devi.out``, ``result.json``)."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from lfpo_al import atomic
from lfpo_al.explore.md_task import MDResult, MDTask
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import metal_valences

DEVI_HEADER = "%12s %18s %18s %18s %18s %18s %18s %18s" % (
    "step", "max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e",
)
MAX_DEVI_F = 4  # column of max_devi_f in a deviation row


@dataclass(frozen=True)
class Stop:
    """Why a trajectory stops and at which recorded step (selection counts frames from there as failed)."""

    reason: str  # in words, for people: result.json's stop_reason
    step: int  # the recorded frame's step


def min_distance(atoms: Atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    return float(d[np.triu_indices(len(atoms), k=1)].min())


def annotate(frame: Atoms, system: OlivineSystem, task: MDTask, step: int) -> None:
    """Per-atom and info keys every engine records on a frame."""
    _, valence = metal_valences(frame, system)
    full = np.zeros(len(frame), dtype=int)
    full[np.array(frame.get_chemical_symbols()) == system.metal] = valence
    # ``valence`` stays the seeded pattern the teacher is checked against; the instantaneous
    # geometric reading is kept beside it (thermal noise makes it flicker at high T)
    frame.set_array("valence_geometry", full)
    frame.info.update(family=task.family, temperature=task.temperature, step=step)


def stop_at(frame: Atoms, row: np.ndarray | None, task: MDTask) -> Stop | None:
    """Whether a trajectory stops at this recorded frame (model_devi row; None: not scored); None: go on."""
    step = int(frame.info["step"])
    if row is not None and (not np.isfinite(row[MAX_DEVI_F]) or row[MAX_DEVI_F] > task.abort_deviation):
        return Stop(f"deviation {row[MAX_DEVI_F]:.2f} > {task.abort_deviation:.2f} eV/A at step {step}", step)
    if (dmin := min_distance(frame)) < task.min_distance:
        return Stop(f"atoms {dmin:.2f} A apart at step {step}", step)
    return None


def fill_unscored(rows: list[np.ndarray | None]) -> np.ndarray:
    """Deviation rows with each unscored frame given the element-wise larger row of the scored frames
    before and after it (its own step kept): a frame is trusted only when both neighbours are."""
    scored = [i for i, row in enumerate(rows) if row is not None]
    out = []
    for i, row in enumerate(rows):
        if row is None:
            k = bisect_left(scored, i)  # frames 0 and last are scored: i lies between two
            before, after = scored[k - 1], scored[k]
            row = np.maximum(rows[before], rows[after])
            row[0] = rows[before][0] + (i - before) * (rows[after][0] - rows[before][0]) / (after - before)
        out.append(row)
    return np.array(out)


def write_outputs(task_dir: Path, frames: list[Atoms], devi_rows: np.ndarray, devi_header: str, n_steps_run: int,
                  stop: Stop | None, wall_s: float) -> MDResult:
    """The task folder's outputs, the same for every engine: frames, deviation rows and ``result.json``."""
    atomic.write_extxyz(task_dir / "frames.extxyz", frames)
    with atomic.atomic_path(task_dir / "model_devi.out") as partial:
        np.savetxt(partial, devi_rows, fmt=["%12d"] + ["%18.6e"] * (devi_rows.shape[1] - 1), header=devi_header)
    result = MDResult(n_frames=len(frames), n_steps_run=n_steps_run, stop_reason=stop.reason if stop else None,
                      stop_step=stop.step if stop else None, wall_s=round(wall_s, 2))
    result.write(task_dir)
    return result
