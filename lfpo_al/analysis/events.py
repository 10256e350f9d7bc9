"""Event primitives over whole trajectories with array operations (the valence model and Li hops use them).

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


def site_hops(site_key: np.ndarray, dwell_frames: int) -> Events:
    """Hops from site keys (nLi, F): a change of (unwrapped) site that persists at least ``dwell_frames``;
    brief excursions and rattling between two sites are not hops. The frame is the first on the new site."""
    persistent = drop_short_runs(site_key, max(1, dwell_frames))
    return transitions(persistent, up_state=None)
