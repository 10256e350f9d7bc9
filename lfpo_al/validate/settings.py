"""Settings of the validation step and of convergence (``configs/validate/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lfpo_al.errors import UserError

POLARON_REFERENCES = ("auto", "teacher_relaxed", "teacher_moments")
TEST_FRAME_KINDS = ("auto", "perturbed", "teacher_md")
CHEAP_TEACHER_S_PER_ATOM = 0.1   # CHGNet: 0.0085; GPAW PBE+U: ~9 (core-s per atom and label)


def is_cheap_teacher(core_seconds_per_atom: float | None) -> bool:
    """A teacher measured at most ``CHEAP_TEACHER_S_PER_ATOM`` (unknown cost counts as expensive)."""
    return core_seconds_per_atom is not None and core_seconds_per_atom <= CHEAP_TEACHER_S_PER_ATOM


@dataclass
class ValidateSettings:
    """Test set frozen at the start, split by composition; geometry check by relaxing its polarons.

    ``polaron_reference``: what the model's relaxed polarons are compared with. ``teacher_relaxed``:
    the teacher relaxes the same starts in-process (a surrogate such as CHGNet: seconds);
    ``teacher_moments``: the valence per M from the teacher's moments on the built (seeded) start,
    labeled once with the test set, without a teacher relaxation (DFT: a relaxation costs hours) and
    so with no bond-length reference; ``auto`` relaxes with the teacher when its measured
    ``label.core_seconds_per_atom`` is at most ``CHEAP_TEACHER_S_PER_ATOM``.

    ``test_frames``: per test structure, the built cell and then ``perturbed`` copies (rattled by
    ``rattle_ang``, strained) or ``teacher_md`` snapshots (the teacher's Langevin MD at
    ``test_md_temperature_k``, ``test_md_interval_steps`` apart: thermal frames like those the loop
    explores; needs an in-process teacher); ``auto`` takes teacher MD for a cheap teacher, as above.

    The loop has converged when the accurate ratio, the force RMSE and the valence agreement all meet
    their targets.
    """

    test_structures: list[dict] = field(default_factory=lambda: [{"x": 0.5, "li_order": "random", "seed": 100}])
    frames_per_structure: int = 4
    rattle_ang: float = 0.05
    relax_fmax: float = 0.05
    relax_steps: int = 200
    polaron_reference: str = "auto"
    test_frames: str = "perturbed"
    test_md_temperature_k: float = 600.0
    test_md_interval_steps: int = 20
    target_accurate_ratio: float = 0.9
    target_force_rmse: float = 0.15
    target_valence_agreement: float = 0.95

    def reference_for(self, teacher_core_seconds_per_atom: float | None) -> str:
        """The polaron reference this teacher gets (``auto`` resolved)."""
        if self.polaron_reference != "auto":
            return self.polaron_reference
        return "teacher_relaxed" if is_cheap_teacher(teacher_core_seconds_per_atom) else "teacher_moments"

    def test_frames_for(self, teacher_core_seconds_per_atom: float | None) -> str:
        """How the test frames are made for this teacher (``auto`` resolved)."""
        if self.test_frames != "auto":
            return self.test_frames
        return "teacher_md" if is_cheap_teacher(teacher_core_seconds_per_atom) else "perturbed"

    def __post_init__(self) -> None:
        if self.test_frames not in TEST_FRAME_KINDS:
            raise UserError(f"validate.test_frames={self.test_frames!r} is unknown; choose one of {', '.join(TEST_FRAME_KINDS)}")
        if self.test_md_interval_steps < 1 or self.test_md_temperature_k <= 0:
            raise UserError(f"validate.test_md_interval_steps={self.test_md_interval_steps} and validate.test_md_temperature_k="
                            f"{self.test_md_temperature_k} must be positive")
        if self.polaron_reference not in POLARON_REFERENCES:
            raise UserError(f"validate.polaron_reference={self.polaron_reference!r} is unknown; "
                            f"choose one of {', '.join(POLARON_REFERENCES)}")
        if not self.test_structures:
            raise UserError("validate.test_structures is empty; list at least one build section")
        for name in ("target_accurate_ratio", "target_valence_agreement"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"validate.{name}={getattr(self, name)} must be a fraction in [0, 1]")
