"""VASP PBE+U (Materials Project style) as the DFT teacher.

Two halves, as for CHGNet. ``VaspLabeler`` writes a task folder: INCAR and KPOINTS from the templates
in ``dft_inputs/vasp/``, POSCAR through ASE, POTCAR concatenated from ``potcar_dir``, and
``frame.extxyz`` (the frame as given). The task command ``python -m lfpo_al.label.vasp`` runs VASP in
that folder and turns its OUTCAR into ``labeled.extxyz`` (energy, forces and virial through dpdata,
per-site moments from the ``magnetization (x)`` table) or ``failed.json`` (unconverged SCF, no OUTCAR,
unusable output), returning at once when the folder already holds a decision. A VASP command that
fails without leaving a usable OUTCAR exits non-zero instead, so that the driver retries the task.

VASP takes one POTCAR per block of equal species, so the POSCAR lists the atoms grouped by species in
the order of ``system.type_map``; that permutation follows from the species order alone, and the
task command maps every label back onto the frame's own atom order.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from string import Template

import ase.io
import numpy as np
import yaml
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from lfpo_al.errors import UserError
from lfpo_al.label.base import FAILED_FILE, Labeler, write_failure
from lfpo_al.label.dft_common import dft_inputs_dir, kpoint_mesh, site_magmoms
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, read_labeled, write_labeled
from lfpo_al.structures.system import OlivineSystem

POTCAR_DIR_ENV = "LFPO_AL_POTCAR_DIR"
INCAR, KPOINTS, POSCAR, POTCAR, OUTCAR = "INCAR", "KPOINTS", "POSCAR", "POTCAR", "OUTCAR"
INCAR_FIELDS = ("SYSTEM", "MAGMOM", "EDIFF", "NELM", "LDAU", "LDAUL", "LDAUU", "LDAUJ")  # the templates' placeholders
KPOINTS_FIELDS = ("MESH", "SPACING")


class ScfNotConverged(Exception):
    """VASP used all NELM electronic steps: the frame's label cannot be trusted."""


