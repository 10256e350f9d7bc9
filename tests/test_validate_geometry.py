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
    assert result.valence_agreement == 1.0
    assert result.mean_mo_bond_error_ang == pytest.approx(0.0, abs=1e-9)


def test_moments_reference_compares_valence_only(polaron_cell):
    system, cell = polaron_cell
    reference = cell.copy()
    intended = cell.arrays["valence"].copy()
    reference.new_array(TEACHER_VALENCE, intended)
    same = compare_geometry([cell], [reference], system)
    assert same.valence_agreement == 1.0 and same.mean_mo_bond_error_ang is None

    # the teacher put one hole elsewhere: two of the four Fe disagree with the model's geometry
    metal = np.flatnonzero(np.array(cell.get_chemical_symbols()) == system.metal)
    _, geometric = metal_valences(cell, system)
    oxidised, reduced = metal[geometric == 3][0], metal[geometric == 2][0]
    moved = intended.copy()
    moved[oxidised], moved[reduced] = 2, 3
    reference.arrays[TEACHER_VALENCE] = moved
    result = compare_geometry([cell], [reference], system)
    assert result.valence_agreement == pytest.approx(1 - 2 / len(metal))
    assert result.structures[0]["n_oxidised_teacher"] == int(np.sum(geometric == 3))


def test_reference_follows_teacher_cost():
    auto = ValidateSettings()
    assert auto.reference_for(0.0085) == "teacher_relaxed"       # CHGNet: seconds per relaxation
    assert auto.reference_for(9.0) == "teacher_moments"          # DFT: hours per relaxation
    assert auto.reference_for(None) == "teacher_moments"         # unknown cost: never start an unbounded relax
    assert ValidateSettings(polaron_reference="teacher_relaxed").reference_for(9.0) == "teacher_relaxed"
    with pytest.raises(UserError, match="polaron_reference"):
        ValidateSettings(polaron_reference="dft")


def test_test_frames_follow_teacher_cost_and_bad_values_are_refused():
    assert ValidateSettings(test_frames="auto").test_frames_for(0.0085) == "teacher_md"
    assert ValidateSettings(test_frames="auto").test_frames_for(9.0) == "perturbed"
    assert ValidateSettings(test_frames="auto").test_frames_for(None) == "perturbed"
    assert ValidateSettings(test_frames="teacher_md").test_frames_for(9.0) == "teacher_md"
    with pytest.raises(UserError, match="validate.test_frames"):
        ValidateSettings(test_frames="aimd")
    with pytest.raises(UserError, match="validate.test_md_interval_steps"):
        ValidateSettings(test_md_interval_steps=0)


def test_teacher_md_test_frames_start_built_then_follow_the_teachers_md(load_system):
    from chgnet.model.dynamics import CHGNetCalculator

    from lfpo_al.loop.data import teacher_md_frames

    system = load_system("lfpo")
    specs = [BuildSpec(x=0.5, li_order="random", seed=3, supercell=(1, 1, 1)), BuildSpec(x=1.0, supercell=(1, 1, 1))]
    calc = CHGNetCalculator(use_device="cpu")
    frames = teacher_md_frames(system, specs, 3, calc, 600.0, 5, seed=0)
    assert len(frames) == 6
    for j, spec in enumerate(specs):
        built = build_structure(system, spec)
        start, *snaps = frames[3 * j: 3 * j + 3]
        assert np.allclose(start.positions, built.positions)  # the unperturbed start comes first
        assert [s.info["md_step"] for s in snaps] == [5, 10]
        for snap in snaps:
            assert snap.calc is None and "momenta" not in snap.arrays
            assert np.array_equal(snap.arrays["valence"], built.arrays["valence"])  # intended valence kept
            moved = np.linalg.norm(snap.positions - built.positions, axis=1)
            assert 0.005 < moved.mean() < 0.3  # thermal motion, not a rattle of every atom by the same law
        assert not np.allclose(snaps[0].positions, snaps[1].positions)


def test_moments_reference_reads_the_teachers_moments_on_the_start(polaron_cell, tmp_path):
    from ase.calculators.singlepoint import SinglePointCalculator

    from lfpo_al.label.chgnet import ChgnetLabeler
    from lfpo_al.label.frames import LABELED_FILE, write_labeled
    from lfpo_al.validate.reference import moments_reference

    system, cell = polaron_cell
    labeler = ChgnetLabeler(expected_magmom={"Fe": {2: 3.92, 3: 4.40}})
    intended = cell.arrays["valence"]
    teacher = intended.copy()
    metal = np.flatnonzero(intended > 0)
    oxidised, reduced = metal[intended[metal] == 3][0], metal[intended[metal] == 2][0]
    teacher[oxidised], teacher[reduced] = 2, 3  # the teacher put one hole on another Fe
    labeled = cell.copy()
    labeled.new_array("magmoms", np.select([teacher == 3, teacher == 2], [4.41, 3.90], 0.0))
    labeled.calc = SinglePointCalculator(labeled, energy=-1.0, forces=np.zeros((len(cell), 3)), stress=np.zeros(6))
    write_labeled(labeled, tmp_path / LABELED_FILE)

    reference = moments_reference(cell, tmp_path, labeler, system)
    np.testing.assert_array_equal(reference.arrays[TEACHER_VALENCE], teacher)
    np.testing.assert_array_equal(reference.positions, cell.positions)
    moved = cell.copy()
    moved.positions[0] += 0.1
    with pytest.raises(RuntimeError, match="not the unperturbed polaron start"):
        moments_reference(moved, tmp_path, labeler, system)
    with pytest.raises(RuntimeError, match="did not label the polaron start"):
        moments_reference(cell, tmp_path / "absent", labeler, system)
