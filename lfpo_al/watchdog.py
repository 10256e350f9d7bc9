"""``python -m lfpo_al.watchdog 'COMMAND'``: run a dispatched task's command, stopped when its owner dies.

Jobs on a Shell machine are children of the ``train`` that dispatched them; killed alone (SIGKILL, a
lost terminal), it would leave them running into a run folder that nobody holds. ``train`` exports its
pid as ``LFPO_AL_OWNER_PID``; the watchdog runs the command and, once that pid is gone, stops it
(SIGTERM, then SIGKILL) and exits non-zero: the task left no result and the resume runs it again.
Without the variable it only runs the command. The pid travels in the environment, not in the
command, so that a resume's submission is the same one and recovers what finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

OWNER_ENV = "LFPO_AL_OWNER_PID"
POLL_S = 0.5


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a killed owner its parent has not reaped yet is a zombie: gone all the same
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children before their own children."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def stop(child: subprocess.Popen) -> None:
    """SIGTERM the command and everything it started, SIGKILL what is left after 5 s. Only the task's own
    processes: they share the job's process group with the other jobs, so a group signal would hit those."""
    family = [child.pid, *descendants(child.pid)]  # listed first: once killed, orphans lose their parent link
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in family:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            child.poll()  # reap the command so that it does not linger as a zombie
            if not any(alive(pid) for pid in family):
                return
            time.sleep(0.1)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lfpo_al.watchdog 'shell command'", file=sys.stderr)
        return 2
    (command,) = argv
    owner = os.environ.get(OWNER_ENV)
    if not owner:
        return subprocess.call(["bash", "-c", command])
    child = subprocess.Popen(["bash", "-c", command])  # the job's process group: a kill of the group takes it too
    try:
        while child.poll() is None:
            if not alive(int(owner)):
                print(f"watchdog: the dispatching process {owner} is gone; stopping the task", file=sys.stderr)
                stop(child)
                return 143
            time.sleep(POLL_S)
    except BaseException:  # the job itself is being killed (scancel, killpg): take the command with it
        stop(child)
        raise
    return child.returncode


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # turns a SIGTERM into SystemExit: the command stops too
    sys.exit(main(sys.argv[1:]))
