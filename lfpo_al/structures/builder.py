"""Build one LixMPO4 configuration: supercell, Li/vacancy arrangement, seeded polarons."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from lfpo_al.config import make_settings
from lfpo_al.errors import UserError
from lfpo_al.structures import lithium, polaron
from lfpo_al.structures.olivine import supercell
from lfpo_al.structures.system import OlivineSystem


@dataclass
class BuildSpec:
    """What to build; the ``build`` section of the config."""

    supercell: list[int] = field(default_factory=lambda: [1, 2, 2])
    x: float = 0.5
    li_order: str = "random"
    seed: int = 0
    polaron_rule: str = "nearest"
    contract: bool = True
    output: str = "structure.extxyz"

    def __post_init__(self) -> None:
        reps = list(self.supercell) if isinstance(self.supercell, (list, tuple)) else [self.supercell]
        if len(reps) != 3 or not all(_whole(n) and n >= 1 for n in reps):
            raise UserError(f"build.supercell={reps} must be three positive integers, e.g. [1,2,2]")
        self.supercell = [int(n) for n in reps]
        if isinstance(self.x, bool) or not isinstance(self.x, (int, float)):
            raise UserError(f"build.x={self.x!r} must be a number in [0, 1] (the Li fraction)")
        self.x = float(self.x)
        if not _whole(self.seed):
            raise UserError(f"build.seed={self.seed!r} must be a whole number")
        kind, _ = lithium.order_kind(self.li_order)
        if kind in ("planes", "interface") and abs(self.x - 0.5) > 1e-9:
            raise UserError(f"build.li_order={self.li_order} builds x = 0.5 only, got build.x={self.x}; set build.x=0.5")
        if self.polaron_rule not in polaron.POLARON_RULES:
            raise UserError(f"build.polaron_rule={self.polaron_rule!r} is unknown; choose one of {', '.join(polaron.POLARON_RULES)}")


def _whole(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and int(value) == value


@contextmanager
def build_section(section: str):
    """Errors of a build section listed under another key (``explore.structures[1]``) name that key."""
    try:
        yield
    except UserError as exc:
        if section == "build":
            raise
        raise UserError(re.sub(r"\bbuild\.", f"{section}.", str(exc))) from None


MD_KEYS = ("temperatures",)  # what an MD matrix may add to a build section: its own temperatures


def build_specs(structures: list[dict], defaults: BuildSpec | None = None, section: str = "build") -> list[BuildSpec]:
    """One BuildSpec per ``build``-style section, filled in from ``defaults`` (the config's ``build``);
    errors name ``section[i]``; ``MD_KEYS`` are left to the MD that reads them."""
    base = {k: v for k, v in asdict(defaults or BuildSpec()).items() if k != "output"}
    specs = []
    for i, spec in enumerate(structures):
        with build_section(section if section == "build" else f"{section}[{i}]"):
            build_keys = {k: v for k, v in spec.items() if k not in MD_KEYS}
            specs.append(make_settings(BuildSpec, {**base, **build_keys}, "build"))
    return specs


def check_buildable(system: OlivineSystem, structures: list[dict], defaults: BuildSpec, section: str) -> None:
    """Build every section once (milliseconds each), so that an unbuildable one stops a run before any work."""
    for i, spec in enumerate(build_specs(structures, defaults, section)):
        with build_section(f"{section}[{i}]"):
            build_structure(system, spec)


def built_structures(system: OlivineSystem, specs: list[BuildSpec]):
    """The built structure of each spec, tagged with its family (composition and Li order) for the reports."""
    for spec in specs:
        built = build_structure(system, spec)
        built.info["family"] = f"x{spec.x:.2f}-{spec.li_order}"
        yield built


# peak bytes per (vacancy, metal) pair of the nearest-metal seeding: ASE's distances over 27 periodic images,
# then the sort keys and index grids
NEAREST_BYTES_PER_PAIR = 27 * 3 * 8 + 6 * 8


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable), or its physical memory where that is not reported."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits_memory(spec: BuildSpec, n_atoms: int, n_vacancies: int, n_metal: int) -> None:
    """Refuse, before the seeding allocates, a cell whose polaron seeding would take more than half the
    free memory (the tiled cell itself is a few arrays)."""
    if spec.polaron_rule != "nearest":
        return
    need, free = n_vacancies * n_metal * NEAREST_BYTES_PER_PAIR, available_memory()
    if need > free / 2:
        raise UserError(f"build.supercell={spec.supercell} ({n_atoms} atoms) needs ~{need / 1e9:.3g} GB to "
                        f"seed its polarons (build.polaron_rule=nearest), more than half of the {free / 1e9:.3g} GB "
                        "free here; build a smaller cell or use build.polaron_rule=random")


def build_structure(system: OlivineSystem, spec: BuildSpec) -> Atoms:
    """LixMPO4 with per-atom ``valence`` (2/3 on M, 0 elsewhere) and ``initial_magmoms``."""
    atoms = supercell(system, tuple(spec.supercell))
    symbols = np.array(atoms.get_chemical_symbols())
    li = np.flatnonzero(symbols == system.mobile_ion)
    metal = np.flatnonzero(symbols == system.metal)
    n_empty = lithium.n_vacancies(len(li), spec.x)
    check_fits_memory(spec, len(atoms), n_empty, len(metal))
    kind, axis = lithium.order_kind(spec.li_order)
    rng = np.random.default_rng(spec.seed)

    in_slab = None
    if kind == "random":
        vacancies = lithium.random_vacancies(li, n_empty, rng)
    elif kind == "planes":
        vacancies = lithium.plane_vacancies(atoms, li, axis)
    else:
        in_slab = lithium.interface_cells(atoms, axis)
        lithium.rescale_delithiated_slab(atoms, system, axis, in_slab)
        vacancies = li[in_slab[li]]
    if len(vacancies) != n_empty:  # a geometry rule must honour the requested x
        raise AssertionError(f"{spec.li_order} removed {len(vacancies)} Li, expected {n_empty}")

    rule = system.valence
    if in_slab is not None:
        oxidised = metal[in_slab[metal]]
    else:
        oxidised = polaron.choose_oxidised(spec.polaron_rule, atoms.positions[vacancies], atoms, metal, rng)
    valence = np.zeros(len(atoms), dtype=int)
    valence[metal] = rule.reduced
    valence[oxidised] = rule.oxidised
    atoms.new_array("valence", valence)

    oxygen = np.flatnonzero(symbols == system.oxygen)
    if spec.contract:
        polaron.contract_octahedra(atoms, oxidised, oxygen, rule.bond_length[rule.oxidised])
    atoms.set_initial_magnetic_moments(polaron.initial_magmoms(valence, atoms.arrays["spin_sign"], rule.initial_magmom))

    del atoms[vacancies]
    for name in ("cell_index", "spin_sign"):
        del atoms.arrays[name]
    atoms.wrap()
    atoms.info.update(
        system=system.name, x=spec.x, li_order=spec.li_order, seed=spec.seed,
        supercell=" ".join(map(str, spec.supercell)), polaron_rule=spec.polaron_rule,
    )
    check_charge_balance(atoms, system)
    return atoms


def check_charge_balance(atoms: Atoms, system: OlivineSystem) -> None:
    """Formal charges (metal from ``valence``) must sum to zero."""
    symbols = np.array(atoms.get_chemical_symbols())
    charge = sum(system.formal_charge(s) * int(np.sum(symbols == s)) for s in system.oxidation_states)
    charge += int(atoms.arrays["valence"][symbols == system.metal].sum())
    if charge != 0:
        raise AssertionError(f"built structure {atoms.get_chemical_formula()} carries formal charge {charge}")


def write_structure(atoms: Atoms, path: str | Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(path, atoms, format="extxyz")
    except OSError as exc:  # a folder where the file should go, a file where a folder should, no permission
        raise UserError(f"cannot write {path} ({exc.strerror or type(exc).__name__}); pick another build.output") from None
    return path
