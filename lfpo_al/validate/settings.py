"""Settings of the validation step and of convergence (``configs/validate/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lfpo_al.errors import UserError


@dataclass
class ValidateSettings:
    """Test set frozen at the start, split by composition; geometry check by relaxing its polarons.

    The loop has converged when the accurate ratio, the force RMSE and the valence agreement all meet
    their targets.
    """

    test_structures: list[dict] = field(default_factory=lambda: [{"x": 0.5, "li_order": "random", "seed": 100}])
    frames_per_structure: int = 4
    rattle_ang: float = 0.05
    relax_fmax: float = 0.05
    relax_steps: int = 200
    target_accurate_ratio: float = 0.9
    target_force_rmse: float = 0.15
    target_valence_agreement: float = 0.95

    def __post_init__(self) -> None:
        if not self.test_structures:
            raise UserError("validate.test_structures is empty; list at least one build section")
        for name in ("target_accurate_ratio", "target_valence_agreement"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"validate.{name}={getattr(self, name)} must be a fraction in [0, 1]")
