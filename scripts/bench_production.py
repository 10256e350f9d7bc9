"""Production MD speed, side by side in one run on the same cell: fine-tuned DPA-2, student, compressed student.

    python scripts/bench_production.py --model runs/demo/final/model.000.pth \
        --student runs/demo/distill/student/model.pth --compressed runs/demo/distill/student.pth \
        [--ensemble runs/demo/final/model.*.pth] [--steps 200] [--batch 1 4 16]

On the demo's held-out Li0.5FePO4 cell (52 atoms, 600 K Langevin, one thread), per model:
- ``md``: atom-steps/s of ASE Langevin MD (what ``analyze`` runs), after 10 warm-up steps;
- ``eval``: atom-evals/s of a bare single-frame ``DeepPot.eval`` on the same frame;
- ``batch k``: atom-evals/s of one ``DeepPot.eval`` over k replicas (k frames in one call: what a batched
  replica engine buys per model call);
- ``replicas k``: atom-steps/s of torch-sim Langevin MD advancing k replicas of the cell in one process,
  one model call per step (``explore=torchsim``), steps / k steps after 5 warm-up steps.
With ``--ensemble``: the cost of scoring one recorded frame with every member (``calc_model_devi``),
and what ``analyze`` then runs at, per driver, for ``analysis.md_score_every`` 1 and 5 (record every
10 steps): 1 / (1 / MD rate + scoring time / (10 x score_every)), the DPA-2 driving scoring with one
member fewer (member 0's MD forces are its own term).
Ratios printed last: each model's MD over the DPA-2's, the best batch over one frame, the best batched
MD over one replica at a time (ASE MD), and the loop overhead (bare evaluation rate over MD rate; 1.00 =
no overhead).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

import numpy as np


def cell():
    from lfpo_al.config import compose_config, instantiate_group
    from lfpo_al.structures.builder import BuildSpec, built_structures

    system = instantiate_group(compose_config([]), "system")
    return next(built_structures(system, [BuildSpec(x=0.5, li_order="random", seed=103, supercell=[1, 2, 1])]))


def md_rate(model: Path, atoms, steps: int) -> float:
    from deepmd.calculator import DP

    from lfpo_al.validate.md import LangevinProtocol, langevin_frames

    calc = DP(model=str(model))
    langevin_frames(atoms, calc, LangevinProtocol(600.0, 10, record_every=10, seed=0))  # warm-up
    start = time.perf_counter()
    langevin_frames(atoms, calc, LangevinProtocol(600.0, steps, record_every=10, seed=1))
    return len(atoms) * steps / (time.perf_counter() - start)


def replicas_rate(model: Path, atoms, n_replicas: int, steps: int) -> float:
    """atom-steps/s of torch-sim Langevin over ``n_replicas`` copies of ``atoms``, one model call per step."""
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from lfpo_al.explore.torchsim_md import BatchLangevin, DeepmdModel

    copies = [atoms.copy() for _ in range(n_replicas)]
    for seed, copy in enumerate(copies):
        MaxwellBoltzmannDistribution(copy, temperature_K=600.0, rng=np.random.default_rng(seed))
    md = BatchLangevin(DeepmdModel(str(model)), copies, [600.0] * n_replicas, [0.01] * n_replicas, 1.0)
    md.run(5)
    start = time.perf_counter()
    md.run(steps)
    return len(atoms) * n_replicas * steps / (time.perf_counter() - start)


def eval_rate(model: Path, atoms, n_frames: int, repeats: int) -> float:
    from deepmd.infer import DeepPot

    dp = DeepPot(str(model))
    types = dp.get_type_map()
    atype = [types.index(s) for s in atoms.get_chemical_symbols()]
    rng = np.random.default_rng(0)
    coords = np.array([atoms.positions + rng.normal(scale=0.02, size=atoms.positions.shape)
                       for _ in range(n_frames)]).reshape(n_frames, -1)
    cells = np.tile(atoms.cell.array.reshape(1, 9), (n_frames, 1))
    for _ in range(2):
        dp.eval(coords, cells, atype)
    start = time.perf_counter()
    for _ in range(repeats):
        dp.eval(coords, cells, atype)
    return len(atoms) * n_frames * repeats / (time.perf_counter() - start)


def scoring_seconds(members: list[Path], atoms, repeats: int) -> float:
    """Seconds to score one frame with every member, as the explorer does."""
    from deepmd.infer import DeepPot
    from deepmd.infer.model_devi import calc_model_devi

    models = [DeepPot(str(m)) for m in members]
    types = models[0].get_type_map()
    atype = np.array([types.index(s) for s in atoms.get_chemical_symbols()])
    coords, cell_ = atoms.positions.reshape(1, -1), atoms.cell.array.reshape(1, 9)
    calc_model_devi(coords, cell_, atype, models)
    start = time.perf_counter()
    for _ in range(repeats):
        calc_model_devi(coords, cell_, atype, models)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the fine-tuned DPA-2 (frozen .pth)")
    parser.add_argument("--student", type=Path, default=None, help="the student, frozen")
    parser.add_argument("--compressed", type=Path, default=None, help="the student after dp compress")
    parser.add_argument("--ensemble", type=Path, nargs="*", default=[], help="members that score the deviation")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 4, 16],
                        help="replicas per process of the torch-sim runs (none: skip them)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    args.batch = sorted(set(args.batch) | {1})

    from lfpo_al.threads import use_in_this_process
    from lfpo_al.torchscript import use_simple_executor

    use_in_this_process(args.threads)
    use_simple_executor()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    atoms = cell()
    models = {"dpa2": args.model, "student": args.student, "compressed": args.compressed}
    models = {k: v for k, v in models.items() if v is not None}
    rows = {}
    for name, path in models.items():
        row = {"md": md_rate(path, atoms, args.steps)}
        for k in args.batch:
            row[f"batch {k}"] = eval_rate(path, atoms, k, max(2, args.repeats // k))
        for k in args.replicas:
            row[f"replicas {k}"] = replicas_rate(path, atoms, k, max(20, args.steps // k))
        rows[name] = row
        print(f"{name:10s} " + "  ".join(f"{key} {value:9.0f}" for key, value in row.items()) + "  atom-steps(evals)/s",
              flush=True)
    score_s = scoring_seconds(args.ensemble, atoms, max(2, args.repeats // 4)) if args.ensemble else None
    if score_s is not None:
        print(f"scoring one frame with {len(args.ensemble)} members: {score_s * 1000:.1f} ms", flush=True)
    print(f"\n{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {device}, "
          f"{args.threads} thread(s), {len(atoms)} atoms, {args.steps} MD steps, {datetime.date.today()}")
    base = rows["dpa2"]["md"]
    for name, row in rows.items():
        best = max(args.batch, key=lambda k: row[f"batch {k}"])
        batched = (f"   {max(row[f'replicas {k}'] for k in args.replicas) / row['md']:5.2f}x batched MD "
                   f"(best of replicas {' '.join(map(str, args.replicas))}) vs one replica at a time"
                   if args.replicas else "")
        print(f"{name:10s} MD speed vs DPA-2 {row['md'] / base:6.2f}x   batch {best} vs 1 frame "
              f"{row[f'batch {best}'] / row['batch 1']:5.2f}x   loop overhead (eval/MD) {row['batch 1'] / row['md']:5.2f}"
              + batched)
    if score_s is not None:
        for name, row in rows.items():
            # member 0 driving rescoring nothing: its MD forces stand in for its own deviation term
            frame_s = score_s * (len(args.ensemble) - 1) / len(args.ensemble) if name == "dpa2" else score_s
            rates = {every: 1 / (len(atoms) / row["md"] + frame_s / (10 * every)) * len(atoms) for every in (1, 5)}
            print(f"{name:10s} analyze (ensemble scoring, record every 10): " + "   ".join(
                f"score_every {every}: {rate:7.0f} atom-steps/s ({rate / base:5.2f}x DPA-2 alone)" for every, rate in rates.items()))


if __name__ == "__main__":
    main()
