"""Run state: the record of finished steps, the run lock, and the frozen config.

``record.jsonl`` holds one line per finished step (``iter``, ``step``, ``status``, outputs, time).
Rerunning ``train`` with the same run name reads it and skips every step recorded ``done``.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

from lfpo_al.errors import UserError
from lfpo_al.layout import RunLayout

# keys that may change between a run's start and a resume: limits, targets, where jobs run, tracking
RESUMABLE_KEYS = ("loop.max_iters", "loop.label_budget", "loop.dry_run", "validate.target_", "machine.", "tracking.")
SETUP = -1  # iteration number of the steps that build the initial and test data


def flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


class RunState:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        layout = RunLayout(self.run_dir)
        self.record_path = layout.record
        self.config_path = layout.config

    def records(self) -> list[dict]:
        if not self.record_path.is_file():
            return []
        lines = self.record_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def done(self, iteration: int, step: str) -> dict | None:
        """The record of a finished step, or None."""
        for rec in reversed(self.records()):
            if rec["iter"] == iteration and rec["step"] == step and rec["status"] == "done":
                return rec
        return None

    def append(self, iteration: int, step: str, status: str = "done", **fields) -> dict:
        rec = {"iter": iteration, "step": step, "status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **fields}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.record_path, "a") as fh:  # one write per line: a killed run leaves whole lines
            fh.write(json.dumps(rec, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return rec

    @contextmanager
    def lock(self):
        """Refuse a second concurrent ``train`` on the same run folder (released when the process dies)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / ".lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"run folder {self.run_dir} is in use by {owner}; wait for it or pick another run_name=") from None
        fh.seek(0), fh.truncate(), fh.write(f"pid {os.getpid()}"), fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def freeze_config(self, config: dict) -> None:
        """Write the resolved config on first start; on resume refuse changes outside RESUMABLE_KEYS."""
        if not self.config_path.is_file():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            return
        old, new = flatten(yaml.safe_load(self.config_path.read_text())), flatten(config)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and not k.startswith(RESUMABLE_KEYS))
        if changed:
            key = changed[0]
            raise UserError(
                f"run {self.run_dir} was started with {key}={old.get(key)!r}, now {new.get(key)!r}; "
                f"resume with the original value or start a new run_name= ({len(changed)} key(s) differ)"
            )
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
