"""``python -m lfpo_al train --dry-run`` (or ``loop.dry_run=true``): what a run would submit, and its cost.

Nothing runs and nothing is written: the structures are built in memory only to count their atoms,
and an existing run folder is only read. Costs are CPU core-hours from the measured per-step costs
below, the labeler's ``core_seconds_per_atom`` and per-task start-up times: estimates to size a
campaign before spending it, not promises. Each step is priced on its own machine
(``machine.train`` / ``explore`` / ``label``): where its jobs have GPUs, in GPU-hours, the one-core time
divided by that machine's ``gpu_speedup`` (unknown: not divided, an upper bound). Disk sizes scale
measurements of the demo run folder.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from lfpo_al.dispatch import MachineSettings
from lfpo_al.explore.step import family_name
from lfpo_al.validate.reference import dynamics_cases
from lfpo_al.label.driver import plan_round
from lfpo_al.layout import RunLayout
from lfpo_al.loop.components import Components
from lfpo_al.loop.state import RunState
from lfpo_al.structures.builder import build_specs, build_structure
from lfpo_al.train.pretrained import STARTER
from lfpo_al.train.settings import ModelSettings


@dataclass(frozen=True)
class ModelCost:
    """CPU cost of one model size on one core (OMP and deepmd threads = 1)."""

    name: str
    train_core_s_per_batch_atom: float  # one training step, per atom of the batch
    md_core_s_per_atom_step: float      # one ASE MD step driven by one member


# Starter-size DPA-2 (116k parameters, float32), from the campaign's per-stage times (docs/costs.md):
# training 0.13 s/step at ~52 atoms per batch; an explore task's MD 1.6 ms per atom-step with its
# recording and ensemble scoring.
STARTER_COST = ModelCost("starter-size DPA-2", 0.13 / 52, 1.6e-3)
# DPA-2.3.1-size DPA-2 (1.0 M parameters): training ~0.56 s/step at batch 1 x 28 atoms; MD of 224 atoms 1.5-2.6 s/step.
LARGE_COST = ModelCost("DPA-2.3.1-size DPA-2 (~1 M parameters)", 0.56 / 28, 2.05 / 224)

# Start-up per task in core-seconds, from the demo run (step wall x 2 cores / tasks, minus the compute above).
TRAIN_TASK_STARTUP_S = 11.0  # deepmd imports (~7 s), data statistics, freeze in the same process
MD_TASK_STARTUP_S = 9.0      # interpreter and deepmd start-up, loading every member
LABEL_TASK_STARTUP_S = 5.0   # interpreter start-up and teacher load, once per job of a batching teacher (CHGNet)

# Disk per atom and frame (apparent sizes in the demo run folder).
MD_BYTES_PER_ATOM_FRAME = 160     # frames.extxyz and model_devi.out, per recorded frame
LABEL_BYTES_PER_ATOM_FRAME = 560  # task folder (frame.extxyz, labeled.extxyz, logs) and deepmd/npy
# one member's folder (checkpoint, frozen model, bootstrap data) per byte of the pretrained .pt: 4.5 MB / 1.03 MB
MEMBER_BYTES_PER_PRETRAINED_BYTE = 4.4

NOT_COUNTED = "Not counted: selection and validation (in-process, seconds to minutes per iteration)."


@dataclass
class Stage:
    """One row of the plan: a group of tasks submitted together."""

    name: str
    tasks: int
    what: str
    core_s: float | None  # None: the teacher's cost is unknown
    disk_bytes: float
    jobs: int = 1            # jobs running at once
    cores_per_task: int = 1
    at_most: bool = False    # the count is an upper bound (selected frames)
    longest_task_s: float = 0.0  # one task longer than the others (member 0) may set the wall
    gpus_per_job: int = 0        # > 0: the tasks run on their job's GPUs, one after another
    gpu_speedup: float | None = None  # one core's time over one GPU's; None: unknown

    @property
    def on_gpu(self) -> bool:
        return self.gpus_per_job > 0

    def _task_s(self, core_s: float) -> float:
        """Wall seconds of ``core_s`` core-seconds of work on this stage's device."""
        return core_s / (self.gpu_speedup or 1.0) if self.on_gpu else core_s / self.cores_per_task

    @property
    def cost_s(self) -> float | None:
        """Core-seconds, or GPU-seconds (every GPU a job holds, while its tasks run) on a GPU machine."""
        if self.core_s is None:
            return None
        return self._task_s(self.core_s) * self.gpus_per_job if self.on_gpu else self.core_s

    @property
    def cost_unit(self) -> str:
        return "GPU-h" if self.on_gpu else "core-h"

    @property
    def cost_is_bound(self) -> bool:
        """GPU time priced at one core's: the GPU's speed-up is unknown."""
        return self.on_gpu and self.gpu_speedup is None

    @property
    def wall_s(self) -> float | None:
        """Balanced tasks, all jobs running at once; never shorter than the longest task."""
        if self.core_s is None:
            return None
        if not self.tasks:
            return 0.0
        per_task = self._task_s(self.core_s / self.tasks)
        balanced = math.ceil(self.tasks / max(1, min(self.jobs, self.tasks))) * per_task
        return max(balanced, self._task_s(self.longest_task_s))


