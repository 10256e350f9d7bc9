"""Langevin NVT runs with any ASE calculator, the same for the model and its teacher.

The dynamics validation compares two trajectories that differ only in the forces: same start, same
thermostat, timestep, friction, length and random stream (the seed). Frames are written as extxyz with
``time_fs`` and ``temperature`` in each frame's info, which is what ``lfpo_al.analysis`` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from lfpo_al.errors import UserError


@dataclass
class LangevinProtocol:
    """temperature_k, n_steps, timestep_fs, record_every (steps), friction_per_fs (1/fs), seed."""

    temperature_k: float
    n_steps: int
    timestep_fs: float = 1.0
    record_every: int = 10
    friction_per_fs: float = 0.01
    seed: int = 0


def langevin_frames(atoms: Atoms, calc, protocol: LangevinProtocol, rng: np.random.Generator | None = None) -> list[Atoms]:
    """Frames (no calculator) every ``record_every`` steps of a Langevin run of ``calc`` from ``atoms``,
    the start first; velocities drawn from Maxwell-Boltzmann with ``rng`` (default: from the seed)."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(protocol.seed) if rng is None else rng
    work = atoms.copy()
    work.calc = calc
    MaxwellBoltzmannDistribution(work, temperature_K=protocol.temperature_k, rng=rng)
    dyn = Langevin(work, protocol.timestep_fs * units.fs, temperature_K=protocol.temperature_k,
                   friction=protocol.friction_per_fs / units.fs, rng=rng)

    def snapshot(step: int) -> Atoms:
        frame = work.copy()
        frame.calc = None
        frame.info.update(time_fs=step * protocol.timestep_fs, temperature=protocol.temperature_k, step=step)
        return frame

    frames = [snapshot(0)]
    while dyn.nsteps < protocol.n_steps:
        dyn.run(protocol.record_every)
        frames.append(snapshot(dyn.nsteps))
    return frames


def run_to_file(start: Atoms, calc, protocol: LangevinProtocol, path: Path) -> Path:
    """One Langevin run written to ``path`` (extxyz, through a temporary file: a killed run leaves none)."""
    frames = langevin_frames(start, calc, protocol)
    for frame in frames:
        frame.info.update({k: v for k, v in start.info.items() if k in ("family", "li_order")})
        if not np.isfinite(frame.positions).all():
            raise UserError(f"the Langevin run for {path.name} produced non-finite positions at step "
                            f"{frame.info['step']}; check the calculator and the timestep")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    ase.io.write(partial, frames, format="extxyz")
    partial.replace(path)
    return path


@dataclass
class DynamicsCase:
    """One held-out structure at one temperature: its start, one protocol per seed, and where the
    teacher's trajectory of each seed lies (made at set-up, or the user's AIMD)."""

    name: str
    start: Atoms
    protocols: list[LangevinProtocol]
    teacher_paths: list[Path]
    user_reference: bool = False  # the teacher's trajectory is the user's file (validate.dynamics.reference_md)

    def single(self, i: int) -> "DynamicsCase":
        """The case with its ``i``-th seed only."""
        return replace(self, protocols=[self.protocols[i]], teacher_paths=[self.teacher_paths[i]])

    def model_paths(self, out_dir: Path) -> list[Path]:
        return [Path(out_dir) / f"{self.name}.s{p.seed}.model.extxyz" for p in self.protocols]


def run_cases(calculator_factory, cases: list[DynamicsCase], paths_of) -> list[str]:
    """Every run of ``cases`` whose file (``paths_of(case)``, one per seed) is missing, with one calculator;
    returns the files written. Picklable arguments: it runs in a second process."""
    calc, written = None, []
    for case in cases:
        for protocol, path in zip(case.protocols, paths_of(case)):
            if Path(path).is_file():
                continue
            calc = calc or calculator_factory()
            written.append(str(run_to_file(case.start, calc, protocol, Path(path))))
    return written
