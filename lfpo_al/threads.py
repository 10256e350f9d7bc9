"""Threads of every torch process a command starts: ``machine.threads_per_process``.

Torch starts one intra-op thread per core by default, so several processes on a small machine (the
dispatched jobs, this command's own MD and teacher runs) oversubscribe its cores many times over
(docs/costs.md, *Threads*). The count is exported in every job and set in this process before torch
loads; null leaves the libraries' defaults.
"""

from __future__ import annotations

import logging
import os
import sys

from lfpo_al.errors import UserError

log = logging.getLogger(__name__)


def checked(threads: object) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"machine.threads_per_process={threads!r} must be a positive number of threads, "
                        "or null for the libraries' defaults")
    return threads


def thread_env(threads: int | None) -> dict[str, str]:
    """The variables torch, OpenMP and deepmd read their thread counts from."""
    if checked(threads) is None:
        return {}
    return {"OMP_NUM_THREADS": str(threads), "DP_INTRA_OP_PARALLELISM_THREADS": str(threads),
            "DP_INTER_OP_PARALLELISM_THREADS": "1"}


def use_in_this_process(threads: int | None) -> None:
    """Export the thread variables here (children inherit them) and set torch's pool if it is loaded."""
    env = thread_env(threads)
    for key, value in env.items():
        if os.environ.get(key) not in (None, value):
            log.debug("%s=%s from machine.threads_per_process replaces %s=%s of the environment",
                     key, value, key, os.environ[key])
        os.environ[key] = value
    if env and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
