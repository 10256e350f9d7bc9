"""Fine-tuning recipes for member 0, measured on a finished run's own data and test set.

    python scripts/finetune_sweep.py runs/demo --iteration 1 \
        --variant base: --variant lr1e-4:start_lr=1e-4 --variant lr1e-4_800:start_lr=1e-4,numb_steps=800

Each variant trains member 0 (the pretrained fitting net kept, as the loop does) on the data the loop
trained iteration ``--iteration`` on (initial frames plus the labels of the iterations before), with the
run's model settings and the variant's overrides, through the run's machine config; the variants run side
by side. Printed: energy and force RMSE of every variant and of the pretrained model untouched, on
``--score-on`` (deepmd/npy folders; default the run's test set). To tune without touching the test set
you report on, score on frames none of the variants trained on, e.g. the labels of iteration
``--iteration`` itself (``iter.00000k/03.label/data``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import yaml

from lfpo_al.config import instantiate_group
from lfpo_al.dispatch import TaskSpec, run_tasks
from lfpo_al.layout import RunLayout
from lfpo_al.loop.data import deepmd_systems
from lfpo_al.train.ensemble import member_command, training_input
from lfpo_al.train.member_task import FROZEN
from lfpo_al.train.pretrained import resolve_pretrained
from lfpo_al.validate.metrics import error_table, load_systems, predict


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, assignments = text.partition(":")
    overrides = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = _number_or_yaml(value)
    return name, overrides


def _number_or_yaml(text: str):
    """``1e-4`` as a number (YAML 1.1 reads it as a string), anything else as YAML."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return yaml.safe_load(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--iteration", type=int, default=0)
    parser.add_argument("--variant", action="append", required=True, help="name:key=value,key=value (model.* keys)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: <run>/finetune_sweep)")
    parser.add_argument("--score-on", type=Path, nargs="+", default=None, help="deepmd/npy folders to score on")
    args = parser.parse_args()

    from omegaconf import OmegaConf

    layout = RunLayout(args.run_dir)
    cfg = OmegaConf.create(yaml.safe_load((args.run_dir / "config.yaml").read_text()))
    base = instantiate_group(cfg, "model")
    machine = instantiate_group(cfg, "machine")
    type_map = list(cfg.system.type_map)
    pretrained = resolve_pretrained(base.pretrained, base.head)
    systems = deepmd_systems(layout.data / "init" / "data")
    systems += [s for j in range(args.iteration) for s in deepmd_systems(layout.step_dir(j, "label") / "data")]
    out = (args.out or args.run_dir / "finetune_sweep").resolve()
    tasks = []
    for name, overrides in map(parse_variant, args.variant):
        settings = dataclasses.replace(base, **overrides)
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / FROZEN).is_file():
            continue
        (folder / "input.json").write_text(json.dumps(training_input(settings, type_map, systems, settings.seed * 1000), indent=2))
        tasks.append(TaskSpec(name, member_command(pretrained, settings.head), ["input.json"], [FROZEN, "lcurve.out"]))
    run_tasks(machine, out, tasks)

    from deepmd.infer import DeepPot

    scored = args.score_on or [layout.data / "test" / "data"]
    test = load_systems(scored)
    rows = [("pretrained, untouched", pretrained)] + [(n, out / n / FROZEN) for n, _ in map(parse_variant, args.variant)]
    print(f"{len(systems)} training systems; scored on {', '.join(map(str, scored))} "
          f"({sum(s.get_nframes() for s in test)} frames)")
    print(f"{'variant':28s} {'E (meV/atom)':>13s} {'F (eV/A)':>9s}")
    for name, model in rows:
        table = error_table(predict([DeepPot(str(model))], test))
        print(f"{name:28s} {table.energy_rmse_mev_per_atom:13.2f} {table.force_rmse_ev_per_ang:9.4f}")


if __name__ == "__main__":
    main()
