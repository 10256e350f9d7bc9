"""The data a run starts from: initial training frames, the frozen test set, teacher-relaxed polarons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from lfpo_al.structures.builder import BuildSpec, build_structure
from lfpo_al.structures.system import OlivineSystem


def perturbed_frames(
    system: OlivineSystem, specs: list[BuildSpec], n_per_structure: int, rattle_ang: float, seed: int, strain: float = 0.02
) -> list[Atoms]:
    """Per structure: the built cell, then copies rattled by ``rattle_ang`` and strained by up to ``strain``."""
    rng = np.random.default_rng(seed)
    frames = []
    for spec in specs:
        built = build_structure(system, spec)
        built.info["family"] = f"x{spec.x:.2f}-{spec.li_order}"
        for i in range(n_per_structure):
            frame = built.copy()
            if i > 0:
                scale = 1.0 + rng.uniform(-strain, strain, size=3)
                frame.set_cell(frame.cell.array * scale[:, None], scale_atoms=True)
                frame.positions += rng.normal(scale=rattle_ang, size=frame.positions.shape)
            frames.append(frame)
    return frames


def teacher_md_frames(
    system: OlivineSystem, specs: list[BuildSpec], n_per_structure: int, calc, temperature_k: float,
    interval_steps: int, seed: int
) -> list[Atoms]:
    """Per structure: the built cell, then snapshots ``interval_steps`` apart of the teacher's own
    Langevin MD (1 fs) from it: thermal frames, as the loop's MD visits them, in the teacher's basin."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(seed)
    frames = []
    for spec in specs:
        built = build_structure(system, spec)
        built.info["family"] = f"x{spec.x:.2f}-{spec.li_order}"
        frames.append(built.copy())
        work = built.copy()
        work.calc = calc
        MaxwellBoltzmannDistribution(work, temperature_K=temperature_k, rng=rng)
        dyn = Langevin(work, 1.0 * units.fs, temperature_K=temperature_k, friction=0.02 / units.fs, rng=rng)
        for i in range(1, n_per_structure):
            dyn.run(interval_steps)
            snap = Atoms(work.get_chemical_symbols(), positions=work.positions, cell=work.cell, pbc=True)
            snap.arrays.update({k: v.copy() for k, v in built.arrays.items() if k not in ("numbers", "positions")})
            snap.info.update(built.info, md_step=i * interval_steps, md_temperature_k=temperature_k)
            frames.append(snap)
    return frames


def deepmd_systems(data_dir: Path) -> list[Path]:
    """The leaf deepmd/npy folders (those holding ``type.raw``) under ``data_dir``."""
    return sorted(p.parent for p in Path(data_dir).rglob("type.raw"))
