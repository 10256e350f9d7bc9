import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SYSTEMS = ("lfpo", "lmpo", "lcpo", "lnpo")


@pytest.fixture(scope="session")
def load_system():
    from lfpo_al.config import compose_config, instantiate_group

    cache = {}

    def load(name: str = "lfpo"):
        if name not in cache:
            cache[name] = instantiate_group(compose_config([f"system={name}"]), "system")
        return cache[name]

    return load


# A whole `train` on tiny settings (starter DPA-2, ASE MD, CHGNet labels through dpdispatcher): two
# iterations of one 26-atom cell, set-up included. ``finished_run`` runs it once; the kill-and-resume test
# runs it again with kills and compares the two.
TINY_RUN = [
    "experiment=demo", "run_name=r", "model.n_members=2", "model.numb_steps=10", "model.member0_numb_steps=null",
    "explore.temperatures=[700]", "explore.n_steps=40", "explore.record_every=10",
    "explore.structures=[{x: 0.5, li_order: random, seed: 0, supercell: [1, 1, 1]}]",
    "selection=trust_window", "selection.trust_lo=0.0", "selection.trust_hi=teacher", "selection.max_selected=3",
    "selection.priority=valence",  # the ensemble scores the candidates inside the loop
    "validate.test_structures=[{x: 0.5, seed: 3, supercell: [1, 1, 1]}]", "validate.frames_per_structure=2",
    "validate.relax_steps=10",
    "validate.dynamics.structures=[{x: 0.5, seed: 4, supercell: [1, 1, 1]}]", "validate.dynamics.seeds=[0]",
    "validate.dynamics.n_steps=20", "validate.dynamics.record_every=4", "validate.dynamics.smoothing_fs=8",
    "loop.max_iters=2", "loop.label_budget=100", "loop.init_frames_per_structure=2",
    "loop.init_structures=[{x: 0.0, supercell: [1, 1, 1]}]",
    "label.batch_size=2",  # CHGNet labels in rounds of two tasks: results come home while others still run
]


def start_train(runs_dir: Path, log: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """``train`` of ``TINY_RUN`` in its own process group, its output to ``log`` (a pipe nobody reads could
    fill and block it). One thread, as make test sets it: torch's multi-threaded sums differ in the last
    bits between runs, and MD makes that a different trajectory."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1",
           "DP_INTER_OP_PARALLELISM_THREADS": "1", **(env or {})}
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "lfpo_al", "train", *TINY_RUN, f"runs_dir={runs_dir}", *extra],
                                cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> tuple[Path, str]:
    """``TINY_RUN`` run once to its end without interruption, W&B offline: the run folder and what train
    printed. Tests that only read a finished run share it; their modules carry the ``finished_run`` xdist
    group, so that it is made once per test run and no two of them use it at the same time."""
    runs = tmp_path_factory.mktemp("finished")
    log = runs / "train.log"
    proc = start_train(runs, log, "tracking.mode=offline")
    assert proc.wait(timeout=1800) == 0, log.read_text()[-3000:]
    return runs / "r", log.read_text()


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lfpo_al", *args], cwd=cwd or ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="session")
def machine():
    from lfpo_al.config import compose_config, instantiate_group

    return instantiate_group(compose_config([]), "machine")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, load_system):
    """Four 28-atom frames labeled by CHGNet, written as deepmd/npy with dpdata."""
    import dpdata
    import numpy as np
    from ase.calculators.singlepoint import SinglePointCalculator
    from chgnet.model.dynamics import CHGNetCalculator

    from lfpo_al.structures import BuildSpec, build_structure

    system = load_system("lfpo")
    calc = CHGNetCalculator(use_device="cpu")
    rng = np.random.default_rng(0)
    multi = dpdata.MultiSystems(type_map=system.type_map)
    for x, seed in ((1.0, 0), (0.5, 1), (0.5, 2), (0.0, 3)):
        atoms = build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=seed))
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.calc = calc
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=False)
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        multi.append(dpdata.LabeledSystem(atoms, fmt="ase/structure"))
    out = tmp_path_factory.mktemp("data")
    multi.to_deepmd_npy(str(out))
    return sorted(p.parent for p in out.rglob("type.raw"))


@pytest.fixture(scope="session")
def tiny_members(tmp_path_factory, tiny_data, machine, load_system):
    """Two members fine-tuned for 4 steps from the starter on ``tiny_data``: member 0 keeps the starter's
    fitting net, member 1 re-initialises its own, so they disagree. Trained once per test worker; modules
    that use it share the ``tiny_members`` xdist group so that this is once per run."""
    from lfpo_al.train.ensemble import train_ensemble
    from lfpo_al.train.pretrained import resolve_pretrained
    from lfpo_al.train.settings import ModelSettings

    settings = ModelSettings(n_members=2, numb_steps=4, bootstrap_fraction=0.75)
    work = tmp_path_factory.mktemp("train")
    return train_ensemble(settings, load_system("lfpo").type_map, tiny_data, work, machine, resolve_pretrained("starter"))


def pytest_collection_modifyitems(config, items):
    """Longest first, so the two test workers finish together: the real DFT label (minutes on both
    cores), then the other slow tests, then the rest, each in collection order."""
    def rank(item):
        dft, slow = item.get_closest_marker("dft") is not None, item.get_closest_marker("slow") is not None
        return 0 if dft and slow else 1 if dft else 2 if slow else 3

    items.sort(key=rank)  # stable: collection order within a rank


@pytest.fixture(scope="session")
def unit_cells(load_system):
    """LiFePO4 (28 atoms) and Li0.75FePO4 (27 atoms, one Fe3+ with its octahedron contracted), built once."""
    from lfpo_al.structures import BuildSpec, build_structure

    system = load_system("lfpo")
    return [build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=0)) for x in (1.0, 0.75)]


SLOW_SECONDS = 60  # CONTRIBUTING.md, Test budget: a test longer than this is marked slow and listed with its time
_durations: dict[str, tuple[float, bool]] = {}


def pytest_runtest_logreport(report):
    """Setup, call and teardown of each test, summed: what the test costs the suite."""
    seconds, slow = _durations.get(report.nodeid, (0.0, False))
    _durations[report.nodeid] = (seconds + report.duration, slow or "slow" in report.keywords)


def pytest_terminal_summary(terminalreporter):
    unmarked = sorted(((s, n) for n, (s, slow) in _durations.items() if s > SLOW_SECONDS and not slow), reverse=True)
    if unmarked:
        terminalreporter.section(f"tests over {SLOW_SECONDS} s not marked slow")
        for seconds, nodeid in unmarked:
            terminalreporter.write_line(f"{seconds:7.1f} s  {nodeid}: mark it slow and list it in CONTRIBUTING.md's test budget")
