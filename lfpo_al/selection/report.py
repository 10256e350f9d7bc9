"""What the select step decided (``report.json``), typed, and the frames it chose (``selected.extxyz``)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import ase.io
import numpy as np

from lfpo_al import atomic
from lfpo_al.errors import UserError

SELECTED = "selected.extxyz"
REPORT = "report.json"
# each selected frame's entry, in order; ``priority: valence`` adds the members' valence disagreement
SELECTED_COLUMNS = ("source", "family", "temperature", "step", "max_devi_f")
VALENCE_COLUMN = "valence_disagreement"


@dataclass
class TrustLevels:
    trust_lo: float
    trust_hi: float | None  # None: no upper cut (trust_hi: teacher, and the teacher never failed)
    source: str  # config | calibration | default
    note: str | None

    @property
    def upper_cut(self) -> float:
        """``trust_hi`` for comparisons: infinite where there is no upper cut."""
        return math.inf if self.trust_hi is None else self.trust_hi


@dataclass
class SelectionReport:
    """``report.json``; the field order is the file's key order. Counts are ``n_total``, ``n_accurate``,
    ``n_candidate``, ``n_failed``, ``n_selected``; ratios are of ``n_total`` (0 when there are no frames)."""

    explore_dir: str
    selected_file: str  # as written; read() points it at the report's own folder, wherever that moved
    n_total: int
    n_accurate: int
    n_candidate: int
    n_failed: int
    n_selected: int
    accurate_ratio: float
    candidate_ratio: float
    failed_ratio: float
    failed_breakdown: dict[str, int]  # after_stop, non_finite, above_trust_hi
    n_near_duplicates_skipped: int
    trust_levels: TrustLevels
    max_selected: int
    priority: str
    diversity: str
    min_frame_distance: float
    families: dict[str, dict[str, int]]  # family -> counts
    trajectories: list[dict]  # dir, family, temperature, stop_reason, stop_step, counts
    stop_reasons: dict[str, str]  # dir -> reason, stopped trajectories only
    selected: list[dict]  # source, family, temperature, step, max_devi_f[, valence_disagreement], in choice order
    calibration: dict | None  # the Calibration the levels came from, as a dict
    warnings: list[str]

    def record(self) -> dict:
        """``report.json``'s dict: strict JSON, NaN/inf as null."""
        return _json_ready(asdict(self))

    def write(self, select_dir: str | Path) -> None:
        text = json.dumps(self.record(), indent=2, allow_nan=False, default=_numpy_to_python) + "\n"
        atomic.write_text(Path(select_dir) / REPORT, text)

    @classmethod
    def read(cls, select_dir: str | Path) -> SelectionReport:
        """``select_dir/report.json``; ``selected_file`` then names ``select_dir``'s own ``selected.extxyz``
        (a run folder may have moved since it was written)."""
        path = Path(select_dir) / REPORT
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path} cannot be read ({exc}); rerun the select step") from exc
        names = {f.name for f in fields(cls)}
        if not isinstance(record, dict) or not names <= set(record):
            missing = sorted(names - set(record)) if isinstance(record, dict) else ["all keys"]
            raise UserError(f"{path} lacks {', '.join(missing)}; rerun the select step")
        values = {key: record[key] for key in names}
        values["trust_levels"] = TrustLevels(**values["trust_levels"])
        values["selected_file"] = str(Path(select_dir) / SELECTED)
        return cls(**values)

    @staticmethod
    def exists(select_dir: str | Path) -> bool:
        return (Path(select_dir) / REPORT).is_file()

    def selected_table(self) -> tuple[list[str], list[list]]:
        """Columns and rows of the selected frames, in choice order (a tracking table)."""
        return list(SELECTED_COLUMNS), [[entry.get(column) for column in SELECTED_COLUMNS] for entry in self.selected]

    @staticmethod
    def selected_deviations(select_dir: str | Path) -> np.ndarray:
        """Each selected frame's max force deviation in ``select_dir/report.json`` (eV/A; NaN where not
        recorded), in choice order; only the ``selected`` list is read, so any release's report will do."""
        record = json.loads((Path(select_dir) / REPORT).read_text())
        selected = (record.get("selected") if isinstance(record, dict) else None) or []
        return np.array([float(entry.get(SELECTED_COLUMNS[-1], math.nan)) for entry in selected])

    def selected_frames(self) -> list:
        """The chosen frames (``ase.Atoms``, info ``source`` and ``max_devi_f``), in choice order."""
        path = Path(self.selected_file)
        if not self.n_selected:
            return []
        if not path.is_file():
            raise UserError(f"{path} is missing but the select step chose {self.n_selected} frames; rerun it")
        return ase.io.read(path, index=":", format="extxyz")


def _json_ready(value):
    """NaN/inf become null so that report.json is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    return value


def _numpy_to_python(value):
    """NumPy scalars and arrays a calibration may hold."""
    if isinstance(value, (np.generic, np.ndarray)):
        return _json_ready(value.tolist())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
