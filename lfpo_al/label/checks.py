"""Checks on frames before labeling and on labels before they enter the training set."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list


def closest_pair(atoms: Atoms, cutoff: float) -> tuple[int, int, float] | None:
    """The closest pair of atoms nearer than ``cutoff`` (minimum image), or None."""
    if cutoff <= 0 or len(atoms) < 2:
        return None
    i, j, d = neighbor_list("ijd", atoms, cutoff, self_interaction=False)
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), float(d[k])


def label_problem(frame: Atoms, labeled: Atoms) -> str | None:
    """Why a teacher's output cannot be trained on (wrong size, non-finite numbers), or None."""
    if len(labeled) != len(frame):
        return f"output has {len(labeled)} atoms, the frame {len(frame)}"
    if not np.array_equal(labeled.numbers, frame.numbers):
        return "output species differ from the frame's"
    results = labeled.calc.results if labeled.calc is not None else {}
    for key, shape in (("energy", ()), ("forces", (len(frame), 3)), ("stress", None)):
        if key not in results:
            return f"output lacks {key}"
        value = np.asarray(results[key], dtype=float)
        if shape is not None and value.shape != shape:
            return f"output {key} has shape {value.shape}, expected {shape}"
        if not np.all(np.isfinite(value)):
            return f"non-finite {key} in the output"
    magmoms = labeled.arrays.get("magmoms")
    if magmoms is None or np.shape(magmoms) != (len(frame),):
        return "output lacks per-atom magnetic moments ('magmoms')"
    if not np.all(np.isfinite(magmoms)):
        return "non-finite magnetic moments in the output"
    return None


def valence_from_moments(moments: np.ndarray, expected_magmom: dict[int, float], tolerance: float) -> np.ndarray:
    """Valence whose expected |moment| is closest to each |moment|; 0 where none is within ``tolerance``."""
    valences = np.array(sorted(expected_magmom))
    expected = np.array([expected_magmom[v] for v in valences])
    distance = np.abs(np.abs(np.asarray(moments, dtype=float))[:, None] - expected[None, :])
    assigned = valences[np.argmin(distance, axis=1)]
    return np.where(distance.min(axis=1) <= tolerance, assigned, 0)


def valence_mismatch(
    intended: np.ndarray, magmoms: np.ndarray, expected_magmom: dict[int, float], tolerance: float
) -> dict | None:
    """M sites (``intended`` > 0) where the teacher's moment contradicts the intended valence.

    Returns None when every M site agrees, else ``{"sites", "moments", "intended", "assigned"}`` with
    ``assigned`` 0 for a moment that fits no valence within ``tolerance`` (e.g. a hole shared by two M).
    """
    intended = np.asarray(intended, dtype=int)
    sites = np.flatnonzero(intended > 0)
    assigned = valence_from_moments(np.asarray(magmoms)[sites], expected_magmom, tolerance)
    wrong = assigned != intended[sites]
    if not wrong.any():
        return None
    bad = sites[wrong]
    return {
        "sites": [int(s) for s in bad],
        "moments": [round(float(m), 3) for m in np.asarray(magmoms)[bad]],
        "intended": [int(v) for v in intended[bad]],
        "assigned": [int(v) for v in assigned[wrong]],
    }
