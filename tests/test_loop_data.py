"""Training data is checked before a member is trained: a damaged file stops the step with its name."""

import dpdata
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from lfpo_al.errors import UserError
from lfpo_al.loop.data import check_deepmd_systems, deepmd_systems
from lfpo_al.structures import BuildSpec, build_structure


@pytest.fixture
def data_dir(load_system, tmp_path):
    system = load_system("lfpo")
    multi = dpdata.MultiSystems(type_map=list(system.type_map))
    rng = np.random.default_rng(0)
    for seed in (0, 1):
        atoms = build_structure(system, BuildSpec(supercell=[1, 1, 1], x=0.5, seed=seed))
        atoms.calc = SinglePointCalculator(atoms, energy=-100.0 - seed, forces=rng.normal(size=(len(atoms), 3)),
                                           stress=np.zeros(6))
        multi.append(dpdata.LabeledSystem(atoms, fmt="ase/structure", type_map=list(system.type_map)))
    multi.to_deepmd_npy(str(tmp_path / "data"))
    return tmp_path / "data"


def test_whole_data_passes(data_dir):
    systems = deepmd_systems(data_dir)
    assert systems
    check_deepmd_systems(systems)


def test_truncated_array_is_named(data_dir):
    (system,) = deepmd_systems(data_dir)
    force = next(system.rglob("force.npy"))
    force.write_bytes(force.read_bytes()[:200])  # a copy cut short
    with pytest.raises(UserError, match=rf"training data {system} is unreadable"):
        check_deepmd_systems([system])


def test_non_finite_labels_are_named(data_dir):
    (system,) = deepmd_systems(data_dir)
    energy = next(system.rglob("energy.npy"))
    values = np.load(energy)
    values[0] = np.nan
    np.save(energy, values)
    with pytest.raises(UserError, match=rf"training data {system} holds non-finite energies"):
        check_deepmd_systems([system])
