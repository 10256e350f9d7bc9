"""Where heavy jobs run: a dpdispatcher ``Machine`` and ``Resources`` pair (``configs/machine/``).

Training members, MD explorations and DFT tasks all go through dpdispatcher; this module only checks
the two dicts against dpdispatcher's own argument schema and builds its objects. Each step (``train``,
``explore``, ``label``) may run on a machine of its own: ``machine.<step>`` overrides the shared keys,
so a cluster trains and runs MD on a GPU partition and DFT on a CPU one.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import shlex
import shutil
import sys

from dataclasses import dataclass, field
from pathlib import Path

from lfpo_al.errors import UserError
from lfpo_al.label.profile import profiles_from
from lfpo_al.threads import checked, thread_env

log = logging.getLogger(__name__)


def import_dpdispatcher():
    """dpdispatcher's ``Machine`` and ``Resources``. Its import logs a line to ``./dpdispatcher.log``,
    creating that file wherever the command runs (a dry run too): the line is muted and the file handler
    dropped; ``run_tasks`` logs each submission into its step's ``.dispatch/dpdispatcher.log`` instead."""
    logger = logging.getLogger("dpdispatcher")
    if "dpdispatcher" not in sys.modules:
        logger.disabled = True
        try:
            import dpdispatcher  # noqa: F401
        finally:
            logger.disabled = False
            for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
                logger.removeHandler(handler)
    logger.setLevel(logging.WARNING)  # its import sets INFO
    from dpdispatcher import Machine, Resources

    return Machine, Resources


@dataclass
class MachineSettings:
    machine: dict
    resources: dict
    command_prefix: str = ""
    envs: dict = field(default_factory=dict)
    # when set, tasks are packed into this many concurrent jobs (group_size = ceil(n / parallel_jobs))
    parallel_jobs: int | None = None
    # how this machine runs each DFT code: code -> {command: launcher, data_dir: its data folder}
    programs: dict = field(default_factory=dict)
    # torch/OpenMP threads of every job's process (lfpo_al.threads); null: the libraries' defaults
    threads_per_process: int | None = None
    # per-step overrides of the keys above (STEP_KEYS), e.g. {resources: {queue_name: gpu, gpu_per_node: 1}}
    train: dict = field(default_factory=dict)
    explore: dict = field(default_factory=dict)
    label: dict = field(default_factory=dict)
    # times faster than one CPU core a task runs on one GPU of this machine, for the dry run's prices;
    # null: unknown, GPU time priced at the one-core estimate (an upper bound)
    gpu_speedup: float | None = None
    # set on the machine for_step gives: the step it is for (None: the shared machine)
    step_name: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        Machine, Resources = import_dpdispatcher()

        checks = (
            ("machine", Machine.arginfo(), self.machine),
            ("resources", Resources.arginfo(detail_kwargs="batch_type" in self.resources), self.resources_for(1)),
        )
        for name, schema, given in checks:
            try:
                value = schema.normalize_value(dict(given), trim_pattern="_*")
                schema.check_value(value, strict=False)
            except Exception as exc:  # dargs raises its own ArgumentKeyError/ArgumentTypeError
                raise UserError(f"machine.{name} is not a valid dpdispatcher {name}: {str(exc).splitlines()[0]}") from exc
        self.profiles = profiles_from(self.programs)
        checked(self.threads_per_process)
        # run_tasks defaults remote_root to a folder under the local step folder, which a remote host lacks
        context = str(self.machine.get("context_type", "")).lower()
        if context in ("sshcontext", "ssh") and not self.machine.get("remote_root"):
            raise UserError(
                "machine.machine.remote_root is required with SSHContext: a folder on the cluster its compute nodes see"
            )
        speedup = self.gpu_speedup
        if speedup is not None and (isinstance(speedup, bool) or not isinstance(speedup, (int, float))
                                    or not math.isfinite(speedup) or speedup <= 0):
            raise UserError(f"gpu_speedup={speedup!r} must be a positive number (a measured task time on one CPU "
                            "core over its time on one GPU) or null")
        if self.step_name is None:
            self._steps = {step: self._step_settings(step) for step in STEPS}

    def _step_settings(self, step: str) -> "MachineSettings":
        override = getattr(self, step)
        if override is None:
            override = {}
        if not isinstance(override, dict):
            raise UserError(f"machine.{step} must be a mapping of keys to override ({', '.join(sorted(STEP_KEYS))}), "
                            f"not {override!r}")
        unknown = sorted(set(override) - STEP_KEYS)
        if unknown:
            raise UserError(f"machine.{step} has unknown key(s) {', '.join(unknown)}; it overrides "
                            f"{', '.join(sorted(STEP_KEYS))}")
        merged = {key: getattr(self, key) for key in STEP_KEYS}
        for key, value in override.items():
            if key in MERGED_KEYS and not isinstance(value or {}, dict):
                raise UserError(f"machine.{step}.{key} must be a mapping (its keys replace those of machine.{key})")
            # the dicts merge key by key: a step changes the partition without restating the rest
            merged[key] = {**merged[key], **(value or {})} if key in MERGED_KEYS else value
        try:
            return MachineSettings(**merged, programs=self.programs, step_name=step)
        except UserError as exc:
            raise UserError(f"machine.{step}: {exc}") from None

    def for_step(self, step: str) -> "MachineSettings":
        """The machine the ``train``, ``explore`` or ``label`` step's jobs run on."""
        return self if self.step_name is not None else self._steps[step]

    @property
    def gpus_per_job(self) -> int:
        return int(self.resources.get("gpu_per_node") or 0) * int(self.resources.get("number_node") or 1)

    def resources_for(self, cores_per_task: int) -> dict:
        """The resources of a job whose tasks use ``cores_per_task`` cores each: ``cpu_per_node: null``
        (a queue) asks for exactly that, so a label job gets the labeler's cores and training or MD one."""
        resources = dict(self.resources)
        if resources.get("cpu_per_node") is None:
            resources["cpu_per_node"] = int(cores_per_task)
        return resources


