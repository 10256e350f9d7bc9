"""Settings of the analysis suite (``configs/analysis/``); every physical choice is a key here."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from lfpo_al.analysis.intervals import IntervalSettings
from lfpo_al.analysis.valence_model import ValenceRule
from lfpo_al.errors import UserError


@dataclass
class AnalysisSettings:
    """Production MD with a final model (``run_name`` or ``model``) or existing ``trajectories``.

    Valence (``lfpo_al.analysis.valence_model``): running mean over ``smoothing_fs``, a two-state fit
    of each run's smoothed mean M-O bonds; ``threshold`` d* is ``charge_balance`` (the run's own
    quantile that leaves the composition's M3+ count below it), ``system`` or a bond length in A. A flip
    goes from one basin core (centre -/+ ``core_width`` widths) to the other and stays
    ``dwell_correlation_times`` noise correlation times (at least ``min_dwell_fs``). A run's valence is
    resolved when the basins are ``min_separation`` widths apart and a stay lasts ``min_persistence``
    correlation times; otherwise its flip rate is withheld. ``noise_surrogates`` runs of the run's own
    noise give the flips noise alone makes. Li hops: a change of nearest
    4a site that persists ``li_dwell_fs``. Trust: frames with max force deviation >= ``trust_level``
    (eV/A; ``auto``: the run's last calibrated trust_hi, else ``fallback_trust_level``) are untrusted;
    ``exclude_untrusted`` leaves their intervals out of counts and durations. Flip pairs: M closer than
    ``pair_cutoff_ang`` are neighbours (``auto``: midway between the first two M-M shells of the
    system's crystal). ``student``: production MD driven by the run's distilled student
    (``runs/<run>/distill/student.pth``) when its gate passed (``auto``), always (``true``: an error
    without one) or never (``false``); the ensemble scores the deviation either way. Intervals: every
    rate carries an ``interval_level`` interval (Poisson united with a bootstrap over blocks of
    ``bootstrap_block_fs``); rates from fewer than ``min_events`` events and Arrhenius fits from fewer than
    ``min_temperatures`` temperatures are flagged.
    """

    run_name: str | None = None
    model: str | None = None
    trajectories: list[str] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    frame_interval_fs: float | None = None
    output_dir: str | None = None
    skip_fs: float = 0.0
    md_temperatures: list[float] = field(default_factory=lambda: [600.0, 800.0])
    md_structures: list[dict] = field(default_factory=lambda: [{"x": 0.5, "li_order": "random", "seed": 0}])
    md_steps: int = 2000
    md_timestep_fs: float = 1.0
    md_record_every: int = 10
    md_abort_deviation: float = 1.0e6
    md_seed: int = 0
    md_score_every: int = 1
    student: bool | str = "auto"
    trust_level: float | str = "auto"
    fallback_trust_level: float = 0.3
    exclude_untrusted: bool = True
    threshold: float | str = "charge_balance"
    smoothing_fs: float = 100.0
    core_width: float = 0.5
    dwell_correlation_times: float = 5.0
    min_dwell_fs: float = 0.0
    min_separation: float = 3.0
    min_persistence: float = 10.0
    noise_surrogates: int = 4
    li_dwell_fs: float = 200.0
    pair_cutoff_ang: float | str = "auto"
    pair_dt_bins_ps: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.5, 2.0, 10.0])
    interface_layers: int = 1
    layer_tolerance_ang: float = 0.75
    trace_metals: int = 4
    sensitivity: bool = True
    interval_level: float = 0.95
    bootstrap_block_fs: float = 500.0
    bootstrap_samples: int = 2000
    min_events: int = 10
    min_temperatures: int = 3
    plots: bool = True

    def __post_init__(self) -> None:
        if self.student not in (True, False, "auto"):
            raise UserError(f"analysis.student={self.student!r} must be auto, true or false")
        self.trajectories = [str(p) for p in (self.trajectories or [])]
        self.temperatures = [float(t) for t in (self.temperatures or [])]
        if self.trajectories and self.temperatures and len(self.trajectories) != len(self.temperatures):
            raise UserError(
                f"analysis.temperatures has {len(self.temperatures)} values for {len(self.trajectories)} "
                "analysis.trajectories; give one temperature per trajectory"
            )
        if any(t <= 0 for t in self.temperatures):
            raise UserError(f"analysis.temperatures={self.temperatures} must be positive kelvin")
        if isinstance(self.threshold, str):
            try:
                self.threshold = float(self.threshold)
            except ValueError:
                if self.threshold not in ("charge_balance", "system"):
                    raise UserError(f"analysis.threshold={self.threshold!r} must be charge_balance, system or a bond "
                                    "length in A (valley is gone: a histogram valley that falls back to a config "
                                    "value counted noise as flips)") from None
        if isinstance(self.trust_level, str):
            try:
                self.trust_level = float(self.trust_level)
            except ValueError:
                if self.trust_level != "auto":
                    raise UserError(f"analysis.trust_level={self.trust_level!r} must be auto or a deviation in eV/A") from None
        if not isinstance(self.trust_level, str) and self.trust_level <= 0:
            raise UserError(f"analysis.trust_level={self.trust_level} must be positive (eV/A)")
        self.pair_cutoff_ang = _auto_or_number("pair_cutoff_ang", self.pair_cutoff_ang)
        for key in ("core_width", "dwell_correlation_times", "min_separation", "min_persistence"):
            value = getattr(self, key)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UserError(f"analysis.{key}={value!r} must be a positive number")
        if not (isinstance(self.noise_surrogates, int) and self.noise_surrogates >= 0):
            raise UserError(f"analysis.noise_surrogates={self.noise_surrogates!r} must be a whole number >= 0")
        for key in ("smoothing_fs", "min_dwell_fs", "li_dwell_fs", "skip_fs"):
            if getattr(self, key) < 0:
                raise UserError(f"analysis.{key}={getattr(self, key)} must be >= 0")
        if self.frame_interval_fs is not None and self.frame_interval_fs <= 0:
            raise UserError(f"analysis.frame_interval_fs={self.frame_interval_fs} must be positive")
        bins = [float(b) for b in self.pair_dt_bins_ps]
        if len(bins) < 2 or any(b1 <= b0 for b0, b1 in zip(bins, bins[1:])) or bins[0] < 0:
            raise UserError(f"analysis.pair_dt_bins_ps={self.pair_dt_bins_ps} must be >= 2 increasing edges from >= 0")
        self.pair_dt_bins_ps = bins
        if self.pair_cutoff_ang != "auto" and self.pair_cutoff_ang <= 0:
            raise UserError(f"analysis.pair_cutoff_ang={self.pair_cutoff_ang} must be positive")
        if self.md_record_every < 1 or self.md_steps < self.md_record_every:
            raise UserError(f"analysis.md_record_every={self.md_record_every} must be >= 1 and <= "
                            f"analysis.md_steps={self.md_steps}")
        if self.md_score_every < 1:
            raise UserError(f"analysis.md_score_every={self.md_score_every} must be >= 1 (recorded frames per ensemble scoring)")
        if self.interface_layers < 0 or self.layer_tolerance_ang <= 0:
            raise UserError("analysis.interface_layers must be >= 0 and analysis.layer_tolerance_ang > 0")
        if not 0 < self.interval_level < 1:
            raise UserError(f"analysis.interval_level={self.interval_level} must lie in (0, 1), e.g. 0.95")
        if self.bootstrap_block_fs <= 0 or self.bootstrap_samples < 100:
            raise UserError(f"analysis.bootstrap_block_fs={self.bootstrap_block_fs} must be positive and "
                            f"analysis.bootstrap_samples={self.bootstrap_samples} >= 100")
        if self.min_events < 1 or self.min_temperatures < 2:
            raise UserError(f"analysis.min_events={self.min_events} must be >= 1 and "
                            f"analysis.min_temperatures={self.min_temperatures} >= 2")

    def valence_rule(self) -> ValenceRule:
        return ValenceRule(core_width=self.core_width, dwell_correlation_times=self.dwell_correlation_times,
                           min_dwell_fs=self.min_dwell_fs, min_separation=self.min_separation,
                           min_persistence=self.min_persistence, noise_surrogates=self.noise_surrogates)

    def intervals(self) -> IntervalSettings:
        return IntervalSettings(level=self.interval_level, block_fs=self.bootstrap_block_fs,
                                samples=self.bootstrap_samples, min_events=self.min_events,
                                min_temperatures=self.min_temperatures)

    def for_system(self, system) -> "AnalysisSettings":
        """These settings with every ``auto`` length expressed from the system's chemistry."""
        from lfpo_al.structures.olivine import metal_shells

        resolved = {}
        if self.pair_cutoff_ang == "auto":
            resolved["pair_cutoff_ang"] = round(sum(metal_shells(system)) / 2, 3)
        return replace(self, **resolved) if resolved else self


def _auto_or_number(key: str, value):
    if value == "auto":
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"analysis.{key}={value!r} must be auto or a length in A") from None
