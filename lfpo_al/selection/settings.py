"""Settings of the frame selection (``configs/selection/``)."""

from __future__ import annotations

from dataclasses import dataclass

from lfpo_al.errors import UserError


@dataclass
class SelectionSettings:
    """Frames with trust_lo <= max force deviation < trust_hi are candidates (eV/A).

    ``trust_lo: auto`` derives the window from the measured relation between deviation and true force
    error so that selected frames are those whose expected error exceeds ``target_force_error``.
    ``max_selected`` caps the labels per iteration; candidates are spread over the structure families
    and frames closer than ``min_frame_distance`` (A, max atomic displacement) to a chosen one are skipped.
    """

    trust_lo: float | str = 0.15
    trust_hi: float | str = 0.6
    max_selected: int = 20
    min_frame_distance: float = 0.05
    target_force_error: float = 0.15

    def __post_init__(self) -> None:
        auto = self.trust_lo == "auto"
        if not auto and isinstance(self.trust_lo, str):
            raise UserError(f"selection.trust_lo={self.trust_lo!r} must be a number (eV/A) or auto")
        if isinstance(self.trust_hi, str) and self.trust_hi != "auto":
            raise UserError(f"selection.trust_hi={self.trust_hi!r} must be a number (eV/A) or auto")
        if not auto and self.trust_hi != "auto" and not 0 <= self.trust_lo < self.trust_hi:
            raise UserError(f"selection.trust_lo={self.trust_lo} must be >= 0 and below selection.trust_hi={self.trust_hi}")
        if self.max_selected < 1:
            raise UserError(f"selection.max_selected={self.max_selected} must be a positive number of frames")