@dataclass
class VaspLabeler(Labeler):
    """PBE+U single points with VASP; its fields are ``configs/label/vasp.yaml``.

    vasp_command: shell command that runs VASP in the task folder; ``{cores}`` becomes ``cores_per_task``.
    incar_template, kpoints_template, potcar_map: files under ``dft_inputs/`` (or absolute paths).
    potcar_dir: folder holding ``<name>/POTCAR`` for the map's names (e.g. ``.../potpaw_PBE.54``) on the
        machine that writes the inputs; None: ``$LFPO_AL_POTCAR_DIR``.
    kpoint_spacing: 1/A, 2 pi included (VASP's KSPACING): mesh n_i = ceil(2 pi |b_i| / spacing).
    ediff_per_atom: eV; EDIFF = this x number of atoms.
    nelm: electronic steps allowed; an SCF that uses them all is failed, not labeled.
    """

    vasp_command: str = "mpirun -np {cores} vasp_std"
    incar_template: str = "vasp/INCAR"
    kpoints_template: str = "vasp/KPOINTS"
    potcar_map: str = "vasp/potcar_map.yaml"
    potcar_dir: str | None = None
    kpoint_spacing: float = 0.3
    ediff_per_atom: float = 1e-6
    nelm: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.kpoint_spacing > 0:
            raise UserError(f"label.kpoint_spacing={self.kpoint_spacing} must be positive (1/Angstrom, 2 pi included)")
        if not self.ediff_per_atom > 0:
            raise UserError(f"label.ediff_per_atom={self.ediff_per_atom} must be positive (eV)")
        if int(self.nelm) != self.nelm or self.nelm < 1:
            raise UserError(f"label.nelm={self.nelm} must be a positive integer")
        self.nelm = int(self.nelm)
        try:
            self.vasp_command.format(cores=1)
        except (KeyError, IndexError, ValueError):
            raise UserError(
                f"label.vasp_command={self.vasp_command!r} may use only the placeholder {{cores}}; double other braces"
            ) from None
        for name, fields in (("incar_template", INCAR_FIELDS), ("kpoints_template", KPOINTS_FIELDS)):
            _check_placeholders(name, self._input_path(name), fields)
        self.potcar_names()

    @property
    def forward_files(self) -> list[str]:
        return [INCAR, KPOINTS, POSCAR, POTCAR, FRAME_FILE]

    @property
    def backward_files(self) -> list[str]:
        return [LABELED_FILE, FAILED_FILE]

    def write_inputs(self, atoms: Atoms, task_dir: Path, system: OlivineSystem) -> None:
        species = poscar_species(atoms.get_chemical_symbols(), system.type_map)
        # POTCAR first: a missing POTCAR stops the step before any other file is written
        (Path(task_dir) / POTCAR).write_text(self.potcar_text(species))
        self.write_inputs_without_potcar(atoms, task_dir, system)

    def write_inputs_without_potcar(self, atoms: Atoms, task_dir: Path, system: OlivineSystem) -> None:
        """INCAR, KPOINTS, POSCAR and ``frame.extxyz``: everything but the (licensed) POTCAR."""
        task_dir = Path(task_dir)
        species = poscar_species(atoms.get_chemical_symbols(), system.type_map)
        ordered = atoms[species_order(atoms.get_chemical_symbols(), species)]
        ordered.set_constraint()
        ordered.arrays.pop("momenta", None)  # ASE would append MD velocities to the POSCAR
        (task_dir / INCAR).write_text(self.incar_text(ordered, system))
        (task_dir / KPOINTS).write_text(self.kpoints_text(ordered))
        ase.io.write(task_dir / POSCAR, ordered, format="vasp", direct=True)
        ase.io.write(task_dir / FRAME_FILE, atoms.copy(), format="extxyz")  # copy() drops old labels

    def incar_text(self, ordered: Atoms, system: OlivineSystem) -> str:
        """The INCAR of ``ordered`` (atoms already in POSCAR order)."""
        symbols = ordered.get_chemical_symbols()
        species = list(dict.fromkeys(symbols))
        u = {str(k): float(v) for k, v in system.hubbard_u.items()}
        fields = {
            "SYSTEM": f"{system.name} " + "".join(f"{s}{symbols.count(s)}" for s in species),
            "MAGMOM": compact(site_magmoms(ordered, system)),
            "EDIFF": f"{self.ediff_per_atom * len(ordered):.2E}",
            "NELM": str(self.nelm),
            "LDAU": ".TRUE." if any(s in u for s in species) else ".FALSE.",
            "LDAUL": " ".join("2" if s in u else "-1" for s in species),  # U on the d shell
            "LDAUU": " ".join(_number(u.get(s, 0.0)) for s in species),
            "LDAUJ": " ".join(_number(0.0) for _ in species),
        }
        return _fill(self._input_path("incar_template"), fields)

    def kpoints_text(self, atoms: Atoms) -> str:
        mesh = kpoint_mesh(np.asarray(atoms.cell), self.kpoint_spacing)
        return _fill(self._input_path("kpoints_template"),
                     {"MESH": " ".join(map(str, mesh)), "SPACING": _number(self.kpoint_spacing)})

    def potcar_text(self, species: list[str]) -> str:
        """The POTCARs of ``species`` (POSCAR order) concatenated."""
        names, folder = self.potcar_names(), self.potcar_folder()
        parts = []
        for symbol in species:
            if symbol not in names:
                raise UserError(
                    f"{self._input_path('potcar_map')} names no POTCAR for {symbol}; add a line '{symbol}: <name>'"
                )
            path = folder / names[symbol] / POTCAR
            if not path.is_file():
                raise UserError(f"no POTCAR for {symbol} at {path}; put it there or point label.potcar_dir "
                                f"(or {POTCAR_DIR_ENV}) at the folder holding {names[symbol]}/POTCAR")
            parts.append(path.read_text())
        return "".join(parts)

    def potcar_names(self) -> dict[str, str]:
        path = self._input_path("potcar_map")
        names = yaml.safe_load(path.read_text())
        if not isinstance(names, dict) or not all(isinstance(v, str) for v in names.values()):
            raise UserError(f"{path} must map element -> POTCAR name, e.g. 'Fe: Fe_pv'")
        return {str(k): v for k, v in names.items()}

    def potcar_folder(self) -> Path:
        value, origin = self.potcar_dir, "label.potcar_dir"
        if not value:
            value, origin = os.environ.get(POTCAR_DIR_ENV), POTCAR_DIR_ENV
        if not value:
            raise UserError(f"no POTCAR folder given: set label.potcar_dir or {POTCAR_DIR_ENV} to the folder holding "
                            "<name>/POTCAR (e.g. .../potpaw_PBE.54)")
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise UserError(f"POTCAR folder {folder} (from {origin}) does not exist; set label.potcar_dir or "
                            f"{POTCAR_DIR_ENV} to the folder holding <name>/POTCAR")
        return folder

    def command(self) -> str:
        vasp = self.vasp_command.format(cores=self.cores_per_task)
        return f"{shlex.quote(sys.executable)} -m lfpo_al.label.vasp --vasp-command {shlex.quote(vasp)}"

    def is_finished(self, task_dir: Path) -> bool:
        task_dir = Path(task_dir)
        return (task_dir / LABELED_FILE).is_file() or (task_dir / FAILED_FILE).is_file()

    def read_outputs(self, task_dir: Path) -> Atoms:
        return read_labeled(Path(task_dir) / LABELED_FILE)

    def _input_path(self, name: str) -> Path:
        value = getattr(self, name)
        path = Path(value).expanduser()
        path = path if path.is_absolute() else dft_inputs_dir() / path
        if not path.is_file():
            raise UserError(f"label.{name}={value}: no file {path}")
        return path


