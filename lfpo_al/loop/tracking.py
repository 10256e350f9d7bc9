"""Settings of experiment tracking (``configs/tracking/``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from lfpo_al.errors import UserError

MODES = ("online", "offline", "disabled")


@dataclass
class TrackingSettings:
    """Weights & Biases: one run per ``train``; ``online`` falls back to ``offline`` without an API key."""

    mode: str = "offline"
    project: str = "lfpo_al"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"tracking.mode={self.mode!r} is unknown; choose one of {', '.join(MODES)}")

    def effective_mode(self) -> str:
        if self.mode == "online" and not os.environ.get("WANDB_API_KEY"):
            return "offline"
        return self.mode
