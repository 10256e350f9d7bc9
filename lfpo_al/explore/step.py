"""The explore step: one MD task per (structure family, temperature), dispatched, then summarised."""

from __future__ import annotations

import logging
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from lfpo_al.errors import UserError
from lfpo_al.dispatch import MachineSettings, TaskSpec, run_tasks
from lfpo_al.explore.md_task import RESULT_FILE, MDResult, MDTask
from lfpo_al.explore.result import ExplorationResult, TrajectoryResult
from lfpo_al.explore.settings import ExploreSettings
from lfpo_al.structures.builder import BuildSpec, build_specs, build_structure, write_structure
from lfpo_al.structures.system import OlivineSystem

log = logging.getLogger(__name__)
OUTPUTS = ["frames.extxyz", "model_devi.out", "result.json"]
# every engine's task runner takes the same task folder (task.json, start.extxyz) and gives the same OUTPUTS back


def family_name(spec: BuildSpec) -> str:
    name = f"x{spec.x:.2f}-{spec.li_order}"
    if spec.li_order == "random":
        name += f"-s{spec.seed}"
    return name + "-" + "x".join(map(str, spec.supercell))


def balanced_batches(n_atoms: list[int], per_process: int) -> list[int]:
    """Batch number of each trajectory: as few batches as ``per_process`` allows, filled largest cell
    first into the batch with the fewest atoms, so that batches run in parallel finish together (a
    batch's step costs its atoms). Fixed by the matrix and the batch size, so a resume finds its folders."""
    n_batches = -(-len(n_atoms) // per_process)
    load, count, batch_of = [0] * n_batches, [0] * n_batches, [0] * len(n_atoms)
    for index in sorted(range(len(n_atoms)), key=lambda i: (-n_atoms[i], i)):
        batch = min((b for b in range(n_batches) if count[b] < per_process), key=lambda b: (load[b], b))
        batch_of[index] = batch
        load[batch] += n_atoms[index]
        count[batch] += 1
    return batch_of


def md_tasks(settings: ExploreSettings, pending: list[tuple[str, int]]) -> list[TaskSpec]:
    """Dispatcher tasks for the unfinished trajectories (folder, atoms): one per trajectory folder, or one
    per batch folder (``batch.000/traj.003``) running its trajectories in one process."""
    command = f"{shlex.quote(sys.executable)} -m {settings.task_module}"
    if all("/" not in rel for rel, _ in pending):
        return [TaskSpec(task_dir=rel, command=command, forward_files=["task.json", "start.extxyz"],
                         backward_files=OUTPUTS, cost=n_atoms)  # the same steps for all: time goes with the atoms
                for rel, n_atoms in pending]
    batches: dict[str, list[tuple[str, int]]] = {}
    for rel, n_atoms in pending:
        batch, name = rel.split("/")
        batches.setdefault(batch, []).append((name, n_atoms))
    return [TaskSpec(task_dir=batch, command=f"{command} {' '.join(name for name, _ in members)}",
                     forward_files=[f"{name}/{f}" for name, _ in members for f in ("task.json", "start.extxyz")],
                     backward_files=[f"{name}/{f}" for name, _ in members for f in OUTPUTS],
                     cost=sum(n for _, n in members))
            for batch, members in batches.items()]


def trajectory_result(work_dir: Path, rel: str, family: str, temperature: float) -> TrajectoryResult:
    """A task folder's ``result.json`` as a summary entry; a task that wrote none failed (its error's tail)."""
    task_dir = work_dir / rel
    if (task_dir / RESULT_FILE).is_file():
        return TrajectoryResult(dir=rel, family=family, temperature=temperature, **asdict(MDResult.read(task_dir)))
    err = work_dir / rel.split("/")[0] / "task.err"
    return TrajectoryResult(dir=rel, family=family, temperature=temperature, n_frames=0,
                            stop_reason=f"MD task failed: {err.read_text()[-300:] if err.is_file() else 'no output'}")


def explore_step(
    settings: ExploreSettings,
    system: OlivineSystem,
    build_defaults: BuildSpec | None,
    models: list[Path],
    work_dir: Path,
    machine: MachineSettings,
    iteration: int = 0,
    driver: Path | None = None,
) -> ExplorationResult:
    """Run (or resume) the MD matrix in ``work_dir``; writes ``summary.json`` and returns what it holds.

    ``driver``: a model that drives the MD instead of ``models[0]`` (a distilled student); ``models``
    then all score the deviation of every recorded frame."""
    if driver is not None and not settings.takes_driver:
        raise UserError(f"the {settings.engine} explorer cannot drive MD with a model outside the ensemble "
                        "(the distilled student); use explore=ase_md or analysis.student=false")
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    entries, pending, stale = [], [], []
    specs = build_specs(settings.structures, build_defaults)
    matrix = []  # (family, start, temperature) per trajectory, in index order
    for spec, section in zip(specs, settings.structures):
        start = build_structure(system, spec)
        matrix += [(family_name(spec), start, temperature) for temperature in settings.temperatures_of(section)]
    per_process = settings.replicas_per_process(machine.parallel_jobs)
    batch_of = balanced_batches([len(start) for _, start, _ in matrix], per_process)
    for index, (family, start, temperature) in enumerate(matrix):
        name = f"traj.{index:03d}"
        # replicas advanced by one process share a batch folder, fixed by the matrix and the batch size
        rel = name if per_process == 1 else f"batch.{batch_of[index]:03d}/{name}"
        task_dir = work_dir / rel
        entries.append((rel, family, float(temperature)))
        task = MDTask(
            models=[str(Path(m).resolve()) for m in models],
            driver=None if driver is None else str(Path(driver).resolve()),
            system=system,
            family=family,
            temperature=float(temperature),
            seed=settings.seed + 1000 * iteration + index,
            ensemble=settings.ensemble, n_steps=settings.n_steps, timestep_fs=settings.timestep_fs,
            record_every=settings.record_every, friction_per_fs=settings.friction_per_fs,
            abort_deviation=settings.abort_deviation, min_distance=settings.min_distance, score_every=settings.score_every,
        )
        if (task_dir / RESULT_FILE).is_file():
            if differs := task.changed_keys(task_dir):
                stale.append(f"{rel} ({', '.join(differs)})")
        else:
            task_dir.mkdir(parents=True, exist_ok=True)
            write_structure(start, task_dir / "start.extxyz")
            task.write(task_dir)
            pending.append((rel, len(start)))
    if stale:
        raise UserError(f"{work_dir} holds finished MD of other settings: {'; '.join(stale[:3])}"
                        f"{' ...' if len(stale) > 3 else ''}; use a new output folder or remove those")
    if pending:
        log.info("exploring %d trajectories (%d steps each) in %s", len(pending), settings.n_steps, work_dir)
        run_tasks(machine, work_dir, md_tasks(settings, pending))
    exploration = ExplorationResult(engine=settings.engine, trajectories=[
        trajectory_result(work_dir, rel, family, temperature) for rel, family, temperature in entries])
    exploration.write(work_dir)
    return exploration
