"""Everything a run needs, instantiated once from the composed config."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from lfpo_al.config import instantiate_group, to_plain


@dataclass
class Components:
    system: object
    ensemble: object
    explore: object
    selection: object
    labeler: object
    validate: object
    machine: object
    tracking: object
    build_defaults: dict
    loop: dict

    @classmethod
    def from_config(cls, cfg: DictConfig) -> "Components":
        return cls(
            system=instantiate_group(cfg, "system"),
            ensemble=instantiate_group(cfg, "model"),
            explore=instantiate_group(cfg, "explore"),
            selection=instantiate_group(cfg, "selection"),
            labeler=instantiate_group(cfg, "label"),
            validate=instantiate_group(cfg, "validate"),
            machine=instantiate_group(cfg, "machine"),
            tracking=instantiate_group(cfg, "tracking"),
            build_defaults=to_plain(cfg.build),
            loop=to_plain(cfg.loop),
        )
