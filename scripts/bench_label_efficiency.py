"""Label efficiency: the loop's selection against random selection from the same explored pool.

    python scripts/bench_label_efficiency.py runs/demo --counts 4 8 16 --seeds 0 1 2

The pool is one exploration of a finished run (``--iteration``, default 0: every frame scored by that
iteration's ensemble). The run's teacher labels every pool frame once. For each label count n and seed,
member 0 is fine-tuned with the run's model recipe on the run's initial data plus n pool labels chosen
either by the run's selection (``select_step`` with the trust levels that iteration used, capped at n)
or uniformly at random (the seed draws them); n = 0 is the initial data alone. Every model is scored on
the run's test set. Printed: each model's energy and force RMSE, the learning curves (mean and spread
over seeds), and last the labels each strategy needs to reach the force target and the ratio AL/random.
Where neither reaches the target, the ratio is also given at the force random selection reaches with
its most labels (the labels AL needs for random's best). Writes ``results.json`` and
``label_efficiency.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import yaml

AL, RANDOM = "selection", "random"


def labels_to_reach(counts: list[int], forces: list[float], target: float) -> float | None:
    """Labels at which the force RMSE curve first falls to ``target`` (linear between measured counts)."""
    for i, (n, force) in enumerate(zip(counts, forces)):
        if force <= target:
            if i == 0:
                return float(n)
            n0, f0 = counts[i - 1], forces[i - 1]
            return float(n0 + (f0 - target) / (f0 - force) * (n - n0))
    return None


def pool_frames(explore_dir: Path) -> tuple[list, dict[str, int]]:
    """Every recorded frame of an exploration, in the selection's order, and the index of each
    ``"traj.000:frame 12"`` source."""
    import ase.io

    from lfpo_al.selection.step import FRAMES, read_summary

    frames, index = [], {}
    for entry in read_summary(explore_dir):
        path = explore_dir / entry["dir"] / FRAMES
        for j, atoms in enumerate(ase.io.read(path, index=":") if path.is_file() else []):
            index[f"{entry['dir']}:frame {j}"] = len(frames)
            atoms.calc = None
            frames.append(atoms)
    return frames, index


def write_subset(labeled: dict[int, object], chosen: list[int], type_map: list[str], out: Path) -> list[Path]:
    """The chosen pool labels as deepmd/npy systems (dpdata, one per composition)."""
    import dpdata

    from lfpo_al.loop.data import deepmd_systems

    if not chosen:
        return []
    if not out.is_dir():
        multi = dpdata.MultiSystems(type_map=type_map)
        for i in chosen:
            multi.append(dpdata.LabeledSystem(labeled[i], fmt="ase/structure", type_map=type_map))
        partial = out.with_name(out.name + ".partial")
        multi.to_deepmd_npy(str(partial))
        partial.replace(out)
    return deepmd_systems(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--iteration", type=int, default=0, help="whose exploration is the pool")
    parser.add_argument("--counts", type=int, nargs="+", default=[4, 8, 16], help="labels added to the initial data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the run's member 0)")
    parser.add_argument("--target-force", type=float, default=None,
                        help="force RMSE goal, eV/A (default: the campaign's validate.target_force_rmse)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: <run>/label_efficiency)")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from lfpo_al.config import compose_config, instantiate_group
    from lfpo_al.dispatch import TaskSpec, run_tasks
    from lfpo_al.layout import RunLayout
    from lfpo_al.label.driver import label_frames
    from lfpo_al.loop.data import deepmd_systems
    from lfpo_al.selection.step import select_step
    from lfpo_al.threads import use_in_this_process
    from lfpo_al.torchscript import use_simple_executor
    from lfpo_al.train.ensemble import STARTUP_STEPS, member_command, training_input
    from lfpo_al.train.member_task import FROZEN
    from lfpo_al.train.pretrained import resolve_pretrained

    run_dir, layout = args.run_dir.resolve(), RunLayout(args.run_dir.resolve())
    cfg = OmegaConf.create(yaml.safe_load((run_dir / "config.yaml").read_text()))
    system, model = instantiate_group(cfg, "system"), instantiate_group(cfg, "model")
    machine, labeler = instantiate_group(cfg, "machine"), instantiate_group(cfg, "label")
    use_in_this_process(machine.threads_per_process)
    use_simple_executor()
    labeler.attach_profile(machine.profiles)
    selection = instantiate_group(cfg, "selection")
    target = args.target_force or float(compose_config(["experiment=campaign"]).validate.target_force_rmse)
    steps = args.steps or model.steps_for(0)
    type_map = list(system.type_map)
    out = (args.out or run_dir / "label_efficiency").resolve()
    explore_dir = layout.step_dir(args.iteration, "explore")

    # the pool, labeled once by the run's teacher (failed labels stay out of both strategies)
    frames, source_index = pool_frames(explore_dir)
    report = label_frames(frames, labeler, machine, out / "pool_label", system)
    failed = {item["task"] for item in report.failed}
    labeled = {i: labeler.read_outputs(out / "pool_label" / f"task.{i:06d}") for i in range(len(frames))
               if f"task.{i:06d}" not in failed}

    # the trust window that iteration selected with, fixed, so that only the count varies (the run's own
    # max_selected does not cap it)
    used = json.loads((layout.step_dir(args.iteration, "select") / "report.json").read_text())["trust_levels"]
    fixed = dataclasses.replace(selection, trust_lo=used["trust_lo"], trust_hi=used["trust_hi"])
    chosen = {}
    for n in args.counts:
        picked = select_step(explore_dir, out / f"select.{n:03d}", dataclasses.replace(fixed, max_selected=n))["selected"]
        chosen[(AL, n)] = [source_index[p["source"]] for p in picked if source_index[p["source"]] in labeled]
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(sorted(labeled))
        for n in args.counts:
            chosen[(RANDOM, n, seed)] = sorted(int(i) for i in order[:n])

    init = deepmd_systems(layout.data / "init" / "data")
    pretrained = resolve_pretrained(model.pretrained, model.head)
    runs = [(0, "init", seed) for seed in args.seeds] + [
        (n, strategy, seed) for n in args.counts for strategy in (AL, RANDOM) for seed in args.seeds]
    tasks, folders = [], {}
    for n, strategy, seed in runs:
        picks = chosen[(AL, n)] if strategy == AL else chosen.get((RANDOM, n, seed), [])  # init: none
        name = f"{strategy}.n{n:03d}.s{seed}"
        folder = out / "train" / name
        folders[(n, strategy, seed)] = (folder, len(picks))
        if (folder / FROZEN).is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        subset = write_subset(labeled, picks, type_map, out / "data" / (name if strategy != AL else f"{AL}.n{n:03d}"))
        settings = dataclasses.replace(model, seed=seed)
        (folder / "input.json").write_text(json.dumps(
            training_input(settings, type_map, init + subset, seed * 1000, steps), indent=2))
        tasks.append(TaskSpec(f"train/{name}", member_command(pretrained, model.head), ["input.json"],
                              [FROZEN, "lcurve.out"], cost=steps + STARTUP_STEPS))
    run_tasks(machine, out, tasks)

    from deepmd.infer import DeepPot

    from lfpo_al.validate.metrics import error_table, load_systems, predict

    test = load_systems([layout.data / "test" / "data"])
    results = []
    for (n, strategy, seed), (folder, n_labels) in folders.items():
        table = error_table(predict([DeepPot(str(folder / FROZEN))], test))
        results.append({"strategy": strategy, "n": n, "n_labels": n_labels, "seed": seed,
                        "energy_rmse_mev_per_atom": table["energy_rmse_mev_per_atom"],
                        "force_rmse_ev_per_ang": table["force_rmse_ev_per_ang"]})
    summary = summarise(results, args.counts, args.seeds, target)
    summary.update(run=str(run_dir), pool_frames=len(frames), pool_labeled=len(labeled), training_steps=steps,
                   trust_levels={k: used[k] for k in ("trust_lo", "trust_hi")}, test_frames=sum(s.get_nframes() for s in test))
    (out / "results.json").write_text(json.dumps({"summary": summary, "models": results}, indent=2))
    plot(results, args.counts, target, out / "label_efficiency.png")
    report_text(results, summary)


def curve(results: list[dict], strategy: str, seed: int, counts: list[int]) -> tuple[list[int], list[float]]:
    """(labels, force RMSE) of one strategy and seed, the initial-data model first."""
    by = {(r["strategy"], r["n"], r["seed"]): r for r in results}
    points = [(0, by[("init", 0, seed)]["force_rmse_ev_per_ang"])]
    points += [(by[(strategy, n, seed)]["n_labels"], by[(strategy, n, seed)]["force_rmse_ev_per_ang"]) for n in counts]
    return [p[0] for p in points], [p[1] for p in points]


def summarise(results: list[dict], counts: list[int], seeds: list[int], target: float) -> dict:
    """Labels to the target per seed and strategy, and the AL/random ratio (at the target and at random's best)."""
    per_seed = []
    for seed in seeds:
        al_n, al_f = curve(results, AL, seed, counts)
        rnd_n, rnd_f = curve(results, RANDOM, seed, counts)
        at_target = (labels_to_reach(al_n, al_f, target), labels_to_reach(rnd_n, rnd_f, target))
        random_best = rnd_f[-1]
        al_at_best = labels_to_reach(al_n, al_f, random_best)
        per_seed.append({
            "seed": seed, "al_labels_to_target": at_target[0], "random_labels_to_target": at_target[1],
            "ratio_at_target": at_target[0] / at_target[1] if None not in at_target and at_target[1] else None,
            "random_best_force": random_best, "random_labels_at_best": rnd_n[-1], "al_labels_to_random_best": al_at_best,
            "ratio_at_random_best": al_at_best / rnd_n[-1] if al_at_best is not None else None,
        })

    def spread(key: str) -> dict | None:
        values = [row[key] for row in per_seed]
        if any(v is None for v in values):
            return {"reached_by": sum(v is not None for v in values), "of": len(values)}
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                "min": float(min(values)), "max": float(max(values))}

    return {"target_force_ev_per_ang": target, "per_seed": per_seed,
            "ratio_at_target": spread("ratio_at_target"), "ratio_at_random_best": spread("ratio_at_random_best")}


