"""The ``build`` command."""

from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from lfpo_al.config import instantiate_group, make_settings, to_plain
from lfpo_al.structures.builder import BuildSpec, build_structure, write_structure


def build_command(cfg: DictConfig) -> int:
    system = instantiate_group(cfg, "system")
    spec = make_settings(BuildSpec, to_plain(cfg.build), "build")
    atoms = build_structure(system, spec)
    path = write_structure(atoms, spec.output)
    metal = np.array(atoms.get_chemical_symbols()) == system.metal
    valence = atoms.arrays["valence"][metal]
    rule = system.valence
    print(
        f"wrote {path}: {atoms.get_chemical_formula(mode='metal')} ({len(atoms)} atoms), x={spec.x:g}, "
        f"{spec.li_order}, seed {spec.seed}: {int(np.sum(valence == rule.oxidised))} {system.metal}{rule.oxidised}+ / "
        f"{int(np.sum(valence == rule.reduced))} {system.metal}{rule.reduced}+"
    )
    return 0
