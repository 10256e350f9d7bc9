"""trust_hi from where the teacher actually failed, not from a multiple of the target error.

A frame above trust_hi is thrown away as unphysical. Whether a geometry is too far gone to label is a
fact about the teacher, measured each time a selected frame is labeled: its deviation is in the
selection's report, its fate (labeled, or quarantined by the label step) in the label step's report.
``trust_hi`` is the lowest deviation ``d`` such that, among the labeled-or-failed frames at or above
``d``, more than half failed, with at least ``MIN_FAILURES`` failures behind it; where the teacher has
not failed that often, there is no upper cut (frames the explorer stopped on stay failed either way).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lfpo_al.selection.report import SelectionReport

MIN_FAILURES = 2
FAILURE_FRACTION = 0.5


def teacher_failure_level(deviation: np.ndarray, failed: np.ndarray) -> float:
    """The trust_hi the teacher's record supports (eV/A), ``inf`` where it supports no cut."""
    deviation = np.asarray(deviation, dtype=float)
    failed = np.asarray(failed, dtype=bool)
    keep = np.isfinite(deviation)
    deviation, failed = deviation[keep], failed[keep]
    if failed.sum() < MIN_FAILURES:
        return math.inf
    order = np.argsort(-deviation, kind="stable")  # from the top down: failures and trials at or above each d
    n_failed = np.cumsum(failed[order])
    n_tried = np.arange(1, deviation.size + 1)
    supported = (n_failed >= MIN_FAILURES) & (n_failed > FAILURE_FRACTION * n_tried) & failed[order]
    return float(deviation[order][supported].min()) if supported.any() else math.inf


def labeled_record(select_dir: Path, label_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(deviation, failed)`` of one iteration's selected frames; empty where either report is missing.

    The label step names frame ``i`` of ``selected.extxyz`` ``task.{i:06d}`` and lists the tasks it
    quarantined under ``failed`` in its ``report.json``.
    """
    label_report = label_dir / "report.json"
    if not (SelectionReport.exists(select_dir) and label_report.is_file()):
        return np.zeros(0), np.zeros(0, dtype=bool)
    deviation = SelectionReport.selected_deviations(select_dir)
    quarantined = {item.get("task") for item in json.loads(label_report.read_text()).get("failed") or []
                   if isinstance(item, dict)}
    failed = np.array([f"task.{i:06d}" in quarantined for i in range(len(deviation))], dtype=bool)
    return deviation, failed


def run_record(step_dirs: list[tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`labeled_record` of several iterations' (select, label) folders, concatenated."""
    records = [labeled_record(select_dir, label_dir) for select_dir, label_dir in step_dirs]
    return (np.concatenate([r[0] for r in records] or [np.zeros(0)]),
            np.concatenate([r[1] for r in records] or [np.zeros(0, dtype=bool)]))
