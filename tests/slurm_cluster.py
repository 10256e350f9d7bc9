"""The loopback Slurm cluster of ``scripts/local_slurm.py`` as a session fixture for tests marked ``slurm``.

Test modules import ``slurm_cluster`` from here to use it. The fixture skips, with the reason, where the
cluster cannot run (not root, slurm-wlm or munge missing) or does not come up (with the daemons' log
tails); it exports ``SLURM_CONF`` so that dpdispatcher's sbatch and squeue reach this cluster only, and
at the end stops the daemons and checks that none is left.
"""

from __future__ import annotations

import importlib.util
import shutil
import time

import pytest

from conftest import ROOT

PARTITION = "lfpo_test"
GPU_PARTITION = "lfpo_gpu"  # the same node, with one stand-in GPU (scripts/local_slurm.py)


def load_local_slurm():
    """``scripts/local_slurm.py`` as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("local_slurm", ROOT / "scripts" / "local_slurm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_cluster(local_slurm, partition: str = PARTITION, gpu_partition: str | None = None):
    """An up cluster, or a skip naming why there is none."""
    problem = local_slurm.missing_requirement()
    if problem:
        pytest.skip(f"no loopback Slurm: {problem}")
    cluster = local_slurm.LocalSlurm(partition=partition, gpu_partition=gpu_partition)
    start = time.perf_counter()
    try:
        cluster.up()
    except local_slurm.ClusterError as exc:
        shutil.rmtree(cluster.root, ignore_errors=True)
        pytest.skip(f"the loopback Slurm did not come up: {exc}")
    cluster.startup_s = time.perf_counter() - start
    print(f"loopback Slurm up in {cluster.startup_s:.2f} s ({cluster.root})")
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster():
    local_slurm = load_local_slurm()
    cluster = start_cluster(local_slurm, gpu_partition=GPU_PARTITION)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", str(cluster.conf))
        yield cluster
    cluster.down()
    left = cluster.pids()
    assert not left, f"daemons still running after teardown: {left}\n{cluster.log_tails()}"
    shutil.rmtree(cluster.root, ignore_errors=True)
