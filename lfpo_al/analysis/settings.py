"""Settings of the analysis suite (``configs/analysis/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lfpo_al.errors import UserError


@dataclass
class AnalysisSettings:
    """Production MD with a final model (``run_name`` or ``model``) or existing ``trajectories``.

    ``threshold``: ``valley`` takes d* from the trajectory's own bimodal bond-length histogram
    (falling back to the system's bond_threshold), or a number in A. Flips: running mean over
    ``smoothing_fs``, hysteresis +-``hysteresis_ang`` about d*, optional ``min_dwell_fs``.
    Li hops: a change of nearest Li site that persists ``li_dwell_fs``.
    """

    run_name: str | None = None
    model: str | None = None
    trajectories: list[str] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    frame_interval_fs: float | None = None
    output_dir: str | None = None
    md_temperatures: list[float] = field(default_factory=lambda: [600.0, 800.0])
    md_structures: list[dict] = field(default_factory=lambda: [{"x": 0.5, "li_order": "random", "seed": 0}])
    md_steps: int = 2000
    md_timestep_fs: float = 1.0
    md_record_every: int = 10
    exclude_untrusted: bool = True
    threshold: float | str = "valley"
    smoothing_fs: float = 100.0
    hysteresis_ang: float = 0.025
    min_dwell_fs: float = 0.0
    li_dwell_fs: float = 200.0
    pair_cutoff_ang: float = 4.0
    pair_dt_bins_ps: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.5, 2.0, 10.0])

    def __post_init__(self) -> None:
        if self.trajectories and self.temperatures and len(self.trajectories) != len(self.temperatures):
            raise UserError(
                f"analysis.temperatures has {len(self.temperatures)} values for {len(self.trajectories)} "
                "analysis.trajectories; give one temperature per trajectory"
            )
        if isinstance(self.threshold, str) and self.threshold != "valley":
            raise UserError(f"analysis.threshold={self.threshold!r} must be valley or a bond length in A")
        if self.hysteresis_ang < 0 or self.smoothing_fs < 0:
            raise UserError("analysis.hysteresis_ang and analysis.smoothing_fs must be >= 0")
