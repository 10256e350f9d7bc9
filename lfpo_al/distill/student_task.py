"""The student's task: ``dp --pt train`` from scratch, ``dp --pt freeze``, then ``dp --pt compress``, in one process.

Run inside the student folder holding ``input.json`` (``python -m lfpo_al.distill.student_task
[--compress-step S]``). Writes ``model.pth`` (frozen) and, with ``--compress-step``,
``model.compressed.pth`` (embedding nets tabulated by fifth-order polynomials).
"""

from __future__ import annotations

import argparse
import sys

FROZEN = "model.pth"
COMPRESSED = "model.compressed.pth"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfpo_al.distill.student_task", description=__doc__.splitlines()[0])
    parser.add_argument("--compress-step", type=float, default=None, help="table step of dp compress; omit: no compression")
    args = parser.parse_args(argv)
    from deepmd.main import main as dp

    dp(["--pt", "train", "input.json"])
    dp(["--pt", "freeze", "-c", ".", "-o", FROZEN])
    if args.compress_step is not None:
        dp(["--pt", "compress", "-i", FROZEN, "-o", COMPRESSED, "-s", str(args.compress_step)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
