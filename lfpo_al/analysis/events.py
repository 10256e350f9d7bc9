"""Event detection over whole trajectories with array operations: polaron flips and Li hops.

Signals are (atoms, frames): one contiguous time series per atom, the layout in which running means
and accumulations are fast. Nothing here loops over frames or atoms in Python:

- smoothing is a centred running mean (``scipy.ndimage.uniform_filter1d``), the window shrinking at
  the ends of the trajectory;
- hysteresis compares, per atom and frame, the last frame below ``d* - delta`` with the last frame
  above ``d* + delta`` (two running maxima): the later one decides the state;
- dwell filtering is a run-length pass over all atoms at once (runs shorter than the dwell take the
  state of the last persistent run, so brief excursions and re-crossings are not events);
- a flip is dated at the frame where the smoothed signal last crossed d* before the hysteresis
  decision, so hysteresis and smoothing do not delay it.

Sign convention: +1 for M2+ -> M3+ (the mean M-O bond shrinks below d*), -1 for M3+ -> M2+.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

REDUCED, OXIDISED = 2, 3


@dataclass
class Events:
    """Events of one kind: frame index, column (atom within the analysed set), sign (+1/-1; 0 for hops)."""

    frame: np.ndarray
    column: np.ndarray
    sign: np.ndarray

    def __len__(self) -> int:
        return len(self.frame)

    def select(self, keep: np.ndarray) -> "Events":
        return Events(self.frame[keep], self.column[keep], self.sign[keep])

    def sorted(self) -> "Events":
        order = np.lexsort((self.column, self.frame))
        return self.select(order)

    @classmethod
    def empty(cls) -> "Events":
        return cls(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int))


def frames_for(duration_fs: float, frame_interval_fs: float, odd: bool = False) -> int:
    """A duration in frames (at least 1); ``odd`` rounds up to an odd count (a centred window)."""
    n = max(1, int(round(duration_fs / frame_interval_fs))) if duration_fs > 0 else 1
    return n + 1 if odd and n % 2 == 0 else n


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred running mean along the last axis (frames) over ``window`` frames (made odd); within half a
    window of either end the window shrinks to the frames that exist."""
    values = np.asarray(values)
    dtype = values.dtype if np.issubdtype(values.dtype, np.floating) else np.float64
    n = values.shape[-1]
    if window <= 1 or n < 2:
        return values.astype(dtype, copy=True)
    window = min(window + 1 - window % 2, n if n % 2 else n - 1)  # odd: centred
    half = window // 2
    out = uniform_filter1d(values.astype(dtype, copy=False), window, axis=-1, mode="nearest")
    if half:  # exact shrinking windows at both ends (a few frames)
        head = np.cumsum(values[..., : window], axis=-1, dtype=np.float64)
        lo = np.arange(half)
        out[..., :half] = head[..., lo + half] / (lo + half + 1)
        tail = np.cumsum(values[..., ::-1][..., : window], axis=-1, dtype=np.float64)
        out[..., n - half:] = (tail[..., lo + half] / (lo + half + 1))[..., ::-1]
    return out


def hysteresis_states(signal: np.ndarray, threshold: float, delta: float, low_state: int = OXIDISED,
                      high_state: int = REDUCED) -> np.ndarray:
    """State per atom and frame: ``low_state`` once the signal drops below threshold - delta, back to
    ``high_state`` only once it rises above threshold + delta; in between the last decision holds.
    Frame 0 inside the band takes the side of the threshold it is on."""
    signal = np.asarray(signal)
    frames = np.arange(signal.shape[-1], dtype=np.int32)
    low = np.where(signal < threshold - delta, frames, np.int32(-1))
    high = np.where(signal > threshold + delta, frames, np.int32(-1))
    first_low = signal[..., 0] < threshold
    low[..., 0] = np.where(first_low, 0, low[..., 0])
    high[..., 0] = np.where(~first_low, 0, high[..., 0])
    np.maximum.accumulate(low, axis=-1, out=low)
    np.maximum.accumulate(high, axis=-1, out=high)
    return np.where(low > high, np.int8(low_state), np.int8(high_state))


