"""A one-node Slurm cluster on loopback (munged, slurmctld, slurmd), for tests and for trying machine=slurm.

Needs root and Debian's slurm-wlm and munge (``make system-deps``); no systemd. Everything the cluster
writes lives in one folder: slurm.conf, state, spool, logs, pid files and the socket of its own munged.
Clients (sbatch, squeue, and so dpdispatcher) find it through ``SLURM_CONF``; a real /etc/slurm or a
running munged is never read or touched (only /etc/munge/munge.key is created if absent).

    python scripts/local_slurm.py up [DIR]     # prints: export SLURM_CONF=DIR/slurm.conf
    python -m lfpo_al train machine=slurm ...  # in that shell
    python scripts/local_slurm.py up --gpu-partition gpu --partition cpu   # two partitions, as machine=slurm_gpu
    python scripts/local_slurm.py down DIR     # stops the daemons by their pid files

DIR's parent folders must be searchable by the munge user (the default, a new folder in /tmp, is).
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_USER = "munge"
COMMANDS = ("munged", "mungekey", "runuser", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
DAEMONS = ("slurmd", "slurmctld", "munged")  # stop order: the node first, munge last
STAND_IN_GPU = "/dev/null"  # the device file the GPU partition's gres is bound to (a character device on every host)


class ClusterError(RuntimeError):
    """The cluster did not come up; the message ends with the daemons' log tails."""


def missing_requirement() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    if os.geteuid() != 0:
        return "the loopback Slurm cluster runs its daemons as root; run as root"
    absent = [name for name in COMMANDS if shutil.which(name) is None]
    if absent:
        return f"{', '.join(absent)} not found; install slurm-wlm and munge (make system-deps)"
    try:
        pwd.getpwnam(MUNGE_USER)
    except KeyError:
        return f"no user {MUNGE_USER!r}; reinstall the munge package"
    return None


