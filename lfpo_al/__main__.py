"""``python -m lfpo_al <command> [hydra overrides]``."""

from __future__ import annotations

import argparse
import os
import sys

from lfpo_al.errors import UserError

COMMANDS = {
    "train": "run the active-learning loop: fine-tune the ensemble, explore, select, label, validate",
    "plan": "print what one iteration would submit and its estimated cost; runs nothing (train --dry-run)",
    "build": "build one LixMPO4 structure from the system config (build.* keys) and write extxyz",
    "distill": "distil a run's final model into a compressed student, gated on held-out frames and dynamics",
    "analyze": "flip-dynamics analysis of a final model or of existing trajectories",
    "status": "print the state of a run (run_name=NAME) from its record",
}

EXAMPLES = """examples:
  python -m lfpo_al train                                  # the default (demo) experiment
  python -m lfpo_al build system=lfpo build.supercell=[1,2,2] build.x=0.5 build.li_order=random build.seed=0 build.output=out.extxyz
  python -m lfpo_al train --cfg system=lmpo                # print the composed config and exit
  python -m lfpo_al plan experiment=production             # what a run would submit and cost; runs nothing
  python -m lfpo_al distill run_name=demo                  # compressed student of the demo's final model
  python -m lfpo_al --config-dir my_configs train system=my_olivine   # my_configs/system/my_olivine.yaml
"""

CONFIG_DIR_HELP = ("a folder of your own configs (group folders such as system/, machine/, experiment/), searched "
                   "before the package's; same as $LFPO_AL_CONFIG_DIR")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lfpo_al",
        description="Active learning of polaron-accurate DPA-2 force fields for olivine LixMPO4.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXAMPLES,
    )
    p.add_argument("--config-dir", metavar="DIR", help=CONFIG_DIR_HELP)
    sub = p.add_subparsers(dest="command", metavar="command", required=True)
    for name, text in COMMANDS.items():
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--cfg", action="store_true", help="print the composed config and exit")
        # SUPPRESS: a sub-command's absent option must not erase the one given before the sub-command
        cmd.add_argument("--config-dir", metavar="DIR", default=argparse.SUPPRESS, help=CONFIG_DIR_HELP)
        if name == "status":
            cmd.add_argument("--check", action="store_true",
                             help="also read back every dataset and model of the run and name any damaged file")
        if name == "train":
            cmd.add_argument("--dry-run", action="store_true",
                             help="print what one iteration would submit and its estimated cost, run nothing "
                                  "(the plan command)")
        cmd.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. system=lmpo build.x=0.25")
    return p


def run(command: str, overrides: list[str], show_cfg: bool, check: bool = False) -> int:
    from omegaconf import OmegaConf

    from lfpo_al.config import compose_config

    cfg = compose_config(overrides)
    if show_cfg:
        print(OmegaConf.to_yaml(cfg))
        return 0
    if "machine" in cfg:  # before anything loads torch
        from lfpo_al.threads import use_in_this_process

        use_in_this_process(cfg.machine.get("threads_per_process"))
    if command in ("train", "analyze", "distill"):  # both evaluate frozen models in this process
        from lfpo_al.torchscript import use_simple_executor

        use_simple_executor()
    if command == "build":
        from lfpo_al.structures.cli import build_command

        return build_command(cfg)
    if command == "plan":  # before any lock: a plan leaves no trace in the run folder
        from lfpo_al.loop.plan_text import print_plan

        return print_plan(cfg)
    if command == "train":
        from lfpo_al.loop.run import train_command

        return train_command(cfg)
    if command == "status":
        from lfpo_al.layout import RunLayout
        from lfpo_al.loop.report import status_text

        run_dir = RunLayout.of(cfg.runs_dir, cfg.run_name).run_dir
        print(status_text(run_dir))
        if check:
            from lfpo_al.loop.verify import check_text

            text, whole = check_text(run_dir)
            print(text)
            return 0 if whole else 1
        return 0
    if command == "distill":
        from lfpo_al.distill.cli import distill_command

        return distill_command(cfg)
    if command == "analyze":
        from lfpo_al.analysis.cli import analyze_command

        return analyze_command(cfg)
    raise UserError(f"unknown command {command!r}")


def setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("dpdispatcher", "deepmd", "wandb", "urllib3", "matplotlib", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args, rest = cli.parse_known_args(argv)  # --dry-run or --cfg among the overrides leaves the rest over
    unknown = [word for word in rest if word.startswith("-")]
    if unknown:
        cli.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides += rest
    setup_logging()
    if args.config_dir:  # the environment carries it to anything this command starts
        os.environ["LFPO_AL_CONFIG_DIR"] = args.config_dir
    try:
        command = "plan" if getattr(args, "dry_run", False) else args.command
        return run(command, args.overrides, args.cfg, getattr(args, "check", False))
    except UserError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"lfpo_al {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
