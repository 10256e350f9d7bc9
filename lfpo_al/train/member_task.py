"""One ensemble member's task: ``dp --pt train --finetune`` then ``dp --pt freeze``, in one process.

Run inside a member folder holding ``input.json`` (``python -m lfpo_al.train.member_task --finetune
CKPT [--model-branch B]``). Both steps go through deepmd-kit's own command-line entry point; one
process pays its ~6-10 s of imports once instead of twice. Writes ``model.pth`` (frozen) and
``model.final.pt`` (the last checkpoint, copied off deepmd's ``model.ckpt.pt`` link).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

FROZEN = "model.pth"
CHECKPOINT = "model.final.pt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfpo_al.train.member_task", description=__doc__.splitlines()[0])
    parser.add_argument("--finetune", required=True, help="checkpoint to fine-tune from")
    parser.add_argument("--model-branch", default=None, help="head of a multi-task checkpoint, or RANDOM")
    args = parser.parse_args(argv)
    from deepmd.main import main as dp

    train = ["--pt", "train", "input.json", "--finetune", args.finetune, "--use-pretrain-script"]
    if args.model_branch:
        train += ["--model-branch", args.model_branch]
    dp(train)
    dp(["--pt", "freeze", "-c", ".", "-o", FROZEN])  # the fine-tuned model is single-task: no --head
    shutil.copyfile(Path("model.ckpt.pt").resolve(), CHECKPOINT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
