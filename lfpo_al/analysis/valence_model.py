"""Two-state valence of every metal from its smoothed mean M-O bond, calibrated on the run itself.

A bond threshold taken from the config, or a histogram valley that falls back to one, counts thermal noise
as polaron flips whenever the two valence basins overlap. Here the run's own signal decides:

- **Fit.** A two-component Gaussian mixture of the smoothed bonds (all metals, all frames) gives the two
  basins: centres, widths, weights. Separation ``D = (mu_red - mu_ox) / sigma``, sigma the RMS of the two
  widths; barrier ``dF = -kT ln(valley / smaller peak)`` of the histogram. Intervals come from a bootstrap
  over time blocks two correlation times long (all metals together): effectively independent samples.
- **Threshold.** ``d*`` from charge balance: the quantile of the smoothed bonds that leaves, on average,
  the number of oxidised metals the composition requires below it (the midpoint of the two centres where
  the composition does not fix it). Cross-checked against the per-atom magnetic moments where the frames carry them.
- **Committed flips.** A metal's state changes only when its signal goes from one basin core
  (``mu -/+ core_width * sigma``) to the other and stays there for ``dwell`` = ``dwell_correlation_times``
  x the correlation time of the within-basin noise (where the autocorrelation of the smoothed signal,
  taken about the metal's own mean in its state and high-passed at 2 ps, falls below 1/e). Shorter
  visits are merged away.
- **Resolved.** The valence is resolved only when the basins are separate (``D >= min_separation``) and
  persistent: the mean stay between core-to-core changes lasts ``min_persistence`` correlation times or
  more. Otherwise rates built on it are withheld by the caller.
- **Noise floor.** The same detector on the run's own within-basin noise (phase-randomised, so its
  spectrum and width are kept) with every metal held in its first basin: the flips noise alone makes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from lfpo_al.analysis.events import Events, drop_short_runs, hysteresis_states, last_crossing, running_mean, transitions
from lfpo_al.analysis.rates import KB_EV


@dataclass(frozen=True)
class ValenceRule:
    """The detector's settings in physical units (``analysis.*`` of the same names)."""

    core_width: float = 0.5            # basin core: centre -/+ this many basin widths
    dwell_correlation_times: float = 5.0
    min_dwell_fs: float = 0.0          # floor of the dwell
    min_separation: float = 3.0        # D below this: the two states are not separate
    min_persistence: float = 10.0      # mean stay in correlation times below this: not persistent
    noise_surrogates: int = 4
    bootstrap_samples: int = 200
    seed: int = 0


@dataclass
class TwoStateFit:
    """Basins of the smoothed bonds (A), their separation and barrier, and the noise's correlation time."""

    centre_ox: float
    centre_red: float
    width_ox: float
    width_red: float
    weight_ox: float
    separation: float
    barrier_kt: float | None
    barrier_ev: float | None
    correlation_time_fs: float
    threshold: float = 0.0
    noise_width: float = 0.0
    separation_ci: list[float] | None = None
    barrier_ev_ci: list[float] | None = None
    n_independent: int = 0

    def as_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def core_edges(self, core_width: float) -> tuple[float, float]:
        """(upper edge of the oxidised core, lower edge of the reduced core).

        A core reaches ``core_width`` basin widths from its centre, and at least to ``core_width`` noise
        widths from d*: a metal whose lasting offset puts it off its basin centre still enters its core.
        Neither edge crosses d*."""
        low = self.centre_ox + core_width * self.width_ox
        high = self.centre_red - core_width * self.width_red
        if self.noise_width > 0:
            low = max(low, self.threshold - core_width * self.noise_width)
            high = min(high, self.threshold + core_width * self.noise_width)
        return min(low, self.threshold), max(high, self.threshold)


FIT_BINS = 600  # the fit reads a histogram this fine: bins far narrower than a basin, fits in microseconds


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.histogram(np.asarray(values, dtype=np.float64).ravel(), bins=edges)[0].astype(np.float64)


