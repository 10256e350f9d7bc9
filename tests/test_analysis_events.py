"""Event primitives of the analysis: smoothing, hysteresis, dwell, flips, valley, Li sites, pairs, Arrhenius."""

import numpy as np
import pytest

from lfpo_al.analysis import correlations, rates
from lfpo_al.analysis.events import drop_short_runs, hysteresis_states, last_crossing, running_mean, site_hops, transitions
from lfpo_al.analysis.valence_model import ValenceRule, classify, committed_flips, histogram, mixture_em
from lfpo_al.analysis.sites import li_site_keys, li_site_lattice, unwrap_fractional
from lfpo_al.structures import BuildSpec, build_structure, mean_bond_lengths


def test_running_mean_matches_direct_average_with_shrinking_ends():
    rng = np.random.default_rng(0)
    x = (2.1 + 0.05 * rng.standard_normal((3, 200))).astype(np.float32)
    for window in (1, 4, 5, 21, 199, 400):
        w = min(window + 1 - window % 2, 199)
        ref = np.array([[x[a, max(0, t - w // 2): t + w // 2 + 1].astype(float).mean() for t in range(200)] for a in range(3)])
        np.testing.assert_allclose(running_mean(x, window), ref, atol=2e-6)


def test_hysteresis_holds_state_inside_the_band():
    signal = np.array([[2.17, 2.11, 2.09, 2.08, 2.06, 2.09, 2.11, 2.12, 2.15, 2.09]])
    states = hysteresis_states(signal, 2.10, 0.025)
    np.testing.assert_array_equal(states[0], [2, 2, 2, 2, 3, 3, 3, 3, 2, 2])
    # frame 0 inside the band takes the side of the threshold it is on
    assert hysteresis_states(np.array([[2.09, 2.09]]), 2.10, 0.025)[0, 0] == 3


def test_drop_short_runs_merges_excursions_and_ignores_an_unfinished_tail():
    states = np.array([[1, 1, 1, 2, 1, 1, 1, 3, 3, 3, 3, 3, 2, 2],
                       [5, 6, 6, 6, 6, 7, 6, 6, 6, 6, 6, 6, 6, 6],
                       [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2]])
    out = drop_short_runs(states, 3)
    np.testing.assert_array_equal(out[0], [1] * 7 + [3] * 7)
    np.testing.assert_array_equal(out[1], [6] * 14)  # short first run takes the first persistent one
    np.testing.assert_array_equal(out[2], [1] * 14)  # never persistent: keeps its first value
    assert drop_short_runs(states, 1) is states


def test_flips_recovered_exactly_with_signs_and_crossing_dates():
    """Steps between M2+ (2.17) and M3+ (2.06) levels, noise, smoothing: frames, columns, signs exact."""
    rng = np.random.default_rng(1)
    n_frames, levels = 600, {2: 2.17, 3: 2.06}
    programme = {0: [(100, 3), (350, 2)], 1: [], 2: [(40, 2), (41 + 200, 3), (520, 2)], 3: [(300, 3)]}
    start = {0: 2, 1: 3, 2: 3, 3: 2}
    bonds = np.empty((4, n_frames))
    truth = []
    for col, steps in programme.items():
        state, prev = start[col], 0
        for frame, new in steps:
            bonds[col, prev:frame] = levels[state]
            truth.append((frame, col, 1 if new == 3 else -1))
            state, prev = new, frame
        bonds[col, prev:] = levels[state]
    bonds += 0.004 * rng.standard_normal(bonds.shape)
    # the programme holds 2.45 M3+ on average, not a charge-balanced count: d* from the mixture's crossing
    valence = classify(bonds.astype(np.float32), 9, 10.0, 600.0, ValenceRule(), n_oxidised=None)
    events, states = valence.flips, valence.states
    assert sorted(zip(events.frame.tolist(), events.column.tolist(), events.sign.tolist())) == sorted(truth)
    assert states.dtype == np.int8 and states[1].tolist() == [3] * n_frames and valence.resolved
    # a transient visit to the other core is no flip unless it stays for the dwell
    blip = bonds.copy()
    blip[1, 400:405] = 2.17
    ev, _ = committed_flips(blip, valence.fit, ValenceRule(), 1, 2, 3)
    assert sum(ev.column == 1) == 2
    ev, _ = committed_flips(blip, valence.fit, ValenceRule(), 10, 2, 3)
    assert sum(ev.column == 1) == 0


def test_last_crossing_and_transitions_order():
    signal = np.array([[2.2, 2.2, 2.12, 2.09, 2.08, 2.04, 2.04], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.2]])
    states = hysteresis_states(signal, 2.10, 0.05)
    events = transitions(states)
    assert events.frame.tolist() == [5, 6] and events.column.tolist() == [0, 1] and events.sign.tolist() == [1, -1]
    assert last_crossing(signal, 2.10, events).tolist() == [3, 6]


def test_two_state_fit_recovers_known_basins_and_finds_one_basin_unseparated():
    rng = np.random.default_rng(2)
    edges = np.linspace(1.9, 2.35, 601)
    centres = 0.5 * (edges[1:] + edges[:-1])
    bimodal = np.concatenate([rng.normal(2.085, 0.025, 6000), rng.normal(2.18, 0.03, 4000)])
    mu0, mu1, s0, s1, w0 = mixture_em(centres, histogram(bimodal, edges), split=2.13)
    assert (mu0, mu1, s0, s1) == pytest.approx((2.085, 2.18, 0.025, 0.03), abs=0.003) and w0 == pytest.approx(0.6, abs=0.01)
    mu0, mu1, s0, s1, _ = mixture_em(centres, histogram(rng.normal(2.13, 0.04, 10000), edges), split=2.13)
    assert (mu1 - mu0) / np.sqrt(0.5 * (s0 ** 2 + s1 ** 2)) < 2.5  # one Gaussian split in two: not separate


def test_site_hops_need_persistence():
    keys = np.array([[0] * 30 + [1] * 3 + [0] * 30 + [2] * 40,  # excursion, then a real hop at 63
                     [5] * 50 + [6, 5, 6, 5] + [6] * 49])  # rattling at the saddle, then a hop at 54
    hops = site_hops(keys, 10)
    assert sorted(zip(hops.frame.tolist(), hops.column.tolist())) == [(54, 1), (63, 0)]


def test_li_sites_unwrapped_across_the_boundary(load_system):
    """A Li that walks once round a 4-site channel (through the periodic boundary) makes four hops, wrapped
    positions or not: sites are identified with their periodic image."""
    system = load_system("lfpo")
    atoms = build_structure(system, BuildSpec(supercell=[1, 2, 1], x=1.0))
    cell = atoms.cell.array
    sites = li_site_lattice(system, cell)
    li = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == "Li")
    assert len(sites) == 8
    n, spacing = 150, 0.25 * cell[1]  # 3.0 A between sites along b
    positions = np.repeat(atoms.positions[li][None], n, axis=0)
    positions[:, 0] -= np.outer(np.repeat(np.arange(5), 30), spacing)  # -b: crosses the boundary at once
    frac = positions @ np.linalg.inv(cell)
    wrapped = (frac % 1.0) @ cell
    for pos in (positions, wrapped):
        keys, residual = li_site_keys(pos, np.repeat(cell[None], n, axis=0), sites)
        hops = site_hops(keys, 5)
        assert residual < 1e-6
        assert hops.frame.tolist() == [30, 60, 90, 120] and set(hops.column.tolist()) == {0}
    np.testing.assert_allclose(unwrap_fractional(wrapped @ np.linalg.inv(cell)), frac, atol=1e-9)


def test_interface_site_lattice_matches_the_builder(load_system):
    system = load_system("lfpo")
    atoms = build_structure(system, BuildSpec(supercell=[1, 2, 4], x=0.5, li_order="interface_c"))
    li = np.flatnonzero(np.array(atoms.get_chemical_symbols()) == "Li")
    sites = li_site_lattice(system, atoms.cell.array, "interface_c")
    assert len(sites) == 2 * len(li)
    keys, residual = li_site_keys(atoms.positions[li][None], atoms.cell.array[None], sites)
    assert residual < 1e-6 and len(np.unique(keys)) == len(li)


def test_pair_counts_match_brute_force():
    rng = np.random.default_rng(3)
    n_m, n_ev = 12, 300
    pos = rng.uniform(0, 12, (n_m, 3))
    cell = np.eye(3) * 12
    dist = correlations.metal_distances(pos, cell)
    times = np.sort(rng.uniform(0, 20, n_ev))
    cols, signs = rng.integers(0, n_m, n_ev), rng.choice([-1, 1], n_ev)
    dt_edges, r_edges = [0.0, 0.1, 0.5, 2.0, 10.0], [0.0, 4.0, np.inf]
    opp, same = correlations.pair_counts(times, cols, signs, dist, dt_edges, r_edges)
    ref_opp, ref_same = np.zeros_like(opp), np.zeros_like(same)
    for i in range(n_ev):
        for j in range(i + 1, n_ev):
            if cols[i] == cols[j]:
                continue
            a = np.searchsorted(dt_edges, abs(times[j] - times[i]), side="right") - 1
            b = np.searchsorted(r_edges, dist[cols[i], cols[j]], side="right") - 1
            if a < len(dt_edges) - 1:
                (ref_opp if signs[i] != signs[j] else ref_same)[a, b] += 1
    np.testing.assert_array_equal(opp, ref_opp)
    np.testing.assert_array_equal(same, ref_same)
    correlations.MAX_PAIRS_PER_BLOCK, saved = 50, correlations.MAX_PAIRS_PER_BLOCK
    try:
        np.testing.assert_array_equal(correlations.pair_counts(times, cols, signs, dist, dt_edges, r_edges)[0], ref_opp)
    finally:
        correlations.MAX_PAIRS_PER_BLOCK = saved


def test_arrhenius_recovers_prefactor_and_barrier():
    nu0, ea = 13.9, 0.12
    temps = np.array([300.0, 500.0, 700.0, 1000.0])
    exposure = np.full(4, 1e7)
    counts = np.rint(nu0 * np.exp(-ea / (rates.KB_EV * temps)) * exposure)
    fit = rates.arrhenius_fit(temps, counts, exposure)
    assert fit["nu0_per_ps"] == pytest.approx(nu0, rel=1e-3) and fit["ea_ev"] == pytest.approx(ea, abs=1e-4)
    # Poisson counts: the truth lies within the quoted errors
    rng = np.random.default_rng(4)
    exposure = np.full(4, 2000.0)
    fit = rates.arrhenius_fit(temps, rng.poisson(nu0 * np.exp(-ea / (rates.KB_EV * temps)) * exposure), exposure)
    assert abs(fit["ea_ev"] - ea) < 4 * fit["ea_err_ev"] and abs(np.log(fit["nu0_per_ps"] / nu0)) < 4 * fit["ln_nu0_err"]
    assert rates.arrhenius_fit([300.0, 600.0], [0, 5], [10.0, 10.0]) is None  # one usable temperature
    pooled = rates.pool_by_temperature([(600.0, 3, 10.0), (600.0, 5, 30.0), (800.0, 1, 5.0)])
    assert pooled == [(600.0, 8, 40.0), (800.0, 1, 5.0)]


def test_trusted_intervals():
    mask = rates.trusted_frames(np.array([0.1, 0.1, 0.5, 0.1, 0.1, np.nan]), 0.3)
    assert mask.tolist() == [True, True, False, True, True, False]
    assert rates.trusted_intervals(mask, 6).tolist() == [False, True, False, False, True, False]
    assert rates.trusted_frames(None, 0.3) is None


def test_stack_bonds_float32_metal_major_and_triclinic(load_system):
    """The fast stack paths agree with the exact single-frame search (varying and skewed cells)."""
    system = load_system("lfpo")
    atoms = build_structure(system, BuildSpec(supercell=[1, 2, 2], x=0.5, seed=3))
    sym = np.array(atoms.get_chemical_symbols())
    metal, oxygen = np.flatnonzero(sym == "Fe"), np.flatnonzero(sym == "O")
    rng = np.random.default_rng(5)
    skew = np.array([[1, 0, 0], [0.3, 1, 0], [0.1, 0.2, 1]]) @ atoms.cell.array
    for base in (atoms.cell.array, skew):
        cells = np.array([np.diag(1 + 0.01 * rng.standard_normal(3)) @ base for _ in range(9)])
        frac = atoms.cell.scaled_positions(atoms.positions)[None] + 0.003 * rng.standard_normal((9, len(atoms), 3))
        positions = np.einsum("fni,fij->fnj", frac % 1.0, cells)
        ref = np.array([mean_bond_lengths(positions[f], cells[f], metal, oxygen) for f in range(9)])
        fast = mean_bond_lengths(positions.astype(np.float32), cells, metal, oxygen, dtype=np.float32, metal_major=True)
        assert fast.shape == (len(metal), 9) and fast.dtype == np.float32
        np.testing.assert_allclose(fast.T, ref, atol=2e-5)
        np.testing.assert_allclose(mean_bond_lengths(positions, cells, metal, oxygen, n_candidates=9), ref, atol=1e-10)
        np.testing.assert_allclose(mean_bond_lengths(positions, cells[0], metal, oxygen, chunk=4)[0], ref[0], atol=1e-10)
