"""The frame files every labeler's task folder shares: the input frame and the labeled frame (extxyz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lfpo_al import atomic

FRAME_FILE = "frame.extxyz"
LABELED_FILE = "labeled.extxyz"


def read_labeled(path: Path) -> Atoms:
    """A ``labeled.extxyz`` with the moments moved from the calculator to ``arrays['magmoms']``.

    ASE's extxyz reader files any ``magmoms`` column under the calculator; keeping it out of the
    calculator lets the frame be written again without a duplicate column.
    """
    import ase.io  # here, not at the top: task commands that find their folder decided never need it

    atoms = ase.io.read(path, format="extxyz")
    results = dict(atoms.calc.results) if atoms.calc is not None else {}
    missing = {"energy", "forces", "stress", "magmoms"} - set(results)
    if missing:
        raise ValueError(f"{path.name} lacks {', '.join(sorted(missing))}")
    atoms.new_array("magmoms", np.asarray(results.pop("magmoms"), dtype=float))
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def write_labeled(atoms: Atoms, path: Path) -> None:
    """Written whole (``lfpo_al.atomic``), so a killed task never leaves half a result."""
    results = dict(atoms.calc.results)
    out = atoms.copy()
    magmoms = out.arrays.pop("magmoms")
    out.calc = SinglePointCalculator(out, magmoms=magmoms, **results)
    atomic.write_extxyz(path, out)