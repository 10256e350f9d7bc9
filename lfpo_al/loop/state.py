"""Run state: the record of finished steps, the run lock, and the frozen config.

``record.jsonl`` holds one line per finished step (``iter``, ``step``, ``status``, outputs, time).
Rerunning ``train`` with the same run name reads it and skips every step recorded ``done``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from lfpo_al import atomic
from lfpo_al.errors import UserError
from lfpo_al.layout import RunLayout
from lfpo_al.loop.outcomes import SETUP_OUTCOMES, STEP_OUTCOMES, FinalOutcome, IterationRow

# keys that may change between a run's start and a resume: limits, targets, where jobs run, tracking, and
# where the run folder is (a copied or moved run resumes where it now is)
# analysis and distillation read a run's final models and change nothing the loop made
# (loop.dry_run: a key of older releases, which a resume no longer has)
RESUMABLE_KEYS = ("loop.max_iters", "loop.label_budget", "loop.dry_run", "validate.target_", "machine.", "tracking.",
                  "run_name", "runs_dir", "analysis.", "distill.")
SETUP = -1  # iteration number of the steps that build the initial and test data
# Fault injection (tests/reliability): a train whose record reaches this many lines SIGKILLs its own process
# group right after writing the line, as a kill at that step boundary from outside would
KILL_AT_RECORDS_ENV = "LFPO_AL_KILL_AT_RECORDS"
log = logging.getLogger(__name__)


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


def record_problem(record) -> str | None:
    """What a parsed record line lacks (every reader relies on iter, step and status), or None."""
    if not isinstance(record, dict):
        return "not an object"
    for key, kind in (("iter", int), ("step", str), ("status", str)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            return f"no {kind.__name__} '{key}'"
    if not isinstance(record.get("outputs", {}), dict):
        return "'outputs' is not an object"
    return None


class RunState:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        layout = RunLayout(self.run_dir)
        self.record_path = layout.record
        self.config_path = layout.config

    def records(self) -> list[dict]:
        """The finished steps. A last line without its newline is the torn write of a killed run: it is
        left out (and cut off by the next ``append``); any other unreadable line is an error naming it."""
        if not self.record_path.is_file():
            return []
        text = self.record_path.read_text()
        lines = text.split("\n")
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == len(lines):  # no newline after it: the write never finished
                    log.warning("%s: ignoring the unfinished last line %d (a killed run's last write)",
                                self.record_path, number)
                    continue
                raise UserError(f"{self.record_path} line {number} is not a record ({exc.msg}); "
                                "repair or remove that line, then rerun") from None
            problem = record_problem(record)
            if problem:
                raise UserError(f"{self.record_path} line {number} is not a record ({problem}); "
                                "repair or remove that line, then rerun")
            records.append(record)
        return records

    def rows(self) -> list[IterationRow]:
        """Each iteration the record holds a finished step of, in order, with the typed outcome of each
        step done (the one reader of the record for the loop, ``status``, and the learning curve)."""
        rows: dict[int, IterationRow] = {}
        for rec in self.records():
            if rec["iter"] == SETUP or rec["status"] != "done" or rec["step"] not in STEP_OUTCOMES:
                continue
            row = rows.setdefault(rec["iter"], IterationRow(rec["iter"]))
            setattr(row, rec["step"], STEP_OUTCOMES[rec["step"]].from_record(rec.get("outputs")))
            row.steps.append(rec["step"])
        return [rows[k] for k in sorted(rows)]

    def setup_outcome(self, step: str):
        """The typed outcome of a finished set-up step (``SETUP_OUTCOMES``), or None."""
        rec = self.done(SETUP, step)
        return None if rec is None else SETUP_OUTCOMES[step].from_record(rec.get("outputs"))

    def final_outcome(self) -> tuple[int, FinalOutcome] | None:
        """The iteration the run finished at and its ``final`` outcome, or None."""
        rec = self.final()
        return None if rec is None else (rec["iter"], FinalOutcome.from_record(rec.get("outputs")))

    def _cut_torn_tail(self) -> None:
        """Drop a last line without its newline before appending after it (rewritten atomically)."""
        text = self.record_path.read_text()
        if text and not text.endswith("\n"):
            with atomic.atomic_path(self.record_path) as partial:
                with open(partial, "w") as fh:
                    fh.write(text[: text.rfind("\n") + 1])
                    fh.flush()
                    os.fsync(fh.fileno())

    def final(self) -> dict | None:
        """The last ``final`` record (the run finished there), or None."""
        return next((rec for rec in reversed(self.records()) if rec["step"] == "final"), None)

    def done(self, iteration: int, step: str) -> dict | None:
        """The record of a finished step, or None."""
        for rec in reversed(self.records()):
            if rec["iter"] == iteration and rec["step"] == step and rec["status"] == "done":
                return rec
        return None

    def append(self, iteration: int, step: str, status: str = "done", **fields) -> dict:
        rec = {"iter": iteration, "step": step, "status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.record_path.is_file():
            self._cut_torn_tail()
        atomic.append_line(self.record_path, json.dumps(rec, default=float) + "\n")
        kill_at = os.environ.get(KILL_AT_RECORDS_ENV)
        if kill_at and len(self.records()) == int(kill_at):
            os.killpg(os.getpgrp(), signal.SIGKILL)
        return rec

    @contextmanager
    def lock(self):
        """Refuse a second concurrent ``train`` on the same run folder (released when the process dies)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.refuse_planted_links()
        path = self.run_dir / ".lock"
        fh = os.fdopen(atomic.open_no_follow(path, os.O_RDWR | os.O_CREAT), "r+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"run folder {self.run_dir} is in use by {owner}; wait for it or pick another run_name=") from None
        except OSError as exc:  # ENOLCK and kin: a shared filesystem without locks
            fh.close()
            raise UserError(f"cannot lock {path} ({exc.strerror}): its filesystem does not support locks; put runs_dir "
                            f"on a local or lock-capable filesystem (this is pid {os.getpid()} on {socket.gethostname()})"
                            ) from None
        fh.seek(0), fh.truncate(), fh.write(f"pid {os.getpid()} on {socket.gethostname()}"), fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def refuse_planted_links(self) -> None:
        """A run folder holding a symbolic link of its own (its lock, record, config, ``final/``, a ``.dispatch/``,
        a plot) is refused in one line: the run's writes would land wherever the link points. Inside
        ``.dispatch/`` dpdispatcher links task files, and W&B links its latest run: those are theirs."""
        atomic.refuse_planted_links(self.run_dir)

    def freeze_config(self, config: dict, private: bool = False) -> None:
        """Write the resolved config on first start; on resume refuse changes outside RESUMABLE_KEYS.
        ``private``: secrets were redacted from it, so it is readable by its owner only (0600)."""
        mode = 0o600 if private else None
        if not self.config_path.is_file():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.config_path, yaml.safe_dump(config, sort_keys=False), mode)
            return
        old, new = flatten(yaml.safe_load(self.config_path.read_text())), flatten(config)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_KEYS))
        if changed:
            key = changed[0]
            raise UserError(
                f"run {self.run_dir} was started with {key}={old.get(key)!r}, now {new.get(key)!r}; "
                f"resume with the original value or start a new run_name= ({len(changed)} key(s) differ)"
            )
        atomic.write_text(self.config_path, yaml.safe_dump(config, sort_keys=False), mode)
