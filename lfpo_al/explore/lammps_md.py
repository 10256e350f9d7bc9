"""LAMMPS molecular dynamics (``pair_style deepmd``) driven by ensemble member 0, every recorded frame
scored by all members.

Run inside a task folder (``python -m lfpo_al.explore.lammps_md``): reads the same ``task.json`` and
``start.extxyz`` as :mod:`lfpo_al.explore.ase_md` and writes the same outputs, so that selection cannot
tell the engines apart: ``frames.extxyz`` (recorded frames with the seeded per-atom ``valence`` and the
``valence_geometry`` read from the M-O bonds), ``model_devi.out`` (as LAMMPS writes it: deepmd's
columns without ``devi_e``) and ``result.json``.

The ``lmp`` beside the running interpreter runs as a subprocess; its own files stay in the task folder
(``in.lammps``, ``conf.lmp``, ``traj.lammpstrj``, ``model_devi.lammps.out``, ``log.lammps``,
``lammps.out``). A trajectory stops like the ASE engine's, judged on recorded frames: LAMMPS halts
itself when atoms come closer than ``min_distance``; the deviation is watched from here while LAMMPS
runs and a flag file makes it halt. Frames past the first failing one are then dropped.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.lammps import Prism

from lfpo_al.explore.md_common import MAX_DEVI_F, Stop, annotate, stop_at, write_outputs
from lfpo_al.explore.md_task import MDResult, MDTask

DATA_FILE = "conf.lmp"
INPUT_FILE = "in.lammps"
DUMP_FILE = "traj.lammpstrj"
RAW_DEVI_FILE = "model_devi.lammps.out"  # pair deepmd's own file; model_devi.out keeps the recorded rows
LOG_FILE = "log.lammps"
SCREEN_FILE = "lammps.out"
HALT_FLAG = "halt.flag"
DEVI_COLUMNS = ("step", "max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f")
DEVI_HEADER = "%12s" % DEVI_COLUMNS[0] + "".join(" %18s" % name for name in DEVI_COLUMNS[1:])
POLL_S = 0.2
MAX_SEED = 900_000_000  # LAMMPS's Marsaglia generator takes seeds in [1, 9e8]
# NPT as in the ASE engine (NPTBerendsen): isotropic Berendsen barostat at 0 bar
NPT_TAUT_FS = 100.0
NPT_TAUP_FS = 1000.0
NPT_COMPRESSIBILITY_PER_BAR = 4.57e-5


def lmp_executable() -> str:
    """The ``lmp`` of the running interpreter's environment: it loads deepmd's plugin of that install."""
    return str(Path(sys.executable).with_name("lmp"))


def lammps_input(task: MDTask, type_map: list[str], n_run: int, seeds: tuple[int, int]) -> str:
    """The input script: ``pair_style deepmd`` over all members, one dump/deviation row per record."""
    every = task.record_every
    temperature = task.temperature
    models = " ".join(f'"{path}"' for path in task.models)
    lines = [
        "units metal",
        "atom_style atomic",
        "boundary p p p",
        f"read_data {DATA_FILE}",
        f"pair_style deepmd {models} out_file {RAW_DEVI_FILE} out_freq {every}",
        f"pair_coeff * * {' '.join(type_map)}",
        f"timestep {task.timestep_fs / 1000.0}",
        f"velocity all create {temperature} {seeds[0]} dist gaussian mom yes",
        "fix integrate all nve",
    ]
    if task.ensemble == "npt":
        lines += [
            f"fix thermostat all temp/berendsen {temperature} {temperature} {NPT_TAUT_FS / 1000.0}",
            f"fix barostat all press/berendsen iso 0.0 0.0 {NPT_TAUP_FS / 1000.0} modulus {1.0 / NPT_COMPRESSIBILITY_PER_BAR}",
        ]
    elif task.friction_per_fs > 0:  # Langevin as in the ASE engine: damping time = 1 / friction
        damp_ps = 1.0 / task.friction_per_fs / 1000.0
        lines.append(f"fix thermostat all langevin {temperature} {temperature} {damp_ps} {seeds[1]} zero yes")
    lines += [
        # closest pair among the neighbour-list pairs (all pairs within the model's cutoff)
        "compute pair_distance all pair/local dist",
        "compute closest all reduce min c_pair_distance inputs local",
        f'variable halt equal "is_file({HALT_FLAG}) || c_closest < {task.min_distance}"',
        f"fix halt all halt {every} v_halt > 0.5 error continue",
        "thermo_style custom step temp pe ke etotal press vol c_closest",
        "thermo_modify format float %.10g",
        f"thermo {every}",
        f"dump frames all custom {every} {DUMP_FILE} id type xu yu zu vx vy vz",
        "dump_modify frames sort id format float %.12g",
        f"run {n_run}",
    ]
    return "\n".join(lines) + "\n"


def read_devi_rows(path: Path) -> np.ndarray:
    """Complete rows of a model-deviation file that may still be growing; ``(n, 7)``."""
    if not path.is_file():
        return np.zeros((0, len(DEVI_COLUMNS)))
    text = path.read_text()
    lines = text.splitlines()
    if not text.endswith("\n"):
        lines = lines[:-1]  # a row being written
    rows = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return np.array([[float(v) for v in row[: len(DEVI_COLUMNS)]] for row in rows], dtype=float).reshape(-1, len(DEVI_COLUMNS))


def deviation_exceeded(rows: np.ndarray, abort_deviation: float) -> bool:
    devi = rows[:, MAX_DEVI_F]
    return bool(np.any(~np.isfinite(devi) | (devi > abort_deviation)))


def run_lammps(task_dir: Path, abort_deviation: float) -> int:
    """Run ``lmp`` in ``task_dir``; ask it to halt once a recorded deviation exceeds ``abort_deviation``."""
    env = dict(os.environ)
    threads = env.get("OMP_NUM_THREADS")
    if threads:  # deepmd's own thread pools follow OMP_NUM_THREADS unless set apart
        env.setdefault("DP_INTRA_OP_PARALLELISM_THREADS", threads)
        env.setdefault("DP_INTER_OP_PARALLELISM_THREADS", threads)
    command = [lmp_executable(), "-in", INPUT_FILE, "-log", LOG_FILE, "-screen", "none"]
    halt_flag = task_dir / HALT_FLAG
    with open(task_dir / SCREEN_FILE, "w") as screen:
        process = subprocess.Popen(command, cwd=task_dir, stdout=screen, stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                return process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
            if not halt_flag.exists() and deviation_exceeded(read_devi_rows(task_dir / RAW_DEVI_FILE), abort_deviation):
                halt_flag.touch()  # LAMMPS's fix halt sees it at the next recorded step


def lammps_error(task_dir: Path, returncode: int) -> str:
    lines = []
    for name in (LOG_FILE, SCREEN_FILE):
        path = task_dir / name
        if path.is_file():
            lines += [line for line in path.read_text(errors="replace").splitlines() if "ERROR" in line]
    detail = lines[-1] if lines else f"see {SCREEN_FILE}"
    return f"lmp exited with status {returncode}: {detail}"


def read_dump(task_dir: Path, start: Atoms, type_map: list[str]) -> dict[int, Atoms]:
    """Recorded frames by step: the start structure with LAMMPS's positions, momenta and cell, rotated
    back into the start's orientation (ASE's data writer turned it into LAMMPS's triangular form)."""
    path = task_dir / DUMP_FILE
    if not path.is_file():
        return {}
    prism = Prism(start.cell.array, pbc=start.pbc)
    types = np.array([type_map.index(s) + 1 for s in start.get_chemical_symbols()])
    frames = {}
    for dumped in ase.io.read(path, index=":", format="lammps-dump-text", units="metal"):
        if not np.array_equal(dumped.arrays["type"], types):
            raise RuntimeError(f"{path}: atom types do not follow start.extxyz; the dump cannot be mapped back")
        frame = start.copy()
        origin = dumped.get_celldisp().reshape(3)
        frame.set_cell(prism.update_cell(dumped.cell.array), scale_atoms=False)
        frame.positions = prism.vector_to_ase(dumped.positions - origin)
        frame.set_velocities(prism.vector_to_ase(dumped.get_velocities()))
        frames[int(dumped.info["timestep"])] = frame
    return frames