STEPS = ("train", "explore", "label")
STEP_KEYS = {"machine", "resources", "command_prefix", "envs", "parallel_jobs", "threads_per_process", "gpu_speedup"}
MERGED_KEYS = {"machine", "resources", "envs"}


# what a scheduler's job id looks like: a pid or Slurm's number, with its array forms ("123_4", "123_[1-3]");
# dpdispatcher puts a recovered id unquoted into shell lines (ps -p, squeue -j, kill)
SCHEDULER_JOB_ID = re.compile(r"\d+(_\d+|_\[[\d,\-]+\])?")


def distrust_recovered_job_ids(submission, machine) -> list[str]:
    """Blank every job id in dpdispatcher's recovery record that is not a scheduler's id, so those jobs are
    submitted afresh instead of an id from a file reaching a shell; returns the ids blanked.

    The record (``<remote_root>/<hash>/<hash>.json``) lives in a run folder that may have been copied or
    shared: it is data, never trusted as part of a command line."""
    from dpdispatcher.utils.job_status import JobStatus

    context, name = machine.context, f"{submission.submission_hash}.json"
    if not context.check_file_exists(name):
        return []
    try:
        record = json.loads(context.read_file(name))
        jobs = [next(iter(job.values())) for job in record.get("belonging_jobs", [])]
    except (ValueError, AttributeError, StopIteration, TypeError) as exc:
        raise UserError(f"dpdispatcher's record {name} in {context.remote_root} is not a submission record "
                        f"({type(exc).__name__}); remove that folder and rerun (its tasks are submitted afresh)") from None
    blanked = []
    for job in jobs:
        job_id = str(job.get("job_id", "")) if isinstance(job, dict) else ""
        if job_id and not SCHEDULER_JOB_ID.fullmatch(job_id):
            blanked.append(job_id)
            job.update(job_id="", job_state=int(JobStatus.unsubmitted), fail_count=0)
    if blanked:
        log.warning("dpdispatcher's record %s holds job ids that are not a scheduler's (%s): those jobs are "
                    "submitted afresh", name, ", ".join(repr(j[:40]) for j in blanked))
        context.write_file(name, json.dumps(record, indent=4))
    return blanked


@dataclass
class TaskSpec:
    """One dpdispatcher task: a folder under ``work_base`` and the shell command run inside it."""

    task_dir: str
    command: str
    forward_files: list[str]
    backward_files: list[str]
    # relative run time (any unit, the same within one call): tasks are packed into jobs by it
    cost: float = 1.0


def packed(costs: list[float], n_jobs: int) -> list[list[int]]:
    """Task indices in ``n_jobs`` groups of near-equal total cost (longest first, each to the lightest
    group), each group in task order: one long training member runs alone beside the short ones."""
    groups: list[list[int]] = [[] for _ in range(max(1, min(n_jobs, len(costs))))]
    loads = [0.0] * len(groups)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        lightest = loads.index(min(loads))
        groups[lightest].append(i)
        loads[lightest] += costs[i]
    return [sorted(g) for g in groups if g]


