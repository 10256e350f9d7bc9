"""The geometric valence rule on a CHGNet-relaxed Li0.5FePO4 cell (1x2x2, 8 of 16 Li removed).

The reference in tests/data was made with
    python -m lfpo_al build build.output=li05.extxyz   (1x2x2, x=0.5, random, seed 0)
    python scripts/relax_with_chgnet.py li05.extxyz tests/data/li05fepo4_1x2x2_chgnet_relaxed.extxyz
The slow test redoes that relaxation on the half-size cell (1x2x1, 4 of 8 Li removed; 52 atoms relax in
half the time of 104) and holds it to the same windows. CHGNet's own magnetic moments are an independent witness of
which Fe are Fe3+ (|m| ~ 4.4 muB) and which Fe2+ (~ 3.95 muB).
"""

import subprocess
import sys

import ase.io
import numpy as np
import pytest

from conftest import DATA, ROOT, run_cli
from lfpo_al.structures import metal_valences


def check_bimodal_and_charge_balanced(atoms, system):
    bonds, valence = metal_valences(atoms, system)
    fe = np.array(atoms.get_chemical_symbols()) == "Fe"
    half = int(fe.sum()) // 2
    assert np.sum(valence == 3) == half and np.sum(valence == 2) == half  # charge balance at x = 0.5: (1 - x) * N(Fe)
    assert np.all((bonds[valence == 3] > 2.04) & (bonds[valence == 3] < 2.09))
    assert np.all((bonds[valence == 2] > 2.15) & (bonds[valence == 2] < 2.20))
    magnetic = np.where(np.abs(atoms.arrays["chgnet_magmoms"][fe]) > 4.2, 3, 2)
    np.testing.assert_array_equal(valence, magnetic)


def test_relaxed_reference_cell(load_system):
    atoms = ase.io.read(DATA / "li05fepo4_1x2x2_chgnet_relaxed.extxyz")
    assert (np.array(atoms.get_chemical_symbols()) == "Fe").sum() == 16
    check_bimodal_and_charge_balanced(atoms, load_system("lfpo"))


@pytest.mark.slow
def test_relax_built_cell_with_chgnet(load_system, tmp_path):
    built, relaxed = tmp_path / "li05.extxyz", tmp_path / "relaxed.extxyz"
    res = run_cli("build", "build.supercell=[1,2,1]", "build.x=0.5", "build.seed=0", f"build.output={built}")
    assert res.returncode == 0, res.stderr
    subprocess.run([sys.executable, str(ROOT / "scripts/relax_with_chgnet.py"), str(built), str(relaxed)],
                   check=True, timeout=1200)
    atoms = ase.io.read(relaxed)
    assert len(atoms) == 52
    check_bimodal_and_charge_balanced(atoms, load_system("lfpo"))
