"""What the DFT labelers share: the input-template folder, initial moments per site, k-point meshes."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from ase import Atoms

from lfpo_al.errors import UserError
from lfpo_al.structures.system import OlivineSystem

DFT_INPUTS_ENV = "LFPO_AL_DFT_INPUTS"


def dft_inputs_dir() -> Path:
    """``$LFPO_AL_DFT_INPUTS`` or the package's ``dft_inputs/`` folder (beside its ``configs/``)."""
    path = Path(os.environ.get(DFT_INPUTS_ENV, Path(__file__).resolve().parents[1] / "dft_inputs"))
    if not path.is_dir():
        raise UserError(f"no DFT input folder {path}; set {DFT_INPUTS_ENV} to a folder of DFT input templates")
    return path


def site_magmoms(atoms: Atoms, system: OlivineSystem) -> np.ndarray:
    """Initial moment per site: the frame's seeded ``initial_magmoms`` (signed, from the builder), else
    |m| of its intended ``valence`` from ``system.valence.initial_magmom`` (all parallel)."""
    seeded = atoms.arrays.get("initial_magmoms")
    if seeded is not None and np.ndim(seeded) == 1 and np.any(seeded != 0):
        return np.asarray(seeded, dtype=float)
    if "valence" not in atoms.arrays:
        raise UserError("frame has neither 'initial_magmoms' nor 'valence' per atom; give it one of them")
    start = system.valence.initial_magmom
    valence = np.asarray(atoms.arrays["valence"], dtype=int)
    missing = sorted(set(valence[valence > 0]) - set(start))
    if missing:
        raise UserError(f"system.valence.initial_magmom has no moment for valence {missing}")
    return np.array([start[v] if v > 0 else 0.0 for v in valence])


def check_kpoint_spacing(spacing: float) -> None:
    if not spacing > 0:
        raise UserError(f"label.kpoint_spacing={spacing} must be positive (1/Angstrom, 2 pi included)")


def kpoint_mesh(cell: np.ndarray, spacing: float) -> list[int]:
    """Gamma-centred mesh with at most ``spacing`` (1/A, 2 pi included) between k-points along each b_i."""
    lengths = 2 * math.pi * np.linalg.norm(np.linalg.inv(cell).T, axis=1)
    return [max(1, math.ceil(n - 1e-9)) for n in lengths / spacing]
