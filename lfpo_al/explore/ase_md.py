"""ASE molecular dynamics driven by ensemble member 0 (or a distilled student), every recorded frame scored
by all members.

Run inside a task folder (``python -m lfpo_al.explore.ase_md``): reads ``task.json`` and
``start.extxyz``; writes ``frames.extxyz`` (recorded frames with the seeded per-atom ``valence`` and
``valence_geometry`` read from the M-O bonds),
``model_devi.out`` (deepmd's format, one row per recorded frame) and ``result.json``.
"""

from __future__ import annotations

from bisect import bisect_left
import json
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.nptberendsen import NPTBerendsen
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from lfpo_al import atomic
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import metal_valences
from lfpo_al.torchscript import use_simple_executor

DEVI_HEADER = "%12s %18s %18s %18s %18s %18s %18s %18s" % (
    "step", "max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e",
)
MAX_DEVI_F = 4  # column of max_devi_f in a deviation row


def min_distance(atoms: Atoms) -> float:
    d = atoms.get_all_distances(mic=True)
    return float(d[np.triu_indices(len(atoms), k=1)].min())


def make_dynamics(atoms: Atoms, task: dict, rng: np.random.Generator):
    dt = task["timestep_fs"] * units.fs
    if task["ensemble"] == "npt":
        return NPTBerendsen(atoms, timestep=dt, temperature_K=task["temperature"], pressure_au=0.0,
                            taut=100 * units.fs, taup=1000 * units.fs, compressibility_au=4.57e-5 / units.bar)
    return Langevin(atoms, timestep=dt, temperature_K=task["temperature"],
                    friction=task["friction_per_fs"] / units.fs, rng=rng)


def annotate(frame: Atoms, system: OlivineSystem, task: dict, step: int) -> None:
    """Per-atom and info keys every engine records on a frame."""
    _, valence = metal_valences(frame, system)
    full = np.zeros(len(frame), dtype=int)
    full[np.array(frame.get_chemical_symbols()) == system.metal] = valence
    # ``valence`` stays the seeded pattern the teacher is checked against; the instantaneous
    # geometric reading is kept beside it (thermal noise makes it flicker at high T)
    frame.set_array("valence_geometry", full)
    frame.info.update(family=task["family"], temperature=task["temperature"], step=step)


def stop_reason_of(frame: Atoms, row: np.ndarray | None, task: dict) -> str | None:
    """Why a trajectory stops at this recorded frame (model_devi row; None: not scored), or None to go on."""
    step = int(frame.info["step"])
    if row is not None and (not np.isfinite(row[MAX_DEVI_F]) or row[MAX_DEVI_F] > task["abort_deviation"]):
        return f"deviation {row[MAX_DEVI_F]:.2f} > {task['abort_deviation']:.2f} eV/A at step {step}"
    if (dmin := min_distance(frame)) < task["min_distance"]:
        return f"atoms {dmin:.2f} A apart at step {step}"
    return None


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


def run_md(task_dir: Path) -> dict:
    use_simple_executor()
    from deepmd.calculator import DP
    from deepmd.infer import DeepPot
    from deepmd.infer.model_devi import calc_model_devi

    task = json.loads((task_dir / "task.json").read_text())
    system = OlivineSystem(**task["system"])
    atoms = ase.io.read(task_dir / "start.extxyz")
    driver = task.get("driver")
    atoms.calc = DP(model=driver or task["models"][0])
    if driver:  # a student drives; every ensemble member scores the recorded frames
        members = [DeepPot(path) for path in task["models"]]
    else:
        members = [DrivingMember(atoms)] + [DeepPot(path) for path in task["models"][1:]]
    atype = model_types(atoms, [m for m in members if isinstance(m, DeepPot)], system.type_map)
    rng = np.random.default_rng(task["seed"])
    MaxwellBoltzmannDistribution(atoms, temperature_K=task["temperature"], rng=rng)
    dyn = make_dynamics(atoms, task, rng)

    frames, rows, stop_reason = [], [], None
    start = time.perf_counter()

    score_every = int(task.get("score_every", 1))

    def score(frame: Atoms) -> np.ndarray:
        devi = calc_model_devi(frame.positions.reshape(1, -1), frame.cell.array.reshape(1, 9), atype, members)[0]
        devi[0] = frame.info["step"]
        return devi

    def record() -> None:
        nonlocal stop_reason
        frame = atoms.copy()
        frame.calc = None
        annotate(frame, system, task, dyn.nsteps)
        devi = score(frame) if len(frames) % score_every == 0 else None
        frames.append(frame)
        rows.append(devi)
        stop_reason = stop_reason_of(frame, devi, task)

    record()
    while dyn.nsteps < task["n_steps"] and stop_reason is None:
        dyn.run(task["record_every"])
        record()
    if rows[-1] is None:  # the last frame (the MD's current state) is always scored: every frame has one after it
        rows[-1] = score(frames[-1])
    return write_outputs(task_dir, frames, fill_unscored(rows), DEVI_HEADER, int(dyn.nsteps), stop_reason,
                         time.perf_counter() - start)


def fill_unscored(rows: list[np.ndarray | None]) -> np.ndarray:
    """Deviation rows with each unscored frame given the element-wise larger row of the scored frames
    before and after it (its own step kept): a frame is trusted only when both neighbours are."""
    scored = [i for i, row in enumerate(rows) if row is not None]
    out = []
    for i, row in enumerate(rows):
        if row is None:
            k = bisect_left(scored, i)  # frames 0 and last are scored: i lies between two
            before, after = scored[k - 1], scored[k]
            row = np.maximum(rows[before], rows[after])
            row[0] = rows[before][0] + (i - before) * (rows[after][0] - rows[before][0]) / (after - before)
        out.append(row)
    return np.array(out)


def write_outputs(task_dir: Path, frames: list[Atoms], devi_rows: np.ndarray, devi_header: str, n_steps_run: int,
                  stop_reason: str | None, wall_s: float) -> dict:
    """The task folder's outputs, the same for every engine: frames, deviation rows and ``result.json``."""
    atomic.write_extxyz(task_dir / "frames.extxyz", frames)
    with atomic.atomic_path(task_dir / "model_devi.out") as partial:
        np.savetxt(partial, devi_rows, fmt=["%12d"] + ["%18.6e"] * (devi_rows.shape[1] - 1), header=devi_header)
    result = {"n_frames": len(frames), "n_steps_run": n_steps_run, "stop_reason": stop_reason,
              "wall_s": round(wall_s, 2)}
    atomic.write_text(task_dir / "result.json", json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    run_md(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
