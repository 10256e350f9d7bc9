"""The flip analysis on synthetic runs with known truth and basins shaped like the CHGNet teacher's.

Basins: 104-atom Li0.5FePO4, Fe3+ / Fe2+ mean Fe-O bonds centred at 2.085 / 2.180 A, each octahedron
breathing with a 40 fs correlation time and every atom jittered, so that after the 100 fs smoothing
the basins are 0.025-0.029 A wide and 3.3-4.0 widths apart (by Li arrangement), the noise's correlation
time ~85 fs and the histogram's barrier 0.7-1.3 kT: the teacher's basins at 400-600 K (docs/teacher.md).
30 ps per run, 16 Fe.
"""

import numpy as np
import pytest

from lfpo_al.analysis.intervals import IntervalSettings
from lfpo_al.analysis.pipeline import analyze_trajectory
from lfpo_al.analysis.rates import KB_EV
from lfpo_al.analysis.report import arrhenius_section
from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.analysis.synthetic import synthetic_trajectory

TEACHER_LIKE = dict(n_frames=3000, frame_interval_fs=10.0, noise_ang=0.035, breathing_ang=0.035, breathing_time_fs=40.0,
                    bond_ang={2: 2.180, 3: 2.085}, li_hops=0, min_gap_frames=50)
EA_EV, MOVES_AT_1000K = 0.10, 30


def analyse(system, **kwargs):
    traj, truth = synthetic_trajectory(system, **{**TEACHER_LIKE, **kwargs})
    return analyze_trajectory(traj, system, AnalysisSettings(sensitivity=False), trust_level=None, keep_arrays=False).row, truth


@pytest.mark.parametrize("seed", [1, 2, 10])
def test_same_basins_no_hop_reports_no_flips(load_system, seed):
    """Two basins, no valence change in 30 ps: resolved, and at most a few flips counted (the Li
    arrangement of seed 10 leaves its basins 3.3 widths apart: 8 noise flips, 0.017 /Fe/ps). The detector
    this replaced counted ~200 flips (0.4 /Fe/ps) in such a run."""
    row, truth = analyse(load_system("lfpo"), polaron_moves=0, seed=seed)
    assert truth.flips == []
    fit = row["valence_fit"]
    assert 3.0 < fit["separation"] < 4.2 and fit["barrier_kt"] < 1.5, fit  # as shallow as the teacher's
    assert row["valence_resolved"], row["valence_criterion"]
    assert row["n_fe_flips"] <= 10, row["n_fe_flips"]  # of 16 Fe over 30 ps
    assert row["fe_flip_rate_per_fe_per_ps"] <= 0.021


def test_one_broad_basin_is_not_resolved_and_its_rate_is_withheld(load_system):
    """Every Fe in one wide basin: no two states to flip between, so no rate, no Arrhenius point."""
    system = load_system("lfpo")
    row, _ = analyse(system, polaron_moves=10, seed=3, bond_ang={2: 2.13, 3: 2.13}, breathing_ang=0.06)
    assert row["valence_resolved"] is False and row["valence_fit"]["separation"] < 3.0, row["valence_criterion"]
    assert row["fe_flip_rate_per_fe_per_ps"] is None and row["fe_flip_rate_ci"] is None
    assert any("not resolved" in flag for flag in row["flags"])
    other = dict(row, temperature_K=900.0, trajectory="other")
    fits = arrhenius_section([row, other], IntervalSettings())
    assert fits["fe_flip"] is None and fits["fe_flip_withheld"] == [row["trajectory"], "other"]


def test_programmed_hops_at_three_temperatures_recovered_with_their_arrhenius_energy(load_system):
    """Polaron moves at Arrhenius rates (Ea 0.10 eV) at 500, 700 and 1000 K in teacher-like basins:
    each count within 20 %, Ea within 0.03 eV of the truth."""
    system = load_system("lfpo")
    rows, true_counts = [], []
    for k, temperature in enumerate((500.0, 700.0, 1000.0)):
        moves = int(round(MOVES_AT_1000K * np.exp(-EA_EV / KB_EV * (1 / temperature - 1 / 1000.0))))
        rng = np.random.default_rng(10 + k)
        slots = np.arange(100, 2900, 50)
        frames = np.sort(rng.choice(slots, size=moves, replace=False)).tolist()
        row, truth = analyse(system, move_frames=frames, seed=10 + k, temperature=temperature)
        assert len(truth.flips) == 2 * moves
        assert row["valence_resolved"], row["valence_criterion"]
        assert abs(row["n_fe_flips"] - len(truth.flips)) <= 0.2 * len(truth.flips), (temperature, row["n_fe_flips"], len(truth.flips))
        rows.append(row)
        true_counts.append(len(truth.flips))
    fit = arrhenius_section(rows, IntervalSettings())["fe_flip"]
    assert fit["n_temperatures"] == 3
    assert abs(fit["ea_ev"] - EA_EV) <= 0.03, fit
    assert fit["ea_ci_ev"][0] <= EA_EV <= fit["ea_ci_ev"][1], fit
