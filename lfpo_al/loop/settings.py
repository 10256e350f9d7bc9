"""Settings of the loop itself (the ``loop:`` section of ``configs/config.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lfpo_al.errors import UserError


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class LoopSettings:
    """When the loop stops, and the initial training data it starts from.

    max_iters: iterations at most; label_budget: labels over all iterations at most.
    init_frames_per_structure: the built cell plus rattled/strained copies of each structure (the explore
        structures and ``init_structures``), labeled at set-up with rattle ``init_rattle_ang`` (A).
    """

    max_iters: int = 5
    label_budget: int = 500
    init_frames_per_structure: int = 3
    init_rattle_ang: float = 0.05
    init_structures: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("max_iters", "label_budget", "init_frames_per_structure"):
            value = getattr(self, key)
            if not _whole(value) or value < 1:
                raise UserError(f"loop.{key}={value!r} must be a whole number >= 1")
        if isinstance(self.init_rattle_ang, bool) or not isinstance(self.init_rattle_ang, (int, float)) \
                or not self.init_rattle_ang >= 0:
            raise UserError(f"loop.init_rattle_ang={self.init_rattle_ang!r} must be a length >= 0 (Angstrom)")
        if not isinstance(self.init_structures, list) or not all(isinstance(s, dict) for s in self.init_structures):
            raise UserError(f"loop.init_structures={self.init_structures!r} must be a list of build sections, "
                            "e.g. [{x: 1.0, li_order: random}]")
