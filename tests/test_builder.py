"""The olivine builder: composition, orderings, interfaces, polaron seeding, the build command."""

import ase.io
import numpy as np
import pytest
from ase.geometry import get_distances
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from conftest import SYSTEMS, run_cli
from lfpo_al.errors import UserError
from lfpo_al.structures import BuildSpec, build_structure, metal_valences

ORDERS = ["random", "planes_a", "planes_b", "planes_c", "interface_a", "interface_b", "interface_c"]


def symbols_of(atoms):
    return np.array(atoms.get_chemical_symbols())


def test_example_composition_and_arrays(load_system):
    system = load_system("lfpo")
    atoms = build_structure(system, BuildSpec(supercell=[1, 2, 2], x=0.5, li_order="random", seed=0))
    assert atoms.get_chemical_formula(mode="metal") == "Fe16Li8O64P16"
    sym = symbols_of(atoms)
    valence = atoms.arrays["valence"]
    assert valence.dtype.kind == "i"
    assert np.all(valence[sym != "Fe"] == 0)
    assert np.sum(valence == 3) == 8 and np.sum(valence == 2) == 8
    magmoms = atoms.get_initial_magnetic_moments()
    assert np.allclose(np.abs(magmoms[valence == 3]), 5.0) and np.allclose(np.abs(magmoms[valence == 2]), 4.0)
    assert np.all(magmoms[sym != "Fe"] == 0)
    assert magmoms[sym == "Fe"].sum() == 0 or abs(magmoms[sym == "Fe"].sum()) < 16  # AFM: +/- on M
    assert np.sum(magmoms > 0) == np.sum(magmoms < 0) == 8


@pytest.mark.parametrize("name", SYSTEMS)
@pytest.mark.parametrize("order", ORDERS)
def test_charge_balance_and_geometry_valence(load_system, name, order):
    """Every ordering of every system: exact composition, charge balance, and the contracted octahedra
    classify back (from geometry alone) to the valence the builder seeded."""
    system = load_system(name)
    atoms = build_structure(system, BuildSpec(supercell=[2, 2, 2], x=0.5, li_order=order, seed=3))
    sym = symbols_of(atoms)
    assert (np.sum(sym == "Li"), np.sum(sym == system.metal), np.sum(sym == "P"), np.sum(sym == "O")) == (16, 32, 32, 128)
    charge = np.sum(sym == "Li") + 5 * np.sum(sym == "P") - 2 * np.sum(sym == "O") + atoms.arrays["valence"].sum()
    assert charge == 0
    bonds, valence = metal_valences(atoms, system)
    seeded = atoms.arrays["valence"][sym == system.metal]
    np.testing.assert_array_equal(valence, seeded)
    assert np.allclose(bonds[seeded == 3], system.valence.bond_length[3], atol=2e-3)


@pytest.mark.parametrize("name", SYSTEMS)
def test_x1_is_pnma(load_system, name):
    atoms = build_structure(load_system(name), BuildSpec(supercell=[1, 2, 2], x=1.0))
    assert np.all(atoms.arrays["valence"][symbols_of(atoms) == load_system(name).metal] == 2)
    analyzer = SpacegroupAnalyzer(AseAtomsAdaptor.get_structure(atoms), symprec=1e-3)
    assert analyzer.get_space_group_symbol() == "Pnma"


@pytest.mark.parametrize("x,n_li", [(0.0, 0), (0.25, 4), (0.75, 12), (1.0, 16)])
def test_x_values(load_system, x, n_li):
    atoms = build_structure(load_system("lfpo"), BuildSpec(supercell=[1, 2, 2], x=x, seed=1))
    assert np.sum(symbols_of(atoms) == "Li") == n_li
    assert np.sum(atoms.arrays["valence"] == 3) == 16 - n_li