def mixture_em(centres: np.ndarray, counts: np.ndarray, split: float, iterations: int = 300,
               start: tuple | None = None) -> tuple:
    """Two-Gaussian maximum-likelihood fit (EM) of binned 1-D values: (mu_lo, mu_hi, s_lo, s_hi, w_lo).

    Starts from the two sides of ``split`` (or ``start``); widths are floored at two bin widths so a
    component cannot collapse onto a bin."""
    x, n = np.asarray(centres, float), np.asarray(counts, float)
    floor = 2 * float(x[1] - x[0]) if len(x) > 1 else 1e-6
    if start is None:
        lo, hi = x < split, x >= split
        if n[lo].sum() < 2 or n[hi].sum() < 2:
            lo = np.cumsum(n) <= 0.5 * n.sum()
            hi = ~lo
        stats = [(np.average(x[m], weights=n[m]), np.sqrt(np.average((x[m] - np.average(x[m], weights=n[m])) ** 2,
                                                                     weights=n[m]))) for m in (lo, hi)]
        mu = np.array([stats[0][0], stats[1][0]])
        sd = np.maximum([stats[0][1], stats[1][1]], floor)
        weights = np.array([n[lo].sum(), n[hi].sum()]) / n.sum()
    else:
        mu, sd = np.array(start[:2], float), np.array(start[2:4], float)
        weights = np.array([start[4], 1 - start[4]], float)
    previous = -np.inf
    for _ in range(iterations):
        log_p = -0.5 * ((x[:, None] - mu) / sd) ** 2 - np.log(sd) + np.log(np.maximum(weights, 1e-12))
        top = log_p.max(axis=1, keepdims=True)
        p = np.exp(log_p - top)
        total = p.sum(axis=1, keepdims=True)
        likelihood = float((n * (np.log(total[:, 0]) + top[:, 0])).sum())
        resp = p / total * n[:, None]
        n_k = resp.sum(axis=0) + 1e-12
        mu = (resp * x[:, None]).sum(axis=0) / n_k
        sd = np.maximum(np.sqrt((resp * (x[:, None] - mu) ** 2).sum(axis=0) / n_k), floor)
        weights = n_k / n_k.sum()
        if likelihood - previous < 1e-10 * abs(likelihood):
            break
        previous = likelihood
    order = np.argsort(mu)
    mu, sd, weights = mu[order], sd[order], weights[order]
    return float(mu[0]), float(mu[1]), float(sd[0]), float(sd[1]), float(weights[0])


def barrier(centres: np.ndarray, counts: np.ndarray, mu_lo: float, mu_hi: float, width: float) -> float | None:
    """-ln(valley / smaller peak) of the histogram (smoothed over width/3) between the two centres; 0
    without a dip."""
    x = np.asarray(centres, float)
    if not mu_hi > mu_lo or width <= 0 or len(x) < 4:
        return None
    k = max(1, int(round(width / 3 / (x[1] - x[0]))))
    smooth = np.convolve(counts, np.ones(k) / k, mode="same")
    i_lo, i_hi = np.searchsorted(x, [mu_lo, mu_hi])
    i_hi = min(i_hi, len(x) - 1)
    if i_hi - i_lo < 2:
        return 0.0
    peak = min(smooth[max(i_lo - k, 0):i_lo + k + 1].max(), smooth[max(i_hi - k, 0):i_hi + k + 1].max())
    valley = smooth[i_lo:i_hi + 1].min()
    if peak <= 0:
        return None
    return float(max(0.0, -math.log(max(valley, 0.5 / k) / peak)))


def correlation_time_frames(residual: np.ndarray) -> float:
    """Correlation time (frames) of (rows, frames) residuals: the lag at which their mean autocorrelation
    first falls below 1/e (an Ornstein-Uhlenbeck process's own time; slow offsets left in the residual
    lift the tail, not this crossing)."""
    r = np.asarray(residual, dtype=np.float64)
    r = r - r.mean(axis=1, keepdims=True)
    n = r.shape[1]
    if n < 4 or not np.any(r):
        return 1.0
    spectrum = np.fft.rfft(r, 2 * n, axis=1)
    acf = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, :n].sum(axis=0)
    acf = acf / np.arange(n, 0, -1)
    acf = acf / acf[0]
    below = np.flatnonzero(acf < math.exp(-1))
    if not len(below):
        return float(n)
    k = int(below[0])
    frac = (acf[k - 1] - math.exp(-1)) / (acf[k - 1] - acf[k]) if acf[k - 1] != acf[k] else 0.0
    return float(max(1.0, k - 1 + frac))