@dataclass
class Plan:
    run_name: str
    run_dir: Path
    run_state: str
    where: list[str]  # the machine, or each step's where they differ
    cost_model: str
    train_steps: int
    md_structures: list[tuple[str, int]]
    temperatures: list[list[float]]  # per MD structure
    md_steps: int
    frames_per_task: int
    setup: list[Stage]
    iteration: list[Stage]
    max_iters: int
    run_label_cap: int
    notes: list[str]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.setup + self.iteration if s.name == name)

    def whole_run(self) -> tuple[dict[str, float | None], float]:
        """Cost seconds by unit (core-h, GPU-h) and bytes of setup + every iteration, selected labels capped
        by the budget; a unit's cost is None where a stage's is unknown."""
        selected = self.stage("label selected")
        weighted = [(s, 1) for s in self.setup] + [(s, self.max_iters) for s in self.iteration if s is not selected]
        weighted.append((selected, self.run_label_cap / selected.tasks if selected.tasks else 0))
        costs: dict[str, float | None] = {}
        for stage, times in weighted:
            unit, cost = stage.cost_unit, stage.cost_s
            known = costs.get(unit, 0.0)
            costs[unit] = None if known is None or cost is None else known + times * cost
        disk = sum(s.disk_bytes for s in self.setup)
        disk += sum(self.max_iters * s.disk_bytes for s in self.iteration if s is not selected)
        disk += selected.disk_bytes / max(1, selected.tasks) * self.run_label_cap
        return costs, disk


