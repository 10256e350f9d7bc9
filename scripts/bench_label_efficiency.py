"""Label efficiency: selection strategies against random selection from the same explored pool.

    python scripts/bench_label_efficiency.py runs/al_bench --iterations 0 1 --counts 8 24 --seeds 0 1 2

The pool is every recorded frame of the explorations of ``--iterations`` of a finished run (several
iterations and temperatures). The run's teacher labels every pool frame once; the ensemble of the first
of those iterations (trained on the initial data only, where every benchmark model starts) scores every
frame once: force deviation, valence disagreement and descriptors (:mod:`lfpo_al.selection.ensemble_scores`).
Each strategy then chooses n frames from the same pool with the same scores (``select_step`` with its
settings); ``random`` draws n of the labeled frames with the seed. For each n, strategy and seed, member 0
is fine-tuned with the run's recipe on the initial data plus those labels, for steps that grow with its
data (``--steps-per-frame``, at least ``--min-steps``), and scored on the run's test set.
``--steps-check`` also trains random's largest set (seed 0) with twice the steps: how far the chosen
steps are from where the test error stops falling.

Strategies (a name is a selection variant; all but ``window`` use the lower level of the window the
first iteration selected with):
  random      uniform over the labeled pool
  window      the loop's former default: the trust window the first iteration used, families round-robin
  open        trust_hi from where the teacher failed (no cut where it never did), families round-robin
  valence     open, ranked by the members' disagreement on metal-site breathing forces
  descriptor  open, farthest-point in member 0's descriptor space
  valence_descriptor  open, farthest-point, the valence disagreement choosing the first frame

Printed: each model's errors, the curves (mean and spread over seeds), and last the labels each strategy
needs to reach random's best force (its mean at the largest count), with a bootstrap interval over seeds,
and the ratio to random's labels. Writes ``results.json`` and ``label_efficiency.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import yaml

RANDOM = "random"
TEST, HELDOUT = "test", "heldout_md"  # the run's test set; teacher MD of a held-out cell (--heldout-md)
VARIANTS = {  # selection settings each strategy changes; trust_lo is the first iteration's in all of them
    "window": {},
    "open": {"trust_hi": "teacher"},
    "valence": {"trust_hi": "teacher", "priority": "valence"},
    "descriptor": {"trust_hi": "teacher", "diversity": "descriptor"},
    "valence_descriptor": {"trust_hi": "teacher", "priority": "valence", "diversity": "descriptor"},
}


def labels_to_reach(counts: list[int], forces: list[float], target: float) -> float | None:
    """Labels at which the force RMSE curve first falls to ``target`` (linear between measured counts)."""
    for i, (n, force) in enumerate(zip(counts, forces)):
        if force <= target:
            if i == 0:
                return float(n)
            n0, f0 = counts[i - 1], forces[i - 1]
            return float(n0 + (f0 - target) / (f0 - force) * (n - n0))
    return None


def merge_pool(run_explore_dirs: dict[int, Path], scores, frames_of: dict[str, tuple[int, int]], out: Path) -> Path:
    """One exploration folder holding every pool trajectory (``it<k>.<dir>``), its deviation rewritten
    from the scoring ensemble so that every frame is ranked by the same models."""
    import ase.io

    from lfpo_al.explore.ase_md import DEVI_HEADER
    from lfpo_al.selection.step import FRAMES, SUMMARY, read_summary

    merged = out / "pool_explore"
    shutil.rmtree(merged, ignore_errors=True)
    entries = []
    for k, explore_dir in run_explore_dirs.items():
        for entry in read_summary(explore_dir):
            name = f"it{k}.{entry['dir']}"
            (merged / name).mkdir(parents=True)
            source = explore_dir / entry["dir"] / FRAMES
            if not source.is_file():
                continue
            shutil.copy(source, merged / name / FRAMES)
            rows = sorted((j, i) for key, (i, j) in frames_of.items() if key.startswith(f"{name}:"))
            steps = [atoms.info["step"] for atoms in ase.io.read(source, index=":")]
            table = np.zeros((len(rows), 8))
            table[:, 0] = steps
            table[:, 4:7] = scores.max_devi_f[[i for _, i in rows]][:, None]
            np.savetxt(merged / name / "model_devi.out", table, header=DEVI_HEADER.lstrip("# "))
            entries.append({**entry, "dir": name})
    (merged / SUMMARY).write_text(json.dumps({"trajectories": entries}, indent=2))
    return merged


def pool_frames(explore_dirs: dict[int, Path]) -> tuple[list, dict[str, tuple[int, int]]]:
    """Every recorded frame of the explorations, and ``"it0.traj.000:frame 12" -> (pool index, frame)``."""
    import ase.io

    from lfpo_al.selection.step import FRAMES, read_summary

    frames, index = [], {}
    for k, explore_dir in explore_dirs.items():
        for entry in read_summary(explore_dir):
            path = explore_dir / entry["dir"] / FRAMES
            for j, atoms in enumerate(ase.io.read(path, index=":") if path.is_file() else []):
                index[f"it{k}.{entry['dir']}:frame {j}"] = (len(frames), j)
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


def pool_scores(models: list[Path], frames: list, system, path: Path):
    """The scoring ensemble's per-frame scores, computed once and kept in ``path``."""
    from lfpo_al.selection.ensemble_scores import EnsembleScores, score_frames

    if path.is_file():
        saved = np.load(path)
        return EnsembleScores(saved["max_devi_f"], saved["valence_disagreement"], saved["descriptors"])
    scores = score_frames(models, frames, system.metal, system.oxygen, descriptors=True)
    np.savez(path, max_devi_f=scores.max_devi_f, valence_disagreement=scores.valence_disagreement,
             descriptors=scores.descriptors)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 1], help="whose explorations make the pool")
    parser.add_argument("--counts", type=int, nargs="+", default=[8, 24], help="labels added to the initial data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--strategies", nargs="+", default=[RANDOM, "window", "open", "valence", "descriptor"],
                        choices=[RANDOM, *VARIANTS])
    parser.add_argument("--steps-per-frame", type=float, default=60.0, help="member 0's steps per training frame")
    parser.add_argument("--min-steps", type=int, default=1200)
    parser.add_argument("--steps-check", action="store_true", help="also train random's largest set at 2x the steps")
    parser.add_argument("--heldout-md", type=Path, nargs="*", default=[],
                        help="teacher MD trajectories (extxyz, scripts/teacher_md.py) for a second test set")
    parser.add_argument("--heldout-every", type=int, default=30, help="every n-th frame of those, after the first n")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: <run>/label_efficiency)")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    from lfpo_al.config import instantiate_group
    from lfpo_al.dispatch import TaskSpec, run_tasks
    from lfpo_al.label.driver import label_frames
    from lfpo_al.layout import RunLayout
    from lfpo_al.loop.data import deepmd_systems
    from lfpo_al.selection.step import select_step
    from lfpo_al.selection.teacher_failures import run_record
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
    type_map = list(system.type_map)
    out = (args.out or run_dir / "label_efficiency").resolve()
    out.mkdir(parents=True, exist_ok=True)
    first = min(args.iterations)
    explore_dirs = {k: layout.step_dir(k, "explore") for k in sorted(args.iterations)}

    # the pool, labeled once by the run's teacher (failed labels stay out of every strategy)
    frames, source_index = pool_frames(explore_dirs)
    report = label_frames(frames, labeler, machine, out / "pool_label", system)
    failed = {item["task"] for item in report.failed}
    labeled = {i: labeler.read_outputs(out / "pool_label" / f"task.{i:06d}") for i in range(len(frames))
               if f"task.{i:06d}" not in failed}
    models = sorted((layout.step_dir(first, "train")).glob("member.*/" + FROZEN))
    scores = pool_scores(models, frames, system, out / "pool_scores.npz")
    merged = merge_pool(explore_dirs, scores, source_index, out)

    # every variant keeps the lower level the first iteration selected with; the teacher's record is the
    # run's own (what the loop would have known), never the pool's labels
    used = json.loads((layout.step_dir(first, "select") / "report.json").read_text())["trust_levels"]
    record = run_record([(layout.step_dir(k, "select"), layout.step_dir(k, "label")) for k in args.iterations])
    chosen, selection_reports = {}, {}
    for strategy in [s for s in args.strategies if s != RANDOM]:
        levels = {"trust_lo": used["trust_lo"], "trust_hi": used["trust_hi"], **VARIANTS[strategy]}
        settings = dataclasses.replace(selection, **levels)
        for n in args.counts:
            picked = select_step(merged, out / f"select.{strategy}.{n:03d}", dataclasses.replace(settings, max_selected=n),
                                 models=models, system=system, teacher_record=record, scores=scores)
            chosen[(strategy, n)] = [source_index[p["source"]][0] for p in picked["selected"]
                                     if source_index[p["source"]][0] in labeled]
            selection_reports[strategy] = {key: picked[key] for key in ("trust_levels", "n_candidate", "n_failed")}
    for seed in args.seeds:
        order = np.random.default_rng(seed).permutation(sorted(labeled))
        for n in args.counts:
            chosen[(RANDOM, n, seed)] = sorted(int(i) for i in order[:n])

    init = deepmd_systems(layout.data / "init" / "data")
    n_init = sum(_n_frames(path) for path in init)
    recipe = dataclasses.replace(model, member0_numb_steps=args.min_steps, member0_steps_per_frame=args.steps_per_frame)
    pretrained = resolve_pretrained(model.pretrained, model.head)
    runs = [(0, "init", seed, 1) for seed in args.seeds] + [
        (n, strategy, seed, 1) for n in args.counts for strategy in args.strategies for seed in args.seeds]
    if args.steps_check:
        runs.append((max(args.counts), RANDOM, args.seeds[0], 2))
    tasks, folders = [], {}
    for n, strategy, seed, stretch in runs:
        picks = [] if strategy == "init" else chosen[(RANDOM, n, seed)] if strategy == RANDOM else chosen[(strategy, n)]
        name = f"{strategy}.n{n:03d}.s{seed}" + (f".x{stretch}" if stretch > 1 else "")
        folder = out / "train" / name
        steps = stretch * recipe.steps_for(0, n_init + len(picks))
        folders[(n, strategy, seed, stretch)] = (folder, len(picks), steps)
        if (folder / FROZEN).is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        data_name = f"{strategy}.n{n:03d}" + (f".s{seed}" if strategy == RANDOM else "")
        subset = write_subset(labeled, picks, type_map, out / "data" / data_name)
        (folder / "input.json").write_text(json.dumps(
            training_input(dataclasses.replace(model, seed=seed), type_map, init + subset, seed * 1000, steps), indent=2))
        tasks.append(TaskSpec(f"train/{name}", member_command(pretrained, model.head), ["input.json"],
                              [FROZEN, "lcurve.out"], cost=steps + STARTUP_STEPS))
    run_tasks(machine, out, tasks)

    from deepmd.infer import DeepPot

    from lfpo_al.validate.metrics import error_table, load_systems, predict

    test_sets = {TEST: load_systems([layout.data / "test" / "data"])}
    if args.heldout_md:
        test_sets[HELDOUT] = heldout_set(args.heldout_md, args.heldout_every, labeler, machine, system, out)
    results = []
    for (n, strategy, seed, stretch), (folder, n_labels, steps) in folders.items():
        model_0 = DeepPot(str(folder / FROZEN))
        row = {"strategy": strategy, "n": n, "n_labels": n_labels, "seed": seed, "steps": steps, "stretch": stretch}
        for name, systems in test_sets.items():
            table = error_table(predict([model_0], systems))
            row[name] = table.headline()
        results.append(row)
    trained = [r for r in results if r["stretch"] == 1]
    summary = {"test_sets": {name: summarise(trained, args.strategies, args.counts, args.seeds, name)
                             for name in test_sets}}
    summary.update(run=str(run_dir), iterations=args.iterations, pool_frames=len(frames), pool_labeled=len(labeled),
                   pool_temperatures=sorted({a.info.get("temperature") for a in frames if a.info.get("temperature")}),
                   n_init_frames=n_init, steps_per_frame=args.steps_per_frame, min_steps=args.min_steps,
                   teacher_record={"n_labeled": int(record[0].size), "n_failed": int(record[1].sum())},
                   selections=selection_reports,
                   test_frames={name: sum(s.get_nframes() for s in systems) for name, systems in test_sets.items()})
    (out / "results.json").write_text(json.dumps({"summary": summary, "models": results}, indent=2))
    plot(trained, args.strategies, args.counts, summary["test_sets"], out / "label_efficiency.png")
    report_text(results, summary)


