"""Rate intervals and thin-statistics flags against known answers."""

import numpy as np
import pytest

from lfpo_al.analysis import rates
from lfpo_al.analysis.intervals import (IntervalSettings, block_bootstrap_interval, count_flag, fit_intervals,
                                        poisson_interval, rate_interval, ratio_interval)
from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.errors import UserError

BOUNDS = IntervalSettings()


def test_poisson_interval_matches_the_tabulated_garwood_values():
    assert poisson_interval(0, 1.0) == pytest.approx((0.0, 3.6889), abs=1e-4)
    assert poisson_interval(10, 2.0) == pytest.approx((4.7954 / 2, 18.3904 / 2), abs=1e-4)
    lo, hi = poisson_interval(10_000, 100.0)  # large counts: n +- 1.96 sqrt(n)
    assert lo == pytest.approx(100 - 1.96, abs=0.02) and hi == pytest.approx(100 + 1.96, abs=0.02)


def test_bootstrap_sees_bursts_that_poisson_does_not():
    n_frames, dt, n_atoms = 10_000, 10.0, 8  # 100 ps, 200 blocks of 500 fs
    counted = np.ones(n_frames, dtype=bool)
    counted[0] = False
    even = np.linspace(5, n_frames - 5, 400).astype(int)
    bursts = np.repeat(np.arange(100, n_frames, 1000), 40)  # the same 400 events in 10 bursts
    boot_even = block_bootstrap_interval(even, counted, n_atoms, dt, BOUNDS)
    boot_burst = block_bootstrap_interval(bursts, counted, n_atoms, dt, BOUNDS)
    poisson = poisson_interval(400, counted.sum() * dt / 1000 * n_atoms)
    rate = 400 / (counted.sum() * dt / 1000 * n_atoms)
    assert boot_even[0] <= rate <= boot_even[1] and boot_burst[0] <= rate <= boot_burst[1]
    assert boot_even[1] - boot_even[0] < poisson[1] - poisson[0]  # evenly spaced: under-dispersed
    assert boot_burst[1] - boot_burst[0] > 2 * (poisson[1] - poisson[0])  # bursts: over-dispersed
    united = rate_interval(bursts, counted, n_atoms, dt, BOUNDS)
    assert united["ci"][0] <= min(united["poisson"][0], united["bootstrap"][0]) + 1e-12
    assert united["ci"][1] >= max(united["poisson"][1], united["bootstrap"][1]) - 1e-12
    assert block_bootstrap_interval(even, counted[:60], n_atoms, dt, BOUNDS) is None  # one block only


def test_few_events_are_flagged_and_no_events_give_an_upper_bound():
    counted = np.ones(2000, dtype=bool)
    interval = rate_interval(np.array([10, 900, 1500]), counted, 4, 10.0, BOUNDS)
    flag = count_flag("Fe flips", 3, interval["ci"], "/Fe/ps", BOUNDS)
    assert "3 events (< 10)" in flag and f"{interval['ci'][1]:.3g}" in flag
    none = rate_interval(np.array([], dtype=int), counted, 4, 10.0, BOUNDS)
    assert none["ci"][0] == 0 and none["ci"][1] == pytest.approx(3.6889 / (4 * 20.0), rel=1e-3)
    assert "no events, rate < " in count_flag("Li hops", 0, none["ci"], "/Li/ps", BOUNDS)
    assert count_flag("Fe flips", 10, interval["ci"], "/Fe/ps", BOUNDS) is None
    assert rate_interval(np.array([]), np.zeros(10, dtype=bool), 4, 10.0, BOUNDS) is None


def test_arrhenius_intervals_cover_the_truth_and_flag_two_temperatures():
    nu0, ea, exposure = 50.0, 0.2, 400.0
    temps = np.array([400.0, 600.0, 800.0, 1000.0])
    counts = np.round(nu0 * np.exp(-ea / (rates.KB_EV * temps)) * exposure)
    fit = fit_intervals(rates.arrhenius_fit(temps, counts, [exposure] * 4), BOUNDS)
    assert fit["ea_ci_ev"][0] < ea < fit["ea_ci_ev"][1] and fit["nu0_ci_per_ps"][0] < nu0 < fit["nu0_ci_per_ps"][1]
    assert fit["flags"] == [] and len(fit["rates_ci_per_ps"]) == 4
    for (lo, hi), k in zip(fit["rates_ci_per_ps"], fit["rates_per_ps"]):
        assert lo < k < hi
    two = fit_intervals(rates.arrhenius_fit([600.0, 800.0, 300.0], [4, 30, 0], [exposure] * 3), BOUNDS)
    assert any("2 temperatures (< 3)" in f for f in two["flags"])
    assert any(f.startswith("600 K: 4 events") for f in two["flags"]) and "300 K: no events, left out of the fit" in two["flags"]


def test_ratio_interval_of_two_counts():
    lo, hi = ratio_interval(100, 100)
    assert lo < 1 < hi and lo == pytest.approx(1 / hi, rel=0.02)
    assert ratio_interval(0, 5)[0] == 0 and ratio_interval(5, 0)[1] is None and ratio_interval(0, 0) == [None, None]


@pytest.mark.parametrize("key,value", [("interval_level", 1.5), ("bootstrap_samples", 10), ("min_temperatures", 1)])
def test_bad_interval_settings_are_refused(key, value):
    with pytest.raises(UserError, match=f"analysis.{key}="):
        AnalysisSettings(**{key: value})
