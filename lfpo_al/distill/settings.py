"""Settings of the distillation of a run's final model into a small compressible student (``configs/distill/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lfpo_al.errors import UserError

if TYPE_CHECKING:  # it imports scipy: loaded where the gate is checked, not with the settings
    from lfpo_al.validate.equivalence import Tolerances

STUDENT_DESCRIPTORS = ("se_e2_a", "se_atten_v2")  # the types ``dp compress`` tabulates (se_atten_v2 with attn_layer 0)


@dataclass
class GateSettings:
    """What the student must reach against its teacher model before ``analyze`` uses it.

    Held-out frames (the teacher model's own MD from the dynamics starts): force and energy RMSE.
    Dynamics (student and teacher model from the same starts, seeds and thermostat), by equivalence as
    the validation (``validate.equivalence``): the same resolved verdict, the M3+ population within
    ``max_m3_rel_error``, the flip-rate ratio's interval inside [1/r, r], the M-O distributions' W1
    within ``max_wasserstein_ang`` (unmeasurable, so not passed, below the teacher's seed-to-seed W1).
    An inconclusive check does not pass."""

    max_force_rmse_ev_per_ang: float = 0.05
    max_energy_rmse_mev_per_atom: float = 2.0
    max_wasserstein_ang: float = 0.005
    max_m3_rel_error: float = 0.10
    flip_rate_ratio: float = 1.3

    def targets(self) -> Tolerances:
        """The gate's limits as the verdicts' tolerances; the basin centres are not gated."""
        from lfpo_al.validate.equivalence import Tolerances

        return Tolerances(m3_rel=self.max_m3_rel_error, centre_ang=None, rate_factor=self.flip_rate_ratio,
                          wasserstein_ang=self.max_wasserstein_ang)

    def __post_init__(self) -> None:
        for name in ("max_force_rmse_ev_per_ang", "max_energy_rmse_mev_per_atom", "max_wasserstein_ang",
                     "max_m3_rel_error"):
            if not getattr(self, name) > 0:
                raise UserError(f"distill.gate.{name}={getattr(self, name)} must be positive")
        if not self.flip_rate_ratio >= 1:
            raise UserError(f"distill.gate.flip_rate_ratio={self.flip_rate_ratio} must be >= 1 (a factor either way)")


@dataclass
class DistillSettings:
    """Teacher model, the MD that makes the student's data, the student and its gate.

    ``teacher``: a frozen model (null: member 0 of ``runs/<run_name>/final``). The teacher model runs
    Langevin MD over ``md_structures`` x ``md_temperatures`` (the analysis matrix by default), every
    ``md_record_every``-th frame is labeled by it in one batched evaluation, and the student trains on
    them from scratch. ``dynamics``: held-out starts, seeds and length of the student-vs-teacher MD
    (the run's ``validate.dynamics`` starts by default)."""

    teacher: str | None = None
    md_structures: list[dict] = field(default_factory=list)
    md_temperatures: list[float] = field(default_factory=list)
    md_steps: int = 2000
    md_record_every: int = 10
    md_seed: int = 0
    descriptor: dict = field(default_factory=dict)
    fitting_net: dict = field(default_factory=dict)
    numb_steps: int = 20000
    batch_size: int | str = "auto"
    start_lr: float = 1.0e-3
    stop_lr: float = 3.0e-6
    start_pref_e: float = 0.02
    limit_pref_e: float = 1.0
    start_pref_f: float = 1000.0
    limit_pref_f: float = 1.0
    seed: int = 0
    compress: bool = True
    compress_step: float = 0.01
    dynamics_structures: list[dict] = field(default_factory=list)
    dynamics_temperatures: list[float] = field(default_factory=list)
    dynamics_seeds: list[int] = field(default_factory=lambda: [0, 1])
    dynamics_steps: int = 1000
    dynamics_record_every: int = 5
    smoothing_fs: float = 50.0
    gate: GateSettings = field(default_factory=GateSettings)

    def __post_init__(self) -> None:
        if isinstance(self.gate, dict):
            self.gate = GateSettings(**self.gate)
        kind = self.descriptor.get("type")
        if kind not in STUDENT_DESCRIPTORS:
            raise UserError(f"distill.descriptor.type={kind!r}: the student must be compressible; use one of "
                            f"{', '.join(STUDENT_DESCRIPTORS)}")
        if kind == "se_atten_v2" and self.descriptor.get("attn_layer", 2) != 0:
            raise UserError("distill.descriptor.attn_layer must be 0 for se_atten_v2 (dp compress tabulates no attention)")
        for name in ("md_steps", "md_record_every", "numb_steps", "dynamics_steps", "dynamics_record_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"distill.{name}={value!r} must be a positive integer")
        if self.md_steps < 2 * self.md_record_every:
            raise UserError(f"distill.md_steps={self.md_steps} records fewer than three frames per trajectory; "
                            "raise it or lower distill.md_record_every")
        if not 0 < self.compress_step < 1:
            raise UserError(f"distill.compress_step={self.compress_step} must lie in (0, 1), e.g. 0.01")

    def check_runnable(self) -> None:
        """What ``distill`` needs beyond well-formed values (other commands compose the group too)."""
        if not self.md_structures or not self.md_temperatures:
            raise UserError("distill.md_structures and distill.md_temperatures must not be empty (default: the "
                            "analysis matrix, analysis.md_structures x analysis.md_temperatures)")
        if not self.dynamics_structures or not self.dynamics_temperatures or not self.dynamics_seeds:
            raise UserError("distill.dynamics_structures, dynamics_temperatures and dynamics_seeds must not be empty "
                            "(default: the run's validate.dynamics starts at the exploration temperatures)")
