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


def deepmd_systems(data_dir: Path) -> list[Path]:
    """The leaf deepmd/npy folders (those holding ``type.raw``) under ``data_dir``."""
    return sorted(p.parent for p in Path(data_dir).rglob("type.raw"))
