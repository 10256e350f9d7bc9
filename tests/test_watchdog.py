"""``lfpo_al.watchdog``: a dispatched task stops, whole, once the process that dispatched it is gone."""

import os
import subprocess
import sys
import time

from lfpo_al.watchdog import OWNER_ENV, alive, descendants


def watch(command: str, owner: int | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    if owner is not None:
        env[OWNER_ENV] = str(owner)
    return subprocess.Popen([sys.executable, "-m", "lfpo_al.watchdog", command], env=env)


def test_without_an_owner_it_runs_the_command_and_keeps_its_status(tmp_path):
    marker = tmp_path / "ran"
    proc = watch(f"touch {marker}; exit 3", owner=None)
    assert proc.wait(30) == 3 and marker.is_file()


def test_the_task_and_its_children_stop_when_the_owner_dies(tmp_path):
    owner = subprocess.Popen(["sleep", "600"])
    proc = watch("sleep 600 & sleep 600; wait", owner=owner.pid)
    deadline = time.time() + 20
    while time.time() < deadline and len(descendants(proc.pid)) < 3:  # bash and its two sleeps
        time.sleep(0.1)
    family = descendants(proc.pid)
    assert len(family) >= 3, family
    time.sleep(1.0)
    assert proc.poll() is None, "the task must run while its owner lives"
    owner.kill()
    owner.wait()
    assert proc.wait(20) == 143
    assert not [pid for pid in family if alive(pid)], "processes of the task outlived its owner"


def test_the_owners_exit_status_does_not_matter(tmp_path):
    owner = subprocess.Popen(["true"])
    owner.wait()
    proc = watch("sleep 600", owner=owner.pid)
    assert proc.wait(20) == 143