def heldout_set(paths: list[Path], every: int, labeler, machine, system, out: Path) -> list:
    """Every ``every``-th frame of teacher MD trajectories (the first ``every`` left as equilibration),
    labeled by the run's teacher, as dpdata systems."""
    import ase.io

    from lfpo_al.label.driver import label_frames
    from lfpo_al.validate.metrics import load_systems

    frames = []
    for path in paths:
        frames += [atoms for atoms in ase.io.read(path, index=f"{every}::{every}")]
    report = label_frames(frames, labeler, machine, out / "heldout_label", system)
    failed = {item["task"] for item in report.failed}
    labeled = {i: labeler.read_outputs(out / "heldout_label" / f"task.{i:06d}") for i in range(len(frames))
               if f"task.{i:06d}" not in failed}
    write_subset(labeled, sorted(labeled), list(system.type_map), out / "heldout_data")
    return load_systems([out / "heldout_data"])


def _n_frames(system_dir: Path) -> int:
    return sum(int(np.load(path).shape[0]) for path in system_dir.glob("set.*/box.npy"))


def curve(results: list[dict], strategy: str, seed: int, counts: list[int], test: str) -> tuple[list[int], list[float]]:
    """(labels, force RMSE on ``test``) of one strategy and seed, the initial-data model first."""
    by = {(r["strategy"], r["n"], r["seed"]): r for r in results}
    rows = [(0, by[("init", 0, seed)])] + [(by[(strategy, n, seed)]["n_labels"], by[(strategy, n, seed)]) for n in counts]
    return [n for n, _ in rows], [row[test]["force_rmse_ev_per_ang"] for _, row in rows]