def drop_short_runs(states: np.ndarray, min_frames: int) -> np.ndarray:
    """Merge runs shorter than ``min_frames`` (along the last axis) into their surroundings, all rows at once.

    A short run takes the value of the last persistent run before it; short runs at the start of a
    row take the value of the first persistent run; a row without any persistent run keeps its first
    value throughout. A short run at the end (not yet persistent) is therefore never an event.
    """
    states = np.asarray(states)
    if min_frames <= 1 or states.size == 0:
        return states
    n_frames = states.shape[-1]
    flat = np.ascontiguousarray(states).reshape(-1)
    starts_mask = np.ones(flat.shape, dtype=bool)
    starts_mask[1:] = flat[1:] != flat[:-1]
    starts_mask[::n_frames] = True  # a new row always starts a run
    starts = np.flatnonzero(starts_mask)
    lengths = np.diff(np.append(starts, flat.size))
    row = starts // n_frames
    index = np.arange(len(starts))
    kept = lengths >= min_frames
    before = np.maximum.accumulate(np.where(kept, index, -1))
    after = np.minimum.accumulate(np.where(kept, index, len(starts))[::-1])[::-1]
    first_of_row = np.searchsorted(starts, row * n_frames)
    ok_before = (before >= 0) & (row[np.maximum(before, 0)] == row)
    ok_after = (after < len(starts)) & (row[np.minimum(after, len(starts) - 1)] == row)
    source = np.where(ok_before, before, np.where(ok_after, after, first_of_row))
    return np.repeat(flat[starts][source], lengths).reshape(states.shape)


def transitions(states: np.ndarray, up_state: int | None = OXIDISED) -> Events:
    """Changes of state between consecutive frames (rows: atoms, last axis: frames).

    With ``up_state``: sign +1 on entering it (M2+ -> M3+), -1 on leaving it; ``None``: sign 0.
    The frame of an event is the first frame in the new state. Ordered by frame, then column.
    """
    states = np.asarray(states)
    if states.shape[-1] < 2:
        return Events.empty()
    column, frame = np.nonzero(states[:, 1:] != states[:, :-1])
    frame = frame + 1
    sign = np.zeros(len(frame), dtype=int) if up_state is None else np.where(states[column, frame] == up_state, 1, -1)
    return Events(frame.astype(int), column.astype(int), sign).sorted()


