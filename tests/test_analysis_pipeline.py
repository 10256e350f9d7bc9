"""One trajectory through the analysis: programmed flips and Li hops recovered, trust, interfaces."""

import numpy as np
import pytest

from lfpo_al.analysis.pipeline import analyze_trajectory, expected_oxidised
from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.analysis.synthetic import synthetic_trajectory
from lfpo_al.errors import UserError


def found(result):
    flips = sorted(zip(result.flips.frame.tolist(), result.metal[result.flips.column].tolist(), result.flips.sign.tolist()))
    hops = sorted(zip(result.hops.frame.tolist(), result.li[result.hops.column].tolist()))
    return flips, hops


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_programmed_flips_and_hops_recovered_exactly(load_system, seed):
    """Wrapped positions, thermal noise, polaron moves, Li hops and brief Li excursions (not hops)."""
    system = load_system("lfpo")
    traj, truth = synthetic_trajectory(system, (1, 2, 2), n_frames=1200, polaron_moves=5, li_hops=3, excursions=2,
                                       seed=seed, wrap=True)
    result = analyze_trajectory(traj, system, AnalysisSettings(smoothing_fs=0, li_dwell_fs=100), trust_level=None)
    flips, hops = found(result)
    assert flips == sorted(truth.flips)
    assert hops == sorted(truth.hops)
    row = result.row
    assert row["n_fe_flips"] == 10 and row["n_li_hops"] == 3 and row["trusted_fraction"] is None
    assert row["fe_flip_rate_per_fe_per_ps"] == pytest.approx(10 / (16 * 11.99))
    assert row["li_hop_rate_per_li_per_ps"] == pytest.approx(3 / (8 * 11.99))
    assert row["threshold_source"] == "charge balance" and row["valence_resolved"] and row["valence_fit"]["separation"] > 5
    assert row["m3_expected"] == 8 and row["m3_min"] == row["m3_max"] == 8  # charge balance in every frame
    assert row["li_site_residual_ang"] < 0.05


def test_default_smoothing_keeps_events_and_dates_them_within_the_window(load_system):
    system = load_system("lfpo")
    traj, truth = synthetic_trajectory(system, (1, 2, 2), n_frames=1200, polaron_moves=5, li_hops=3, seed=4)
    result = analyze_trajectory(traj, system, AnalysisSettings(), trust_level=None)  # 100 fs = 11 frames
    flips, hops = found(result)
    assert [f[1:] for f in sorted(flips, key=lambda f: f[1:])] == [t[1:] for t in sorted(truth.flips, key=lambda f: f[1:])]
    offsets = [abs(a[0] - b[0]) for a, b in zip(sorted(flips, key=lambda f: f[1:]), sorted(truth.flips, key=lambda f: f[1:]))]
    assert max(offsets) <= 3 and hops == sorted(truth.hops)
    assert set(result.row["fe_flip_count_sensitivity"]) == {"smoothing_x0.5", "smoothing_x2", "core_width_x0.5",
                                                            "core_width_x1.5", "dwell_x0.5", "dwell_x2"}


def test_untrusted_segment_excluded_from_counts_and_time(load_system):
    system = load_system("lfpo")
    traj, truth = synthetic_trajectory(system, (1, 2, 2), n_frames=1000, polaron_moves=3, li_hops=1, seed=5)
    first = truth.flips[0][0]
    deviation = np.full(traj.n_frames, 0.05)
    deviation[first - 20: first + 20] = 0.8  # the first polaron move happens out of the trust region
    traj.deviation = deviation
    settings = AnalysisSettings(smoothing_fs=0, li_dwell_fs=100)
    result = analyze_trajectory(traj, system, settings, trust_level=0.3)
    row = result.row
    assert row["trusted_fraction"] == pytest.approx(960 / 1000)
    assert row["untrusted_segments_ps"] == [[(first - 20) * 0.01, (first + 19) * 0.01]]
    assert row["n_fe_flips_all"] == 6 and row["n_fe_flips"] == 4
    assert row["trusted_duration_ps"] == pytest.approx((999 - 41) * 0.01)
    assert row["fe_flip_rate_per_fe_per_ps"] == pytest.approx(4 / (16 * (999 - 41) * 0.01))
    kept = analyze_trajectory(traj, system, AnalysisSettings(smoothing_fs=0, li_dwell_fs=100, exclude_untrusted=False), 0.3)
    assert kept.row["n_fe_flips"] == 6 and kept.row["trusted_fraction"] == pytest.approx(0.96)


