"""The VASP task command: ``python -m lfpo_al.label.vasp_task --vasp-command CMD`` in a task folder.

It runs VASP there and turns its OUTCAR into ``labeled.extxyz`` (energy, forces and virial through
dpdata, per-site moments from the ``magnetization (x)`` table) or ``failed.json`` (unconverged SCF, no
OUTCAR, unusable output), returning at once when the folder already holds a decision. A VASP command
that fails without leaving a usable OUTCAR exits non-zero instead, so that the driver retries the task.
Labels are mapped from the POSCAR's species blocks back onto the frame's own atom order.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from lfpo_al.errors import first_line
from lfpo_al.label.base import already_decided, write_failure
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, write_labeled
from lfpo_al.label.vasp import OUTCAR, POSCAR, species_order


class ScfNotConverged(Exception):
    """VASP used all NELM electronic steps: the frame's label cannot be trusted."""


def read_vasp_labels(task_dir: Path) -> Atoms:
    """The frame of ``task_dir`` labeled from its OUTCAR, in the frame's atom order (module docstring).

    Raises ``ScfNotConverged`` when the SCF used all NELM steps, ValueError for any other unusable OUTCAR.
    """
    import dpdata

    task_dir = Path(task_dir)
    frame = ase.io.read(task_dir / FRAME_FILE, format="extxyz")
    listed = ase.io.read(task_dir / POSCAR, format="vasp").get_chemical_symbols()
    if sorted(listed) != sorted(frame.get_chemical_symbols()):
        raise ValueError(f"{POSCAR} does not hold the atoms of {FRAME_FILE}")
    order = species_order(frame.get_chemical_symbols(), list(dict.fromkeys(listed)))
    ordered = frame[order]
    if ordered.get_chemical_symbols() != listed:
        raise ValueError(f"{POSCAR} lists the atoms of {FRAME_FILE} in another order than species blocks")
    with warnings.catch_warnings():  # dpdata warns about what the checks below turn into reasons
        warnings.simplefilter("ignore")
        labels = dpdata.LabeledSystem(str(task_dir / OUTCAR), fmt="vasp/outcar")  # drops SCFs that hit NELM
        if len(labels) == 0:
            if len(dpdata.LabeledSystem(str(task_dir / OUTCAR), fmt="vasp/outcar", convergence_check=False)):
                raise ScfNotConverged("VASP used all NELM electronic steps without reaching EDIFF")
            raise ValueError(f"{OUTCAR} holds no finished ionic step (VASP stopped early)")
    if len(labels) != 1 or "virials" not in labels.data:
        raise ValueError(f"{OUTCAR} must hold one single point with stress (NSW = 0, ISIF >= 1), not {len(labels)}")
    names = [labels["atom_names"][t] for t in labels["atom_types"]]
    if names != listed:
        raise ValueError(f"{OUTCAR} species {sorted(set(names))} in another order than the POSCAR's: POTCAR mismatch")

    # dpdata turns the cell lower-triangular; rotate its vectors back into the frame's axes
    rotation = np.linalg.solve(ordered.cell.array, labels["cells"][0])
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-5):
        raise ValueError(f"{OUTCAR} cell differs from the frame's")
    cell = ordered.cell.array
    shift = (labels["coords"][0] @ rotation.T - ordered.positions) @ np.linalg.inv(cell)
    if np.linalg.norm((shift - np.round(shift)) @ cell, axis=1).max() > 1e-3:  # OUTCAR prints 5 decimals
        raise ValueError(f"{OUTCAR} positions differ from the frame's")
    forces = labels["forces"][0] @ rotation.T
    virial = rotation @ labels["virials"][0] @ rotation.T
    moments = read_site_moments(task_dir / OUTCAR, len(frame))

    labeled = frame.copy()
    energy = float(labels["energies"][0])  # free energy TOTEN, whose derivatives the forces are
    stress = -virial / abs(np.linalg.det(frame.cell.array))  # ASE sign: positive under tension
    labeled.new_array("magmoms", to_frame_order(moments, order))
    labeled.calc = SinglePointCalculator(
        labeled, energy=energy, free_energy=energy, forces=to_frame_order(forces, order),
        stress=full_3x3_to_voigt_6_stress(stress),
    )
    return labeled


def to_frame_order(per_site: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Per-site values listed in POSCAR order, put back in the frame's order (``order`` from species_order)."""
    out = np.empty_like(np.asarray(per_site, dtype=float))
    out[order] = per_site
    return out


def read_site_moments(outcar: Path, n_atoms: int) -> np.ndarray:
    """The ``tot`` column of the OUTCAR's ``magnetization (x)`` table (muB per site, POSCAR order).

    pymatgen's ``Outcar`` reads the table VASP prints after the last ionic step (ASE's OUTCAR reader
    finds it only inside a step, before its energy).
    """
    from pymatgen.io.vasp.outputs import Outcar

    moments = [site["tot"] for site in Outcar(str(outcar)).magnetization]
    if not moments:
        raise ValueError(f"{OUTCAR} has no 'magnetization (x)' table; the INCAR needs ISPIN = 2 and LORBIT = 11")
    if len(moments) != n_atoms:
        raise ValueError(f"{OUTCAR} 'magnetization (x)' table lists {len(moments)} sites, the frame has {n_atoms}")
    return np.array(moments, dtype=float)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfpo_al.label.vasp_task", description=__doc__.splitlines()[0])
    parser.add_argument("--vasp-command", required=True, help="shell command that runs VASP here")
    args = parser.parse_args(argv)
    task_dir = Path.cwd()

    if already_decided(task_dir):
        return 0
    (task_dir / OUTCAR).unlink(missing_ok=True)  # an interrupted run's OUTCAR must not pass for this one's
    start = time.perf_counter()
    status = subprocess.run(args.vasp_command, shell=True, cwd=task_dir).returncode
    wall_s = time.perf_counter() - start
    retry_status = status if 0 < status < 256 else 1  # signals -> a plain failure status

    if not (task_dir / OUTCAR).is_file():
        if status != 0:  # VASP never started (no binary, MPI trouble): the machine's problem, retried
            print(f"VASP command exited with status {status} without an OUTCAR", file=sys.stderr)
            return retry_status
        write_failure(task_dir, "vasp: missing OUTCAR: the VASP command exited 0 without writing one")
        return 0
    try:
        labeled = read_vasp_labels(task_dir)
    except ScfNotConverged as exc:
        write_failure(task_dir, f"vasp: unconverged SCF: {exc}")
        return 0
    except Exception as exc:
        if status != 0:  # VASP died mid-run (killed, node failure): worth another attempt
            traceback.print_exc()
            print(f"VASP command exited with status {status}; its OUTCAR is unusable", file=sys.stderr)
            return retry_status
        traceback.print_exc()
        write_failure(task_dir, f"vasp: {type(exc).__name__}: {first_line(exc)}")
        return 0
    labeled.info.update(teacher="vasp", labeled_at=datetime.now(timezone.utc).isoformat(), vasp_wall_s=round(wall_s, 1))
    write_labeled(labeled, task_dir / LABELED_FILE)
    print(f"labeled {len(labeled)} atoms: VASP {wall_s:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
