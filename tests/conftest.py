import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SYSTEMS = ("lfpo", "lmpo", "lcpo", "lnpo")


@pytest.fixture(scope="session")
def load_system():
    from lfpo_al.config import compose_config, instantiate_group

    cache = {}

    def load(name: str = "lfpo"):
        if name not in cache:
            cache[name] = instantiate_group(compose_config([f"system={name}"]), "system")
        return cache[name]

    return load


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lfpo_al", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="session")
def machine():
    from lfpo_al.config import compose_config, instantiate_group

    return instantiate_group(compose_config([]), "machine")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, load_system):
    """Four 28-atom frames labeled by CHGNet, written as deepmd/npy with dpdata."""
    import dpdata
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator
    from chgnet.model.dynamics import CHGNetCalculator

    from lfpo_al.structures import BuildSpec, build_structure

    system = load_system("lfpo")
    calc = CHGNetCalculator(use_device="cpu")
    rng = np.random.default_rng(0)
    multi = dpdata.MultiSystems(type_map=system.type_map)
    for x, seed in ((1.0, 0), (0.5, 1), (0.5, 2), (0.0, 3)):
        atoms = build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=seed))
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.calc = calc
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        multi.append(dpdata.LabeledSystem(atoms, fmt="ase/structure"))
    out = tmp_path_factory.mktemp("data")
    multi.to_deepmd_npy(str(out))
    return sorted(p.parent for p in out.rglob("type.raw"))


@pytest.fixture(scope="session")
def tiny_members(tmp_path_factory, tiny_data, machine, load_system):
    """Two members fine-tuned for 4 steps from the starter on ``tiny_data``: member 0 keeps the starter's
    fitting net, member 1 re-initialises its own, so they disagree. Trained once per test worker; modules
    that use it share the ``tiny_members`` xdist group so that this is once per run."""
    from lfpo_al.train.ensemble import train_ensemble
    from lfpo_al.train.pretrained import resolve_pretrained
    from lfpo_al.train.settings import ModelSettings

    settings = ModelSettings(n_members=2, numb_steps=4, bootstrap_fraction=0.75)
    work = tmp_path_factory.mktemp("train")
    return train_ensemble(settings, load_system("lfpo").type_map, tiny_data, work, machine, resolve_pretrained("starter"))


def pytest_collection_modifyitems(config, items):
    """Longest first, so the two test workers finish together: the real DFT label (minutes on both
    cores), then the other slow tests, then the rest, each in collection order."""
    def rank(item):
        dft, slow = item.get_closest_marker("dft") is not None, item.get_closest_marker("slow") is not None
        return 0 if dft and slow else 1 if dft else 2 if slow else 3

    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(scope="session")
def unit_cells(load_system):
    """LiFePO4 (28 atoms) and Li0.75FePO4 (27 atoms, one Fe3+ with its octahedron contracted), built once."""
    from lfpo_al.structures import BuildSpec, build_structure

    system = load_system("lfpo")
    return [build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=0)) for x in (1.0, 0.75)]
