"""ASE molecular dynamics driven by ensemble member 0 (or a distilled student), every recorded frame scored
by all members.

Run inside a task folder (``python -m lfpo_al.explore.ase_md``): reads ``task.json`` and
``start.extxyz``; writes ``frames.extxyz`` (recorded frames with the seeded per-atom ``valence`` and
``valence_geometry`` read from the M-O bonds),
``model_devi.out`` (deepmd's format, one row per recorded frame) and ``result.json``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from lfpo_al.explore.md_common import DEVI_HEADER, Stop, annotate, fill_unscored, stop_at, write_outputs
from lfpo_al.explore.md_task import MDResult, MDTask
from lfpo_al.torchscript import use_simple_executor


def make_dynamics(atoms: Atoms, task: MDTask, rng: np.random.Generator):
    dt = task.timestep_fs * units.fs
    if task.ensemble == "npt":
        return NPTBerendsen(atoms, timestep=dt, temperature_K=task.temperature, pressure_au=0.0,
                            taut=100 * units.fs, taup=1000 * units.fs, compressibility_au=4.57e-5 / units.bar)
    return Langevin(atoms, timestep=dt, temperature_K=task.temperature,
                    friction=task.friction_per_fs / units.fs, rng=rng)


class DrivingMember:
    """Member 0 inside ``calc_model_devi``: the evaluation the MD already made at this very frame.

    Rescoring the frame with member 0 would repeat the force call of the step that produced it
    (one of ``n_members`` model calls per recorded frame).
    """

    def __init__(self, atoms: Atoms):
        self.atoms = atoms

    def eval(self, coords, cells, atom_types, **_):
        self.atoms.get_forces()  # the calculator's cached results, computed only if the frame moved since
        results = self.atoms.calc.results
        return (np.array([[results["energy"]]]), results["forces"][None], results["virial"].reshape(1, 9))


def model_types(atoms: Atoms, models: list, fallback: list[str]) -> np.ndarray:
    """Each atom's type index in the scoring models' own type map, which may name more elements than the
    system's (a pretrained model's does): indices in the system's map would score other elements."""
    type_maps = {tuple(model.get_type_map()) for model in models}
    if len(type_maps) > 1:
        raise ValueError(f"the scoring models have different type maps: {sorted(type_maps)}")
    type_map = list(type_maps.pop()) if type_maps else list(fallback)
    return np.array([type_map.index(symbol) for symbol in atoms.get_chemical_symbols()])


def run_md(task_dir: Path) -> MDResult:
    use_simple_executor()
    from deepmd.calculator import DP
    from deepmd.infer import DeepPot
    from deepmd.infer.model_devi import calc_model_devi

    task = MDTask.read(task_dir)
    system = task.system
    atoms = ase.io.read(task_dir / "start.extxyz")
    atoms.calc = DP(model=task.driver or task.models[0])
    if task.driver:  # a student drives; every ensemble member scores the recorded frames
        members = [DeepPot(path) for path in task.models]
    else:
        members = [DrivingMember(atoms)] + [DeepPot(path) for path in task.models[1:]]
    atype = model_types(atoms, [m for m in members if isinstance(m, DeepPot)], system.type_map)
    rng = np.random.default_rng(task.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=task.temperature, rng=rng)
    dyn = make_dynamics(atoms, task, rng)

    frames, rows = [], []
    stop: Stop | None = None
    start = time.perf_counter()

    def score(frame: Atoms) -> np.ndarray:
        devi = calc_model_devi(frame.positions.reshape(1, -1), frame.cell.array.reshape(1, 9), atype, members)[0]
        devi[0] = frame.info["step"]
        return devi

    def record() -> None:
        nonlocal stop
        frame = atoms.copy()
        frame.calc = None
        annotate(frame, system, task, dyn.nsteps)
        devi = score(frame) if len(frames) % task.score_every == 0 else None
        frames.append(frame)
        rows.append(devi)
        stop = stop_at(frame, devi, task)

    record()
    while dyn.nsteps < task.n_steps and stop is None:
        dyn.run(task.record_every)
        record()
    if rows[-1] is None:  # the last frame (the MD's current state) is always scored: every frame has one after it
        rows[-1] = score(frames[-1])
    return write_outputs(task_dir, frames, fill_unscored(rows), DEVI_HEADER, int(dyn.nsteps), stop,
                         time.perf_counter() - start)


if __name__ == "__main__":
    run_md(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
