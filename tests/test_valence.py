"""Valence from geometry: mean M-O bonds with minimum image in any cell, one frame or a stack."""

import numpy as np
import pytest
from pymatgen.io.ase import AseAtomsAdaptor

from lfpo_al.structures import BuildSpec, build_structure, classify, mean_bond_lengths


@pytest.fixture(scope="module")
def li05(load_system):
    system = load_system("lfpo")
    atoms = build_structure(system, BuildSpec(supercell=[1, 2, 2], x=0.5, seed=2))
    sym = np.array(atoms.get_chemical_symbols())
    return atoms, np.flatnonzero(sym == "Fe"), np.flatnonzero(sym == "O")


def brute_force(atoms, metal, n=6):
    """pymatgen's neighbour search, one M at a time: the slow reference."""
    structure = AseAtomsAdaptor.get_structure(atoms)
    out = []
    for i in metal:
        d = sorted(nb.nn_distance for nb in structure.get_neighbors(structure[i], 3.2) if nb.specie.symbol == "O")
        out.append(np.mean(d[:n]))
    return np.array(out)


def test_single_frame_matches_pymatgen(li05):
    atoms, metal, oxygen = li05
    np.testing.assert_allclose(mean_bond_lengths(atoms.positions, atoms.cell.array, metal, oxygen), brute_force(atoms, metal), atol=1e-10)


def test_skewed_basis_of_the_same_lattice(li05):
    """Re-express the periodic crystal in a strongly triclinic basis: every bond must stay the same."""
    atoms, metal, oxygen = li05
    ref = mean_bond_lengths(atoms.positions, atoms.cell.array, metal, oxygen)
    skewed = atoms.copy()
    unimodular = np.array([[1, 1, 0], [0, 1, 0], [2, 0, 1]])  # det 1: same lattice, angles far from 90
    skewed.set_cell(unimodular @ atoms.cell.array, scale_atoms=False)
    skewed.wrap()
    assert min(skewed.cell.angles()) < 60
    np.testing.assert_allclose(mean_bond_lengths(skewed.positions, skewed.cell.array, metal, oxygen), ref, atol=1e-10)


def test_stack_equals_frame_by_frame(li05):
    """A trajectory with thermal noise, atoms crossing the boundary and a breathing cell."""
    atoms, metal, oxygen = li05
    rng = np.random.default_rng(0)
    n_frames = 25
    frac0 = atoms.get_scaled_positions()
    strain = 1 + 0.01 * rng.standard_normal((n_frames, 3))
    cells = np.array([np.diag(s) @ atoms.cell.array for s in strain])
    frac = frac0 + 0.01 * rng.standard_normal((n_frames, *frac0.shape))
    frac[::2] -= np.floor(frac[::2])  # wrapped on even frames, unwrapped on odd ones
    frac[3] += 1.0  # a whole-cell jump
    positions = np.einsum("fni,fij->fnj", frac, cells)
    stack = mean_bond_lengths(positions, cells, metal, oxygen, chunk=7)
    assert stack.shape == (n_frames, len(metal))
    for f in range(n_frames):
        np.testing.assert_allclose(stack[f], mean_bond_lengths(positions[f], cells[f], metal, oxygen), atol=1e-10)


def test_classify():
    np.testing.assert_array_equal(classify([2.05, 2.17, 2.0999, 2.10], 2.10), [3, 2, 3, 2])
    np.testing.assert_array_equal(classify(np.array([[1.9, 2.3]]), 2.0, reduced=2, oxidised=4), [[4, 2]])


def test_needs_six_oxygen(li05):
    atoms, metal, oxygen = li05
    with pytest.raises(ValueError, match="6 O neighbours requested"):
        mean_bond_lengths(atoms.positions, atoms.cell.array, metal, oxygen[:3])
