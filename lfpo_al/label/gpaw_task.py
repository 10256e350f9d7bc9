"""The GPAW task command, run inside one task folder written by ``GpawLabeler``.

``python -m lfpo_al.label.gpaw_task --worker CMD --ranks N`` is serial: it starts the MPI worker
(``CMD -m lfpo_al.label.gpaw_task --scf SEEDING --ranks N``, CMD e.g. ``mpirun -np 2 python -m gpaw
python``) once per seeding, reads what the worker left (``scf.<seeding>.json``), decides, and writes
``labeled.extxyz`` or ``failed.json`` atomically. It returns at once when the folder already holds a
decision, and reuses a seeding whose result a killed job already wrote.

Seedings (polaron-aware relabeling):
- ``frame``: the frame's own start moments (the builder's: AFM, |m| from the intended valence).
- ``contracted``: only under ``mismatch_policy=relabel``, when ``frame`` did not converge or its moments
  contradict the intended valences. The SCF first runs on a copy whose intended M3+ octahedra are
  contracted to ``system.valence.bond_length[M3+]`` (``lfpo_al.structures.polaron``), with start moments
  from ``system.valence.initial_magmom``, which localises the hole; then the atoms move back to the
  frame's positions and the SCF goes on from those wave functions. The label is of the frame's geometry.

The label is the first seeding whose moments agree with the intended valences, else the converged one
lowest in energy (the driver then reports the mismatch); its info records ``seeding``, ``scf_attempts``,
``valence_match``, ``scf_iterations``. A frame that no seeding converges gets ``failed.json`` with the
iterations and last density change of each attempt. Anything else (GPAW or setups missing, a launcher
that does not match GPAW's MPI) exits non-zero, so that the driver retries the task.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from lfpo_al import atomic
from lfpo_al.errors import first_line
from lfpo_al.label.base import already_decided, write_failure
from lfpo_al.label.checks import valence_mismatch
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, write_labeled
from lfpo_al.label.gpaw import PARAMETERS_FILE, SEEDINGS, log_file
from lfpo_al.structures.polaron import contract_octahedra

WRONG_LAUNCHER = 3  # worker exit status: MPI started other than the ranks asked for


def result_file(seeding: str) -> str:
    return f"scf.{seeding}.json"


# --- decisions (pure functions of the worker results) ---------------------------------------------

def moments_mismatch(result: dict, task: dict, intended: np.ndarray) -> dict | None:
    """``valence_mismatch`` of one converged result against the frame's intended valences."""
    expected = {int(v): float(m) for v, m in task["expected_magmom"].items()}
    return valence_mismatch(intended, np.asarray(result["magmoms"]), expected, float(task["magmom_tolerance"]))


def next_seeding(results: list[dict], task: dict, intended: np.ndarray) -> str | None:
    """The seeding to try next, or None when the results so far decide the task."""
    if not results:
        return SEEDINGS[0]
    last = results[-1]
    settled = last["converged"] and moments_mismatch(last, task, intended) is None
    if settled or task["mismatch_policy"] != "relabel" or len(results) >= len(SEEDINGS):
        return None
    return SEEDINGS[len(results)]


def pick_label(results: list[dict], task: dict, intended: np.ndarray) -> tuple[dict | None, bool]:
    """The result to label with and whether its moments match the intended valences."""
    converged = [r for r in results if r["converged"]]
    for result in converged:
        if moments_mismatch(result, task, intended) is None:
            return result, True
    if converged:
        return min(converged, key=lambda r: r["free_energy"]), False
    return None, False


def failure_reason(results: list[dict]) -> str:
    attempts = "; ".join(
        f"seeding {r['seeding']}: {r['iterations']} iterations, last density change "
        f"{'n/a' if r.get('density_error') is None else format(r['density_error'], '.2e')}"
        for r in results
    )
    return f"gpaw: SCF not converged within maxiter ({attempts})"


def labeled_frame(frame: Atoms, result: dict, results: list[dict], matched: bool) -> Atoms:
    labeled = frame.copy()
    labeled.new_array("magmoms", np.asarray(result["magmoms"], dtype=float))
    # the free energy is the one the forces and stress are derivatives of (as VASP's TOTEN)
    energy = float(result["free_energy"])
    labeled.calc = SinglePointCalculator(
        labeled, energy=energy, free_energy=energy,
        forces=np.asarray(result["forces"], dtype=float), stress=np.asarray(result["stress"], dtype=float),
    )
    labeled.info.update(
        teacher=f"gpaw-{result['gpaw_version']}", labeled_at=datetime.now(timezone.utc).isoformat(),
        seeding=result["seeding"], scf_attempts=len(results), valence_match=bool(matched),
        scf_iterations=int(result["iterations"]), energy_zero_width=float(result["energy"]),
        gpaw_wall_s=round(sum(r["wall_s"] for r in results), 1), gpaw_setups=result["setup_path"],
    )
    return labeled


# --- the serial task command -----------------------------------------------------------------------

