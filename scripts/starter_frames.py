"""Frames for the starter DPA-2 (scripts/build_starter_model.py): olivine cells of the four systems,
strained / rattled copies and CHGNet MD, labeled by CHGNet through the project's labeler."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
from ase import Atoms

from lfpo_al.loop.data import langevin_snapshots

SYSTEMS = ("lfpo", "lmpo", "lcpo", "lnpo")
XS = (0.0, 0.25, 0.5, 0.75, 1.0)
VALID_FRACTION = 0.1
# Polaron MD (the second training phase): mixed-valence cells at 300 and 600 K. LiFePO4, the project's
# target, gets x = 0.25 / 0.5 / 0.75 and an interface; the others x = 0.5. Seed 3 and interface_b are
# orderings no other stage (nor the demo's explore / test structures) uses.
POLARON_MD_SEED = 3
POLARON_MD_TEMPERATURES = (300.0, 600.0)
POLARON_MD_STEPS = 150


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_system(name: str):
    from lfpo_al.config import compose_config, instantiate_group

    return instantiate_group(compose_config([f"system={name}"]), "system")


def base_structures(system) -> list[Atoms]:
    """Every Li arrangement of one system: random orderings (several seeds) and planes_* at x = 0.5."""
    from lfpo_al.structures import BuildSpec, build_structure

    specs = []
    for cell, seeds in (([1, 1, 1], (0, 1)), ([1, 2, 1], (0, 1, 2))):
        for x in XS:
            # x = 0 and x = 1 have a single arrangement: one seed is enough
            for seed in (seeds[:1] if x in (0.0, 1.0) else seeds):
                specs.append(BuildSpec(supercell=cell, x=x, li_order="random", seed=seed))
        specs += [BuildSpec(supercell=cell, x=0.5, li_order=f"planes_{axis}") for axis in "abc"]
    return [build_structure(system, spec) for spec in specs]


def strained(atoms: Atoms, rng: np.random.Generator, max_axial: float = 0.03, max_shear: float = 0.01) -> Atoms:
    """A copy with a random homogeneous strain: up to a few % per axis plus a small shear."""
    eps = np.diag(rng.uniform(-max_axial, max_axial, 3))
    upper = np.triu_indices(3, 1)
    eps[upper] = rng.uniform(-max_shear, max_shear, 3)
    eps = np.triu(eps) + np.triu(eps, 1).T  # symmetric: no rigid rotation
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def rattled(atoms: Atoms, rng: np.random.Generator, sigma: float) -> Atoms:
    out = atoms.copy()
    out.positions += rng.normal(0.0, sigma, out.positions.shape)
    return out


def md_snapshots(atoms: Atoms, calc, rng: np.random.Generator, temperature_k: float = 600.0,
                 steps: int = 100, every: int = 10) -> list[Atoms]:
    """Snapshots of a short CHGNet Langevin NVT run (1 fs steps) from a built cell."""
    return langevin_snapshots(atoms, calc, rng, temperature_k, steps // every, every)


def generate_frames(seed: int) -> list[Atoms]:
    from chgnet.model.dynamics import CHGNetCalculator

    rng = np.random.default_rng(seed)
    calc = CHGNetCalculator(use_device="cpu")
    frames = []
    for name in SYSTEMS:
        system = load_system(name)
        bases = base_structures(system)
        for atoms in bases:
            # sigma 0.08 A gave median max forces of ~12 eV/A (stiff P-O bonds): 0.04 stays physical
            variants = [("base", atoms), ("strain", rattled(strained(atoms, rng), rng, 0.02)),
                        ("rattle", rattled(strained(atoms, rng, 0.015, 0.005), rng, 0.04))]
            for kind, frame in variants:
                frame.info.update(config=name, kind=kind)
                frames.append(frame)
        # MD from three cells per system: half-lithiated 1x2x1 and both end members
        md_starts = [a for a in bases if a.info["supercell"] == "1 2 1" and a.info["x"] == 0.5
                     and a.info["li_order"] == "random"][:1]
        md_starts += [a for a in bases if a.info["supercell"] == "1 1 1" and a.info["x"] in (0.0, 1.0)]
        for start in md_starts:
            for snap in md_snapshots(start, calc, rng):
                snap.info.update(config=name, kind="md")
                frames.append(snap)
        log(f"frames: {name} done, {len(frames)} so far")
    return frames


def polaron_md_frames(seed: int) -> list[Atoms]:
    """CHGNet NVT snapshots of mixed-valence cells (the M2+/M3+ octahedra as the teacher moves them)."""
    from chgnet.model.dynamics import CHGNetCalculator

    from lfpo_al.structures import BuildSpec, build_structure

    rng = np.random.default_rng(seed + 2)
    calc = CHGNetCalculator(use_device="cpu")
    frames = []
    for name in SYSTEMS:
        system = load_system(name)
        xs = (0.25, 0.5, 0.75) if name == "lfpo" else (0.5,)
        specs = [BuildSpec(supercell=[1, 2, 1], x=x, li_order="random", seed=POLARON_MD_SEED) for x in xs]
        if name == "lfpo":
            specs.append(BuildSpec(supercell=[1, 2, 1], x=0.5, li_order="interface_b"))
        for spec in specs:
            start = build_structure(system, spec)
            for temperature in POLARON_MD_TEMPERATURES:
                for snap in md_snapshots(start, calc, rng, temperature, steps=POLARON_MD_STEPS):
                    snap.info.update(config=name, kind="polaron_md", temperature_k=temperature)
                    frames.append(snap)
        log(f"polaron frames: {name} done, {len(frames)} so far")
    return frames


def label_frames(frames: list[Atoms], model=None) -> list[Atoms]:
    """CHGNet energy, forces, stress (ASE convention) and moments for each frame, one at a time
    (batched prediction measured slower here), through the project's CHGNet labeler."""
    from chgnet.model import CHGNet

    from lfpo_al.label.chgnet import label_atoms

    model = model or CHGNet.load(use_device="cpu", verbose=False)
    return [label_atoms(model, atoms) for atoms in frames]


def write_deepmd(frames: list[Atoms], out: Path, type_map: list[str]) -> list[Path]:
    """deepmd/npy systems (one per formula) under ``out``; returns their folders."""
    import dpdata

    multi = dpdata.MultiSystems(type_map=type_map)
    for atoms in frames:
        multi.append(dpdata.LabeledSystem(atoms, fmt="ase/structure"))
    multi.to_deepmd_npy(str(out))
    return sorted(p.parent for p in out.glob("*/type.raw"))


def split_valid(frames: list[Atoms], seed: int) -> np.ndarray:
    """Boolean mask of held-out frames: ~10 % of each system, drawn at random."""
    rng = np.random.default_rng(seed + 1)
    configs = np.array([f.info["config"] for f in frames])
    held = np.zeros(len(frames), dtype=bool)
    for name in SYSTEMS:
        idx = np.flatnonzero(configs == name)
        held[rng.choice(idx, size=max(1, round(VALID_FRACTION * len(idx))), replace=False)] = True
    return held


def frame_counts(frames: list[Atoms]) -> dict[str, dict[str, int]]:
    pairs = Counter((f.info["config"], f"x={float(f.info['x']):g}") for f in frames)
    return {name: {x: n for (c, x), n in sorted(pairs.items()) if c == name} for name in SYSTEMS}