def detected_node() -> dict[str, int]:
    """CPUs and RealMemory (MB) as slurmd sees this host: the node drains if slurm.conf claims more."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    return {key: int(re.search(rf"\b{key}=(\d+)", out).group(1)) for key in ("CPUs", "RealMemory")}


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports nobody listens on (all held open together, so none is handed out twice)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


class LocalSlurm:
    """One cluster in ``root``: ``up()`` starts it and waits for the node to be idle, ``down()`` stops it."""

    def __init__(self, root: str | Path | None = None, partition: str = "debug", cpus: int = 2,
                 gpu_partition: str | None = None):
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="lfpo-slurm-"))
        self.partition, self.cpus = partition, cpus
        # a second partition on the same node, whose jobs may ask for its one GPU (--gres=gpu:1); the node
        # has no real GPU: the gres is bound to a stand-in device file, so Slurm schedules it and sets
        # CUDA_VISIBLE_DEVICES as it would on a GPU node, and the job computes on the CPU
        self.gpu_partition = gpu_partition
        self.conf = self.root / "slurm.conf"
        self.munge_dir = self.root / "munge"  # owned by the munge user, who must also traverse self.root
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid_file(self, daemon: str) -> Path:
        return (self.munge_dir if daemon == "munged" else self.root) / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return (self.munge_dir if daemon == "munged" else self.root) / f"{daemon}.log"

    def up(self, timeout: float = 60.0) -> LocalSlurm:
        problem = missing_requirement()
        if problem:
            raise ClusterError(problem)
        try:
            self._start(timeout)
        except Exception as exc:
            tails = self.log_tails()
            self.down()
            raise ClusterError(f"{exc}\n{tails}") from exc
        return self

    def _start(self, timeout: float) -> None:
        munge = pwd.getpwnam(MUNGE_USER)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.munge_dir.mkdir(exist_ok=True)
        os.chmod(self.root, 0o755)
        os.chown(self.munge_dir, munge.pw_uid, munge.pw_gid)
        os.chmod(self.munge_dir, 0o755)  # munged wants its socket folder searchable by all
        if not MUNGE_KEY.exists():
            subprocess.run(["mungekey", "--create", f"--keyfile={MUNGE_KEY}"], check=True, capture_output=True)
            os.chown(MUNGE_KEY, munge.pw_uid, munge.pw_gid)
            os.chmod(MUNGE_KEY, 0o400)
        self._daemon("munged", [
            "runuser", "-u", MUNGE_USER, "--", "munged", f"--socket={self.munge_socket}",
            f"--pid-file={self.pid_file('munged')}", f"--log-file={self.log_file('munged')}",
            f"--seed-file={self.munge_dir / 'munged.seed'}", f"--key-file={MUNGE_KEY}",
        ])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged did not open its socket")
        self.write_conf()
        self._daemon("slurmctld", ["slurmctld", "-i", "-f", str(self.conf)])
        self._daemon("slurmd", ["slurmd", "-N", "localhost", "-f", str(self.conf)])
        self._wait(lambda: self.node_state() == "idle", timeout, "the node did not become idle")

    @property
    def munge_socket(self) -> Path:
        return self.munge_dir / "munge.socket"

    def write_conf(self) -> None:
        node = detected_node()
        controller_port, node_port = free_ports(2)
        (self.root / "plugstack.conf").write_text("")  # no SPANK plugins from /etc/slurm
        settings = {
            "ClusterName": "lfpo",
            "SlurmctldHost": "localhost",
            "SlurmctldPort": controller_port,
            "SlurmdPort": node_port,
            "SlurmUser": "root",
            "AuthType": "auth/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "CredType": "cred/munge",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "MpiDefault": "none",
            "ReturnToService": 2,
            "MinJobAge": 600,  # finished jobs stay visible to squeue/scontrol this long (no accounting DB)
            "JobCompType": "jobcomp/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "MailProg": "/bin/true",
            "PlugStackConfig": self.root / "plugstack.conf",
            "StateSaveLocation": self.root / "state",
            "SlurmdSpoolDir": self.root / "spool",
            "SlurmctldPidFile": self.pid_file("slurmctld"),
            "SlurmdPidFile": self.pid_file("slurmd"),
            "SlurmctldLogFile": self.log_file("slurmctld"),
            "SlurmdLogFile": self.log_file("slurmd"),
        }
        gres = ""
        if self.gpu_partition:
            settings["GresTypes"] = "gpu"
            (self.root / "gres.conf").write_text(f"NodeName=localhost Name=gpu File={STAND_IN_GPU}\n")
            gres = " Gres=gpu:1"
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines += [
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={min(self.cpus, node['CPUs'])} "
            f"RealMemory={node['RealMemory']}{gres} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        ]
        if self.gpu_partition:
            lines.append(f"PartitionName={self.gpu_partition} Nodes=localhost MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _daemon(self, name: str, argv: list[str]) -> None:
        """Start a self-daemonising program; what it prints before forking goes to ``<name>.out``."""
        with open(self.root / f"{name}.out", "w") as out:
            done = subprocess.run(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=60)
        if done.returncode != 0:
            raise ClusterError(f"{name} exited with status {done.returncode}")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise ClusterError(f"{what} within {timeout:.0f} s")
            time.sleep(0.1)

    def node_state(self) -> str:
        done = self.client("sinfo", "-h", "-N", "-n", "localhost", "-o", "%t", check=False)
        states = set(done.stdout.split()) if done.returncode == 0 else set()  # one line per partition
        return states.pop() if len(states) == 1 else ""

    def client(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=30, check=check)

    def pids(self) -> dict[str, int]:
        """Daemons of this cluster still alive, by name."""
        alive = {}
        for daemon in DAEMONS:
            try:
                pid = int(self.pid_file(daemon).read_text().split()[0])
            except (FileNotFoundError, ValueError, IndexError):
                continue
            if _alive(pid):
                alive[daemon] = pid
        return alive

    def down(self, timeout: float = 15.0) -> None:
        """Cancel this cluster's jobs, then stop its daemons (node, controller, munged) by their pid files."""
        if "slurmctld" in self.pids():
            for partition in filter(None, (self.partition, self.gpu_partition)):
                self.client("scancel", "--full", f"--partition={partition}", check=False)
        for daemon in DAEMONS:
            pid = self.pids().get(daemon)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for daemon in reversed(DAEMONS):
            for path in (self.root / f"{daemon}.out", self.log_file(daemon)):
                if path.is_file() and path.stat().st_size:
                    tail = path.read_text(errors="replace").splitlines()[-lines:]
                    parts.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(parts) or f"(no daemon output in {self.root})"


def _alive(pid: int) -> bool:
    """Running and not a zombie (without an init that reaps, a stopped daemon can linger as one)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start a cluster and print the SLURM_CONF to export")
    up.add_argument("dir", nargs="?", help="folder for its files (default: a new one under the temp dir)")
    up.add_argument("--partition", default="debug")
    up.add_argument("--cpus", type=int, default=2)
    up.add_argument("--gpu-partition", help="also a partition whose jobs get the node's one (stand-in) GPU")
    down = sub.add_parser("down", help="stop the cluster started in DIR")
    down.add_argument("dir")
    args = parser.parse_args(argv)
    if args.action == "down":
        LocalSlurm(args.dir).down()
        return 0
    try:
        cluster = LocalSlurm(args.dir, args.partition, args.cpus, args.gpu_partition).up()
    except ClusterError as exc:
        print(f"local Slurm did not start: {exc}", file=sys.stderr)
        return 1
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
