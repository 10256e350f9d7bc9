"""Frozen models run under TorchScript's simple executor in every process that evaluates them."""

from __future__ import annotations

import subprocess
import sys


def probe(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_use_simple_executor_turns_the_profiling_executor_off():
    # the setter returns the previous mode: True (profiling) by default, False once switched
    before = "import torch; print(torch._C._jit_set_profiling_executor(True))"
    after = ("from lfpo_al.torchscript import use_simple_executor; use_simple_executor();"
             "import torch; print(torch._C._jit_set_profiling_executor(True))")
    assert probe(before) == "True"
    assert probe(after) == "False"


def test_worker_processes_use_it():
    code = ("from lfpo_al.validate.geometry import second_process\n"
            "import torch\n"
            "if __name__ == '__main__':\n"
            "    with second_process() as pool:\n"
            "        print(pool.submit(torch._C._jit_set_profiling_executor, False).result())\n")
    assert probe(code) == "False"