def test_seed_reproducible_and_distinct(load_system):
    system = load_system("lfpo")
    a, b, c = (build_structure(system, BuildSpec(x=0.5, seed=s)) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.arrays["valence"], b.arrays["valence"])
    assert not np.array_equal(np.sort(a.positions[symbols_of(a) == "Li"], axis=0), np.sort(c.positions[symbols_of(c) == "Li"], axis=0))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_planes_alternate(load_system, axis):
    """Remaining Li occupy every other Li plane normal to the axis (planes are half a cell apart)."""
    system = load_system("lfpo")
    atoms = build_structure(system, BuildSpec(supercell=[2, 2, 2], x=0.5, li_order=f"planes_{'abc'[axis]}"))
    frac = atoms.get_scaled_positions()[symbols_of(atoms) == "Li", axis]
    plane = np.rint(frac * 2 * 2).astype(int) % 4  # 2 cells along the axis -> 4 Li planes
    assert set(plane.tolist()) in ({0, 2}, {1, 3})


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_interface_slabs(load_system, axis):
    system = load_system("lfpo")
    sup = [1, 1, 1]
    sup[axis] = 4
    atoms = build_structure(system, BuildSpec(supercell=sup, x=0.5, li_order=f"interface_{'abc'[axis]}"))
    length = 2 * system.lattice_abc()[axis] + 2 * system.lattice_abc(delithiated=True)[axis]
    assert atoms.cell.lengths()[axis] == pytest.approx(length)
    sym = symbols_of(atoms)
    boundary = 2 * system.lattice_abc()[axis]
    li_pos = atoms.positions[sym == "Li", axis]
    assert np.all(li_pos < boundary)
    fe_pos = atoms.positions[sym == "Fe", axis]
    fe_val = atoms.arrays["valence"][sym == "Fe"]
    # M of the delithiated slab are M3+ (cell-wise assignment: allow the Fe sitting on the boundary)
    assert np.all(fe_val[fe_pos > boundary + 0.5] == 3) and np.all(fe_val[fe_pos < boundary - 0.5] == 2)


def test_nearest_rule_puts_polarons_next_to_vacancies(load_system):
    """Each M3+ is one of the M closest to some removed Li (Li-Fe 3.28 A / 3.50 A in the host)."""
    system = load_system("lfpo")
    full = build_structure(system, BuildSpec(supercell=[1, 2, 2], x=1.0, contract=False))
    part = build_structure(system, BuildSpec(supercell=[1, 2, 2], x=0.5, seed=4, contract=False))
    li_full = full.positions[symbols_of(full) == "Li"]
    li_kept = part.positions[symbols_of(part) == "Li"]
    _, d_kept = get_distances(li_full, li_kept, cell=full.cell, pbc=True)
    vacancies = li_full[d_kept.min(axis=1) > 0.1]
    assert len(vacancies) == 8
    fe3 = part.positions[part.arrays["valence"] == 3]
    _, d = get_distances(fe3, vacancies, cell=part.cell, pbc=True)
    assert d.min(axis=1).max() < 3.6


def test_bad_inputs(load_system):
    system = load_system("lfpo")
    with pytest.raises(UserError, match=r"build\.x=1\.2 is outside \[0, 1\]"):
        build_structure(system, BuildSpec(x=1.2))
    with pytest.raises(UserError, match=r"build\.x=0\.3 is not reachable with 16 Li sites"):
        build_structure(system, BuildSpec(x=0.3))
    with pytest.raises(UserError, match=r"build\.li_order='stripes' is unknown"):
        BuildSpec(li_order="stripes")
    with pytest.raises(UserError, match=r"build\.li_order=planes_a builds x = 0\.5 only"):
        BuildSpec(li_order="planes_a", x=0.75)
    with pytest.raises(UserError, match=r"even number"):
        build_structure(system, BuildSpec(supercell=[1, 1, 1], li_order="interface_c"))


def test_build_command_writes_extxyz(tmp_path):
    out = tmp_path / "out.extxyz"
    res = run_cli("build", "system=lfpo", "build.supercell=[1,2,2]", "build.x=0.5", "build.li_order=random",
                  "build.seed=0", f"build.output={out}")
    assert res.returncode == 0, res.stderr
    atoms = ase.io.read(out)
    assert atoms.get_chemical_formula(mode="metal") == "Fe16Li8O64P16"
    assert atoms.arrays["valence"].dtype.kind == "i" and "initial_magmoms" in atoms.arrays
    assert atoms.info["li_order"] == "random"


@pytest.mark.parametrize("override,key", [
    ("system=lzpo", "unknown system 'lzpo'"),
    ("build.x=1.5", "build.x=1.5 is outside [0, 1]"),
    ("build.x=0.1", "build.x=0.1 is not reachable"),
    ("build.li_order=zigzag", "build.li_order='zigzag' is unknown"),
    ("build.li_order=planes_c build.x=0.25", "build.li_order=planes_c builds x = 0.5 only"),
    ("build.x=half", "build.x='half' must be a number in [0, 1]"),
    ("build.seed=abc", "build.seed='abc' must be a whole number"),
    ("build.supercell=[1,a,2]", "build.supercell=[1, 'a', 2] must be three positive integers"),
])
def test_build_command_errors_are_one_line(tmp_path, override, key):
    res = run_cli("build", *override.split(), f"build.output={tmp_path / 'x.extxyz'}")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], res.stderr
    assert not (tmp_path / "x.extxyz").exists()


def test_unwritable_output_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    for output in (tmp_path, tmp_path / "file" / "x.extxyz"):  # a folder; a path through a file
        res = run_cli("build", "build.supercell=[1,1,1]", f"build.output={output}")
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert f"cannot write {output}" in res.stderr and "build.output" in res.stderr
