"""Thread counts of the project's processes, with and without ``machine.threads_per_process``.

    python scripts/bench_threads.py [--steps 100] [--repeats 2] [--model lfpo_al/starter/starter_dpa2.pt]

What a command run directly meets: two of its torch processes at once (an in-process MD and a
dispatched job). Each trial starts two identical Langevin runs of the model on the demo's held-out
Li0.5FePO4 cell (52 atoms, 600 K), each a fresh Python process that applies the thread setting the
way ``python -m lfpo_al`` does; the wall time of the pair is taken. Settings alternate (A B A B):
``threads_per_process: 1`` (the local machine's default) against null (torch's default, one thread per
core). The ratio of their median wall times is printed last.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUN = """
import sys, time
from lfpo_al.threads import use_in_this_process
threads = None if sys.argv[1] == "null" else int(sys.argv[1])
use_in_this_process(threads)
from deepmd.calculator import DP
from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.structures.builder import BuildSpec, built_structures
from lfpo_al.validate.md import LangevinProtocol, langevin_frames
system = instantiate_group(compose_config([]), "system")
start = next(built_structures(system, [BuildSpec(x=0.5, li_order="random", seed=103, supercell=[1, 2, 1])]))
langevin_frames(start, DP(model=sys.argv[2]), LangevinProtocol(600.0, int(sys.argv[3]), record_every=10, seed=0))
"""

SETTINGS = {"threads_per_process=1": "1", "threads_per_process=null": "null"}


def pair_wall_s(threads: str, model: Path, steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "DP_INTRA", "DP_INTER", "MKL_"))}
    start = time.perf_counter()
    runs = [subprocess.Popen([sys.executable, "-c", RUN, threads, str(model), str(steps)], env=env) for _ in range(2)]
    if any(run.wait() for run in runs):
        raise SystemExit("an MD run failed")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", type=Path, default=Path(__file__).resolve().parents[1] / "lfpo_al/starter/starter_dpa2.pt")
    args = parser.parse_args()
    walls = {name: [] for name in SETTINGS}
    for repeat in range(args.repeats):
        for name, threads in SETTINGS.items():
            walls[name].append(pair_wall_s(threads, args.model, args.steps))
            print(f"repeat {repeat}: {name}: two processes of {args.steps} steps in {walls[name][-1]:.1f} s", flush=True)
    print(f"{os.cpu_count()} cores, {args.steps} MD steps per process, 2 processes at once, {args.repeats} repeats")
    for name, values in walls.items():
        print(f"{name:28s} median {statistics.median(values):7.1f} s  ({', '.join(f'{v:.1f}' for v in values)})")
    ratio = statistics.median(walls["threads_per_process=null"]) / statistics.median(walls["threads_per_process=1"])
    print(f"ratio wall(torch default) / wall(one thread per process): {ratio:.2f}")


if __name__ == "__main__":
    main()
