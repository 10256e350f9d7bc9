"""Polaron seeding: which M are oxidised, their contracted octahedra and initial spins.

Rule ``nearest`` (default): one M3+ per removed Li. All (vacancy, M) pairs are ranked by
minimum-image distance (rounded to 1 mAA) and then by a seeded random key; walking that list, a pair is
taken when both its vacancy and its M are still free. Every vacancy thus gets one nearby M3+, equal
distances are broken by the seed, and the same seed gives the same structure. Rule ``random``: the
M3+ are drawn at random (seeded). Interfaces take every M of the delithiated slab as M3+.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.geometry import get_distances

from lfpo_al.errors import UserError
from lfpo_al.structures.valence import N_OXYGEN, nearest_oxygen

POLARON_RULES = ("nearest", "random")


def nearest_metals(vacancy_positions: np.ndarray, atoms: Atoms, metal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One distinct M per vacancy, nearest first (see module docstring); returns atom indices."""
    if len(vacancy_positions) == 0:
        return np.array([], dtype=int)
    _, dist = get_distances(vacancy_positions, atoms.positions[metal], cell=atoms.cell, pbc=True)
    vac, met = np.meshgrid(np.arange(dist.shape[0]), np.arange(dist.shape[1]), indexing="ij")
    order = np.lexsort((rng.random(dist.size), np.round(dist.ravel(), 3)))
    vac_free = np.ones(dist.shape[0], bool)
    met_free = np.ones(dist.shape[1], bool)
    chosen = []
    for v, m in zip(vac.ravel()[order], met.ravel()[order]):
        if vac_free[v] and met_free[m]:
            vac_free[v] = met_free[m] = False
            chosen.append(metal[m])
            if not vac_free.any():
                break
    return np.sort(np.array(chosen, dtype=int))


def choose_oxidised(rule: str, vacancy_positions, atoms: Atoms, metal: np.ndarray, rng) -> np.ndarray:
    if rule == "nearest":
        return nearest_metals(vacancy_positions, atoms, metal, rng)
    if rule == "random":
        return np.sort(rng.choice(metal, size=len(vacancy_positions), replace=False))
    raise UserError(f"build.polaron_rule={rule!r} is unknown; choose one of {', '.join(POLARON_RULES)}")


def contract_octahedra(
    atoms: Atoms, oxidised: np.ndarray, oxygen: np.ndarray, bond_length: float, tol: float = 1e-3, max_rounds: int = 50
) -> None:
    """Scale each M3+ octahedron about its M until its mean M-O equals ``bond_length``, in place.

    Each octahedron keeps its shape. An O shared by two contracted octahedra takes both displacements,
    which moves the other's mean a little, so the scaling repeats until every mean is within ``tol``.
    """
    if len(oxidised) == 0:
        return
    positions = atoms.get_positions()
    for _ in range(max_rounds):
        nearest, vectors = nearest_oxygen(positions, atoms.cell.array, oxidised, oxygen, N_OXYGEN)
        mean = np.linalg.norm(vectors, axis=-1).mean(axis=1)
        if np.abs(mean - bond_length).max() < tol:
            break
        shift = vectors * (bond_length / mean[:, None, None] - 1.0)
        displacement = np.zeros((len(oxygen), 3))
        np.add.at(displacement, nearest.ravel(), shift.reshape(-1, 3))
        positions[oxygen] += displacement
    atoms.set_positions(positions)


def initial_magmoms(valence: np.ndarray, spin_sign: np.ndarray, magmom_by_valence: dict[int, float]) -> np.ndarray:
    """Per-atom starting moments: |m| from the valence, sign from the magnetic order, 0 off M sites."""
    size = np.array([magmom_by_valence.get(int(v), 0.0) if v else 0.0 for v in valence])
    return size * spin_sign
