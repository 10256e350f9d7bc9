"""GPAW PBE+U (plane waves, spin-polarised) as a real DFT teacher that runs on a workstation.

Two halves, as for CHGNet and VASP. ``GpawLabeler`` writes a task folder: ``frame.extxyz`` (with the
start moment of every site) and ``gpaw.json``, which holds every GPAW keyword resolved for that frame
(the k-point mesh from ``kpoint_spacing``, Hubbard U from ``system.hubbard_u`` as GPAW setups) and
what the task needs to judge and re-seed the result (intended valences, expected moments, the M3+
bond length). The task command ``python -m lfpo_al.label.gpaw_task`` runs there: see that module.

Defaults come from ``dft_inputs/gpaw/pbe_u.yaml`` (``$LFPO_AL_DFT_INPUTS`` moves that folder); the
fields ``ecut``, ``smearing_width``, ``maxiter`` and ``parameters`` override them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase import Atoms

from lfpo_al.errors import UserError
from lfpo_al.label.base import Labeler
from lfpo_al.label.dft_common import check_kpoint_spacing, dft_inputs_dir, kpoint_mesh, site_magmoms
from lfpo_al.label.frames import FRAME_FILE
from lfpo_al.structures.system import OlivineSystem

PARAMETERS_FILE = "gpaw.json"
SEEDINGS = ("frame", "contracted")  # start moments of the frame; then its M3+ octahedra contracted first


def log_file(seeding: str) -> str:
    """GPAW's own log of one seeding, brought back with the result."""
    return f"gpaw.{seeding}.txt"


LOG_FILES = tuple(log_file(seeding) for seeding in SEEDINGS)
DEBIAN_SETUP_DIR = Path("/usr/share/gpaw-setups")  # where Debian's gpaw-data package puts the PAW setups
SETUP_PATH_ENV = "GPAW_SETUP_PATH"
# set by the labeler per frame, not by the parameter file
RESERVED_KEYWORDS = ("kpts", "setups", "magmoms", "txt", "communicator")