def last_crossing(signal: np.ndarray, threshold: float, events: Events) -> np.ndarray:
    """For each event, the last frame at or before it where ``signal`` crossed ``threshold`` (the first
    frame on the new side); the event frame itself when there is none."""
    if not len(events):
        return events.frame
    n_frames = signal.shape[-1]
    below = signal < threshold
    column, frame = np.nonzero(below[:, 1:] != below[:, :-1])
    key = column.astype(np.int64) * n_frames + frame + 1  # sorted: row-major nonzero
    query = events.column.astype(np.int64) * n_frames + events.frame
    pos = np.searchsorted(key, query, side="right") - 1
    found = (pos >= 0) & (key[np.maximum(pos, 0)] // n_frames == events.column)
    return np.where(found, key[np.maximum(pos, 0)] % n_frames, events.frame)


@dataclass
class FlipParams:
    """Flip detection in frames: running-mean window, hysteresis half-width (A), minimum dwell."""

    smooth_frames: int
    hysteresis: float
    dwell_frames: int = 1


def valence_states(bonds: np.ndarray, threshold: float, params: FlipParams, smooth: np.ndarray | None = None,
                   reduced: int = REDUCED, oxidised: int = OXIDISED) -> tuple[np.ndarray, np.ndarray]:
    """(states (nM, F) int8, smoothed bonds) from mean M-O bonds (nM, F): smoothing, hysteresis, dwell."""
    if smooth is None:
        smooth = running_mean(bonds, params.smooth_frames)
    states = hysteresis_states(smooth, threshold, params.hysteresis, low_state=oxidised, high_state=reduced)
    return drop_short_runs(states, params.dwell_frames), smooth


def detect_flips(bonds: np.ndarray, threshold: float, params: FlipParams, smooth: np.ndarray | None = None,
                 reduced: int = REDUCED, oxidised: int = OXIDISED) -> tuple[Events, np.ndarray, np.ndarray]:
    """Polaron flips of every M from bonds (nM, F): (events dated at the d* crossing, states, smoothed)."""
    states, smooth = valence_states(bonds, threshold, params, smooth, reduced, oxidised)
    events = transitions(states, up_state=oxidised)
    events.frame = last_crossing(smooth, threshold, events)
    return events.sorted(), states, smooth


def histogram_valley(values: np.ndarray, fallback: float, bins: int | None = None, max_depth: float = 0.8,
                     max_values: int = 1 << 18) -> tuple[float, dict]:
    """Threshold at the valley of a bimodal bond-length histogram, with an honest bimodality report.

    The two modes are the highest (3-bin smoothed) peaks on either side of ``fallback``; the valley is
    the middle of the valley floor between them (bins within 5 % of the smaller peak of the lowest);
    ``depth`` = valley / smaller peak (0: clean gap, 1: no dip). With one side empty or
    ``depth > max_depth`` the fallback is returned and ``bimodal`` is false. At most ``max_values``
    values (an even stride through the input) enter the histogram; ``bins`` defaults to sqrt(n)/1.5
    within 20-80.
    """
    values = np.asarray(values).ravel()
    if values.size > max_values:  # evenly strided subsample: a smoothed signal is correlated in time anyway
        values = values[:: -(-values.size // max_values)]
    values = values[np.isfinite(values)].astype(np.float64)
    if bins is None:  # enough values per bin for a stable valley: 20 bins for 900 values, 80 from 14,400
        bins = int(np.clip(np.sqrt(values.size) / 1.5, 20, 80))
    report = {"fallback": float(fallback), "bins": int(bins), "n_values": int(values.size)}
    if values.size < 10:
        return float(fallback), {**report, "bimodal": False, "reason": "too few values"}
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi <= lo:
        return float(fallback), {**report, "bimodal": False, "reason": "all values equal"}
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    counts = np.convolve(counts, np.ones(3) / 3, mode="same")
    centres = 0.5 * (edges[1:] + edges[:-1])
    left, right = centres < fallback, centres >= fallback
    if not left.any() or not right.any() or counts[left].max() == 0 or counts[right].max() == 0:
        return float(fallback), {**report, "bimodal": False, "reason": "one side of the fallback is empty"}
    i_lo = np.flatnonzero(left)[np.argmax(counts[left])]
    i_hi = np.flatnonzero(right)[np.argmax(counts[right])]
    between = counts[i_lo:i_hi + 1]
    floor = between.min() + 0.05 * min(counts[i_lo], counts[i_hi])
    lowest = np.flatnonzero(between <= floor)
    valley = float(centres[i_lo + lowest].mean())  # the middle of the valley floor (of a clean gap)
    i_valley = i_lo + int(lowest[0])
    depth = float(counts[i_valley] / min(counts[i_lo], counts[i_hi]))
    report.update(peak_low=float(centres[i_lo]), peak_high=float(centres[i_hi]), valley=valley, depth=round(depth, 4))
    if depth > max_depth:
        return float(fallback), {**report, "bimodal": False, "reason": f"valley depth {depth:.2f} > {max_depth}"}
    return valley, {**report, "bimodal": True}


def site_hops(site_key: np.ndarray, dwell_frames: int) -> Events:
    """Hops from site keys (nLi, F): a change of (unwrapped) site that persists at least ``dwell_frames``;
    brief excursions and rattling between two sites are not hops. The frame is the first on the new site."""
    persistent = drop_short_runs(site_key, max(1, dwell_frames))
    return transitions(persistent, up_state=None)
