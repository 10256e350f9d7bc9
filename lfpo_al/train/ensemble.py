"""Fine-tune a pretrained DPA-2 into an ensemble of members with deepmd-kit (PyTorch backend).

Each member is one dpdispatcher task folder ``member.%03d`` running ``dp --pt train --finetune`` and
``dp --pt freeze`` in one process (``lfpo_al.train.member_task``). Members that keep the pretrained
fitting net and differ only in seed barely disagree, so by default every member but member 0
re-initialises its fitting net with its own seed (``--model-branch RANDOM``) and each deviation member
may see its own bootstrap subset of the frames; member 0, the model that is used, trains on all of them. Each
iteration fine-tunes afresh from the pretrained model, or, with ``from_pretrained_each_iteration``
off, continues from the same member's previous checkpoint.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import dpdata
import numpy as np

from lfpo_al import atomic
from lfpo_al.dispatch import MachineSettings, TaskSpec, run_tasks
from lfpo_al.train.member_task import CHECKPOINT, FROZEN
from lfpo_al.train.pretrained import RANDOM_HEAD
from lfpo_al.train.settings import ModelSettings

log = logging.getLogger(__name__)

MEMBER_DIR = "member.{:03d}"
# start-up (model load, data statistics) and freeze of one member, in training steps, for packing jobs
STARTUP_STEPS = 100


@dataclass
class Member:
    index: int
    dir: Path

    @property
    def frozen(self) -> Path:
        return self.dir / FROZEN

    @property
    def checkpoint(self) -> Path:
        return self.dir / CHECKPOINT


def dp_executable() -> str:
    """The ``dp`` of the running interpreter's environment (never a different install on PATH)."""
    return str(Path(sys.executable).with_name("dp"))


def training_input(settings: ModelSettings, type_map: list[str], systems: list[Path], seed: int,
                   numb_steps: int | None = None) -> dict:
    """A fine-tune input: architecture comes from the checkpoint (``--use-pretrain-script``)."""
    steps = numb_steps or settings.numb_steps
    return {
        "model": {"type_map": list(type_map), "descriptor": {}, "fitting_net": {}},
        "learning_rate": {
            "type": "exp",
            "start_lr": settings.start_lr,
            "stop_lr": settings.stop_lr,
            "decay_steps": max(1, min(1000, steps // 10)),
        },
        "loss": {
            "type": "ener",
            "start_pref_e": settings.start_pref_e,
            "limit_pref_e": settings.limit_pref_e,
            "start_pref_f": settings.start_pref_f,
            "limit_pref_f": settings.limit_pref_f,
            "start_pref_v": settings.start_pref_v,
            "limit_pref_v": settings.limit_pref_v,
        },
        "training": {
            "training_data": {"systems": [str(p) for p in systems], "batch_size": settings.batch_size},
            "numb_steps": steps,
            "seed": seed,
            "disp_file": "lcurve.out",
            "disp_freq": max(1, steps // 20),
            "save_freq": steps,
        },
    }


def count_frames(systems: list[Path]) -> int:
    """Frames in deepmd/npy systems, from the shapes of their box arrays (nothing else is read)."""
    return sum(np.load(box, mmap_mode="r").shape[0] for path in systems for box in Path(path).glob("set.*/box.npy"))


def bootstrap_subset(systems: list[Path], fraction: float, rng: np.random.Generator, out_dir: Path) -> list[Path]:
    """Write a random ``fraction`` of each system's frames (at least one) as deepmd/npy under ``out_dir``."""
    out = []
    for i, path in enumerate(systems):
        system = dpdata.LabeledSystem(str(path), fmt="deepmd/npy")
        n_keep = max(1, int(round(fraction * len(system))))
        keep = np.sort(rng.choice(len(system), size=n_keep, replace=False))
        target = out_dir / f"sys.{i:03d}"
        system.sub_system(keep).to_deepmd_npy(str(target))
        out.append(target)
    return out


def member_command(start_from: Path, branch: str | None) -> str:
    command = (f"{shlex.quote(sys.executable)} -m lfpo_al.train.member_task "
               f"--finetune {shlex.quote(str(Path(start_from).resolve()))}")
    if branch:
        command += f" --model-branch {shlex.quote(branch)}"
    return f"{command} > train.log 2>&1"


def train_ensemble(
    settings: ModelSettings,
    type_map: list[str],
    systems: list[Path],
    work_dir: Path,
    machine: MachineSettings,
    pretrained: Path,
    previous: list[Member] | None = None,
) -> list[Member]:
    """Train (or resume) ``settings.n_members`` members in ``work_dir``; returns them frozen.

    ``previous``: members of the last iteration; each member continues from its own checkpoint.
    Members whose ``model.pth`` already exists are not trained again.
    """
    work_dir = Path(work_dir).resolve()
    systems = [Path(p).resolve() for p in systems]
    if not systems:
        raise ValueError("no training data: the ensemble needs at least one labeled deepmd/npy system")
    members, tasks = [], []
    n_frames = count_frames(systems)
    for i in range(settings.n_members):
        member = Member(i, work_dir / MEMBER_DIR.format(i))
        members.append(member)
        if member.frozen.is_file() and member.checkpoint.is_file():
            continue
        member.dir.mkdir(parents=True, exist_ok=True)
        seed = settings.seed * 1000 + i
        rng = np.random.default_rng(seed)
        member_systems = systems
        if settings.bootstraps(i):
            member_systems = bootstrap_subset(systems, settings.bootstrap_fraction, rng, member.dir / "bootstrap")
        steps = settings.steps_for(i, n_frames)
        member_input = training_input(settings, type_map, member_systems, seed, steps)
        atomic.write_text(member.dir / "input.json", json.dumps(member_input, indent=2))
        if previous:
            start, branch = previous[i].checkpoint, None
        else:
            start = pretrained
            branch = RANDOM_HEAD if settings.reinitialises_fitting(i) else settings.head
        tasks.append(TaskSpec(
            task_dir=member.dir.name,
            command=member_command(start, branch),
            forward_files=["input.json"],
            backward_files=[FROZEN, CHECKPOINT, "lcurve.out", "train.log"],
            cost=steps + STARTUP_STEPS,
        ))
    if tasks:
        log.info("training %d ensemble members in %s", len(tasks), work_dir)
        run_tasks(machine, work_dir, tasks)
    missing = [m.dir.name for m in members if not (m.frozen.is_file() and m.checkpoint.is_file())]
    if missing:
        logs = "; ".join(tail_of(work_dir / name / "train.log") for name in missing)
        raise RuntimeError(f"ensemble members {', '.join(missing)} did not train: {logs}")
    return members


def tail_of(path: Path, n_chars: int = 300) -> str:
    if not path.is_file():
        return f"{path} missing"
    return f"{path}: ...{path.read_text(errors='replace')[-n_chars:].strip()}"


def last_training_rmse(member: Member) -> dict[str, float]:
    """Last row of lcurve.out: training energy (per atom) and force RMSE."""
    path = member.dir / "lcurve.out"
    with open(path) as fh:
        names = fh.readline().lstrip("#").split()
    rows = np.atleast_2d(np.loadtxt(path))
    return {name: float(v) for name, v in zip(names, rows[-1])}