@dataclass
class GpawLabeler(Labeler):
    """PBE+U single points with GPAW; its fields are ``configs/label/gpaw.yaml``.

    parameters_file: GPAW keywords (yaml) under ``dft_inputs/`` or an absolute path.
    ecut: plane-wave cutoff (eV); None: the file's ``mode.ecut``.
    kpoint_spacing: 1/A, 2 pi included (as VASP's KSPACING): Monkhorst-Pack n_i = ceil(2 pi |b_i| / spacing).
    smearing_width: Fermi-Dirac width (eV); None: the file's.
    maxiter: SCF iterations before the frame is failed; None: the file's.
    parameters: further GPAW keywords laid over the file's (e.g. ``{mixer: {name: pulay, beta: 0.02}}``).
    hubbard_u: U per element for ``ase_calculator`` (the config passes ``${system.hubbard_u}``); task
        folders always take U from the system they are written for.

    Where it runs is the machine's profile ``machine.programs.gpaw``: ``command`` is the launcher prefix of
    the GPAW worker (``{cores}`` becomes ``cores_per_task``, the MPI ranks; empty: serial) and ``data_dir``
    the PAW setups (None: the first that exists of ``$GPAW_SETUP_PATH``, Debian's gpaw-data folder and
    the ``gpaw-data`` Python package). Tasks get the setups as ``$GPAW_SETUP_PATH``.
    """

    parameters_file: str = "gpaw/pbe_u.yaml"
    ecut: float | None = None
    kpoint_spacing: float = 0.8
    smearing_width: float | None = None
    maxiter: int | None = None
    parameters: dict | None = None
    hubbard_u: dict | None = None
    cores_per_task: int = 2
    mismatch_policy: str = "relabel"

    supports_relabel = True
    program = "gpaw"
    default_launcher = "mpirun -np {cores}"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kpoint_spacing(self.kpoint_spacing)
        if self.ecut is not None and not self.ecut > 0:
            raise UserError(f"label.ecut={self.ecut} must be a positive plane-wave cutoff in eV, or null for the file's")
        if self.smearing_width is not None and not self.smearing_width >= 0:
            raise UserError(f"label.smearing_width={self.smearing_width} must be >= 0 (eV), or null for the file's")
        if self.maxiter is not None and (int(self.maxiter) != self.maxiter or self.maxiter < 1):
            raise UserError(f"label.maxiter={self.maxiter} must be a positive integer, or null for the file's")
        if self.parameters is not None and not isinstance(self.parameters, dict):
            raise UserError(f"label.parameters={self.parameters!r} must map GPAW keyword -> value")
        self.gpaw_parameters()  # a broken parameter file stops the run here, before any task folder

    @property
    def forward_files(self) -> list[str]:
        return [FRAME_FILE, PARAMETERS_FILE]

    @property
    def backward_files(self) -> list[str]:
        return [*super().backward_files, *LOG_FILES]

    def gpaw_parameters(self) -> dict:
        """GPAW keywords common to every frame: the parameter file with this labeler's overrides."""
        path = Path(self.parameters_file).expanduser()
        path = path if path.is_absolute() else dft_inputs_dir() / path
        if not path.is_file():
            raise UserError(f"label.parameters_file={self.parameters_file}: no file {path}")
        params = yaml.safe_load(path.read_text())
        if not isinstance(params, dict):
            raise UserError(f"{path} must map GPAW keyword -> value (e.g. 'xc: PBE')")
        params = {**params, **copy.deepcopy(self.parameters or {})}
        reserved = sorted(set(params) & set(RESERVED_KEYWORDS))
        if reserved:
            raise UserError(f"{path} / label.parameters set {reserved}: the labeler sets those per frame; remove them")
        mode = params.get("mode")
        if not (isinstance(mode, dict) and mode.get("name") == "pw"):
            raise UserError(f"{path}: mode must be {{name: pw, ecut: ...}}: stress labels need plane waves")
        if self.ecut is not None:
            params["mode"] = {**mode, "ecut": float(self.ecut)}
        if not params.get("spinpol"):
            raise UserError(f"{path}: spinpol must be true: labels carry magnetic moments and polarons are spin-polarised")
        if self.smearing_width is not None:
            params["occupations"] = {**params.get("occupations", {"name": "fermi-dirac"}), "width": float(self.smearing_width)}
        if self.maxiter is not None:
            params["maxiter"] = int(self.maxiter)
        if not isinstance(params.get("maxiter"), int) or params["maxiter"] < 1:
            raise UserError(f"{path}: maxiter must be a positive integer (an SCF that reaches it is failed, not labeled)")
        return params

    def frame_parameters(self, atoms: Atoms, hubbard_u: dict) -> dict:
        """The GPAW keywords of one frame: common ones, its k-point mesh and its +U setups."""
        params = self.gpaw_parameters()
        params["kpts"] = {"size": kpoint_mesh(np.asarray(atoms.cell), self.kpoint_spacing)}  # unshifted MP
        setups = hubbard_setups(hubbard_u, atoms.get_chemical_symbols())
        if setups:
            params["setups"] = setups
        return params

    def write_inputs(self, atoms: Atoms, task_dir: Path, system: OlivineSystem) -> None:
        task_dir = Path(task_dir)
        self.setup_folder(atoms.get_chemical_symbols(), xc_name(self.gpaw_parameters()))  # fail here, not in a job
        frame = atoms.copy()  # copy() drops any calculator: the teacher must not see old labels
        frame.set_initial_magnetic_moments(site_magmoms(atoms, system))
        rule = system.valence
        task = {
            "gpaw": self.frame_parameters(frame, system.hubbard_u),
            "mismatch_policy": self.mismatch_policy,
            "magmom_tolerance": self.magmom_tolerance,
            "expected_magmom": {str(v): m for v, m in self.expected_moments(system).items()},
            "metal": system.metal,
            "oxygen": system.oxygen,
            "oxidised": rule.oxidised,
            "oxidised_bond_length": rule.bond_length[rule.oxidised],
            "initial_magmom": {str(v): m for v, m in rule.initial_magmom.items()},
        }
        ase.io.write(task_dir / FRAME_FILE, frame, format="extxyz")
        (task_dir / PARAMETERS_FILE).write_text(json.dumps(task, indent=1) + "\n")

    def command(self) -> str:
        python = shlex.quote(sys.executable)
        worker = f"{python} -m gpaw python"  # GPAW >= 25 runs MPI only through its own interpreter
        launcher = self.profile.launcher(self.cores_per_task).strip()
        if launcher:
            worker = f"{mpi_launcher(launcher)} {worker}"
        setups = self.setup_folder()
        return (
            f"{SETUP_PATH_ENV}={shlex.quote(str(setups))} {python} -m lfpo_al.label.gpaw_task "
            f"--worker {shlex.quote(worker)} --ranks {self.cores_per_task if launcher else 1}"
        )

    def setup_folder(self, symbols: list[str] | None = None, xc: str = "PBE") -> Path:
        """The PAW setup folder: the profile's ``data_dir``, else the first folder that exists of ``$GPAW_SETUP_PATH``,
        Debian's gpaw-data and the gpaw-data Python package; it must hold ``{element}.{xc}`` of ``symbols``."""
        if self.profile.data_dir:
            candidates = [(Path(self.profile.data_dir).expanduser(), f"{self.profile.key}.data_dir")]
        else:
            candidates = [(Path(p), SETUP_PATH_ENV) for p in os.environ.get(SETUP_PATH_ENV, "").split(os.pathsep) if p]
            candidates.append((DEBIAN_SETUP_DIR, "Debian's gpaw-data"))
            candidates.extend((p, "the gpaw-data Python package") for p in _packaged_setup_dirs())
        found = next(((folder, origin) for folder, origin in candidates if folder.is_dir()), None)
        if found is None:
            tried = "; ".join(f"{folder} ({origin})" for folder, origin in candidates)
            raise UserError(f"no GPAW PAW setup folder found (tried {tried}); install Debian's gpaw-data "
                            f"(apt-get install gpaw-data) or point {self.profile.key}.data_dir at a folder of setups")
        folder, origin = found
        missing = [element for element in sorted(set(symbols or [])) if not _has_setup(folder, element, xc)]
        if missing:
            raise UserError(f"the GPAW setup folder {folder} ({origin}) lacks {', '.join(f'{e}.{xc}' for e in missing)}; "
                            f"point {self.profile.key}.data_dir at a folder that holds them")
        return folder

    def ase_calculator(self, system: OlivineSystem | None = None, atoms: Atoms | None = None):
        """An in-process, serial GPAW calculator with the labels' parameters. Expensive: minutes per 28 atoms.

        U comes from ``system`` or else the ``hubbard_u`` field; the k-point mesh is fixed from ``atoms``'
        cell when given, else taken from the same spacing for whatever cell it meets. Start moments are
        read from the atoms it is attached to (``set_initial_magnetic_moments``).
        """
        hubbard_u = system.hubbard_u if system is not None else self.hubbard_u
        if hubbard_u is None:
            raise UserError("GpawLabeler.ase_calculator needs U: pass the system or set label.hubbard_u")
        from gpaw import GPAW, setup_paths

        params = self.gpaw_parameters()
        symbols = list(hubbard_u) if atoms is None else atoms.get_chemical_symbols()
        params["setups"] = hubbard_setups(hubbard_u, symbols)
        if atoms is not None:
            params["kpts"] = {"size": kpoint_mesh(np.asarray(atoms.cell), self.kpoint_spacing)}
        else:  # ASE's density counts points per 1/A of |b_i| without 2 pi: the same mesh as kpoint_mesh
            params["kpts"] = {"density": 1.0 / self.kpoint_spacing}
        folder = str(self.setup_folder(atoms.get_chemical_symbols() if atoms is not None else None, xc_name(params)))
        if folder not in map(str, setup_paths):
            setup_paths.insert(0, folder)
        return GPAW(**params, txt=None)


