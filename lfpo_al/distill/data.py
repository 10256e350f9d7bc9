"""Frames labeled by the teacher model: one batched evaluation per trajectory, written as deepmd/npy by dpdata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lfpo_al import atomic
from lfpo_al.errors import UserError


def label_with_model(model, frames: list[Atoms]) -> list[Atoms]:
    """Copies of ``frames`` (one trajectory: same atoms in the same order) carrying the model's energy,
    forces and stress, evaluated in one call (``model``: a deepmd ``DeepPot``)."""
    if not frames:
        return []
    symbols = frames[0].get_chemical_symbols()
    if any(f.get_chemical_symbols() != symbols for f in frames):
        raise ValueError("label_with_model takes the frames of one trajectory (same atoms in the same order)")
    model_types = model.get_type_map()
    missing = sorted(set(symbols) - set(model_types))
    if missing:
        raise UserError(f"the teacher model knows no {', '.join(missing)} (its type map: {', '.join(model_types)}); "
                        "distil a model trained for this system")
    atype = np.array([model_types.index(s) for s in symbols])
    coords = np.array([f.positions for f in frames]).reshape(len(frames), -1)
    cells = np.array([f.cell.array for f in frames]).reshape(len(frames), 9)
    energy, forces, virial = model.eval(coords, cells, atype)[:3]
    labeled = []
    for i, frame in enumerate(frames):
        out = Atoms(frame.get_chemical_symbols(), positions=frame.positions, cell=frame.cell, pbc=True)
        # ASE's stress is -virial / volume (Voigt order xx yy zz yz xz xy)
        v = virial[i].reshape(3, 3) / out.get_volume()
        stress = -np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]])
        out.calc = SinglePointCalculator(out, energy=float(energy[i].sum()), forces=forces[i].reshape(-1, 3),
                                         stress=stress)
        labeled.append(out)
    return labeled


def write_deepmd(frames: list[Atoms], type_map: list[str], data_dir: Path) -> Path:
    """All ``frames`` (labeled) as one deepmd/npy folder per composition, through a partial folder."""
    import dpdata

    data_dir = Path(data_dir)
    with atomic.atomic_dir(data_dir) as partial:
        multi = dpdata.MultiSystems(type_map=list(type_map))
        for frame in frames:
            multi.append(dpdata.LabeledSystem(frame, fmt="ase/structure", type_map=list(type_map)))
        multi.to_deepmd_npy(str(partial))
    return data_dir


def systems_of(data_dir: Path) -> list[Path]:
    """The deepmd/npy system folders (those holding ``type.raw``) under ``data_dir``."""
    return sorted(p.parent for p in Path(data_dir).glob("*/type.raw"))
