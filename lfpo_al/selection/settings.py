"""Settings of the frame selection (``configs/selection/``)."""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass

from lfpo_al.errors import UserError

AUTO = "auto"
TEACHER = "teacher"
PRIORITIES = ("deviation", "valence")
DIVERSITIES = ("families", "descriptor")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class SelectionSettings:
    """Frames with trust_lo <= max force deviation < trust_hi are candidates (eV/A).

    ``trust_lo: auto`` derives the window from the measured relation between deviation and true force
    error so that selected frames are those whose expected error exceeds ``target_force_error``;
    ``trust_hi: auto`` puts the upper level where the expected error reaches ``trust_hi_factor`` times
    the target. ``error_quantile`` picks which quantile of the error at a given deviation is compared
    with the target (0.5: the typical error; higher is more cautious and labels more frames).
    With ``auto`` and no calibration yet, the deviation is taken as the error: trust_lo =
    target_force_error, trust_hi = trust_hi_factor x target_force_error.
    ``trust_hi: teacher`` puts the upper level where the teacher's own labels have failed so far
    (:mod:`lfpo_al.selection.teacher_failures`): no upper cut until it has.
    ``max_selected`` caps the labels per iteration. ``priority`` ranks candidates: ``deviation`` (the
    ensemble's max force deviation) or ``valence`` (the members' disagreement on the breathing force of
    a metal site, :mod:`lfpo_al.selection.ensemble_scores`). ``diversity`` spreads the choice:
    ``families`` goes round-robin over structure families, skipping frames closer than
    ``min_frame_distance`` (A, max atomic displacement) to a chosen one; ``descriptor`` picks
    farthest-point in member 0's descriptor space (:mod:`lfpo_al.selection.diversity`).
    """

    trust_lo: float | str = 0.15
    trust_hi: float | str = 0.6
    max_selected: int = 20
    min_frame_distance: float = 0.05
    target_force_error: float = 0.15
    trust_hi_factor: float = 4.0
    error_quantile: float = 0.5
    priority: str = "deviation"
    diversity: str = "families"

    def __post_init__(self) -> None:
        if self.trust_lo != AUTO and not _is_number(self.trust_lo):
            raise UserError(f"selection.trust_lo={self.trust_lo!r} must be a number (eV/A) or auto")
        if self.trust_hi not in (AUTO, TEACHER) and not _is_number(self.trust_hi):
            raise UserError(f"selection.trust_hi={self.trust_hi!r} must be a number (eV/A), auto or teacher")
        if self.priority not in PRIORITIES:
            raise UserError(f"selection.priority={self.priority!r} must be one of {', '.join(PRIORITIES)}")
        if self.diversity not in DIVERSITIES:
            raise UserError(f"selection.diversity={self.diversity!r} must be one of {', '.join(DIVERSITIES)}")
        if _is_number(self.trust_lo) and _is_number(self.trust_hi) and not 0 <= self.trust_lo < self.trust_hi:
            raise UserError(f"selection.trust_lo={self.trust_lo} must be >= 0 and below selection.trust_hi={self.trust_hi}")
        if _is_number(self.trust_hi) and self.trust_hi <= 0:
            raise UserError(f"selection.trust_hi={self.trust_hi} must be a positive deviation (eV/A)")
        if not isinstance(self.max_selected, int) or isinstance(self.max_selected, bool) or self.max_selected < 1:
            raise UserError(f"selection.max_selected={self.max_selected} must be a positive number of frames")
        if not _is_number(self.min_frame_distance) or self.min_frame_distance < 0:
            raise UserError(f"selection.min_frame_distance={self.min_frame_distance} must be >= 0 A (0 keeps near-duplicates)")
        if not _is_number(self.target_force_error) or self.target_force_error <= 0:
            raise UserError(f"selection.target_force_error={self.target_force_error} must be a positive force error (eV/A)")
        if not _is_number(self.trust_hi_factor) or self.trust_hi_factor <= 1:
            raise UserError(f"selection.trust_hi_factor={self.trust_hi_factor} must be > 1 (trust_hi sits above the target error)")
        if not _is_number(self.error_quantile) or not 0 < self.error_quantile < 1:
            raise UserError(f"selection.error_quantile={self.error_quantile} must lie strictly between 0 and 1 (0.5: median error)")

    def capped(self, labels_left: int) -> SelectionSettings:
        """These settings for an iteration with ``labels_left`` of the label budget: at most that many
        frames are selected, and always one."""
        if labels_left >= self.max_selected:
            return self
        return dataclasses.replace(self, max_selected=max(1, labels_left))

    @property
    def needs_models(self) -> bool:
        """True when candidates are scored by evaluating the ensemble's models, beyond its deviation file."""
        return self.priority == "valence" or self.diversity == "descriptor"

    @property
    def auto(self) -> bool:
        """True when either trust level is derived from a calibration."""
        return AUTO in (self.trust_lo, self.trust_hi)