def poscar_species(symbols: list[str], type_map: list[str]) -> list[str]:
    """Species of the frame in ``type_map`` order: the POSCAR's (and POTCAR's) species blocks."""
    unknown = sorted(set(symbols) - set(type_map))
    if unknown:
        raise UserError(f"frame holds {', '.join(unknown)}, absent from system.type_map {list(type_map)}")
    return [s for s in type_map if s in symbols]


def species_order(symbols: list[str], species: list[str]) -> np.ndarray:
    """Frame indices in POSCAR order: grouped by ``species``, frame order kept within a species."""
    rank = {s: i for i, s in enumerate(species)}
    return np.argsort([rank[s] for s in symbols], kind="stable")


def compact(values) -> str:
    """VASP's run-length list: ``[0, 0, 4, -4]`` -> ``2*0.0 4.0 -4.0``."""
    words, items = [], [_number(v) for v in values]
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and items[j] == items[i]:
            j += 1
        words.append(items[i] if j - i == 1 else f"{j - i}*{items[i]}")
        i = j
    return " ".join(words)


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
    """The ``tot`` column of the OUTCAR's last ``magnetization (x)`` table (muB per site, POSCAR order).

    ASE's OUTCAR reader finds that table only inside an ionic step, before its energy; VASP 5 prints
    it after the last step, so this reads the one table and nothing else.
    """
    lines = Path(outcar).read_text(errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "magnetization (x)"]
    if not starts:
        raise ValueError(f"{OUTCAR} has no 'magnetization (x)' table; the INCAR needs ISPIN = 2 and LORBIT = 11")
    header = next((i for i in range(starts[-1], len(lines)) if lines[i].lstrip().startswith("# of ion")), len(lines))
    moments = []
    for line in lines[header + 2:]:  # past the header and its dashed rule
        fields = line.split()
        if not fields or not fields[0].isdigit():
            break
        moments.append(float(fields[-1]))
    if len(moments) != n_atoms:
        raise ValueError(f"{OUTCAR} 'magnetization (x)' table lists {len(moments)} sites, the frame has {n_atoms}")
    return np.array(moments)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfpo_al.label.vasp", description=__doc__.splitlines()[0])
    parser.add_argument("--vasp-command", required=True, help="shell command that runs VASP here")
    args = parser.parse_args(argv)
    task_dir = Path.cwd()

    decided = [name for name in (LABELED_FILE, FAILED_FILE) if (task_dir / name).exists()]
    if decided:  # a job resubmitted after a kill reruns every task it had not tagged finished
        print(f"already decided ({decided[0]} present): nothing to do")
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
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        write_failure(task_dir, f"vasp: {type(exc).__name__}: {first_line}")
        return 0
    labeled.info.update(teacher="vasp", labeled_at=datetime.now(timezone.utc).isoformat(), vasp_wall_s=round(wall_s, 1))
    write_labeled(labeled, task_dir / LABELED_FILE)
    print(f"labeled {len(labeled)} atoms: VASP {wall_s:.1f} s")
    return 0


def _number(value: float) -> str:
    return repr(round(float(value), 4) + 0.0)  # + 0.0 turns -0.0 into 0.0


def _check_placeholders(name: str, path: Path, known: tuple[str, ...]) -> None:
    template = Template(path.read_text())
    if not template.is_valid():
        raise UserError(f"label.{name}: {path} has a '$' that starts no placeholder; write '$$' for a literal dollar")
    unknown = sorted(set(template.get_identifiers()) - set(known))
    if unknown:
        raise UserError(f"label.{name}: {path} uses unknown placeholders {unknown}; known: {', '.join(known)}")


def _fill(path: Path, fields: dict[str, str]) -> str:
    return Template(path.read_text()).substitute(fields)

if __name__ == "__main__":
    sys.exit(main())
