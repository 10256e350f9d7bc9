"""VASP PBE+U (Materials Project style) as the DFT teacher.

Two halves, as for CHGNet. ``VaspLabeler`` writes a task folder: INCAR and KPOINTS from the templates
in ``dft_inputs/vasp/``, POSCAR through ASE, POTCAR concatenated from the machine profile's ``data_dir``, and
``frame.extxyz`` (the frame as given). The task command ``python -m lfpo_al.label.vasp_task`` runs
VASP in that folder and reads the result back (see that module).

VASP takes one POTCAR per block of equal species, so the POSCAR lists the atoms grouped by species in
the order of ``system.type_map``; that permutation follows from the species order alone, and the
task command maps every label back onto the frame's own atom order.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import ase.io
import numpy as np
import yaml
from ase import Atoms

from lfpo_al.errors import UserError
from lfpo_al.label.base import Labeler
from lfpo_al.label.dft_common import check_kpoint_spacing, dft_inputs_dir, kpoint_mesh, site_magmoms
from lfpo_al.label.frames import FRAME_FILE
from lfpo_al.structures.system import OlivineSystem

POTCAR_DIR_ENV = "LFPO_AL_POTCAR_DIR"
INCAR, KPOINTS, POSCAR, POTCAR, OUTCAR = "INCAR", "KPOINTS", "POSCAR", "POTCAR", "OUTCAR"
INCAR_FIELDS = ("SYSTEM", "MAGMOM", "EDIFF", "NELM", "LDAU", "LDAUL", "LDAUU", "LDAUJ")  # the templates' placeholders
KPOINTS_FIELDS = ("MESH", "SPACING")


@dataclass
class VaspLabeler(Labeler):
    """PBE+U single points with VASP; its fields are ``configs/label/vasp.yaml``.

    incar_template, kpoints_template, potcar_map: files under ``dft_inputs/`` (or absolute paths).
    kpoint_spacing: 1/A, 2 pi included (VASP's KSPACING): mesh n_i = ceil(2 pi |b_i| / spacing).
    ediff_per_atom: eV; EDIFF = this x number of atoms.
    nelm: electronic steps allowed; an SCF that uses them all is failed, not labeled.

    Where it runs is the machine's profile ``machine.programs.vasp``: ``command`` runs VASP in the task
    folder (``{cores}`` becomes ``cores_per_task``) and ``data_dir`` holds ``<name>/POTCAR`` for the map's
    names (e.g. ``.../potpaw_PBE.54``) on the machine that writes the inputs (None: ``$LFPO_AL_POTCAR_DIR``).
    """

    incar_template: str = "vasp/INCAR"
    kpoints_template: str = "vasp/KPOINTS"
    potcar_map: str = "vasp/potcar_map.yaml"
    kpoint_spacing: float = 0.3
    ediff_per_atom: float = 1e-6
    nelm: int = 200

    program = "vasp"
    default_launcher = "mpirun -np {cores} vasp_std"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kpoint_spacing(self.kpoint_spacing)
        if not self.ediff_per_atom > 0:
            raise UserError(f"label.ediff_per_atom={self.ediff_per_atom} must be positive (eV)")
        if int(self.nelm) != self.nelm or self.nelm < 1:
            raise UserError(f"label.nelm={self.nelm} must be a positive integer")
        self.nelm = int(self.nelm)
        for name, fields in (("incar_template", INCAR_FIELDS), ("kpoints_template", KPOINTS_FIELDS)):
            _check_placeholders(name, self._input_path(name), fields)
        self.potcar_names()

    @property
    def forward_files(self) -> list[str]:
        return [INCAR, KPOINTS, POSCAR, POTCAR, FRAME_FILE]

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
                raise UserError(f"no POTCAR for {symbol} at {path}; put it there or point {self.profile.key}.data_dir "
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
        value, origin = self.profile.data_dir, f"{self.profile.key}.data_dir"
        if not value:
            value, origin = os.environ.get(POTCAR_DIR_ENV), POTCAR_DIR_ENV
        if not value:
            raise UserError(f"no POTCAR folder given: set {self.profile.key}.data_dir or {POTCAR_DIR_ENV} to the folder holding "
                            "<name>/POTCAR (e.g. .../potpaw_PBE.54)")
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise UserError(f"POTCAR folder {folder} (from {origin}) does not exist; set {self.profile.key}.data_dir or "
                            f"{POTCAR_DIR_ENV} to the folder holding <name>/POTCAR")
        return folder

    def command(self) -> str:
        vasp = self.profile.launcher(self.cores_per_task)
        return f"{shlex.quote(sys.executable)} -m lfpo_al.label.vasp_task --vasp-command {shlex.quote(vasp)}"

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

