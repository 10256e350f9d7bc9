"""Polaron geometry references: the teacher's relaxation, or the teacher's moments on the built start."""

import numpy as np
import pytest

from lfpo_al.errors import UserError
from lfpo_al.structures.builder import BuildSpec, build_structure
from lfpo_al.structures.valence import metal_valences
from lfpo_al.validate.geometry import TEACHER_VALENCE, compare_geometry
from lfpo_al.validate.settings import ValidateSettings


@pytest.fixture
def polaron_cell(load_system):
    system = load_system("lfpo")
    return system, build_structure(system, BuildSpec(x=0.5, li_order="random", seed=3, supercell=(1, 1, 1)))


def test_relaxed_reference_compares_bonds_and_valence(polaron_cell):
    system, cell = polaron_cell
    result = compare_geometry([cell], [cell.copy()], system)
    assert result["valence_agreement"] == 1.0
    assert result["mean_mo_bond_error_ang"] == pytest.approx(0.0, abs=1e-9)


def test_moments_reference_compares_valence_only(polaron_cell):
    system, cell = polaron_cell
    reference = cell.copy()
    intended = cell.arrays["valence"].copy()
    reference.new_array(TEACHER_VALENCE, intended)
    same = compare_geometry([cell], [reference], system)
    assert same["valence_agreement"] == 1.0 and same["mean_mo_bond_error_ang"] is None

    # the teacher put one hole elsewhere: two of the four Fe disagree with the model's geometry
    metal = np.flatnonzero(np.array(cell.get_chemical_symbols()) == system.metal)
    _, geometric = metal_valences(cell, system)
    oxidised, reduced = metal[geometric == 3][0], metal[geometric == 2][0]
    moved = intended.copy()
    moved[oxidised], moved[reduced] = 2, 3
    reference.arrays[TEACHER_VALENCE] = moved
    result = compare_geometry([cell], [reference], system)
    assert result["valence_agreement"] == pytest.approx(1 - 2 / len(metal))
    assert result["structures"][0]["n_oxidised_teacher"] == int(np.sum(geometric == 3))


def test_reference_follows_teacher_cost():
    auto = ValidateSettings()
    assert auto.reference_for(0.0085) == "teacher_relaxed"       # CHGNet: seconds per relaxation
    assert auto.reference_for(9.0) == "teacher_moments"          # DFT: hours per relaxation
    assert auto.reference_for(None) == "teacher_moments"         # unknown cost: never start an unbounded relax
    assert ValidateSettings(polaron_reference="teacher_relaxed").reference_for(9.0) == "teacher_relaxed"
    with pytest.raises(UserError, match="polaron_reference"):
        ValidateSettings(polaron_reference="dft")
