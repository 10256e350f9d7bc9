"""The analysis on a short real MD: CHGNet + ASE Langevin of Li0.5FePO4 (1x2x2, 16 Fe, 8 Li removed).

The cell is the repository's reference (``tests/data``: built by ``lfpo_al.structures``, relaxed with
CHGNet); its 0.3 ps run is stored beside it (``tests/chgnet_md.py``) and checked against a fresh run of its
first steps. Instantaneous per-Fe mean Fe-O bonds at 600 K overlap between the two valences (2.00-2.26 A),
so the checks are on what the analysis actually classifies -- time-averaged and smoothed bonds -- and
the two-state fit of each run is reported rather than assumed. CHGNet's own magnetic moments are the
independent witness of which Fe is Fe3+.
"""

import ase.io
import numpy as np
import pytest

from chgnet_md import N_STEPS, START, TEMPERATURE, TIMESTEP_FS, load_stored, run_chgnet_md
from lfpo_al.analysis.pipeline import analyze_trajectory
from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.analysis.trajectory import Trajectory

FRESH_STEPS = 8


@pytest.fixture(scope="module")
def chgnet_md():
    """The stored CHGNet run (``tests/chgnet_md.py``), as the analysis reads a trajectory."""
    stored = load_stored()
    atoms = ase.io.read(START)
    positions = stored["positions"]
    assert positions.shape == (N_STEPS + 2, len(atoms), 3) and stored["magmoms"].shape == (N_STEPS + 1, len(atoms))
    traj = Trajectory(name="chgnet-600K", symbols=np.array(atoms.get_chemical_symbols()), positions=positions,
                      cells=np.repeat(stored["cell"][None], len(positions), axis=0), frame_interval_fs=TIMESTEP_FS,
                      temperature=TEMPERATURE, info={"li_order": "random"},
                      initial_valence=atoms.arrays.get("valence"),
                      magmoms=np.concatenate([stored["magmoms"][:1], stored["magmoms"]]))  # the start is step 0
    return traj, stored["magmoms"]


def test_stored_md_is_what_chgnet_runs_now():
    """The first steps rerun with CHGNet from the same start and seed land where the stored run has them:
    the analysis below reads CHGNet's own dynamics, not a file that drifted from it."""
    stored, fresh = load_stored(), run_chgnet_md(FRESH_STEPS)
    moved = np.abs(fresh["positions"][-1] - fresh["positions"][0]).max()
    assert moved > 0.01  # the atoms move: the comparison below is not of the start with itself
    np.testing.assert_allclose(fresh["positions"], stored["positions"][:FRESH_STEPS + 2], atol=1e-3)
    np.testing.assert_allclose(fresh["magmoms"], stored["magmoms"][:FRESH_STEPS + 1], atol=1e-3)
    np.testing.assert_allclose(fresh["cell"], stored["cell"], atol=1e-6)


def test_chgnet_md_valence_model_and_moments(chgnet_md, load_system):
    """Measured (0.3 ps, 600 K, 16 Fe): the two-state fit, d* from charge balance, the committed Fe3+
    count per frame near the 8 charge balance requires, and the bond valence naming the same Fe3+ as
    CHGNet's own smoothed magnetic moments (the larger |m|) for most Fe-frames."""
    traj, _ = chgnet_md
    system = load_system("lfpo")
    result = analyze_trajectory(traj, system, AnalysisSettings(smoothing_fs=100), trust_level=None)
    row = result.row
    report = {k: row.get(k) for k in ("valence_fit", "valence_resolved", "valence_criterion", "threshold_ang",
                                      "threshold_source", "m3_mixture", "m3_mean", "m3_min", "m3_max", "n_fe_flips",
                                      "fe_flips_noise_floor", "moments")}
    print("\nCHGNet MD analysis report:", report)
    assert row["m3_expected"] == 8 and row["threshold_source"] == "charge balance"  # (1 - x) * 16
    assert 2.05 < row["valence_fit"]["centre_ox"] < 2.11 < 2.15 < row["valence_fit"]["centre_red"] < 2.21, report
    assert abs(row["m3_mean"] - 8) <= 1.0, report  # committed Fe3+ count per frame
    assert row["moments"]["agreement"] >= 0.85, report  # geometry and CHGNet's moments name the same Fe3+
    # instantaneous bonds overlap (2.00-2.26 A at 600 K): the valence is read from smoothed ones
    assert result.bonds.max() - result.bonds.min() > 0.15
