"""``python -m lfpo_al status run_name=NAME --check``: read every file a resume would read, and say which is damaged.

The record, the frozen config, every deepmd/npy dataset (through dpdata, labels finite) and every frozen
model (TorchScript) of the run; nothing is written. Each problem is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lfpo_al.errors import UserError, first_line
from lfpo_al.layout import STEP_DIRS, RunLayout
from lfpo_al.loop.data import check_deepmd_systems, deepmd_systems
from lfpo_al.loop.state import RunState


def model_problem(path: Path) -> str | None:
    """Why a frozen deepmd model cannot be loaded, or None."""
    import torch

    try:
        torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # truncated, not TorchScript, not a file at all
        text = first_line(exc) or type(exc).__name__
        return f"{path}: not a loadable frozen model ({type(exc).__name__}: {text[:200]})"
    return None


def run_problems(run_dir: Path) -> tuple[list[str], int]:
    """(one line per damaged file, number of files checked)."""
    layout = RunLayout(Path(run_dir))
    if not layout.run_dir.is_dir():
        raise UserError(f"no run folder {layout.run_dir}; check run_name= and runs_dir=")
    problems, checked = [], 0
    try:
        RunState(layout.run_dir).records()
        checked += 1
    except UserError as exc:
        problems.append(str(exc))
    if layout.config.is_file():
        checked += 1
        try:
            yaml.safe_load(layout.config.read_text())
        except yaml.YAMLError as exc:
            problems.append(f"{layout.config}: unreadable YAML ({str(exc).splitlines()[0]})")
    data_dirs = [layout.data / "init" / "data", layout.data / "test" / "data"]
    data_dirs += sorted(layout.run_dir.glob(f"iter.*/{STEP_DIRS['label']}/data"))
    for system in (s for d in data_dirs for s in deepmd_systems(d)):
        checked += 1
        try:
            check_deepmd_systems([system])
        except UserError as exc:
            problems.append(str(exc))
    models = sorted(layout.run_dir.glob(f"iter.*/{STEP_DIRS['train']}/member.*/*.pth")) + layout.final_models()
    for model in models:
        checked += 1
        problem = model_problem(model)
        if problem:
            problems.append(problem)
    return problems, checked


def check_text(run_dir: Path) -> tuple[str, bool]:
    """The report of ``status --check`` and whether the run is whole."""
    problems, checked = run_problems(run_dir)
    if not problems:
        return f"check: {checked} files read back whole (record, config, datasets, models)", True
    return "\n".join([f"check: {len(problems)} of {checked} files damaged:", *(f"  {p}" for p in problems)]), False
