"""The data a run starts from: initial training frames, the frozen test set, teacher-relaxed polarons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from lfpo_al.errors import UserError, first_line
from lfpo_al.structures.builder import BuildSpec, built_structures
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.validate.md import LangevinProtocol, langevin_frames


def perturbed_frames(
    system: OlivineSystem, specs: list[BuildSpec], n_per_structure: int, rattle_ang: float, seed: int, strain: float = 0.02
) -> list[Atoms]:
    """Per structure: the built cell, then copies rattled by ``rattle_ang`` and strained by up to ``strain``."""
    rng = np.random.default_rng(seed)
    frames = []
    for built in built_structures(system, specs):
        for i in range(n_per_structure):
            frame = built.copy()
            if i > 0:
                scale = 1.0 + rng.uniform(-strain, strain, size=3)
                frame.set_cell(frame.cell.array * scale[:, None], scale_atoms=True)
                frame.positions += rng.normal(scale=rattle_ang, size=frame.positions.shape)
            frames.append(frame)
    return frames


def langevin_snapshots(atoms: Atoms, calc, rng: np.random.Generator, temperature_k: float, n_snapshots: int,
                       interval_steps: int) -> list[Atoms]:
    """Copies (no calculator) every ``interval_steps`` of a Langevin NVT run (1 fs) of ``calc`` from ``atoms``."""
    protocol = LangevinProtocol(temperature_k, n_snapshots * interval_steps, timestep_fs=1.0,
                                record_every=interval_steps, friction_per_fs=0.02)
    snaps = langevin_frames(atoms, calc, protocol, rng)[1:]
    for snap in snaps:
        for key in ("time_fs", "temperature", "step"):
            snap.info.pop(key)
    return snaps


def teacher_md_frames(
    system: OlivineSystem, specs: list[BuildSpec], n_per_structure: int, calc, temperature_k: float,
    interval_steps: int, seed: int
) -> list[Atoms]:
    """Per structure: the built cell, then snapshots ``interval_steps`` apart of the teacher's own
    Langevin MD from it: thermal frames, as the loop's MD visits them, in the teacher's basin."""
    rng = np.random.default_rng(seed)
    frames = []
    for built in built_structures(system, specs):
        frames.append(built.copy())
        snaps = langevin_snapshots(built, calc, rng, temperature_k, n_per_structure - 1, interval_steps)
        for i, snap in enumerate(snaps, start=1):
            del snap.arrays["momenta"]  # a test frame is a configuration; labels need no velocities
            snap.info.update(md_step=i * interval_steps, md_temperature_k=temperature_k)
            frames.append(snap)
    return frames


def deepmd_systems(data_dir: Path) -> list[Path]:
    """The leaf deepmd/npy folders (those holding ``type.raw``) under ``data_dir``."""
    return sorted(p.parent for p in Path(data_dir).rglob("type.raw"))


def check_deepmd_systems(systems: list[Path]) -> None:
    """Every system reads back whole through dpdata, with finite labels; else a one-line error naming it.

    Run before training, so that a damaged data file stops the step before any member folder exists.
    """
    import dpdata

    for path in systems:
        try:
            system = dpdata.LabeledSystem(str(path), fmt="deepmd/npy")
        except Exception as exc:  # numpy and dpdata raise many kinds for truncated or foreign files
            detail = first_line(exc) or type(exc).__name__
            raise UserError(f"training data {path} is unreadable ({type(exc).__name__}: {detail}); restore it, or "
                            "delete it with the record lines of the step that wrote it and rerun") from None
        for key in ("energies", "forces", "coords", "cells"):
            if key in system.data and not np.all(np.isfinite(system.data[key])):
                raise UserError(f"training data {path} holds non-finite {key}; restore it, or delete it with the "
                                "record lines of the step that wrote it and rerun")
