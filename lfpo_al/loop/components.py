"""Everything a run needs, instantiated once from the composed config (every setting checked before any work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from lfpo_al.config import instantiate_group, make_settings, to_plain
from lfpo_al.dispatch import MachineSettings
from lfpo_al.explore.settings import ExploreSettings
from lfpo_al.label.base import Labeler
from lfpo_al.loop.settings import LoopSettings
from lfpo_al.selection.settings import SelectionSettings
from lfpo_al.structures.builder import BuildSpec, check_buildable
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.tracking import TrackingSettings
from lfpo_al.train.pretrained import resolve_pretrained
from lfpo_al.train.settings import ModelSettings
from lfpo_al.validate.settings import ValidateSettings


@dataclass
class Components:
    system: OlivineSystem
    model: ModelSettings
    explore: ExploreSettings
    selection: SelectionSettings
    labeler: Labeler
    validate: ValidateSettings
    machine: MachineSettings
    tracking: TrackingSettings
    build_defaults: BuildSpec
    loop: LoopSettings
    pretrained: Path | None = None  # the checkpoint model.pretrained names, resolved and checked once

    @classmethod
    def from_config(cls, cfg: DictConfig, resolve_model: bool = False) -> "Components":
        """``resolve_model``: find and check ``model.pretrained`` too (a plan is made without it)."""
        comp = cls(
            system=instantiate_group(cfg, "system"),
            model=instantiate_group(cfg, "model"),
            explore=instantiate_group(cfg, "explore"),
            selection=instantiate_group(cfg, "selection"),
            labeler=instantiate_group(cfg, "label"),
            validate=instantiate_group(cfg, "validate"),
            machine=instantiate_group(cfg, "machine"),
            tracking=instantiate_group(cfg, "tracking"),
            build_defaults=make_settings(BuildSpec, to_plain(cfg.build), "build"),
            loop=make_settings(LoopSettings, to_plain(cfg.loop), "loop"),
        )
        for section, structures in (("explore.structures", comp.explore.structures),
                                    ("loop.init_structures", comp.loop.init_structures),
                                    ("validate.test_structures", comp.validate.test_structures),
                                    ("validate.dynamics.structures", comp.validate.dynamics.structures)):
            check_buildable(comp.system, structures, comp.build_defaults, section)
        comp.labeler.attach_profile(comp.machine.profiles)
        comp.validate.check_dynamics_teacher(comp.labeler.core_seconds_per_atom)
        if resolve_model:
            comp.pretrained = resolve_pretrained(comp.model.pretrained, comp.model.head)
        return comp