def mean_curve(results: list[dict], strategy: str, seeds, counts: list[int], test: str) -> tuple[np.ndarray, np.ndarray]:
    curves = [curve(results, strategy, seed, counts, test) for seed in seeds]
    return np.mean([c[0] for c in curves], axis=0), np.mean([c[1] for c in curves], axis=0)


def summarise(results: list[dict], strategies: list[str], counts: list[int], seeds: list[int], test: str,
              n_boot: int = 2000) -> dict:
    """Per strategy: labels to reach random's best force (the mean over seeds of random at the largest
    count) on the seed-mean curve, as a fraction of random's labels there, with a bootstrap interval from
    resampling each strategy's seeds independently (random's best resampled with them)."""
    rng = np.random.default_rng(0)
    n_best = max(counts)

    def ratio(strategy: str, strategy_seeds, random_seeds) -> float | None:
        best = mean_curve(results, RANDOM, random_seeds, counts, test)[1][-1]
        labels, forces = mean_curve(results, strategy, strategy_seeds, counts, test)
        reached = labels_to_reach(list(labels), list(forces), best)
        return None if reached is None else reached / n_best

    table = {}
    for strategy in strategies:
        draws = [ratio(strategy, rng.choice(seeds, len(seeds)), rng.choice(seeds, len(seeds))) for _ in range(n_boot)]
        reached = [d for d in draws if d is not None]
        forces = {n: [r[test]["force_rmse_ev_per_ang"] for r in results if r["strategy"] == strategy and r["n"] == n]
                  for n in counts}
        table[strategy] = {
            "ratio_to_random_best": ratio(strategy, seeds, seeds),
            "ratio_ci95": [float(np.quantile(reached, 0.025)), float(np.quantile(reached, 0.975))] if reached else None,
            "bootstrap_reached_fraction": len(reached) / n_boot,
            "force_mean": {n: float(np.mean(f)) for n, f in forces.items()},
            "force_std": {n: float(np.std(f, ddof=1)) if len(f) > 1 else 0.0 for n, f in forces.items()},
        }
    return {"random_best_force": float(mean_curve(results, RANDOM, seeds, counts, test)[1][-1]),
            "random_labels_at_best": n_best, "strategies": table}


