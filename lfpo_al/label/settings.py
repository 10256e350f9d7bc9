"""Settings of the labeler (``configs/label/``)."""

from __future__ import annotations

from dataclasses import dataclass

from lfpo_al.errors import UserError

MISMATCH_POLICIES = ("keep", "drop", "relabel")


@dataclass
class LabelSettings:
    """Which teacher labels the selected frames, and what to do when its moments contradict the
    intended valence pattern (``keep`` and flag, ``drop``, or ``relabel`` with contracted octahedra).

    ``code``: ``chgnet`` (surrogate teacher for demos), ``gpaw`` (PBE+U, runs here), ``vasp``.
    ``inputs``: the folder of ``dft_inputs/`` with the code's templates (DFT codes only).
    """

    code: str = "chgnet"
    inputs: str | None = None
    magmom_tolerance: float = 0.35
    mismatch_policy: str = "keep"
    max_attempts: int = 2

    def __post_init__(self) -> None:
        if self.code not in ("chgnet", "gpaw", "vasp"):
            raise UserError(f"label.code={self.code!r} is unknown; choose one of chgnet, gpaw, vasp")
        if self.mismatch_policy not in MISMATCH_POLICIES:
            raise UserError(f"label.mismatch_policy={self.mismatch_policy!r} is unknown; choose one of {', '.join(MISMATCH_POLICIES)}")
        if self.magmom_tolerance <= 0:
            raise UserError(f"label.magmom_tolerance={self.magmom_tolerance} must be positive (muB)")
