"""Distil a frozen teacher model into a compressed student and gate it on held-out frames and dynamics.

Stages, each skipped when its output exists (a rerun resumes):

    distill/md/traj.NNN/        the teacher model's MD over the matrix (the loop's explorer, dispatched)
    distill/data/train/         its recorded frames labeled by the teacher model (deepmd/npy)
    distill/student/            dp train from scratch, freeze, compress (one dispatched task)
    distill/dynamics/           teacher model and student from the held-out starts, same seeds
    distill/data/heldout/       the teacher model's held-out frames (deepmd/npy), for the RMSE
    distill/report.json         RMSE, dynamics metrics, every gate check and ``passed``; dynamics.png
    distill/student.pth         the gated model (compressed when ``distill.compress``)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shlex
import sys
import time
from functools import partial
from operator import attrgetter
from pathlib import Path

import ase.io

from lfpo_al import atomic
from lfpo_al.dispatch import MachineSettings, TaskSpec, run_tasks
from lfpo_al.distill.data import label_with_model, systems_of, write_deepmd
from lfpo_al.distill.settings import DistillSettings
from lfpo_al.distill.student_task import COMPRESSED, FROZEN
from lfpo_al.errors import UserError
from lfpo_al.explore.settings import ExploreSettings
from lfpo_al.layout import DistillLayout
from lfpo_al.structures.builder import BuildSpec
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.validate.md import DynamicsCase, run_cases

log = logging.getLogger(__name__)
NO_ABORT = 1.0e6  # one model: its deviation is zero; never stop the teacher's MD on it


HELDOUT_FRAMES = "n_frames"  # the held-out errors' frame count, beside each model's errors

def student_input(settings: DistillSettings, type_map: list[str], systems: list[Path]) -> dict:
    """A from-scratch deepmd input for the student (energies and forces; the teacher's MD is NVT); data paths
    absolute, as the task runs in the dispatcher's own folder."""
    steps = settings.numb_steps
    return {
        "model": {"type_map": list(type_map), "descriptor": dict(settings.descriptor),
                  "fitting_net": dict(settings.fitting_net)},
        "learning_rate": {"type": "exp", "start_lr": settings.start_lr, "stop_lr": settings.stop_lr,
                          "decay_steps": max(1, min(5000, steps // 20))},
        "loss": {"type": "ener", "start_pref_e": settings.start_pref_e, "limit_pref_e": settings.limit_pref_e,
                 "start_pref_f": settings.start_pref_f, "limit_pref_f": settings.limit_pref_f,
                 "start_pref_v": 0.0, "limit_pref_v": 0.0},
        "training": {"training_data": {"systems": [str(Path(p).resolve()) for p in systems], "batch_size": settings.batch_size},
                     "numb_steps": steps, "seed": settings.seed, "disp_file": "lcurve.out",
                     "disp_freq": max(1, steps // 50), "save_freq": steps},
    }


def teacher_md(settings: DistillSettings, explore: ExploreSettings, system: OlivineSystem,
               build_defaults: BuildSpec | None, teacher: Path, layout: DistillLayout, machine: MachineSettings) -> list:
    """The teacher model's trajectories over the matrix, through the loop's explorer."""
    from lfpo_al.explore.step import explore_step

    md = dataclasses.replace(explore, temperatures=[float(t) for t in settings.md_temperatures],
                             structures=[dict(s) for s in settings.md_structures], n_steps=settings.md_steps,
                             record_every=settings.md_record_every, abort_deviation=NO_ABORT, seed=settings.md_seed)
    exploration = explore_step(md, system, build_defaults, [teacher], layout.md, machine)
    trajectories = []
    for entry in exploration.trajectories:
        path = layout.md / entry.dir / "frames.extxyz"
        if entry.stop_reason:
            log.warning("distill MD %s (%s, %g K) stopped early: %s", entry.dir, entry.family,
                        entry.temperature, entry.stop_reason)
        if path.is_file():
            trajectories.append(ase.io.read(path, index=":"))
    if not trajectories:
        raise UserError(f"the teacher model's MD in {layout.md} produced no trajectory; see the task.err files there")
    return trajectories


def label_trajectories(teacher: Path, trajectories: list[list], type_map: list[str], data_dir: Path) -> int:
    from deepmd.infer import DeepPot

    model = DeepPot(str(teacher))
    frames = [f for traj in trajectories for f in label_with_model(model, traj)]
    write_deepmd(frames, type_map, data_dir)
    return len(frames)


def train_student(settings: DistillSettings, type_map: list[str], layout: DistillLayout,
                  machine: MachineSettings) -> Path:
    """Train, freeze and (optionally) compress the student as one dispatched task; the model to use."""
    folder = layout.student_dir
    final = folder / (COMPRESSED if settings.compress else FROZEN)
    if final.is_file():
        return final
    folder.mkdir(parents=True, exist_ok=True)
    atomic.write_text(folder / "input.json", json.dumps(
        student_input(settings, type_map, systems_of(layout.train_data)), indent=2))
    command = f"{shlex.quote(sys.executable)} -m lfpo_al.distill.student_task"
    if settings.compress:
        command += f" --compress-step {settings.compress_step}"
    log.info("training the student (%s, %d steps) in %s", settings.descriptor["type"], settings.numb_steps, folder)
    run_tasks(machine, layout.root, [TaskSpec(task_dir=folder.name, command=f"{command} > train.log 2>&1",
                                              forward_files=["input.json"],
                                              backward_files=[FROZEN, COMPRESSED, "lcurve.out", "train.log"])])
    if not final.is_file():
        log_file = folder / "train.log"
        tail = log_file.read_text(errors="replace")[-400:].strip() if log_file.is_file() else "no train.log"
        raise UserError(f"the student did not train ({final} missing); {log_file}: ...{tail}")
    return final


def run_dynamics(cases: list[DynamicsCase], teacher: Path, student: Path, out_dir: Path) -> None:
    """Teacher model and student from every held-out start and seed, side by side on two processes."""
    from deepmd.calculator import DP

    from lfpo_al.validate.geometry import second_process

    runs = [case.single(i) for case in cases for i in range(len(case.protocols))]
    with second_process(2) as pool:
        futures = [pool.submit(run_cases, partial(DP, model=str(model)), [run], paths)
                   for run in runs for model, paths in ((teacher, attrgetter("teacher_paths")),
                                                        (student, partial(DynamicsCase.model_paths, out_dir=out_dir)))]
        for future in futures:
            future.result()


def eval_ms(model_path: Path, atoms, repeats: int = 20) -> float:
    """Milliseconds per single-frame evaluation (after two warm-up calls): the MD step's model cost."""
    from deepmd.infer import DeepPot

    model = DeepPot(str(model_path))
    types = model.get_type_map()
    atype = [types.index(s) for s in atoms.get_chemical_symbols()]
    coords, cell = atoms.positions.reshape(1, -1), atoms.cell.array.reshape(1, 9)
    for _ in range(2):
        model.eval(coords, cell, atype)
    start = time.perf_counter()
    for _ in range(repeats):
        model.eval(coords, cell, atype)
    return round((time.perf_counter() - start) / repeats * 1000.0, 3)


def heldout_errors(teacher: Path, models: dict[str, Path], cases: list[DynamicsCase], type_map: list[str],
                   data_dir: Path) -> dict:
    """Energy and force RMSE of each model against the teacher model on its held-out trajectories."""
    from deepmd.infer import DeepPot

    from lfpo_al.validate.metrics import error_table, load_systems, predict

    if not data_dir.is_dir():
        label_trajectories(teacher, [ase.io.read(p, index=":") for c in cases for p in c.teacher_paths],
                           type_map, data_dir)
    systems = load_systems([data_dir])
    out = {}
    for name, path in models.items():
        table = error_table(predict([DeepPot(str(path))], systems))
        out[name] = table.headline()
    out[HELDOUT_FRAMES] = sum(len(s) for s in systems)
    return out