def plot(results: list[dict], counts: list[int], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in results})
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for strategy, color in ((AL, "C0"), (RANDOM, "C1")):
        curves = [curve(results, strategy, seed, counts) for seed in seeds]
        n = np.mean([c[0] for c in curves], axis=0)
        f = np.array([c[1] for c in curves])
        ax.errorbar(n, f.mean(axis=0), yerr=f.std(axis=0, ddof=1) if len(seeds) > 1 else None, color=color,
                    marker="o", capsize=3, label=f"{strategy} (mean, std over {len(seeds)} seeds)")
    ax.axhline(target, color="k", ls=":", lw=1, label=f"force target {target:g} eV/A")
    ax.set_xlabel("labels added to the initial data")
    ax.set_ylabel("test force RMSE, member 0 (eV/A)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_text(results: list[dict], summary: dict) -> None:
    print(f"pool {summary['pool_frames']} frames ({summary['pool_labeled']} labeled), {summary['training_steps']} "
          f"training steps, trust window {summary['trust_levels']}, test set {summary['test_frames']} frames")
    print(f"{'strategy':10s} {'n':>3s} {'labels':>6s} {'seed':>4s} {'E meV/at':>9s} {'F eV/A':>7s}")
    for r in sorted(results, key=lambda r: (r["n"], r["strategy"], r["seed"])):
        print(f"{r['strategy']:10s} {r['n']:3d} {r['n_labels']:6d} {r['seed']:4d} "
              f"{r['energy_rmse_mev_per_atom']:9.2f} {r['force_rmse_ev_per_ang']:7.4f}")
    for row in summary["per_seed"]:
        print(f"seed {row['seed']}: labels to F <= {summary['target_force_ev_per_ang']:g}: selection "
              f"{row['al_labels_to_target']}, random {row['random_labels_to_target']}; random's best "
              f"{row['random_best_force']:.4f} at {row['random_labels_at_best']} labels, selection reaches it at "
              f"{row['al_labels_to_random_best'] if row['al_labels_to_random_best'] is not None else 'never'}")
    print(f"ratio AL/random at random's best force: "
          f"{fmt(summary['ratio_at_random_best'], 'the selection reached random selection best force')}")
    print(f"ratio AL/random at the force target: {fmt(summary['ratio_at_target'], 'both strategies reached the target')}")


def fmt(spread: dict, reached: str) -> str:
    if "mean" not in spread:
        return f"not defined: {reached} in {spread['reached_by']} of {spread['of']} seeds"
    return f"{spread['mean']:.2f} +- {spread['std']:.2f} (min {spread['min']:.2f}, max {spread['max']:.2f})"


if __name__ == "__main__":
    main()
