"""Settings of the model: the ensemble fine-tuned from a pretrained DPA-2 (``configs/model/``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lfpo_al.errors import UserError

DIVERSIFY = ("reinit_fitting_except_first", "reinit_fitting", "keep_fitting")


@dataclass
class ModelSettings:
    """How the pretrained DPA-2 becomes an ensemble of fine-tuned members.

    ``pretrained``: ``starter`` (the model shipped with the package), a checkpoint path, or a deepmd
    pretrained name. ``head``: branch of a multi-task checkpoint (e.g. ``MP_traj_v024_alldata_mixu``).
    ``diversify``: ``reinit_fitting`` gives each member a fresh fitting net with its own seed (members
    that share the pretrained fitting net barely disagree); ``reinit_fitting_except_first`` does so for
    every member but member 0, which keeps the pretrained fitting net: member 0 drives the MD, is the
    one validated and relaxes the polarons, and a fresh fitting net trained on a few frames forgets what
    the pretrained one knew (demo test set, phase-1 starter: force RMSE 0.47 kept vs 0.53 eV/A
    re-initialised, energy 21 vs 30 meV/atom, 200 steps on the same 12 frames), while the others still
    make the ensemble disagree; ``keep_fitting`` keeps it for all. ``bootstrap_fraction`` < 1 trains each
    deviation member on its own random subset of the frames; member 0 always sees every label (a subset
    would only withhold labels from the model that is used; the deviation comes from the others).
    ``from_pretrained_each_iteration``: every iteration fine-tunes afresh from the pretrained model on
    all frames so far (default). Continuing from the previous iteration's members on a few hundred
    frames drifts away from what the pretrained model knew (demo: test force RMSE 0.53 -> 0.60 eV/A and
    valence agreement 0.94 -> 0.50 over two continued iterations on the same data).
    ``member0_numb_steps``: member 0's steps (None: ``numb_steps``). Member 0 is the model that is used;
    the others only make the deviation, so they can train shorter (measured in docs/costs.md).
    ``member0_steps_per_frame``: member 0 trains at least this many steps per training frame, so its
    passes over the data stay the same as labels accumulate (a fixed step count is under-trained once
    the data grow: docs/costs.md, *Not a capacity floor*); None: fixed steps.
    """

    pretrained: str = "starter"
    head: str | None = None
    n_members: int = 4
    diversify: str = "reinit_fitting_except_first"
    bootstrap_fraction: float = 1.0
    numb_steps: int = 1000
    member0_numb_steps: int | None = None
    member0_steps_per_frame: float | None = None
    batch_size: int | str = "auto"
    start_lr: float = 1.0e-3
    stop_lr: float = 1.0e-5
    start_pref_e: float = 0.2
    limit_pref_e: float = 20.0
    start_pref_f: float = 100.0
    limit_pref_f: float = 60.0
    start_pref_v: float = 0.0
    limit_pref_v: float = 0.0
    seed: int = 0
    from_pretrained_each_iteration: bool = True

    def __post_init__(self) -> None:
        if self.n_members < 2:
            raise UserError(f"model.n_members={self.n_members}: an ensemble needs at least 2 members to measure deviation")
        if self.diversify not in DIVERSIFY:
            raise UserError(f"model.diversify={self.diversify!r} is unknown; choose one of {', '.join(DIVERSIFY)}")
        if not 0.0 < self.bootstrap_fraction <= 1.0:
            raise UserError(f"model.bootstrap_fraction={self.bootstrap_fraction} must be in (0, 1]")
        if self.numb_steps < 1:
            raise UserError(f"model.numb_steps={self.numb_steps} must be a positive number of training steps")
        if self.member0_numb_steps is not None and self.member0_numb_steps < 1:
            raise UserError(f"model.member0_numb_steps={self.member0_numb_steps} must be a positive number of training "
                            "steps, or null for model.numb_steps")
        for key in ("start_lr", "stop_lr"):
            if not getattr(self, key) > 0:  # NaN fails it too
                raise UserError(f"model.{key}={getattr(self, key)} must be a positive learning rate")
        if self.stop_lr > self.start_lr:
            raise UserError(f"model.stop_lr={self.stop_lr} must not exceed model.start_lr={self.start_lr}")
        if self.member0_steps_per_frame is not None and not self.member0_steps_per_frame > 0:
            raise UserError(f"model.member0_steps_per_frame={self.member0_steps_per_frame} must be positive, or null "
                            "for a fixed number of steps")

    def steps_for(self, member: int, n_frames: int = 0) -> int:
        """Training steps of ``member`` on ``n_frames`` frames: member 0 may train longer
        (``member0_numb_steps``) and, with ``member0_steps_per_frame``, in proportion to its data."""
        if member > 0:
            return self.numb_steps
        steps = self.member0_numb_steps or self.numb_steps
        if self.member0_steps_per_frame:
            steps = max(steps, math.ceil(self.member0_steps_per_frame * n_frames))
        return steps

    def bootstraps(self, member: int) -> bool:
        """Whether ``member`` trains on a bootstrap subset: deviation members only, never member 0."""
        return member > 0 and self.bootstrap_fraction < 1.0

    def reinitialises_fitting(self, member: int) -> bool:
        """Whether ``member`` starts from a fresh fitting net rather than the pretrained one."""
        return self.diversify == "reinit_fitting" or (self.diversify == "reinit_fitting_except_first" and member > 0)
