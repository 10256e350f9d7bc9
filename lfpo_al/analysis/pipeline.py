"""Analyse one trajectory: valence per M per frame, flips, Li hops, trust, rates, profile, flip pairs."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from lfpo_al.analysis import correlations, profiles, rates
from lfpo_al.analysis.intervals import count_flag, poisson_ci, rate_interval
from lfpo_al.analysis.events import Events, frames_for, site_hops
from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.errors import UserError
from lfpo_al.analysis.sites import li_site_keys, li_site_lattice
from lfpo_al.analysis.trajectory import Trajectory
from lfpo_al.analysis.valence_model import Valence, classify, moment_agreement
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import mean_bond_lengths


@dataclass
class RunResult:
    """Everything the outputs need from one trajectory (arrays for the per-run figures included)."""

    row: dict
    flips: Events  # frames, columns into ``metal``, signs; all detected flips
    flips_counted: np.ndarray
    hops: Events  # columns into ``li``
    hops_counted: np.ndarray
    metal: np.ndarray
    li: np.ndarray
    frame_interval_fs: float
    first_frame: int = 0  # frames dropped from the start (skip_fs): times count from the file's first frame
    bonds: np.ndarray | None = None
    smooth: np.ndarray | None = None
    states: np.ndarray | None = None  # (nM, F) committed valence (valence_model)
    threshold: float = 0.0
    cores: tuple[float, float] = (0.0, 0.0)  # the gap between the basin cores a committed flip crosses
    pairs: tuple[np.ndarray, np.ndarray] | None = None
    pairs_shuffled: tuple[np.ndarray, np.ndarray] | None = None  # mean over flip times shuffled among the flips
    profile: dict | None = None
    extra: dict = field(default_factory=dict)

    def time_ps(self, frames: np.ndarray) -> np.ndarray:
        return (np.asarray(frames) + self.first_frame) * self.frame_interval_fs / 1000.0


# the columns of a run's row that tracking shows as a table, in order
TRACKED_COLUMNS = ("trajectory", "temperature_K", "n_frames", "duration_ps", "valence_resolved", "n_fe_flips",
                   "fe_flips_noise_floor", "n_li_hops", "fe_flip_rate_per_fe_per_ps", "li_hop_rate_per_li_per_ps",
                   "trusted_fraction")

def _columns(array: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """The chosen frames (last axis) of an (atoms, frames) array; no copy when that is all of them."""
    return array if len(frames) == array.shape[-1] else array[:, frames]


def expected_oxidised(symbols: np.ndarray, system: OlivineSystem) -> float | None:
    """Number of M3+ that charge balance requires for this composition (None if it is not integral)."""
    rule = system.valence
    charge = sum(system.formal_charge(s) * int(np.sum(symbols == s)) for s in system.oxidation_states)
    n_metal = int(np.sum(symbols == system.metal))
    n3 = -(charge + rule.reduced * n_metal) / (rule.oxidised - rule.reduced)
    return float(n3) if 0 <= n3 <= n_metal else None


def given_threshold(settings: AnalysisSettings, system: OlivineSystem) -> float | None:
    """d* when the settings fix it (a length, or the system's); None: the run's own charge balance."""
    if isinstance(settings.threshold, float):
        return settings.threshold
    return system.valence.bond_threshold if settings.threshold == "system" else None


SENSITIVITY = (("smoothing_x0.5", {"smoothing_fs": 0.5}), ("smoothing_x2", {"smoothing_fs": 2.0}),
               ("core_width_x0.5", {"core_width": 0.5}), ("core_width_x1.5", {"core_width": 1.5}),
               ("dwell_x0.5", {"dwell_correlation_times": 0.5}), ("dwell_x2", {"dwell_correlation_times": 2.0}))
SENSITIVITY_TOLERANCE = 0.2  # a count that moves more than this (and by more than 2) is detector-made


def _valence(bonds, settings: AnalysisSettings, system: OlivineSystem, dt: float, temperature, n_expected,
             intervals: np.ndarray, scale: dict | None = None, with_floor: bool = True) -> tuple[Valence, int]:
    """The run's valence with settings scaled by ``scale`` (sensitivity), and its counted flips."""
    rule = settings.valence_rule()
    scale = scale or {}
    if scale:  # a sensitivity run is read for its count only: no intervals on its fit
        rule = replace(rule, core_width=rule.core_width * scale.get("core_width", 1.0),
                       dwell_correlation_times=rule.dwell_correlation_times * scale.get("dwell_correlation_times", 1.0),
                       bootstrap_samples=0)
    window = frames_for(settings.smoothing_fs * scale.get("smoothing_fs", 1.0), dt, odd=True)
    valence = classify(bonds, window, dt, temperature, rule, n_expected, given_threshold(settings, system),
                       system.valence.reduced, system.valence.oxidised, with_floor=with_floor)
    return valence, int(rates.counted(valence.flips.frame, intervals).sum())


def _sensitivity(bonds, settings, system, dt, temperature, n_expected, intervals, n_counted: int) -> tuple[dict, str | None]:
    """Counted flips with each detector setting halved or doubled, and a flag when the count moves."""
    counts = {label: _valence(bonds, settings, system, dt, temperature, n_expected, intervals, scale, False)[1]
              for label, scale in SENSITIVITY}
    moved = {k: v for k, v in counts.items() if abs(v - n_counted) > max(SENSITIVITY_TOLERANCE * n_counted, 2)}
    flag = None
    if moved:
        flag = (f"{system.metal} flips: {n_counted} counted, but " + ", ".join(f"{v} with {k}" for k, v in moved.items())
                + f" (> {SENSITIVITY_TOLERANCE:.0%}): the count depends on the detector")
    return counts, flag


def analyze_trajectory(traj: Trajectory, system: OlivineSystem, settings: AnalysisSettings,
                       trust_level: float | None, keep_arrays: bool = True) -> RunResult:
    """Detect events in one trajectory and summarise them as a ``summary.json`` row."""
    settings = settings.for_system(system)
    rule = system.valence
    skip = frames_for(settings.skip_fs, traj.frame_interval_fs) if settings.skip_fs > 0 else 0
    if skip and skip > traj.n_frames - 2:
        raise UserError(f"analysis.skip_fs={settings.skip_fs:g} leaves {max(traj.n_frames - skip, 0)} of the "
                        f"{traj.n_frames} frames of {traj.name} ({traj.duration_ps * 1000:g} fs); lower skip_fs below "
                        "the trajectory's length")
    if skip:
        traj = _drop_head(traj, skip)
    dt = traj.frame_interval_fs
    n_frames = traj.n_frames
    metal, oxygen, li = traj.indices(system.metal), traj.indices(system.oxygen), traj.indices(system.mobile_ion)
    mask = rates.trusted_frames(traj.deviation, trust_level)
    intervals = rates.trusted_intervals(mask if settings.exclude_untrusted else None, n_frames)
    counted_ps = float(intervals.sum()) * dt / 1000.0
    frames_for_hist = np.flatnonzero(mask) if (mask is not None and settings.exclude_untrusted) else np.arange(n_frames)
    if not len(frames_for_hist):  # nothing trusted: diagnostics over all frames (rates are 0 / None anyway)
        frames_for_hist = np.arange(n_frames)

    row: dict = {"trajectory": traj.name, "temperature_K": traj.temperature, "n_frames": int(n_frames),
                 "duration_ps": round(traj.duration_ps, 6)}
    flips, flips_counted, bonds, smooth, states = Events.empty(), np.zeros(0, bool), None, None, None
    threshold, cores = rule.bond_threshold, (rule.bond_threshold, rule.bond_threshold)
    extra: dict = {}
    resolved, withheld = True, []
    if len(metal):
        bonds = mean_bond_lengths(traj.positions, traj.cells, metal, oxygen, dtype=np.float32, metal_major=True)
        n_expected = expected_oxidised(traj.symbols, system)
        valence, n_counted = _valence(bonds, settings, system, dt, traj.temperature, n_expected, intervals)
        window = frames_for(settings.smoothing_fs, dt, odd=True)
        smooth, states, flips, threshold = valence.smooth, valence.states, valence.flips, valence.threshold
        cores = valence.fit.core_edges(settings.core_width)
        flips_counted = rates.counted(flips.frame, intervals)
        resolved = valence.resolved
        n_ox = (_columns(states, frames_for_hist) == rule.oxidised).sum(axis=0)
        floor = valence.noise_floor
        extra.update(
            valence_resolved=resolved, valence_criterion=valence.why,
            valence_fit=valence.fit.as_dict(), threshold_ang=round(float(threshold), 5),
            threshold_source=valence.threshold_source, smoothing_frames=window,
            dwell_frames=valence.dwell_frames, mean_stay_fs=round(valence.mean_stay_fs, 1),
            fe_flips_noise_floor=None if floor is None else round(floor, 2),
            m3_expected=n_expected, m3_mixture=round(valence.fit.weight_ox * len(metal), 3),
            m3_mean=round(float(n_ox.mean()), 4) if len(n_ox) else None,
            m3_min=int(n_ox.min()) if len(n_ox) else None, m3_max=int(n_ox.max()) if len(n_ox) else None,
            moments=moment_agreement(traj.moments(metal), states, rule.oxidised, n_expected, window,
                                     oxidised_larger=system.valence.oxidised_moment_larger),
        )
        if not resolved:
            withheld.append(f"{system.metal} valence not resolved ({valence.why}): flip rate, Arrhenius point and "
                            "flip pairs withheld")
        elif floor is not None and n_counted and floor >= 0.5 * n_counted:
            withheld.append(f"{system.metal} flips: {n_counted} counted, {floor:.1f} from noise alone (the run's own "
                            "basin noise through the same detector)")
        if settings.sensitivity:
            counts, flag = _sensitivity(bonds, settings, system, dt, traj.temperature, n_expected, intervals, n_counted)
            extra["fe_flip_count_sensitivity"] = counts
            if flag:
                withheld.append(flag)
    hops, hops_counted = Events.empty(), np.zeros(0, bool)
    if len(li) and n_frames > 1:
        sites = li_site_lattice(system, traj.cells[0], traj.li_order)
        keys, residual = li_site_keys(traj.positions[:, li], traj.cells, sites)
        hops = site_hops(keys, frames_for(settings.li_dwell_fs, dt) if settings.li_dwell_fs > 0 else 1)
        hops_counted = rates.counted(hops.frame, intervals)
        extra.update(li_sites=int(len(sites)), li_site_residual_ang=round(residual, 4),
                     li_dwell_frames=frames_for(settings.li_dwell_fs, dt) if settings.li_dwell_fs > 0 else 1)

    n_flips, n_hops = int(flips_counted.sum()), int(hops_counted.sum())
    bounds = settings.intervals()
    flip_ci = (rate_interval(flips.frame[flips_counted], intervals, len(metal), dt, bounds)
               if len(metal) and resolved else None)
    hop_ci = rate_interval(hops.frame[hops_counted], intervals, len(li), dt, bounds) if len(li) else None
    flip_bounds, hop_bounds = (None if c is None else c["ci"] for c in (flip_ci, hop_ci))
    flags = withheld + [f for f in (count_flag(f"{system.metal} flips", n_flips, flip_bounds, f"/{system.metal}/ps", bounds),
                         count_flag("Li hops", n_hops, hop_bounds, "/Li/ps", bounds)) if f]
    row.update(
        n_fe_flips=n_flips, n_li_hops=n_hops,
        fe_flip_rate_per_fe_per_ps=rates.rate(n_flips, len(metal), counted_ps) if resolved else None,
        fe_flip_rate_ci=flip_bounds, fe_flip_rate_intervals=flip_ci,
        li_hop_rate_per_li_per_ps=rates.rate(n_hops, len(li), counted_ps),
        li_hop_rate_ci=hop_bounds, li_hop_rate_intervals=hop_ci,
        interval_level=bounds.level, flags=flags,
        trusted_fraction=None if mask is None else round(float(mask.mean()), 6),
        untrusted_segments_ps=rates.untrusted_segments(mask, dt),
        trusted_duration_ps=round(counted_ps, 6), frame_interval_fs=dt, n_fe=int(len(metal)), n_li=int(len(li)),
        n_fe_flips_all=int(len(flips)), n_li_hops_all=int(len(hops)),
        li_order=traj.li_order, family=traj.info.get("family"), skipped_frames=skip, trust_level=trust_level,
        **extra,
    )
    result = RunResult(row=row, flips=flips, flips_counted=flips_counted, hops=hops, hops_counted=hops_counted,
                       metal=metal, li=li, frame_interval_fs=dt, first_frame=skip, threshold=threshold,
                       cores=cores)
    if len(metal) and len(flips) and resolved:
        counted_flips = flips.select(flips_counted)
        dist = correlations.metal_distances(traj.positions[0, metal].astype(float), traj.cells[0])
        r_edges = [0.0, settings.pair_cutoff_ang, np.inf]
        times = result.time_ps(counted_flips.frame)
        result.pairs = correlations.pair_counts(times, counted_flips.column, counted_flips.sign, dist,
                                                settings.pair_dt_bins_ps, r_edges)
        result.pairs_shuffled = correlations.shuffled_pair_counts(times, counted_flips.column, counted_flips.sign, dist,
                                                                  settings.pair_dt_bins_ps, r_edges)
    axis = profiles.interface_axis(traj.li_order)
    if axis is not None and len(metal) and bonds is not None:
        result.profile = _profile(traj, system, settings, axis, metal, states, frames_for_hist, flips, flips_counted, counted_ps)
        row["interface"] = {k: result.profile[k] for k in ("interfacial", "bulk")} | {"axis": "abc"[axis]}
        for part in ("interfacial", "bulk"):
            layer = row["interface"][part]
            if not resolved:
                layer["fe_flip_rate_per_fe_per_ps"] = None
            layer["fe_flip_rate_ci"] = (poisson_ci(layer["n_flips"], layer["n_m"] * counted_ps, bounds.level)
                                        if resolved else None)
            flag = resolved and count_flag(f"{system.metal} flips in the {part} layers", layer["n_flips"], layer["fe_flip_rate_ci"],
                              f"/{system.metal}/ps", bounds)
            if flag:
                row["flags"].append(flag)
    if keep_arrays:
        result.bonds, result.smooth, result.states = bonds, smooth, states
    return result


def _profile(traj, system, settings, axis, metal, states, frames, flips, flips_counted, duration_ps) -> dict:
    rule = system.valence
    stride = max(1, traj.n_frames // 2000)  # the mean position needs no more than ~2000 frames
    frac = traj.positions[::stride, metal].astype(float) @ np.linalg.inv(traj.cells[0])
    angle = 2 * np.pi * frac[..., axis]  # circular mean: an M oscillating across the boundary stays put
    along = (np.arctan2(np.sin(angle).mean(axis=0), np.cos(angle).mean(axis=0)) / (2 * np.pi)) % 1.0
    length = float(np.linalg.norm(traj.cells[:, axis], axis=1).mean())
    if traj.initial_valence is not None and len(traj.initial_valence) == len(traj.symbols):
        initial = traj.initial_valence[metal] == rule.oxidised
    else:
        initial = states[:, 0] == rule.oxidised
    m3_fraction = (_columns(states, frames) == rule.oxidised).mean(axis=1)
    per_m = np.bincount(flips.column[flips_counted], minlength=len(metal)).astype(float)
    return profiles.interface_profile(along, length, initial, m3_fraction, per_m, duration_ps,
                                      settings.layer_tolerance_ang, settings.interface_layers)


def _drop_head(traj: Trajectory, skip: int) -> Trajectory:
    """The trajectory without its first ``skip`` frames (equilibration)."""
    skip = min(skip, max(traj.n_frames - 2, 0))
    return replace(traj, positions=traj.positions[skip:], cells=traj.cells[skip:],
                   deviation=None if traj.deviation is None else traj.deviation[skip:],
                   magmoms=None if traj.magmoms is None else traj.magmoms[skip:])
