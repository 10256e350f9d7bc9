"""Trajectories in memory: positions, cells, frame interval, temperature and ensemble deviation.

Any file ASE reads (extxyz, LAMMPS dump, ASE .traj, ...). The frame interval comes from
``analysis.frame_interval_fs``, else from the frames' ``time_fs``/``time_ps`` info, else from their
``step`` with ``timestep_fs`` (in the info or in the explorer's ``task.json`` beside the file). The
deviation comes from a deepmd ``model_devi.out`` beside the file (column ``max_devi_f``), matched to the
frames by step. LAMMPS dumps without an element column get symbols from ``system.type_map``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lfpo_al.errors import UserError
from lfpo_al.structures.system import OlivineSystem

log = logging.getLogger(__name__)
MAX_DEVI_F = 4  # column of max_devi_f in deepmd's model_devi.out
MOMENT_ARRAYS = ("teacher_magmom", "magmoms")  # per-atom moments a teacher's or DFT frames carry


@dataclass
class Trajectory:
    """One trajectory: positions (F, N, 3) float32, cells (F, 3, 3), frame interval in fs."""

    name: str
    symbols: np.ndarray
    positions: np.ndarray
    cells: np.ndarray
    frame_interval_fs: float
    temperature: float | None = None
    info: dict = field(default_factory=dict)
    deviation: np.ndarray | None = None
    initial_valence: np.ndarray | None = None
    path: str | None = None
    magmoms: np.ndarray | None = None  # (F, N) |magnetic moments| (muB) where the frames carry them

    def moments(self, columns: np.ndarray) -> np.ndarray | None:
        """|m| of the chosen atoms as (atoms, frames), or None without moments."""
        return None if self.magmoms is None else np.abs(self.magmoms[:, columns]).T

    @property
    def n_frames(self) -> int:
        return len(self.positions)

    @property
    def duration_ps(self) -> float:
        return max(self.n_frames - 1, 0) * self.frame_interval_fs / 1000.0

    @property
    def li_order(self) -> str | None:
        value = self.info.get("li_order")
        return str(value) if value is not None else None

    def indices(self, symbol: str) -> np.ndarray:
        return np.flatnonzero(self.symbols == symbol)


def _read_frames(path: Path, key: str):
    import ase.io

    if not path.is_file():
        raise UserError(f"{key}: trajectory file {path} does not exist")
    try:
        frames = ase.io.read(str(path), index=":")
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for unreadable files
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"{key}: cannot read trajectory {path} with ASE ({type(exc).__name__}: {detail})") from exc
    if not isinstance(frames, list):
        frames = [frames]
    if not frames:
        raise UserError(f"{key}: trajectory {path} holds no frames")
    n = len(frames[0])
    if any(len(a) != n for a in frames):
        raise UserError(f"{key}: trajectory {path} changes its number of atoms; give a fixed-composition trajectory")
    return frames


def _symbols(frames, system: OlivineSystem, path: Path, key: str) -> np.ndarray:
    symbols = np.array(frames[0].get_chemical_symbols())
    if set(symbols) <= set(system.type_map):
        return symbols
    numbers = frames[0].numbers
    if numbers.min() >= 1 and numbers.max() <= len(system.type_map):  # LAMMPS types read as atomic numbers
        return np.array(system.type_map)[numbers - 1]
    raise UserError(f"{key}: {path} has species {sorted(map(str, set(symbols)))} outside system.type_map {system.type_map}; "
                    "pick the matching system=")


def _frame_interval(frames, path: Path, given: float | None, key: str) -> float:
    if given is not None:
        if given <= 0:
            raise UserError(f"analysis.frame_interval_fs={given} must be positive")
        return float(given)
    info = [a.info for a in frames]
    if len(frames) < 2:
        return 1.0
    times = None
    if all("time_fs" in i for i in info):
        times = np.array([float(i["time_fs"]) for i in info])
    elif all("time_ps" in i for i in info):
        times = 1000.0 * np.array([float(i["time_ps"]) for i in info])
    elif all("step" in i for i in info):
        timestep = info[0].get("timestep_fs")
        task = path.parent / "task.json"
        if timestep is None and task.is_file():
            timestep = json.loads(task.read_text()).get("timestep_fs")
        if timestep is not None:
            times = float(timestep) * np.array([float(i["step"]) for i in info])
    if times is None:
        raise UserError(f"{path} carries no time per frame (time_fs, time_ps, or step with timestep_fs); "
                        "set analysis.frame_interval_fs")
    steps = np.diff(times)
    if steps.min() <= 0 or np.ptp(steps) > 1e-6 * max(steps.max(), 1.0):
        raise UserError(f"{path} has uneven frame times ({steps.min():g}-{steps.max():g} fs); "
                        f"resample it or set analysis.frame_interval_fs ({key})")
    return float(steps.mean())


def read_deviation(path: Path, steps: list | None, n_frames: int) -> np.ndarray | None:
    """``max_devi_f`` per frame from ``model_devi.out`` beside ``path``, matched by step; None if absent."""
    devi_file = path.parent / "model_devi.out"
    if not devi_file.is_file():
        return None
    rows = np.atleast_2d(np.loadtxt(devi_file, ndmin=2))
    if rows.size == 0 or rows.shape[1] <= MAX_DEVI_F:
        return None
    by_step = {int(r[0]): float(r[MAX_DEVI_F]) for r in rows}
    if steps is not None and all(s is not None and int(s) in by_step for s in steps):
        return np.array([by_step[int(s)] for s in steps])
    if len(rows) == n_frames:
        return rows[:, MAX_DEVI_F].astype(float)
    log.warning("%s has %d rows for %d frames of %s: deviation ignored", devi_file, len(rows), n_frames, path)
    return None


# an atom that moved further than JUMP_ANG in one frame, onto the place (within SAME_PLACE_ANG) another atom of
# its species had one frame before, was relabelled, not moved: no hop lands where another ion stood a frame ago
JUMP_ANG, SAME_PLACE_ANG = 1.0, 0.5


def relabelled_frame(positions: np.ndarray, cells: np.ndarray, numbers: np.ndarray) -> tuple[int, int, int] | None:
    """(frame, atom, other atom) of the first place where the atom order changes between two frames, or None."""
    for i in range(1, len(positions)):
        inverse = np.linalg.inv(cells[i])
        step = (positions[i] - positions[i - 1]) @ inverse
        step = (step - np.round(step)) @ cells[i]
        for atom in np.flatnonzero(np.linalg.norm(step, axis=1) > JUMP_ANG):
            same = np.flatnonzero(numbers == numbers[atom])
            delta = (positions[i - 1][same] - positions[i][atom]) @ inverse
            distance = np.linalg.norm((delta - np.round(delta)) @ cells[i], axis=1)
            nearest = int(np.argmin(distance))
            if distance[nearest] < SAME_PLACE_ANG and same[nearest] != atom:
                return i, int(atom), int(same[nearest])
    return None


def load_trajectory(path: str | Path, system: OlivineSystem, frame_interval_fs: float | None = None,
                    temperature: float | None = None, name: str | None = None,
                    key: str = "analysis.trajectories") -> Trajectory:
    """Read a trajectory file into arrays; errors name the config key to fix."""
    path = Path(path)
    frames = _read_frames(path, key)
    if len(frames) < 2:
        raise UserError(f"{key}: {path} holds {len(frames)} frame(s): a trajectory needs at least two to have a duration")
    symbols = _symbols(frames, system, path, key)
    first = frames[0].numbers
    changed = next((i for i, a in enumerate(frames) if not np.array_equal(a.numbers, first)), None)
    if changed is not None:
        raise UserError(f"{key}: {path} frame {changed} lists its species in another order than frame 0; every "
                        "frame must keep one atom order (the analysis follows each atom by its index)")
    positions = np.stack([a.positions for a in frames]).astype(np.float32)
    cells = np.stack([a.cell.array for a in frames]).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=(1, 2)) | ~np.isfinite(cells).all(axis=(1, 2)))
    if len(bad):
        raise UserError(f"{key}: {path} frame {bad[0]} has non-finite positions or cell ({len(bad)} frame(s)); "
                        "cut the trajectory before it or rerun its MD")
    if np.any(np.abs(np.linalg.det(cells)) < 1e-6):
        raise UserError(f"{key}: {path} has frames without a periodic cell; the analysis needs the simulation box")
    reordered = relabelled_frame(positions, cells, first)
    if reordered is not None:
        frame, atom, other = reordered
        raise UserError(f"{key}: {path} frame {frame} changes the atom order: atom {atom} sits where atom {other} of "
                        "the same species was one frame before; every frame must keep one atom order")
    info = {k: v for k, v in frames[0].info.items() if isinstance(v, (str, int, float, np.integer, np.floating))}
    if temperature is None and "temperature" in frames[0].info:
        temperature = float(frames[0].info["temperature"])
    steps = [a.info.get("step") for a in frames]
    initial = frames[0].arrays.get("valence")
    moment_key = next((k for k in MOMENT_ARRAYS if all(k in a.arrays for a in frames)), None)
    magmoms = None if moment_key is None else np.stack([a.arrays[moment_key] for a in frames]).astype(np.float32)
    if name is None:
        name = path.parent.name if path.stem in ("frames", "traj", "dump") else path.stem
    return Trajectory(
        name=name,
        symbols=symbols, positions=positions, cells=cells,
        frame_interval_fs=_frame_interval(frames, path, frame_interval_fs, key),
        temperature=None if temperature is None else float(temperature), info=info,
        deviation=read_deviation(path, steps if all(s is not None for s in steps) else None, len(frames)),
        initial_valence=None if initial is None else np.asarray(initial, dtype=int), path=str(path),
        magmoms=None if magmoms is None or magmoms.shape != positions.shape[:2] else magmoms,
    )
