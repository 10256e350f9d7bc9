"""The one labeling driver shared by every teacher: task folders, dispatch, quarantine, collection.

``label_frames`` is idempotent: rerunning it on the same ``work_dir`` reuses the task folders, skips
every decided task and dispatches only the rest, so a killed run resumes with no task redone.

Dispatch goes through ``lfpo_al.dispatch.run_tasks`` (dpdispatcher) in rounds. dpdispatcher brings
results back only when a whole submission ends, so on a Shell machine each round is ``parallel_jobs``
jobs (default: ``cpu_per_node // cores_per_task``) of at most ``resources.group_size`` tasks each:
results land in the task folders round by round. A round is a pure function of which tasks are
still undecided, so a run killed mid-round resubmits the identical submission and dpdispatcher
recovers it: jobs still running are awaited, tasks that already finished remotely
(``*_task_tag_finished``) are not rerun.
Queueing machines (Slurm) take all undecided tasks in one round, ``group_size`` tasks per job.
A batching labeler (``label.batch_size > 1``, CHGNet) gets rounds of a single job instead, whose
first task labels the whole round in one process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shlex
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms
from tqdm.auto import tqdm

from lfpo_al import atomic
from lfpo_al.dispatch import MachineSettings, TaskSpec, run_tasks
from lfpo_al.errors import UserError
from lfpo_al.label.base import Labeler, read_failure
from lfpo_al.label.checks import label_problem, valence_mismatch
from lfpo_al.label.tasks import (
    EXIT_CODE_FILE, LOG_FILES, OUTPUTS_DIR, Task, archive_failed_attempt, exclusive, prepare_task, unpack_outputs,
)
from lfpo_al.structures.system import OlivineSystem

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"
QUARANTINE_FILE = "quarantine.json"
DATA_DIR = "data"
SHELL_POLL_S, QUEUE_POLL_S = 1.0, 10.0  # seconds between dpdispatcher's status checks; spare the scheduler


@dataclass
class LabelReport:
    """What one ``label_frames`` call did; also written to ``work_dir/report.json``.

    ``n_labeled`` counts frames the teacher labeled (``n_labeled + n_failed == n_tasks``); of those,
    ``n_dropped`` valence mismatches were left out of ``data_dir`` under ``mismatch_policy=drop``.
    """

    n_tasks: int
    n_labeled: int
    n_skipped_finished: int
    n_failed: int
    n_valence_mismatch: int
    n_dropped: int = 0
    n_dispatched: int = 0
    failed: list[dict] = field(default_factory=list)
    mismatches: list[dict] = field(default_factory=list)
    data_dir: str | None = None
    data_index: dict[str, list[str]] = field(default_factory=dict)
    mismatch_policy: str = "keep"
    wall_s: float = 0.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def label_frames(
    frames: Sequence[Atoms],
    labeler: Labeler,
    machine: MachineSettings,
    work_dir: str | Path,
    system: OlivineSystem,
    progress: bool = True,
) -> LabelReport:
    """Label ``frames`` with ``labeler`` on ``machine`` under ``work_dir``; collect them as deepmd/npy.

    Each frame carries the per-atom int array ``valence`` (intended valence on M, 0 elsewhere).
    Failed tasks are listed in ``work_dir/quarantine.json`` and left out; the kept frames go to
    ``work_dir/data`` (one deepmd/npy system per composition, ``type_map=system.type_map``).
    """
    start = time.perf_counter()
    frames = list(frames)
    _check_inputs(frames, labeler, system)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(work_dir):
        prepared = [prepare_task(i, frame, labeler, work_dir, system) for i, frame in enumerate(frames)]
        tasks = [task for task, _ in prepared]
        for task in tasks:
            unpack_outputs(task.dir)
        # decided by an earlier run (not the min_distance screening of folders made just now)
        n_decided = sum(reused and _is_decided(task, labeler) for task, reused in prepared)
        n_dispatched = _dispatch_until_decided(tasks, labeler, machine, work_dir, progress)
        labeled, failed, mismatches = _collect(tasks, labeler, system)
        _write_json(work_dir / QUARANTINE_FILE, failed)
        dropped = {m["task"] for m in mismatches} if labeler.mismatch_policy == "drop" else set()
        kept = [(task, atoms) for task, atoms in labeled if task.name not in dropped]
        data_dir, data_index = _write_data(kept, system, work_dir / DATA_DIR)
        report = LabelReport(
            n_tasks=len(tasks), n_labeled=len(labeled), n_skipped_finished=n_decided, n_failed=len(failed),
            n_valence_mismatch=len(mismatches), n_dropped=len(dropped), n_dispatched=n_dispatched, failed=failed,
            mismatches=mismatches, data_dir=str(data_dir) if data_dir else None, data_index=data_index,
            mismatch_policy=labeler.mismatch_policy, wall_s=round(time.perf_counter() - start, 2),
        )
        _write_json(work_dir / REPORT_FILE, report.to_dict())
    log.info(
        "labeled %d/%d frames in %s (%d skipped as finished, %d quarantined, %d valence mismatches, %d dropped) in %.1f s",
        report.n_labeled, report.n_tasks, work_dir, n_decided, report.n_failed, report.n_valence_mismatch,
        report.n_dropped, report.wall_s,
    )
    check_failed_fraction(report, labeler, work_dir)
    return report


class TooManyFailures(UserError):
    """A label step quarantined more of its tasks than ``label.max_failed_fraction`` allows."""


def check_failed_fraction(report: LabelReport, labeler: Labeler, work_dir: Path) -> None:
    if not report.n_tasks or report.n_failed / report.n_tasks <= labeler.max_failed_fraction:
        return
    reasons = sorted({item["reason"] for item in report.failed})
    shown = "; ".join(reasons[:2]) + (f"; and {len(reasons) - 2} more" if len(reasons) > 2 else "")
    raise TooManyFailures(
        f"{report.n_failed} of {report.n_tasks} label tasks in {work_dir} failed ({report.n_failed / report.n_tasks:.0%} > "
        f"label.max_failed_fraction={labeler.max_failed_fraction:g}): {shown}. See {work_dir / QUARANTINE_FILE}; fix the "
        "teacher, delete the failed task folders and run the same command to retry them (finished labels are kept)")


def _check_inputs(frames: list[Atoms], labeler: Labeler, system: OlivineSystem) -> None:
    if labeler.mismatch_policy == "relabel" and not labeler.supports_relabel:
        raise UserError(f"label.mismatch_policy=relabel needs a labeler that re-seeds moments, not {type(labeler).__name__}")
    for name in labeler.backward_files:
        if any(c in name for c in "*?[]/"):
            raise UserError(
                f"{type(labeler).__name__}.backward_files entry {name!r} must be a plain file name (no glob, no folder)"
            )
    for i, frame in enumerate(frames):
        if "valence" not in frame.arrays:
            raise UserError(
                f"frames[{i}] lacks the per-atom 'valence' array ({system.valence.reduced}/{system.valence.oxidised} on "
                f"{system.metal}, 0 elsewhere); give it the valence of the structure it was built or explored from"
            )


def _is_decided(task: Task, labeler: Labeler) -> bool:
    """Finished (a result or failed.json), or out of attempts."""
    return labeler.is_finished(task.dir) or task.attempts_done() >= labeler.max_attempts


def _dispatch_until_decided(
    tasks: list[Task], labeler: Labeler, machine: MachineSettings, work_dir: Path, progress: bool
) -> int:
    """Run rounds until every task is decided; each round either decides a task or spends one of its attempts."""
    pending = [t for t in tasks if not _is_decided(t, labeler)]
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), desc="label", unit="task", disable=not progress)
    n_dispatched = 0
    try:
        while pending:
            bar.n = len(tasks) - len(pending)
            bar.refresh()
            batch, per_job = plan_round(pending, machine, labeler.cores_per_task, labeler.batch_size)
            # the round fixes group_size itself: the submission, hence its recovery hash, follows from `batch` alone
            resources = {**machine.resources, "group_size": per_job}
            settings = dataclasses.replace(machine, resources=resources, parallel_jobs=None)
            job_tasks = [t.name for t in batch] if labeler.batch_size > 1 else []  # a batch round is one job
            specs = [
                TaskSpec(task_dir=t.name, command=task_command(labeler, t.attempts_done() + 1, job_tasks),
                         forward_files=list(labeler.forward_files), backward_files=backward_patterns())
                for t in batch
            ]
            log.info("dispatching %d task(s) as %d job(s) (%s)", len(batch), math.ceil(len(batch) / per_job),
                     ", ".join(t.name for t in batch))
            poll = SHELL_POLL_S if machine.machine.get("batch_type") == "Shell" else QUEUE_POLL_S
            with _watch_round(bar, batch, machine, work_dir):
                run_tasks(settings, work_dir, specs, check_interval=poll, cores_per_task=labeler.cores_per_task)
            n_dispatched += len(batch)
            for task in batch:
                unpack_outputs(task.dir)
                if not labeler.is_finished(task.dir):
                    reason = archive_failed_attempt(task, labeler)
                    log.warning("%s: attempt %d of %d gave no result: %s",
                                task.name, task.attempts_done(), labeler.max_attempts, reason)
            pending = [t for t in tasks if not _is_decided(t, labeler)]
        bar.n = len(tasks)
        bar.refresh()
    finally:
        bar.close()
    return n_dispatched


@contextmanager
def _watch_round(bar: tqdm, batch: list[Task], machine: MachineSettings, work_dir: Path) -> Iterator[None]:
    """Advance ``bar`` while a round runs, as tasks end in the jobs' folders (visible here with LocalContext).

    dpdispatcher reports nothing until the whole submission ends, but the task wrapper writes
    ``exit_code`` the moment a task ends. Other contexts get one update per round.
    """
    if bar.disable or machine.machine.get("context_type", "").lower() not in ("localcontext", "local"):
        yield
        return
    remote_root = Path(machine.machine.get("remote_root") or work_dir / ".dispatch").resolve()  # run_tasks' default
    names, start, stop, since = {t.name for t in batch}, bar.n, threading.Event(), time.time() - 1

    interactive = sys.stderr.isatty()  # in a log file, one line per finished task instead of one per second

    def watch() -> None:
        while not stop.wait(1.0):
            ended = {p.parent.name for p in remote_root.glob(f"*/task.*/{EXIT_CODE_FILE}") if _mtime(p) >= since}
            done = start + len(ended & names)
            if done != bar.n or interactive:
                bar.n = done
                bar.refresh()

    watcher = threading.Thread(target=watch, name="label-progress", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def plan_round(
    pending: list[Task], machine: MachineSettings, cores_per_task: int = 1, batch_size: int = 1
) -> tuple[list[Task], int]:
    """The tasks of the next round and how many share one job (dpdispatcher's ``group_size``).

    Shell (or any machine with ``parallel_jobs``): that many jobs at once (by default one per
    ``cores_per_task`` cores of ``cpu_per_node``), tasks spread evenly, at most ``group_size`` per job.
    Queues take everything at once, ``group_size`` tasks per job (0: all in one job, as in dpdispatcher).
    A batching labeler (``batch_size > 1``) gets rounds of one job of up to ``batch_size`` tasks on any
    machine: dpdispatcher shuffles tasks into jobs, so only a one-job round tells each task its job mates.
    """
    if batch_size > 1:
        batch = pending[:batch_size]
        return batch, len(batch)
    configured = int(machine.resources.get("group_size") or 0)  # 0: no bound, as in dpdispatcher
    parallel_jobs = getattr(machine, "parallel_jobs", None)
    if machine.machine.get("batch_type") == "Shell" or parallel_jobs:
        fit = max(1, int(machine.resources.get("cpu_per_node") or 1) // cores_per_task)
        # on one Shell node, never more jobs than the node's cores hold tasks (2 MPI ranks each: 1 job on 2 cores)
        parallel_jobs = min(parallel_jobs, fit) if parallel_jobs and machine.machine.get("batch_type") == "Shell" else (parallel_jobs or fit)
        per_job = math.ceil(len(pending) / parallel_jobs)
        if configured:
            per_job = min(per_job, configured)
        return pending[: parallel_jobs * per_job], per_job
    return list(pending), configured or max(1, len(pending))


def task_command(labeler: Labeler, attempt: int, job_tasks: Sequence[str] = ()) -> str:
    """The labeler's command wrapped for dispatch.

    dpdispatcher (and ``run_tasks``) need every backward path to exist, but a task leaves either its
    result or ``failed.json``: the wrapper links whichever outputs exist into ``outputs/``, which
    always exists, and the driver unpacks it. Linked, not moved: the folder keeps its decision for
    a batching job mate that checks it later. ``exit_code`` tells a crash from a decided task; the
    wrapper itself exits 0 so that dpdispatcher never retries on its own, and skips a command that
    already exited 0 here (a job resubmitted after a kill reruns every task it had not tagged).
    ``LFPO_AL_ATTEMPT`` makes each attempt a new submission, so a retry never recovers the record of
    the attempt that failed. ``job_tasks``: the task folders of the job, for a batching labeler.
    """
    outputs = " ".join(shlex.quote(name) for name in labeler.backward_files)
    script = (
        f'if [ "$(cat {EXIT_CODE_FILE} 2>/dev/null)" != 0 ]; then '
        f"export LFPO_AL_ATTEMPT={attempt}; {labeler.job_command(list(job_tasks))}; echo $? > {EXIT_CODE_FILE}; fi; "
        f"mkdir -p {OUTPUTS_DIR}; "
        f'for f in {outputs}; do if [ -e "$f" ]; then ln -f "$f" {OUTPUTS_DIR}/ 2>/dev/null || cp -pf "$f" {OUTPUTS_DIR}/; fi; done'
    )
    return f"bash -c {shlex.quote(script)}"


def backward_patterns() -> list[str]:
    """Paths every wrapped task leaves, whatever happened (the logs are dpdispatcher's redirections)."""
    return [OUTPUTS_DIR, EXIT_CODE_FILE, *LOG_FILES]


def _collect(
    tasks: list[Task], labeler: Labeler, system: OlivineSystem
) -> tuple[list[tuple[Task, Atoms]], list[dict], list[dict]]:
    """Labeled frames, quarantined tasks ``{task, reason}``, valence mismatches ``{task, sites, moments, ...}``."""
    labeled, failed, mismatches = [], [], []
    expected = labeler.expected_moments(system)
    for task in tasks:
        atoms, reason = _read_task(task, labeler)
        if reason is not None:
            failed.append({"task": task.name, "reason": reason})
            continue
        atoms.info.update(task=task.name, teacher=labeler.name)
        labeled.append((task, atoms))
        intended = task.frame.arrays["valence"]
        mismatch = valence_mismatch(intended, atoms.arrays["magmoms"], expected, labeler.magmom_tolerance)
        if mismatch is not None:
            # relabel: the labeler already re-seeded inside the task; what still contradicts is kept and flagged
            mismatches.append({"task": task.name, **mismatch, "kept": labeler.mismatch_policy != "drop"})
    for item in failed:
        log.warning("quarantined %s: %s", item["task"], item["reason"])
    return labeled, failed, mismatches


def _read_task(task: Task, labeler: Labeler) -> tuple[Atoms | None, str | None]:
    if not labeler.is_finished(task.dir):
        return None, f"no result after {task.attempts_done()} attempt(s); last: {task.last_attempt_reason()}"
    reason = read_failure(task.dir)
    if reason is not None:
        return None, reason
    try:
        atoms = labeler.read_outputs(task.dir)
    except Exception as exc:  # any unreadable output is quarantined, whatever the parser raised
        return None, f"unreadable output: {type(exc).__name__}: {str(exc).strip()[:300]}"
    problem = label_problem(task.frame, atoms)
    return (None, problem) if problem else (atoms, None)


def _write_data(
    kept: list[tuple[Task, Atoms]], system: OlivineSystem, data_dir: Path
) -> tuple[Path | None, dict[str, list[str]]]:
    """Write the kept frames as deepmd/npy with dpdata (replacing an older ``data``); map system -> tasks."""
    import dpdata

    index: dict[str, list[str]] = {}
    if not kept:
        atomic.remove(data_dir)  # derived from the task folders: safe to replace
        return None, index
    with atomic.atomic_dir(data_dir) as partial:
        multi = dpdata.MultiSystems(type_map=list(system.type_map))
        for task, atoms in kept:
            one = dpdata.LabeledSystem(atoms, fmt="ase/structure", type_map=list(system.type_map))
            multi.append(one)
            index.setdefault(one.short_name, []).append(task.name)  # dpdata names the folder by it
        multi.to_deepmd_npy(str(partial))
    return data_dir, index


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # moved back home between glob and stat
        return 0.0


def _write_json(path: Path, value) -> None:
    atomic.write_text(path, json.dumps(value, indent=1) + "\n")