def run_task(task_dir: Path, worker: str, ranks: int) -> int:
    if already_decided(task_dir):
        return 0
    try:
        task = json.loads((task_dir / PARAMETERS_FILE).read_text())
        frame = ase.io.read(task_dir / FRAME_FILE, format="extxyz")
        intended = np.asarray(frame.arrays["valence"], dtype=int)
    except Exception as exc:  # the inputs themselves are bad: deterministic, record it
        traceback.print_exc()
        write_failure(task_dir, f"gpaw: unreadable task inputs: {type(exc).__name__}: {first_line(exc)}")
        return 0

    results: list[dict] = []
    while (seeding := next_seeding(results, task, intended)) is not None:
        path = task_dir / result_file(seeding)
        if not path.is_file():  # else a killed job already finished this seeding
            command = f"{worker} -m lfpo_al.label.gpaw_task --scf {seeding} --ranks {ranks}"
            print(f"seeding {seeding}: {command}", flush=True)
            status = subprocess.run(command, shell=True, cwd=task_dir).returncode
            if not path.is_file():
                print(f"the GPAW worker (seeding {seeding}) exited with status {status} and no result; "
                      f"see {log_file(seeding)}", file=sys.stderr)
                return status if 0 < status < 256 else 1
        results.append(json.loads(path.read_text()))
        last = results[-1]
        print(f"seeding {seeding}: converged={last['converged']} after {last['iterations']} iterations, "
              f"{last['wall_s']:.0f} s", flush=True)

    chosen, matched = pick_label(results, task, intended)
    if chosen is None:
        write_failure(task_dir, failure_reason(results))
        return 0
    write_labeled(labeled_frame(frame, chosen, results, matched), task_dir / LABELED_FILE)
    print(f"labeled {len(frame)} atoms with seeding {chosen['seeding']} (valence match: {matched})")
    return 0


# --- the MPI worker: one seeding, one SCF (two for ``contracted``) -----------------------------------

def run_scf(task_dir: Path, seeding: str, ranks: int) -> int:
    import gpaw
    from gpaw import GPAW, KohnShamConvergenceError
    from gpaw.mpi import world

    if world.size != ranks:
        print(f"GPAW sees {world.size} MPI rank(s), {ranks} were asked for: the launcher's MPI is not the one "
              "GPAW was built with (check machine.programs.gpaw.command and which mpirun is on PATH)", file=sys.stderr)
        return WRONG_LAUNCHER
    task = json.loads((task_dir / PARAMETERS_FILE).read_text())
    frame = ase.io.read(task_dir / FRAME_FILE, format="extxyz")
    params = dict(task["gpaw"])
    stages: list[list] = []  # [iterations, last density change] of each SCF run

    def on_step(ctx) -> None:
        if ctx.niter == 1:
            stages.append([0, None])
        error = float(ctx.dens.error) if ctx.dens.error is not None else math.inf
        stages[-1][:] = [ctx.niter, error if math.isfinite(error) else None]

    start = time.perf_counter()
    if seeding == "contracted":
        symmetry = params.get("symmetry", {})
        if isinstance(symmetry, dict):  # atoms move after the first SCF: no point-group constraint
            params["symmetry"] = {**symmetry, "point_group": False}
    calc = GPAW(**params, txt=str(task_dir / log_file(seeding)))
    calc.hooks["scf_step"] = on_step
    result = {"seeding": seeding, "gpaw_version": gpaw.__version__, "setup_path": os.environ.get("GPAW_SETUP_PATH", "")}
    try:
        if seeding == "contracted":
            seeded = contracted_copy(frame, task)
            seeded.calc = calc
            seeded.get_potential_energy()  # SCF with the hole localised by geometry
        frame.calc = calc  # same positions as seeded for 'frame'; moved back (wave functions kept) otherwise
        result.update(
            converged=True,
            energy=float(frame.get_potential_energy()),
            free_energy=float(frame.get_potential_energy(force_consistent=True)),
            forces=frame.get_forces().tolist(),
            stress=frame.get_stress(voigt=True).tolist(),
            magmoms=calc.get_magnetic_moments().tolist(),
        )
    except KohnShamConvergenceError:
        result["converged"] = False
    result.update(
        iterations=sum(s[0] for s in stages), stage_iterations=[s[0] for s in stages],
        density_error=stages[-1][1] if stages else None, wall_s=round(time.perf_counter() - start, 1),
    )
    if world.rank == 0:
        path = task_dir / result_file(seeding)
        atomic.write_text(path, json.dumps(result) + "\n")
    return 0


def contracted_copy(frame: Atoms, task: dict) -> Atoms:
    """The frame with its intended M3+ octahedra contracted and start moments from the intended valences."""
    symbols = np.array(frame.get_chemical_symbols())
    valence = np.asarray(frame.arrays["valence"], dtype=int)
    oxidised = np.flatnonzero((symbols == task["metal"]) & (valence == int(task["oxidised"])))
    oxygen = np.flatnonzero(symbols == task["oxygen"])
    seeded = frame.copy()
    contract_octahedra(seeded, oxidised, oxygen, float(task["oxidised_bond_length"]))
    start = {int(v): float(m) for v, m in task["initial_magmom"].items()}
    signs = np.sign(frame.get_initial_magnetic_moments())
    signs[signs == 0] = 1.0
    seeded.set_initial_magnetic_moments([start.get(int(v), 0.0) * s if v > 0 else 0.0 for v, s in zip(valence, signs)])
    return seeded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfpo_al.label.gpaw_task", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--worker", help="command prefix that runs a Python module under MPI with GPAW")
    mode.add_argument("--scf", choices=SEEDINGS, help="(worker) run one seeding here, under MPI")
    parser.add_argument("--ranks", type=int, default=1, help="MPI ranks the worker runs on")
    args = parser.parse_args(argv)
    task_dir = Path.cwd()
    if args.scf:
        return run_scf(task_dir, args.scf, args.ranks)
    return run_task(task_dir, args.worker, args.ranks)


if __name__ == "__main__":
    sys.exit(main())