def watched(command: str, settings: MachineSettings) -> str:
    """On a Shell machine every task runs under ``lfpo_al.watchdog``, which stops it if the process that
    dispatched it dies (jobs there are that process's children); queued jobs outlive it by design."""
    if str(settings.machine.get("batch_type", "")).lower() != "shell":
        return command
    return f"{shlex.quote(sys.executable)} -m lfpo_al.watchdog {shlex.quote(command)}"


def run_tasks(settings: MachineSettings, work_base: Path, tasks: list[TaskSpec], check_interval: float = 2.0,
              cores_per_task: int = 1) -> None:
    """Run ``tasks`` through dpdispatcher and wait; results come back into each task folder.

    A rerun with the same task list recovers dpdispatcher's record of this submission, so tasks that
    finished before an interruption are not run again. A task that fails does not stop the others
    (``continue_on_failure``): callers inspect each folder for its outputs.
    """
    Machine, Resources = import_dpdispatcher()
    from dpdispatcher import Submission, Task
    from dpdispatcher.submission import Job

    if not tasks:
        return
    work_base = Path(work_base).resolve()
    machine_dict = {**settings.machine, "local_root": str(work_base)}
    machine_dict.setdefault("remote_root", str(work_base / ".dispatch"))
    machine = Machine.load_from_dict(machine_dict)
    resources_dict = settings.resources_for(cores_per_task)
    resources_dict["envs"] = {**settings.resources.get("envs", {}), **thread_env(settings.threads_per_process),
                              **settings.envs}
    groups = packed([t.cost for t in tasks], settings.parallel_jobs) if settings.parallel_jobs else None
    if groups:
        resources_dict["group_size"] = max(len(g) for g in groups)
    resources = Resources.load_from_dict(resources_dict)
    prefix = f"{settings.command_prefix} " if settings.command_prefix else ""
    task_list = [
        Task(command=watched(prefix + t.command, settings), task_work_path=t.task_dir, forward_files=t.forward_files,
             backward_files=t.backward_files, outlog="task.log", errlog="task.err")
        for t in tasks
    ]

    def submission() -> Submission:
        built = Submission(work_base="./", machine=machine, resources=resources, task_list=task_list,
                           continue_on_failure=True)
        if groups:  # dpdispatcher would group a shuffled list by group_size, blind to the tasks' costs
            built.belonging_jobs = [Job(job_task_list=[task_list[i] for i in g], machine=machine,
                                        resources=copy.deepcopy(resources)) for g in groups]
            built.bind_machine(machine)  # the hash (and remote folder) of the submission with its jobs
        else:
            built.generate_jobs()
        return built

    def submit() -> None:
        try:
            submission().run_submission(check_interval=check_interval, continue_on_failure=True)
        except RuntimeError as exc:  # raised after all jobs were monitored; failed tasks lack their outputs
            log.warning("some dispatched jobs failed: %s", str(exc).splitlines()[0])

    remote = Path(machine_dict["remote_root"]) / submission().get_hash()
    recovered = remote.exists()
    if recovered:
        distrust_recovered_job_ids(submission(), machine)
    (work_base / ".dispatch").mkdir(exist_ok=True)
    step_log = logging.FileHandler(work_base / ".dispatch" / "dpdispatcher.log", delay=True)
    step_log.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s : %(message)s"))
    logging.getLogger("dpdispatcher").addHandler(step_log)
    try:
        run_and_retry(submit, remote, recovered, tasks, work_base)
    finally:
        logging.getLogger("dpdispatcher").removeHandler(step_log)
        step_log.close()


def run_and_retry(submit, remote: Path, recovered: bool, tasks: list[TaskSpec], work_base: Path) -> None:
    """Submit; a recovered submission whose failed jobs left tasks unfinished is started afresh, once."""
    submit()
    missing = [t for t in tasks if not all((work_base / t.task_dir / f).exists() for f in t.backward_files)]
    if recovered and missing:
        # dpdispatcher recovered an earlier submission of the same tasks: finished tasks came back, but
        # its failed jobs stay failed in the record. Start the unfinished ones afresh, once.
        shutil.rmtree(remote, ignore_errors=True)
        submit()
