"""Labeling: a Labeler interface, one shared task driver (dpdispatcher), DFT and surrogate backends.

    from lfpo_al.label import label_frames
    report = label_frames(frames, labeler, machine, work_dir, system)
"""

from lfpo_al.label.base import Labeler
from lfpo_al.label.driver import LabelReport, label_frames

__all__ = ["LabelReport", "Labeler", "label_frames"]
