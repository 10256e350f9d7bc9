import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SYSTEMS = ("lfpo", "lmpo", "lcpo", "lnpo")


@pytest.fixture(scope="session")
def load_system():
    from lfpo_al.config import compose_config, instantiate_group

    cache = {}

    def load(name: str = "lfpo"):
        if name not in cache:
            cache[name] = instantiate_group(compose_config([f"system={name}"]), "system")
        return cache[name]

    return load


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lfpo_al", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=300
    )