def test_interface_profile_and_rates(load_system):
    system = load_system("lfpo")
    traj, _ = synthetic_trajectory(system, (1, 2, 4), n_frames=800, polaron_moves=4, li_hops=0, seed=6,
                                   li_order="interface_c")
    result = analyze_trajectory(traj, system, AnalysisSettings(smoothing_fs=0, li_dwell_fs=100), trust_level=None)
    inter = result.row["interface"]
    layers = result.profile["layers"]
    assert inter["axis"] == "c" and len(layers) == 8
    assert [layer["label"] for layer in layers].count("mixed") == 2  # the two boundaries cut an M plane each
    assert sum(layer["n_flips"] for layer in layers) == result.row["n_fe_flips"]
    assert inter["interfacial"]["n_m"] + inter["bulk"]["n_m"] == 32
    assert sum(layer["interfacial"] for layer in layers) == 2


def test_expected_oxidised_and_settings_errors(load_system):
    system = load_system("lfpo")
    traj, _ = synthetic_trajectory(system, (1, 2, 2), n_frames=200, polaron_moves=0, li_hops=0, seed=0)
    assert expected_oxidised(traj.symbols, system) == 8
    with pytest.raises(UserError, match="analysis.temperatures has 1 values for 2"):
        AnalysisSettings(trajectories=["a", "b"], temperatures=[600])
    with pytest.raises(UserError, match="analysis.threshold"):
        AnalysisSettings(threshold="median")
    with pytest.raises(UserError, match="analysis.pair_dt_bins_ps"):
        AnalysisSettings(pair_dt_bins_ps=[0, 2, 1])
    assert AnalysisSettings(threshold="2.11").threshold == pytest.approx(2.11)


def test_skip_drops_the_start_but_keeps_absolute_times(load_system):
    system = load_system("lfpo")
    traj, truth = synthetic_trajectory(system, (1, 2, 2), n_frames=1000, polaron_moves=4, li_hops=0, seed=7)
    cut = truth.flips[0][0] + 5  # just after the first polaron move: the next is a dwell (~50 frames) later
    # bookkeeping of the dropped frames, not the dwell: this cell's tiny white noise and the steps of
    # neighbouring moves make its noise correlation time ~290 fs, and the next move comes 55 frames on
    settings = AnalysisSettings(smoothing_fs=0, skip_fs=cut * 10.0, dwell_correlation_times=1.0)
    result = analyze_trajectory(traj, system, settings, trust_level=None)
    later = [f for f in truth.flips if f[0] > cut]
    assert result.row["n_fe_flips"] == len(later) == 6 and result.row["n_frames"] == 1000 - cut
    assert sorted(np.round(result.time_ps(result.flips.frame) * 100).astype(int).tolist()) == sorted(f[0] for f in later)


@pytest.mark.parametrize("name,cutoff", [("lfpo", 4.28), ("lmpo", 4.33)])
def test_auto_lengths_come_from_the_system_config(load_system, name, cutoff):
    """The midpoint of the first two M-M shells (LiFePO4 3.87 and 4.69 A): a new chemistry brings its own."""
    assert AnalysisSettings().for_system(load_system(name)).pair_cutoff_ang == pytest.approx(cutoff)
    assert AnalysisSettings(pair_cutoff_ang="4.1").for_system(load_system(name)).pair_cutoff_ang == 4.1
    with pytest.raises(UserError, match="analysis.pair_cutoff_ang='near' must be auto or a length"):
        AnalysisSettings(pair_cutoff_ang="near")
    with pytest.raises(UserError, match="analysis.min_separation=0 must be a positive number"):
        AnalysisSettings(min_separation=0)
    with pytest.raises(UserError, match="analysis.threshold='valley'"):
        AnalysisSettings(threshold="valley")
