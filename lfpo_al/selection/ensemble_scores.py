"""Per-frame scores that need the ensemble's models, not only its deviation file.

* **max force deviation** (deepmd's ``max_devi_f``): the members' force spread, max over atoms;
* **valence disagreement**: for every metal site, each member's *breathing force*
  ``B = sum_O (F_O - F_M) . u_MO`` over its ``n_ligands`` nearest O (``u_MO`` the unit vector from the
  metal to the O). ``B > 0`` pushes the octahedron open (towards the reduced, longer-bonded state),
  ``B < 0`` pulls it shut (towards the oxidised one), so members that disagree on ``B`` disagree on
  which valence the site is heading for. The score is the largest spread (standard deviation over
  members) of ``B`` over the frame's metal sites, eV/A. The force deviation, a max over all atoms, is
  dominated by whichever atom is worst described, typically a Li or an O far from any polaron;
  this score looks only at the coordinate the valence is read from;
* **descriptor**: member 0's own descriptor (``DeepPot.eval_descriptor``), averaged over the atoms of
  each species and concatenated in type-map order, as a frame's position for diversity
  (:func:`lfpo_al.selection.diversity.farthest_point_order`).

Frames holding the same atoms are evaluated as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

N_LIGANDS = 6


@dataclass(frozen=True)
class EnsembleScores:
    max_devi_f: np.ndarray  # (F,) eV/A
    valence_disagreement: np.ndarray  # (F,) eV/A; 0 for a frame with no metal site
    descriptors: np.ndarray | None  # (F, D), or None when not asked for


def metal_ligands(atoms: Atoms, metal: str, oxygen: str, n_ligands: int = N_LIGANDS) -> tuple[np.ndarray, np.ndarray]:
    """Metal indices (K,) and the indices of each one's ``n_ligands`` nearest O (K, n_ligands), minimum image."""
    symbols = np.asarray(atoms.get_chemical_symbols())
    metals, oxygens = np.flatnonzero(symbols == metal), np.flatnonzero(symbols == oxygen)
    if metals.size == 0 or oxygens.size < n_ligands:
        return metals, np.zeros((metals.size, 0), dtype=np.int64)
    vectors = atoms.positions[oxygens][None, :, :] - atoms.positions[metals][:, None, :]
    _, lengths = find_mic(vectors.reshape(-1, 3), atoms.cell, atoms.pbc)
    nearest = np.argsort(lengths.reshape(metals.size, oxygens.size), axis=1)[:, :n_ligands]
    return metals, oxygens[nearest]


def breathing_forces(forces: np.ndarray, atoms: Atoms, metals: np.ndarray, ligands: np.ndarray) -> np.ndarray:
    """``B`` (M members, K metals): the force along each metal's M-O bonds, summed over its ligands (eV/A)."""
    if ligands.size == 0:
        return np.zeros((forces.shape[0], metals.size))
    vectors = atoms.positions[ligands] - atoms.positions[metals][:, None, :]
    bonds, lengths = find_mic(vectors.reshape(-1, 3), atoms.cell, atoms.pbc)
    units = (bonds / lengths[:, None]).reshape(ligands.shape + (3,))
    relative = forces[:, ligands, :] - forces[:, metals, :][:, :, None, :]  # (M, K, L, 3)
    return np.einsum("mkld,kld->mk", relative, units)


def species_mean_descriptor(descriptor: np.ndarray, atom_types: np.ndarray, n_types: int) -> np.ndarray:
    """(N, D) per-atom descriptor -> (n_types * D,): the mean over each species' atoms, zeros where absent."""
    parts = []
    for t in range(n_types):
        mask = atom_types == t
        parts.append(descriptor[mask].mean(axis=0) if mask.any() else np.zeros(descriptor.shape[1]))
    return np.concatenate(parts)


def score_frames(models: list[str | Path], frames: list[Atoms], metal: str, oxygen: str,
                 descriptors: bool = False) -> EnsembleScores:
    """Evaluate every member on every frame (frames with the same atoms as one batch)."""
    from deepmd.infer import DeepPot
    from deepmd.infer.model_devi import calc_model_devi_f

    members = [DeepPot(str(path)) for path in models]
    type_map = members[0].get_type_map()
    deviation, valence = np.zeros(len(frames)), np.zeros(len(frames))
    features: list[np.ndarray | None] = [None] * len(frames)
    groups: dict[tuple, list[int]] = {}
    for i, atoms in enumerate(frames):
        groups.setdefault(tuple(atoms.numbers), []).append(i)
    for indices in groups.values():
        first = frames[indices[0]]
        atom_types = np.array([type_map.index(s) for s in first.get_chemical_symbols()])
        coords = np.stack([frames[i].positions.reshape(-1) for i in indices])
        cells = np.stack([frames[i].cell.array.reshape(-1) for i in indices])
        by_member = np.stack([m.eval(coords, cells, atom_types)[1].reshape(len(indices), -1, 3) for m in members])
        deviation[indices] = calc_model_devi_f(by_member)[0]
        forces = by_member.swapaxes(0, 1)  # (frames, members, atoms, 3)
        if descriptors:
            per_atom = members[0].eval_descriptor(coords, cells, atom_types)
        for j, i in enumerate(indices):
            metals, ligands = metal_ligands(frames[i], metal, oxygen)
            spread = breathing_forces(forces[j], frames[i], metals, ligands).std(axis=0)
            valence[i] = float(spread.max()) if spread.size else 0.0
            if descriptors:
                features[i] = species_mean_descriptor(per_atom[j], atom_types, len(type_map))
    return EnsembleScores(deviation, valence, np.stack(features) if descriptors and frames else None)