def mpi_launcher(command: str) -> str:
    """``command`` with a bare ``mpirun``/``mpiexec`` resolved past this environment's own ``bin/``.

    deepmd-kit's MPICH wheel puts an ``mpirun`` there; GPAW is built against the system's OpenMPI,
    and under the other MPI's launcher each rank would run the whole calculation alone.
    """
    launcher = next((w for w in command.split() if "=" not in w), "")
    if launcher not in ("mpirun", "mpiexec"):
        return command
    env_bin = Path(sys.executable).parent
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d) != env_bin]
    found = shutil.which(launcher, path=os.pathsep.join(dirs))
    if not found:
        return command
    return re.sub(rf"(?<!\S){launcher}(?!\S)", found.replace("\\", "\\\\"), command, count=1)


def hubbard_setups(hubbard_u: dict, symbols: list[str]) -> dict[str, str]:
    """GPAW setups carrying Dudarev U on the d shell, ``{'Fe': ':d,5.3'}``, for the elements present."""
    setups = {}
    for element, u in (hubbard_u or {}).items():
        try:
            value = float(u)
        except (TypeError, ValueError):
            raise UserError(f"system.hubbard_u.{element}={u!r} must be a number (eV)") from None
        if value < 0:
            raise UserError(f"system.hubbard_u.{element}={value} must be >= 0 (eV)")
        if element in symbols and value > 0:
            setups[str(element)] = f":d,{value:g}"
    return setups


def xc_name(params: dict) -> str:
    xc = params.get("xc", "LDA")
    return str(xc.get("name") if isinstance(xc, dict) else xc)


def _has_setup(folder: Path, element: str, xc: str) -> bool:
    return any((folder / f"{element}.{xc}{suffix}").is_file() for suffix in (".gz", ""))


def _packaged_setup_dirs() -> list[Path]:
    try:
        import gpaw_data  # installed with GPAW >= 25
    except ImportError:
        return []
    return [Path(gpaw_data.datapath())]
