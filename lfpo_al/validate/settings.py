"""Settings of the validation step and of convergence (``configs/validate/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lfpo_al.config import make_settings
from lfpo_al.errors import UserError

if TYPE_CHECKING:  # both import scipy: loaded where the dynamics are compared, not with the settings
    from lfpo_al.validate.dynamics import DynamicsSummary
    from lfpo_al.validate.equivalence import Tolerances

POLARON_REFERENCES = ("auto", "teacher_relaxed", "teacher_moments")
TEST_FRAME_KINDS = ("auto", "perturbed", "teacher_md")
CHEAP_TEACHER_S_PER_ATOM = 0.1   # CHGNet: 0.0085; GPAW PBE+U: ~9 (core-s per atom and label)


def is_cheap_teacher(core_seconds_per_atom: float | None) -> bool:
    """A teacher measured at most ``CHEAP_TEACHER_S_PER_ATOM`` (unknown cost counts as expensive)."""
    return core_seconds_per_atom is not None and core_seconds_per_atom <= CHEAP_TEACHER_S_PER_ATOM


FLIP_EA_VERDICT = "flip_ea"  # the verdict on the flip activation energy, model against teacher

@dataclass
class DynamicsSettings:
    """MD of ensemble member 0 and of the teacher from the same held-out starts: same thermostat (Langevin,
    ``friction_per_fs``), timestep, length and seeds, at each of ``temperatures`` (the config passes the
    exploration temperatures). ``structures``: build sections of the starts, made by the system config
    (empty: no dynamics validation). ``reference_md``: the user's own teacher trajectories (AIMD, any file
    ASE reads, with a time per frame) instead of the teacher's MD: the model then runs from each file's
    first frame, at its temperature, as long as it. ``smoothing_fs``: running mean of the mean M-O bond."""

    structures: list[dict] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    n_steps: int = 2000
    timestep_fs: float = 1.0
    record_every: int = 10
    friction_per_fs: float = 0.01
    smoothing_fs: float = 100.0
    reference_md: list[str] = field(default_factory=list)
    reference_temperatures: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.temperatures = [float(t) for t in self.temperatures or []]
        self.seeds = [int(s) for s in self.seeds or []]
        self.reference_md = [str(p) for p in self.reference_md or []]
        if (self.structures or self.reference_md) and not self.seeds:
            raise UserError("validate.dynamics.seeds is empty; give at least one seed, e.g. [0, 1]")
        if self.structures and not self.temperatures:
            raise UserError("validate.dynamics.temperatures is empty; give the MD temperatures in K (default: the "
                            "exploration temperatures)")
        if any(t <= 0 for t in self.temperatures):
            raise UserError(f"validate.dynamics.temperatures={self.temperatures} must be positive kelvin")
        for name in ("n_steps", "record_every"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise UserError(f"validate.dynamics.{name}={value} must be a positive integer")
        if self.n_steps < 2 * self.record_every:
            raise UserError(f"validate.dynamics.n_steps={self.n_steps} records fewer than three frames at "
                            f"record_every={self.record_every}; raise n_steps or lower record_every")
        for name in ("timestep_fs", "friction_per_fs", "smoothing_fs"):
            if not getattr(self, name) > 0:
                raise UserError(f"validate.dynamics.{name}={getattr(self, name)} must be positive")
        missing = [p for p in self.reference_md if not Path(p).expanduser().is_file()]
        if missing:
            raise UserError(f"validate.dynamics.reference_md: no file {missing[0]}; give the teacher trajectories' paths")
        if self.reference_temperatures and len(self.reference_temperatures) != len(self.reference_md):
            raise UserError(f"validate.dynamics.reference_temperatures has {len(self.reference_temperatures)} values for "
                            f"{len(self.reference_md)} reference_md files; give one per file, or none to read them")


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
    dynamics: DynamicsSettings | dict = field(default_factory=DynamicsSettings)
    # held against the worst held-out structure; null: not a convergence condition
    target_m3_population_rel_error: float | None = None
    target_wasserstein_ang: float | None = None
    target_flip_rate_ratio: float | None = None
    target_basin_centre_ang: float | None = None

    def targets(self) -> Tolerances:
        """The dynamics targets as the verdicts' tolerances (``validate.equivalence``); None: no target."""
        from lfpo_al.validate.equivalence import Tolerances

        return Tolerances(m3_rel=self.target_m3_population_rel_error, centre_ang=self.target_basin_centre_ang,
                          rate_factor=self.target_flip_rate_ratio, wasserstein_ang=self.target_wasserstein_ang)

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
        if isinstance(self.dynamics, dict):
            self.dynamics = make_settings(DynamicsSettings, self.dynamics, "validate.dynamics")
        for name in ("target_m3_population_rel_error", "target_wasserstein_ang", "target_basin_centre_ang"):
            if getattr(self, name) is not None and not getattr(self, name) >= 0:
                raise UserError(f"validate.{name}={getattr(self, name)} must be >= 0, or null")
        if self.target_flip_rate_ratio is not None and not self.target_flip_rate_ratio >= 1:
            raise UserError(f"validate.target_flip_rate_ratio={self.target_flip_rate_ratio} must be >= 1 (a factor either "
                            "way), or null")
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

    def check_dynamics_teacher(self, teacher_core_seconds_per_atom: float | None) -> None:
        """The teacher's own MD is refused for a teacher measured expensive (DFT: it brings its AIMD)."""
        known_expensive = teacher_core_seconds_per_atom is not None and not is_cheap_teacher(teacher_core_seconds_per_atom)
        if self.dynamics.structures and known_expensive:
            raise UserError("validate.dynamics.structures needs the teacher's MD, too slow with this teacher "
                            f"(label.core_seconds_per_atom={teacher_core_seconds_per_atom}); pass its AIMD as "
                            "validate.dynamics.reference_md=[files] and set validate.dynamics.structures=[]")

    def dynamics_converged(self, summary: DynamicsSummary | dict | None) -> bool:
        """Every dynamics target that is set passes by equivalence on the worst structure; an inconclusive or
        unmeasurable verdict does not count (no summary: not converged). ``summary`` may be as recorded."""
        targets = self.targets()
        checks = ((targets.m3_rel, ["m3_population"]), (targets.centre_ang, ["centre_ox", "centre_red"]),
                  (targets.rate_factor, ["valence_resolved", "flip_rate"]), (targets.wasserstein_ang, ["wasserstein"]))
        wanted = [key for target, keys in checks if target is not None for key in keys]
        if not wanted:
            return True
        if isinstance(summary, dict):
            from lfpo_al.validate.dynamics import DynamicsSummary

            summary = DynamicsSummary.from_record(summary)
        verdicts = summary.verdicts if summary is not None else {}
        if self.target_flip_rate_ratio is not None and FLIP_EA_VERDICT in verdicts:  # where >= 3 temperatures ran
            wanted.append(FLIP_EA_VERDICT)
        return all(verdicts.get(key) == "pass" for key in wanted)