def batch_atoms(batch_size: int | str, natoms: int) -> int:
    """Atoms in one training batch of ``natoms``-atom frames, by deepmd-kit's ``batch_size`` rules."""
    if isinstance(batch_size, int):
        return batch_size * natoms
    rule, _, number = str(batch_size).partition(":")
    if rule == "auto":  # smallest batch with at least N (default 32) atoms
        return math.ceil(int(number or 32) / natoms) * natoms
    if rule == "max":   # largest batch with at most N atoms, at least one frame
        return max(1, int(number) // natoms) * natoms
    if rule == "mixed":
        return int(number) * natoms
    return natoms


def run_tasks_jobs(machine, n_tasks: int) -> int:
    """Jobs at once for ``run_tasks`` (training, MD): ``parallel_jobs``, else one per ``group_size`` tasks."""
    if machine.parallel_jobs:
        return min(machine.parallel_jobs, n_tasks)
    group = int(machine.resources.get("group_size") or 0)
    return math.ceil(n_tasks / group) if group else 1


def label_jobs(machine, labeler, n_tasks: int) -> int:
    """Jobs at once in the label driver's first round (the driver's own ``plan_round``)."""
    if not n_tasks:
        return 0
    batch, per_job = plan_round(list(range(n_tasks)), machine, labeler.cores_per_task, labeler.batch_size)
    return math.ceil(len(batch) / per_job)


def on_machine(stage: Stage, machine: MachineSettings) -> Stage:
    """``stage`` priced on ``machine``: its GPUs per job and their speed-up."""
    return dataclasses.replace(stage, gpus_per_job=machine.gpus_per_job, gpu_speedup=machine.gpu_speedup)


def label_stage(name: str, what: str, atoms: list[int], comp: Components, at_most: bool = False) -> Stage:
    labeler, machine = comp.labeler, comp.machine.for_step("label")
    cost = labeler.core_seconds_per_atom
    startups = math.ceil(len(atoms) / labeler.batch_size)  # a batching labeler starts once per job
    core_s = None if cost is None else cost * sum(atoms) + LABEL_TASK_STARTUP_S * labeler.cores_per_task * startups
    return on_machine(Stage(name, len(atoms), what, core_s, LABEL_BYTES_PER_ATOM_FRAME * sum(atoms),
                            label_jobs(machine, labeler, len(atoms)), labeler.cores_per_task, at_most), machine)


def atom_range(atoms: list[int]) -> str:
    low, high = min(atoms), max(atoms)
    return f"{low} atoms" if low == high else f"{low}-{high} atoms"


def pretrained_size(pretrained: str) -> tuple[int, str | None]:
    """Bytes of the checkpoint to fine-tune, or the starter's with a note when it is not found here."""
    path = STARTER if pretrained == "starter" else Path(str(pretrained)).expanduser()
    if path.is_file():
        return path.stat().st_size, None
    return STARTER.stat().st_size, f"model.pretrained={pretrained} not found here: model folders sized like the starter's"


def machine_text(settings: MachineSettings) -> str:
    machine, resources = settings.machine, settings.resources
    text = f"{machine.get('batch_type')} via {machine.get('context_type')}"
    host = (machine.get("remote_profile") or {}).get("hostname")
    if host:
        text += f" on {host}"
    if resources.get("queue_name"):
        text += f", queue {resources['queue_name']}"
    cores = resources.get("cpu_per_node")
    cores_text = "each task's" if cores is None else str(cores)
    text += (f", {resources.get('number_node', 1)} node(s) x {cores_text} cores,"
             f" {resources.get('gpu_per_node', 0)} GPUs")
    if settings.parallel_jobs:
        text += f"; {settings.parallel_jobs} parallel jobs"
    return text


def where_text(comp: Components) -> list[str]:
    """One line for the shared machine, or one per step where the steps' machines differ."""
    texts = {step: machine_text(comp.machine.for_step(step)) for step in ("train", "explore", "label")}
    if len(set(texts.values())) == 1:
        return [texts["train"]]
    return [f"{step}: {text}" for step, text in texts.items()]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def run_state_text(run_dir: Path) -> str:
    records = RunState(run_dir).records()  # read only: a dry run neither locks nor writes
    if records:
        last = records[-1]
        return (f"exists with {plural(len(records), 'recorded step')}, the last iter {last['iter']} {last['step']}; "
                "train skips every recorded step")
    if run_dir.exists():
        return "exists, nothing recorded yet"
    return "not created yet"


def member0_steps_text(model: ModelSettings, first_frames: int, last_frames: int) -> str:
    """Member 0's steps where they differ from the others', with their growth when they scale with the data."""
    first, last = model.steps_for(0, first_frames), model.steps_for(0, last_frames)
    if last != first:
        return f" (member 0: {first}, up to {last} on the last iteration's {last_frames} frames; cost: their mean)"
    return f" (member 0: {first})" if first != model.numb_steps else ""


def in_process_workers(n_runs: int) -> int:
    """Processes the held-out MD runs in at once: one per run, at most one per core of this machine."""
    return max(1, min(n_runs, os.cpu_count() or 1))


def make_plan(cfg: DictConfig) -> Plan:
    comp = Components.from_config(cfg)
    loop, explore, validate, model = comp.loop, comp.explore, comp.validate, comp.model

    def count_atoms(sections: list[dict]) -> list[tuple[str, int]]:
        return [(family_name(s), len(build_structure(comp.system, s))) for s in build_specs(sections, comp.build_defaults)]

    md = count_atoms(explore.structures)
    init = md + count_atoms(loop.init_structures)
    test = count_atoms(validate.test_structures)
    md_atoms = [n for _, n in md]
    n_init, n_test = loop.init_frames_per_structure, validate.frames_per_structure
    init_frames = [n for _, n in init for _ in range(n_init)]
    test_frames = [n for _, n in test for _ in range(n_test)]

    budget, max_selected = loop.label_budget, comp.selection.max_selected
    n_selected = comp.selection.capped(budget).max_selected  # what the select step allows in iteration 0
    mean_md_atoms = round(sum(md_atoms) / len(md_atoms))
    setup = [
        label_stage("label init data", f"{plural(len(init), 'structure')} x {n_init} frames, {atom_range(init_frames)}",
                    init_frames, comp),
        label_stage("label test set", f"{plural(len(test), 'structure')} x {n_test} frames, {atom_range(test_frames)}",
                    test_frames, comp),
    ]
    relax_atoms = sum(n for _, n in test)
    cost = comp.labeler.core_seconds_per_atom
    if validate.reference_for(cost) == "teacher_relaxed":
        setup.append(Stage("teacher relaxation", len(test), f"<= {validate.relax_steps} teacher calls each, in-process",
                           None if cost is None else cost * relax_atoms * validate.relax_steps, 0.0, jobs=1))
    else:  # the polaron reference comes from the test set's own labels: no extra teacher work
        setup.append(Stage("polaron reference", len(test), "teacher moments of the test set's built starts", 0.0, 0.0, jobs=1))

    model_cost = STARTER_COST if model.pretrained == "starter" else LARGE_COST
    train_machine, explore_machine = comp.machine.for_step("train"), comp.machine.for_step("explore")
    cases = dynamics_cases(validate.dynamics, comp.system, comp.build_defaults, Path(cfg.runs_dir))
    dyn_runs = [(len(c.start), p.n_steps) for c in cases for p in c.protocols]
    dyn_what = f"{plural(len(cases), 'held-out case')} x {plural(len(validate.dynamics.seeds), 'seed')}"
    teacher_runs = [(len(c.start), p.n_steps) for c in cases if not c.user_reference for p in c.protocols]
    if teacher_runs:  # one teacher call per step, as one label
        setup.append(Stage("teacher dynamics", len(teacher_runs), dyn_what + ", in-process beside the labeling",
                           None if cost is None else cost * sum(n * steps for n, steps in teacher_runs), 0.0,
                           jobs=in_process_workers(len(teacher_runs))))
    per_batch = round(sum(batch_atoms(model.batch_size, n) for _, n in init) / len(init))
    # iteration k trains on the initial frames and the labels before it; the cost is the iterations' mean
    frames_at = [len(init_frames) + min(budget, k * max_selected) for k in range(loop.max_iters)]
    member_s = [sum(model.steps_for(i, n) * per_batch * model_cost.train_core_s_per_batch_atom + TRAIN_TASK_STARTUP_S
                    for n in frames_at) / len(frames_at) for i in range(model.n_members)]
    member0_note = member0_steps_text(model, frames_at[0], frames_at[-1])
    size, size_note = pretrained_size(model.pretrained)
    temperatures = [explore.temperatures_of(s) for s in explore.structures]  # per structure
    n_md = explore.n_trajectories
    frames_per_task = explore.frames_per_trajectory
    md_atom_runs = sum(n * len(temps) for n, temps in zip(md_atoms, temperatures))
    md_s = md_atom_runs * explore.n_steps * model_cost.md_core_s_per_atom_step + MD_TASK_STARTUP_S * n_md
    n_temperatures = len({t for temps in temperatures for t in temps})
    iteration = [
        on_machine(Stage("train members", model.n_members,
                         f"{model.numb_steps} steps each{member0_note}, ~{per_batch} atoms per batch "
                         f"(batch_size {model.batch_size})",
                         sum(member_s), model.n_members * MEMBER_BYTES_PER_PRETRAINED_BYTE * size,
                         run_tasks_jobs(train_machine, model.n_members), longest_task_s=max(member_s)), train_machine),
        on_machine(Stage("MD tasks", n_md,
                         f"{plural(len(md), 'structure')} x {plural(n_temperatures, 'temperature')} x "
                         f"{explore.n_steps} steps, {frames_per_task} frames recorded each",
                         md_s, MD_BYTES_PER_ATOM_FRAME * frames_per_task * md_atom_runs,
                         run_tasks_jobs(explore_machine, n_md)), explore_machine),
        label_stage("label selected",
                    f"selection.max_selected={max_selected}, loop.label_budget={budget}, ~{mean_md_atoms} atoms each",
                    [mean_md_atoms] * n_selected, comp, at_most=True),
    ]
    if dyn_runs:  # validate: member 0 from each held-out start
        iteration.append(Stage("held-out MD", len(dyn_runs), dyn_what + ", member 0, in-process",
                               sum(n * steps for n, steps in dyn_runs) * model_cost.md_core_s_per_atom_step, 0.0,
                               jobs=in_process_workers(len(dyn_runs))))

    notes = [NOT_COUNTED]
    if cost is None:
        notes.append(f"Teacher cost unknown: {comp.labeler.name} has no label.core_seconds_per_atom; measure one task "
                     "(core-seconds / atoms, start-up excluded) and set it in configs/label/ or on the command line.")
    if size_note:
        notes.append(size_note + ".")
    bounded = [s.name for s in iteration if s.cost_is_bound]
    if bounded:
        notes.append(f"GPU time of {' and '.join(bounded)} is priced at one CPU core's (<=, an upper bound): set "
                     "machine.<step>.gpu_speedup to one task's measured CPU-core time over its GPU time to price it.")
    if any(comp.machine.for_step(step).machine.get("batch_type") != "Shell" for step in ("train", "explore", "label")):
        notes.append("Wall times assume every job starts at once; queue waits come on top.")

    run_dir = RunLayout.of(cfg.runs_dir, cfg.run_name).run_dir
    return Plan(
        run_name=cfg.run_name, run_dir=run_dir, run_state=run_state_text(run_dir), where=where_text(comp),
        cost_model=f"{model_cost.name} (model.pretrained={model.pretrained}); teacher {comp.labeler.name} at "
                   + (f"{cost:g} core-s/atom" if cost is not None else "unknown core-s/atom"),
        train_steps=model.numb_steps, md_structures=md, temperatures=temperatures, md_steps=explore.n_steps, frames_per_task=frames_per_task,
        setup=setup, iteration=iteration, max_iters=loop.max_iters,
        run_label_cap=min(budget, loop.max_iters * max_selected), notes=notes,
    )
