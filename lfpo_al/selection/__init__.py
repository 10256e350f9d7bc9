"""Selection of uncertain frames: trust window, per-iteration cap, diversity, report; trust-level calibration."""

from lfpo_al.selection.calibration import calibrate, default_trust_levels, plot_calibration
from lfpo_al.selection.report import SelectionReport, TrustLevels
from lfpo_al.selection.settings import SelectionSettings
from lfpo_al.selection.step import read_model_devi, resolve_trust_levels, select_step
from lfpo_al.selection.trust import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    FramePool,
    TrajectoryGeometry,
    choose_candidates,
    classify_frames,
    frames_after_stop,
    max_displacement,
)

__all__ = [
    "ACCURATE", "CANDIDATE", "FAILED", "FramePool", "SelectionReport", "SelectionSettings", "TrajectoryGeometry",
    "TrustLevels", "calibrate",
    "choose_candidates", "classify_frames", "default_trust_levels", "frames_after_stop", "max_displacement",
    "plot_calibration", "read_model_devi", "resolve_trust_levels", "select_step",
]
