"""Trust-window classification of explored frames and a diverse, capped choice of candidates.

Pure NumPy; the file handling lives in :mod:`lfpo_al.selection.step`.

* **accurate**: ``max_devi_f < trust_lo`` — the ensemble agrees, labelling teaches little;
* **candidate**: ``trust_lo <= max_devi_f < trust_hi`` — uncertain but physical, worth a DFT label;
* **failed**: ``max_devi_f >= trust_hi``, a non-finite deviation, or a frame recorded at or after the step
  at which its trajectory was stopped (the explorer stops on a blown-up deviation or atoms too close:
  those geometries are unphysical and DFT on them wastes time or does not converge).

The choice of at most ``max_selected`` candidates goes round-robin over structure families so that
one badly described family (typically the most delithiated or an interface) cannot take the whole
label budget; inside a family the most uncertain frame comes first. Families are visited in the order
of their most uncertain candidate, so when the cap cuts a round short the most uncertain families win.
A frame is skipped as a near-duplicate when its largest minimum-image atomic displacement from an
already chosen frame of the same trajectory is below ``min_frame_distance``: consecutive MD frames of
a stuck or slowly moving trajectory would otherwise fill the budget with the same geometry.
Ties are broken by frame order, so the result is deterministic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

ACCURATE, CANDIDATE, FAILED = 0, 1, 2
CATEGORY_NAMES = ("accurate", "candidate", "failed")


@dataclass(frozen=True)
class TrajectoryGeometry:
    """Geometry of the recorded frames of one trajectory (same atoms in the same order)."""

    positions: np.ndarray  # (n_frames, n_atoms, 3), A
    cells: np.ndarray  # (n_frames, 3, 3), rows are lattice vectors, A
    pbc: np.ndarray  # (3,) bool


@dataclass(frozen=True)
class FramePool:
    """All recorded frames of an exploration, flattened; per-frame arrays share one index."""

    max_devi_f: np.ndarray  # (F,) eV/A
    family: np.ndarray  # (F,) str
    trajectory: np.ndarray  # (F,) int, index into ``geometries``
    frame: np.ndarray  # (F,) int, index of the frame inside its trajectory
    geometries: list[TrajectoryGeometry]


def frames_after_stop(steps: np.ndarray, stop_step: int | None) -> np.ndarray:
    """Frames recorded at or after the step a trajectory was stopped at (the stop step's frame is the bad one)."""
    steps = np.asarray(steps)
    if stop_step is None:
        return np.zeros(steps.shape, dtype=bool)
    return steps >= stop_step


def classify_frames(
    max_devi_f: np.ndarray, trust_lo: float, trust_hi: float, after_stop: np.ndarray | None = None
) -> np.ndarray:
    """Category code per frame (``ACCURATE``, ``CANDIDATE`` or ``FAILED``) as an int8 array."""
    deviation = np.asarray(max_devi_f, dtype=float)
    failed = ~np.isfinite(deviation)
    if after_stop is not None:
        failed |= np.asarray(after_stop, dtype=bool)
    with np.errstate(invalid="ignore"):  # NaN compares False; it is already failed
        failed |= deviation >= trust_hi
        accurate = ~failed & (deviation < trust_lo)
    return np.select([failed, accurate], [FAILED, ACCURATE], default=CANDIDATE).astype(np.int8)


def category_counts(category: np.ndarray) -> dict[str, int]:
    """``{"n_accurate": .., "n_candidate": .., "n_failed": ..}``."""
    counts = np.bincount(np.asarray(category, dtype=np.int64), minlength=len(CATEGORY_NAMES))
    return {f"n_{name}": int(n) for name, n in zip(CATEGORY_NAMES, counts)}


def max_displacement(reference: np.ndarray, others: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """Largest minimum-image displacement of any atom between ``reference`` (N, 3) and each of ``others`` (M, N, 3).

    Fractional differences along periodic axes are wrapped to [-0.5, 0.5). That is the exact minimum
    image for displacements shorter than half the smallest lattice-plane spacing, and otherwise some
    periodic image, never shorter than the true one: the comparison with ``min_frame_distance``
    (hundredths of an A) is therefore exact. Non-periodic axes are not wrapped.
    """
    delta = np.asarray(others, dtype=float) - np.asarray(reference, dtype=float)
    pbc = np.asarray(pbc, dtype=bool)
    cell = np.asarray(cell, dtype=float)
    if pbc.any() and abs(np.linalg.det(cell)) > 1e-12:
        fractional = delta @ np.linalg.inv(cell)
        fractional[..., pbc] -= np.round(fractional[..., pbc])
        delta = fractional @ cell
    return np.linalg.norm(delta, axis=-1).max(axis=-1)


def _is_near_duplicate(pool: FramePool, index: int, chosen_frames: list[int], min_frame_distance: float) -> bool:
    if not chosen_frames or min_frame_distance <= 0:
        return False
    geometry = pool.geometries[pool.trajectory[index]]
    frame = pool.frame[index]
    reference = geometry.positions[frame]
    others = geometry.positions[chosen_frames]
    if reference.size == 0 or others.shape[1:] != reference.shape:  # no geometry or different atoms: not comparable
        return False
    distance = max_displacement(reference, others, geometry.cells[frame], geometry.pbc)
    return bool(distance.min() < min_frame_distance)


def choose_candidates(
    pool: FramePool, eligible: np.ndarray, max_selected: int, min_frame_distance: float, priority: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Indices (into ``pool``) of at most ``max_selected`` chosen frames, in choice order, and the
    number of eligible frames skipped as near-duplicates on the way. ``priority`` (default: the
    deviation) ranks frames inside a family, highest first."""
    deviation = np.asarray(pool.max_devi_f if priority is None else priority, dtype=float)
    eligible_index = np.flatnonzero(eligible)
    # most uncertain first; equal deviations keep frame order (lexsort: last key is primary)
    ordered = eligible_index[np.lexsort((eligible_index, -deviation[eligible_index]))]
    queues: dict[str, deque[int]] = {}
    for index in ordered:
        queues.setdefault(str(pool.family[index]), deque()).append(int(index))
    families = sorted(queues, key=lambda name: (-deviation[queues[name][0]], name))

    chosen: list[int] = []
    chosen_by_trajectory: dict[int, list[int]] = {}
    n_near_duplicates = 0
    while families and len(chosen) < max_selected:
        for name in families:
            queue = queues[name]
            while queue:
                index = queue.popleft()
                same_trajectory = chosen_by_trajectory.setdefault(int(pool.trajectory[index]), [])
                if _is_near_duplicate(pool, index, same_trajectory, min_frame_distance):
                    n_near_duplicates += 1
                    continue
                chosen.append(index)
                same_trajectory.append(int(pool.frame[index]))
                break
            if len(chosen) == max_selected:
                break
        families = [name for name in families if queues[name]]
    return np.asarray(chosen, dtype=np.int64), n_near_duplicates
