"""Any model's held-out polaron dynamics against a run's teacher references, as the validate step scores member 0.

    python scripts/dynamics_vs_teacher.py runs/demo --model lfpo_al/starter/starter_dpa2.pt --out runs/demo/starter_dynamics

Runs the model from the run's held-out starts with the run's protocol (validate.dynamics of its
config.yaml) and compares with the teacher's trajectories under runs/<run>/data/dynamics/ (or the run's
reference_md files): the starter's score is the baseline a fine-tuned model has to beat.
"""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--model", type=Path, required=True, help="frozen .pth or deepmd .pt checkpoint")
    parser.add_argument("--out", type=Path, required=True, help="folder for the model's trajectories and dynamics.png")
    args = parser.parse_args()

    from deepmd.calculator import DP
    from omegaconf import OmegaConf

    from lfpo_al.config import instantiate_group, make_settings
    from lfpo_al.layout import RunLayout
    from lfpo_al.structures.builder import BuildSpec
    from lfpo_al.validate.md import DynamicsCase, run_cases
    from lfpo_al.validate.reference import dynamics_cases
    from lfpo_al.validate.step import DYNAMICS_DIR, compare_dynamics

    cfg = OmegaConf.create(yaml.safe_load((args.run_dir / "config.yaml").read_text()))
    system, validate = instantiate_group(cfg, "system"), instantiate_group(cfg, "validate")
    defaults = make_settings(BuildSpec, OmegaConf.to_container(cfg.build), "build")
    cases = dynamics_cases(validate.dynamics, system, defaults, RunLayout(args.run_dir).data / "dynamics")
    if not cases:
        raise SystemExit(f"{args.run_dir} validates no dynamics (validate.dynamics is empty)")
    out = args.out.resolve()
    run_cases(partial(DP, model=str(args.model)), cases, partial(DynamicsCase.model_paths, out_dir=out / DYNAMICS_DIR))
    metrics = compare_dynamics(cases, system, validate, out)
    (out / "dynamics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics["dynamics_summary"], indent=2))


if __name__ == "__main__":
    main()