def run_md(task_dir: Path) -> MDResult:
    """Run the task in ``task_dir``; returns what ``result.json`` holds (as the ASE engine's).

    ``n_steps_run`` counts the steps LAMMPS integrated: after a stop it may have gone on to the next
    recorded step before halting. ``wall_s`` includes loading the models.
    """
    task_dir = Path(task_dir).resolve()
    task = MDTask.read(task_dir)
    system = task.system
    start = ase.io.read(task_dir / "start.extxyz")
    every = task.record_every
    n_run = every * math.ceil(task.n_steps / every)  # the ASE engine runs whole records past n_steps
    seeds = tuple(int(s) for s in np.random.default_rng(task.seed).integers(1, MAX_SEED, size=2))
    for name in (HALT_FLAG, RAW_DEVI_FILE, DUMP_FILE):  # leftovers of an interrupted run
        (task_dir / name).unlink(missing_ok=True)
    ase.io.write(task_dir / DATA_FILE, start, format="lammps-data", specorder=system.type_map, masses=True,
                 atom_style="atomic", write_image_flags=True)
    (task_dir / INPUT_FILE).write_text(lammps_input(task, system.type_map, n_run, seeds))

    wall = time.perf_counter()
    returncode = run_lammps(task_dir, task.abort_deviation)
    wall = time.perf_counter() - wall

    dumped = read_dump(task_dir, start, system.type_map)
    rows = {int(row[0]): row for row in read_devi_rows(task_dir / RAW_DEVI_FILE)}
    steps = sorted(set(dumped) & set(rows))
    frames, kept_rows = [], []
    stop: Stop | None = None
    for step in steps:
        frame = dumped[step]
        annotate(frame, system, task, step)
        frames.append(frame)
        kept_rows.append(rows[step])
        if stop := stop_at(frame, rows[step], task):
            break
    last_step = max(dumped, default=0)
    if stop is None and returncode != 0:
        raise RuntimeError(lammps_error(task_dir, returncode))
    if stop is None and last_step < n_run:  # halted on a pair read a hair closer than in the dump
        stop = Stop(f"LAMMPS halted at step {last_step}", int(last_step))
    return write_outputs(task_dir, frames, np.array(kept_rows).reshape(-1, len(DEVI_COLUMNS)), DEVI_HEADER,
                         int(last_step), stop, wall)


if __name__ == "__main__":
    run_md(Path(sys.argv[1]) if len(sys.argv) > 1 else Path.cwd())
