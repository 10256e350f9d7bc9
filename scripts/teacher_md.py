"""The CHGNet teacher's own polaron dynamics: Langevin MD of a held-out cell, positions and |magnetic moments|.

    python scripts/teacher_md.py OUT_DIR --temperatures 400 600 800 --seeds 0 1 --steps 1500

Builds the campaign's held-out dynamics start (x = 0.5, random Li, build seed 103, 1x2x1: 52 atoms)
with the ``lfpo`` system, runs CHGNet (one thread) with ASE's Langevin (friction 0.01 /fs, as the
exploration) and writes one extxyz per temperature and seed, frames every ``--record-every`` steps with
``time_fs``, ``temperature`` and the per-atom array ``teacher_magmom`` (CHGNet's |m|, muB). Read them with

    python -m lfpo_al analyze analysis.trajectories=[OUT_DIR/T400.s0.extxyz,...]

``docs/teacher.md`` holds what these runs show.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[400.0, 600.0, 800.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--record-every", type=int, default=5)
    parser.add_argument("--build-seed", type=int, default=103)
    parser.add_argument("--supercell", type=int, nargs=3, default=[1, 2, 1])
    args = parser.parse_args()

    import ase.io
    import torch
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from chgnet.model.dynamics import CHGNetCalculator

    from lfpo_al.config import compose_config, instantiate_group
    from lfpo_al.structures.builder import BuildSpec, build_structure

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    system = instantiate_group(compose_config(["system=lfpo"]), "system")
    start = build_structure(system, BuildSpec(supercell=list(args.supercell), x=0.5, li_order="random",
                                              seed=args.build_seed))
    args.out.mkdir(parents=True, exist_ok=True)
    calc = CHGNetCalculator(use_device="cpu")
    for temperature in args.temperatures:
        for seed in args.seeds:
            path = args.out / f"T{temperature:g}.s{seed}.extxyz"
            if path.is_file():
                continue
            began = time.perf_counter()
            atoms = start.copy()
            atoms.calc = calc
            rng = np.random.default_rng(seed)
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
            dyn = Langevin(atoms, args.timestep_fs * units.fs, temperature_K=temperature,
                           friction=0.01 / units.fs, rng=rng)
            frames = []

            def record() -> None:
                frame = atoms.copy()
                frame.calc = None
                frame.info.update(time_fs=dyn.nsteps * args.timestep_fs, temperature=temperature, step=dyn.nsteps,
                                  li_order="random", family="x0.50-random")
                frame.new_array("teacher_magmom", np.abs(calc.results["magmoms"]).astype(float))
                frames.append(frame)

            dyn.attach(record, interval=args.record_every)
            dyn.run(args.steps)
            partial = path.with_name(path.name + ".part")
            ase.io.write(partial, frames, format="extxyz")
            partial.replace(path)
            print(f"{path.name}: {len(frames)} frames, {time.perf_counter() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