def plot(results: list[dict], strategies: list[str], counts: list[int], summaries: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in results if r["strategy"] == RANDOM})
    fig, axes = plt.subplots(1, len(summaries), figsize=(5.5 * len(summaries), 4.2), squeeze=False)
    for ax, (test, summary) in zip(axes[0], summaries.items()):
        for i, strategy in enumerate(strategies):
            curves = [curve(results, strategy, seed, counts, test) for seed in seeds]
            n = np.mean([c[0] for c in curves], axis=0) + 0.2 * (i - len(strategies) / 2)  # offsets keep bars apart
            f = np.array([c[1] for c in curves])
            ax.errorbar(n, f.mean(axis=0), yerr=f.std(axis=0, ddof=1) if len(seeds) > 1 else None, color=f"C{i}",
                        marker="o", capsize=3, label=strategy)
        ax.axhline(summary["random_best_force"], color="k", ls=":", lw=1, label="random's best")
        ax.set_xlabel("labels added to the initial data")
        ax.set_ylabel("force RMSE, member 0 (eV/A)")
        ax.set_title(f"{test}: mean and std over {len(seeds)} seeds", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_text(results: list[dict], summary: dict) -> None:
    print(f"pool {summary['pool_frames']} frames ({summary['pool_labeled']} labeled) from iterations "
          f"{summary['iterations']} at {summary['pool_temperatures']} K; {summary['n_init_frames']} initial frames; "
          f"{summary['steps_per_frame']:g} steps per frame (at least {summary['min_steps']}); "
          f"test frames {summary['test_frames']}; teacher record {summary['teacher_record']}")
    for strategy, levels in summary["selections"].items():
        print(f"  {strategy}: {levels}")
    tests = list(summary["test_sets"])
    print(f"{'strategy':19s} {'n':>3s} {'labels':>6s} {'seed':>4s} {'steps':>6s} "
          + " ".join(f"{t + ' E, F':>22s}" for t in tests))
    for r in sorted(results, key=lambda r: (r["n"], r["strategy"], r["seed"], r["stretch"])):
        print(f"{r['strategy']:19s} {r['n']:3d} {r['n_labels']:6d} {r['seed']:4d} {r['steps']:6d} " + " ".join(
            f"{r[t]['energy_rmse_mev_per_atom']:13.2f} {r[t]['force_rmse_ev_per_ang']:8.4f}" for t in tests))
    for test in tests:
        print(f"{test}: force RMSE (eV/A), mean +- std over seeds")
        for strategy, row in summary["test_sets"][test]["strategies"].items():
            print(f"  {strategy:19s} " + ", ".join(f"n={n}: {row['force_mean'][n]:.4f} +- {row['force_std'][n]:.4f}"
                                                  for n in row["force_mean"]))
    for test in tests:
        part = summary["test_sets"][test]
        print(f"{test}: labels to reach random's best force {part['random_best_force']:.4f} eV/A, as a fraction of "
              f"random's {part['random_labels_at_best']} (95 % bootstrap over seeds):")
        for strategy, row in part["strategies"].items():
            if strategy == RANDOM:
                continue
            point, interval = row["ratio_to_random_best"], row["ratio_ci95"]
            print(f"  ratio {strategy}/random: " + ("not reached" if point is None else f"{point:.2f}") +
                  (f" ({interval[0]:.2f}-{interval[1]:.2f}, reached in {row['bootstrap_reached_fraction']:.0%} "
                   "of resamples)" if interval else ""))


if __name__ == "__main__":
    main()
