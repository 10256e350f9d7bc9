"""Thread counts come from machine.threads_per_process, in every job and in the command's own process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.errors import UserError
from lfpo_al.threads import thread_env


def test_thread_env_and_its_checks():
    assert thread_env(2) == {"OMP_NUM_THREADS": "2", "DP_INTRA_OP_PARALLELISM_THREADS": "2",
                             "DP_INTER_OP_PARALLELISM_THREADS": "1"}
    assert thread_env(None) == {}
    for bad in (0, -1, "two", True, 1.5):
        with pytest.raises(UserError, match="machine.threads_per_process"):
            thread_env(bad)


def test_local_machine_defaults_to_one_thread_per_process():
    machine = instantiate_group(compose_config([]), "machine")
    assert machine.threads_per_process == 1
    assert "OMP_NUM_THREADS" not in machine.envs  # one source: the jobs get it from threads_per_process


def test_the_command_sets_threads_before_torch_loads(tmp_path):
    """A command run directly (no Makefile exports) gets the machine's count, and torch uses it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "DP_"))}
    probe = ("import sys, lfpo_al.__main__ as m, lfpo_al.config as c;"
             "cfg = c.compose_config(sys.argv[1:]);"
             "from lfpo_al.threads import use_in_this_process; use_in_this_process(cfg.machine.threads_per_process);"
             "import os, torch; print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", probe, "machine.threads_per_process=1"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1"]


def test_every_command_exports_the_count(tmp_path, monkeypatch):
    from lfpo_al.__main__ import main

    for key in thread_env(1):
        monkeypatch.delenv(key, raising=False)
    main(["status", "run_name=absent", f"runs_dir={tmp_path}", "machine.threads_per_process=1"])
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["DP_INTRA_OP_PARALLELISM_THREADS"] == "1"


def test_a_bad_thread_count_is_one_line_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lfpo_al", "train", "machine.threads_per_process=abc",
                             f"runs_dir={tmp_path}"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("lfpo_al train: error: machine.threads_per_process='abc'")
    assert not any(tmp_path.iterdir())