def own_centres(smooth: np.ndarray, states: np.ndarray, oxidised: int) -> np.ndarray:
    """Per metal and frame, the metal's own mean signal over the frames it spends in its current state:
    what the noise is measured about (a metal's lasting offset from the basin centre is not noise)."""
    ox = states == oxidised
    n_ox, n_red = ox.sum(axis=1), (~ox).sum(axis=1)
    mean_ox = np.where(ox, smooth, 0).sum(axis=1) / np.maximum(n_ox, 1)
    mean_red = np.where(~ox, smooth, 0).sum(axis=1) / np.maximum(n_red, 1)
    return np.where(ox, mean_ox[:, None], mean_red[:, None])


HIGH_PASS_FS = 2000.0  # slower changes (a neighbour's flip shifting a bond for good) are not thermal noise


def noise_of(smooth: np.ndarray, states: np.ndarray, oxidised: int, dt_fs: float) -> np.ndarray:
    """The signal about each metal's own state mean, with changes slower than ``HIGH_PASS_FS`` removed."""
    residual = smooth - own_centres(smooth, states, oxidised)
    return residual - running_mean(residual, int(math.ceil(HIGH_PASS_FS / dt_fs)) | 1)


def core_states(smooth: np.ndarray, low_edge: float, high_edge: float, dwell_frames: int,
                reduced: int, oxidised: int) -> np.ndarray:
    """State per metal and frame: the last basin core visited (before the first visit: the side of the
    middle between the cores), then stays shorter than ``dwell_frames`` merged into their surroundings."""
    middle, half = 0.5 * (low_edge + high_edge), 0.5 * (high_edge - low_edge)
    states = hysteresis_states(smooth, middle, half, low_state=oxidised, high_state=reduced)
    return drop_short_runs(states, dwell_frames)


def committed_flips(smooth: np.ndarray, fit: TwoStateFit, rule: ValenceRule, dwell_frames: int,
                    reduced: int, oxidised: int) -> tuple[Events, np.ndarray]:
    """(flips dated at the last crossing of the midpoint of the basin centres (kept between the cores),
    states) of smoothed bonds."""
    low, high = fit.core_edges(rule.core_width)
    states = core_states(smooth, low, high, dwell_frames, reduced, oxidised)
    events = transitions(states, up_state=oxidised)
    level = min(max(0.5 * (fit.centre_ox + fit.centre_red), low), high)  # crossed before the state changes
    events.frame = last_crossing(smooth, level, events)
    return events.sorted(), states


def dwell_frames_for(rule: ValenceRule, correlation_time_fs: float, dt_fs: float) -> int:
    dwell_fs = max(rule.dwell_correlation_times * correlation_time_fs, rule.min_dwell_fs)
    return max(1, int(math.ceil(dwell_fs / dt_fs)))


def charge_balance_threshold(smooth: np.ndarray, n_oxidised: float | None) -> float | None:
    """The bond length below which, on average over frames, ``n_oxidised`` of the metals lie."""
    n_metal = smooth.shape[0]
    if n_oxidised is None or not 0 < n_oxidised < n_metal:
        return None
    return float(np.quantile(smooth, n_oxidised / n_metal))


def fit_two_states(smooth: np.ndarray, split: float, dt_fs: float, temperature: float | None,
                   rule: ValenceRule, reduced: int = 2, oxidised: int = 3) -> TwoStateFit:
    """The two-state fit of smoothed bonds (metals, frames), its correlation time and bootstrap intervals."""
    lo, hi = np.percentile(smooth, [0.05, 99.95])
    edges = np.linspace(lo - 1e-6, hi + 1e-6, FIT_BINS + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    counts = histogram(smooth, edges)
    mu_lo, mu_hi, s_lo, s_hi, w_lo = mixture_em(centres, counts, split)
    sigma = math.sqrt(0.5 * (s_lo ** 2 + s_hi ** 2))
    fit = TwoStateFit(mu_lo, mu_hi, s_lo, s_hi, w_lo, (mu_hi - mu_lo) / sigma, None, None, dt_fs, split)
    # the noise: each metal's signal about its own mean in the core it last visited (no dwell: all noise kept)
    low, high = fit.core_edges(rule.core_width)
    raw = core_states(smooth, low, high, 1, reduced, oxidised)
    noise = noise_of(smooth, raw, oxidised, dt_fs)
    fit.noise_width = float(noise.std())
    tau_frames = correlation_time_frames(noise)
    fit.correlation_time_fs = tau_frames * dt_fs
    kt = None if not temperature else KB_EV * float(temperature)
    b = barrier(centres, counts, mu_lo, mu_hi, sigma)
    fit.barrier_kt = b
    fit.barrier_ev = None if b is None or kt is None else b * kt
    # bootstrap over blocks of two correlation times: effectively independent samples of the whole cell
    n_frames = smooth.shape[1]
    block = max(1, int(round(2 * tau_frames)))
    n_blocks = n_frames // block
    fit.n_independent = int(n_blocks * smooth.shape[0])
    if n_blocks >= 4 and rule.bootstrap_samples > 0:
        rng = np.random.default_rng(rule.seed)
        per_block = np.stack([histogram(smooth[:, b * block:(b + 1) * block], edges) for b in range(n_blocks)])
        seps, bars = [], []
        for _ in range(rule.bootstrap_samples):
            sample = per_block[rng.integers(0, n_blocks, n_blocks)].sum(axis=0)
            m0, m1, s0, s1, _ = mixture_em(centres, sample, split, iterations=50, start=(mu_lo, mu_hi, s_lo, s_hi, w_lo))
            sg = math.sqrt(0.5 * (s0 ** 2 + s1 ** 2))
            seps.append((m1 - m0) / sg)
            value = barrier(centres, sample, m0, m1, sg)
            if value is not None and kt is not None:
                bars.append(value * kt)
        fit.separation_ci = [round(float(v), 4) for v in np.quantile(seps, [0.025, 0.975])]
        if bars:
            fit.barrier_ev_ci = [round(float(v), 5) for v in np.quantile(bars, [0.025, 0.975])]
    return fit


def phase_randomised(residual: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows with the same power spectrum (so the same width and autocorrelation) and random phases."""
    spectrum = np.fft.rfft(residual, axis=1)
    phases = np.exp(2j * np.pi * rng.random(spectrum.shape))
    phases[:, 0] = 1.0
    return np.fft.irfft(spectrum * phases, n=residual.shape[1], axis=1)


def noise_floor(smooth: np.ndarray, states: np.ndarray, fit: TwoStateFit, rule: ValenceRule,
                dwell_frames: int, reduced: int, oxidised: int) -> float:
    """Mean committed flips over ``rule.noise_surrogates`` surrogate runs: each metal held at its own mean
    in its first state, with its own noise about its state means (phase-randomised)."""
    if rule.noise_surrogates <= 0:
        return 0.0
    centres = own_centres(smooth, states, oxidised)
    residual = smooth - centres
    held = centres[:, :1]
    rng = np.random.default_rng(rule.seed + 1)
    counts = []
    for _ in range(rule.noise_surrogates):
        surrogate = held + phase_randomised(residual, rng)
        events, _ = committed_flips(surrogate, fit, rule, dwell_frames, reduced, oxidised)
        counts.append(len(events))
    return float(np.mean(counts))


def mean_stay_fs(smooth: np.ndarray, fit: TwoStateFit, rule: ValenceRule, dt_fs: float,
                 reduced: int, oxidised: int) -> float:
    """Metal-time per stay between core-to-core changes (no dwell): total time / (changes + metals)."""
    low, high = fit.core_edges(rule.core_width)
    raw = core_states(smooth, low, high, 1, reduced, oxidised)
    changes = int(np.count_nonzero(raw[:, 1:] != raw[:, :-1]))
    return float(raw.size * dt_fs / (changes + raw.shape[0]))


def resolution(fit: TwoStateFit, stay_fs: float, rule: ValenceRule) -> tuple[bool, str]:
    """(resolved, why) from the stated criterion: separate and persistent."""
    persistence = stay_fs / fit.correlation_time_fs
    separate = fit.separation >= rule.min_separation
    persistent = persistence >= rule.min_persistence
    why = (f"separation D = {fit.separation:.2f} ({'>=' if separate else '<'} {rule.min_separation:g}); mean stay "
           f"{stay_fs:.0f} fs = {persistence:.1f} noise correlation times ({'>=' if persistent else '<'} "
           f"{rule.min_persistence:g})")
    return separate and persistent, why


def moment_agreement(moments: np.ndarray | None, states: np.ndarray, oxidised: int, n_oxidised: float | None,
                     window: int, oxidised_larger: bool = True) -> dict | None:
    """How often the bond valence names the same oxidised metals as the magnetic moments (the moment
    threshold by the same charge balance, on moments smoothed alike)."""
    if moments is None or n_oxidised is None or moments.shape != states.shape or not 0 < n_oxidised < len(states):
        return None
    m = running_mean(np.abs(moments), window)
    q = n_oxidised / m.shape[0]
    m_star = float(np.quantile(m, 1 - q if oxidised_larger else q))
    by_moment = m > m_star if oxidised_larger else m < m_star
    by_bond = states == oxidised
    agree = float(np.mean(by_moment == by_bond))
    r = float(np.corrcoef(m.ravel(), by_bond.ravel())[0, 1]) if by_bond.any() and (~by_bond).any() else None
    return {"agreement": round(agree, 4), "moment_threshold": round(m_star, 4),
            "moment_state_correlation": None if r is None else round(r, 4)}


@dataclass
class Valence:
    """A run's valence: the fit, d*, committed states and flips, and whether any of it is resolved."""

    fit: TwoStateFit
    threshold: float
    threshold_source: str
    smooth: np.ndarray
    states: np.ndarray
    flips: Events
    dwell_frames: int
    mean_stay_fs: float
    resolved: bool
    why: str
    noise_floor: float | None = None


def classify(bonds: np.ndarray, smooth_frames: int, dt_fs: float, temperature: float | None, rule: ValenceRule,
             n_oxidised: float | None, threshold: float | None = None, reduced: int = 2, oxidised: int = 3,
             with_floor: bool = True) -> Valence:
    """Fit, threshold, committed flips, resolution and noise floor of mean M-O bonds (metals, frames).

    ``threshold``: a given d*; None: from charge balance (``n_oxidised``), else the midpoint of the centres."""
    smooth = running_mean(bonds, smooth_frames)
    balanced = charge_balance_threshold(smooth, n_oxidised)
    split = threshold if threshold is not None else balanced if balanced is not None else float(np.median(smooth))
    fit = fit_two_states(smooth, split, dt_fs, temperature, rule, reduced, oxidised)
    if threshold is not None:
        source = "given"
    elif balanced is not None:
        source = "charge balance"
    else:
        # not the components' crossing: frames mid-transition widen one component and drag it to the other
        split, source = 0.5 * (fit.centre_ox + fit.centre_red), "midpoint of the basin centres (composition fixes no M3+ count)"
        fit.threshold = split
    dwell = dwell_frames_for(rule, fit.correlation_time_fs, dt_fs)
    flips, states = committed_flips(smooth, fit, rule, dwell, reduced, oxidised)
    stay = mean_stay_fs(smooth, fit, rule, dt_fs, reduced, oxidised)
    resolved, why = resolution(fit, stay, rule)
    floor = noise_floor(smooth, states, fit, rule, dwell, reduced, oxidised) if with_floor else None
    return Valence(fit, float(split), source, smooth, states, flips, dwell, stay, resolved, why, floor)
