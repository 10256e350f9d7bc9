"""Many trajectories in one process, one model call per step: torch-sim's Langevin integrator advances a
batch of replicas (structures x temperatures) together, driven by member 0 (or a distilled student);
every recorded frame is scored by all members, one call per member for the whole batch.

Run inside a batch folder (``python -m lfpo_al.explore.torchsim_md traj.000 traj.001 ...``, or inside a
trajectory's own folder with no names): each named folder holds ``task.json`` and ``start.extxyz`` and
gets the outputs ``ase_md`` writes. Replicas of different sizes share the batch: each model call covers
one group of equal atom counts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms, units
from ase.data import chemical_symbols
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from lfpo_al.explore.md_common import DEVI_HEADER, Stop, annotate, fill_unscored, stop_at, write_outputs
from lfpo_al.explore.md_task import BATCH_SHARED_KEYS, MDResult, MDTask
from lfpo_al.torchscript import use_simple_executor



def size_groups(n_atoms: np.ndarray) -> list[np.ndarray]:
    """Indices of the replicas of each atom count (one model call each)."""
    return [np.flatnonzero(n_atoms == n) for n in np.unique(n_atoms)]


class BatchedFrames:
    """Positions, cells and types of a batch, grouped by size for deepmd's ``eval`` (``mixed_type``)."""

    def __init__(self, positions: np.ndarray, cells: np.ndarray, types: np.ndarray, n_atoms: np.ndarray):
        self.positions, self.cells, self.types, self.n_atoms = positions, cells, types, n_atoms
        self.offsets = np.concatenate([[0], np.cumsum(n_atoms)])

    def atoms_of(self, replicas: np.ndarray) -> np.ndarray:
        return np.concatenate([np.arange(self.offsets[r], self.offsets[r + 1]) for r in replicas])

    def eval(self, model, replicas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energies [g], forces [g * n, 3] and virials [g, 9] of ``replicas`` (all of one size)."""
        idx, n = self.atoms_of(replicas), int(self.n_atoms[replicas[0]])
        energy, forces, virial = model.eval(self.positions[idx].reshape(len(replicas), -1),
                                            self.cells[replicas].reshape(len(replicas), 9),
                                            self.types[idx].reshape(len(replicas), n), mixed_type=True)[:3]
        return energy.reshape(-1), forces.reshape(-1, 3), virial.reshape(-1, 9)


class DeepmdModel(torch.nn.Module):
    """A frozen deepmd model as torch-sim's model: energies and forces of every replica of the state,
    one ``DeepPot.eval`` per size group. Keeps its last results (member 0 scores with them)."""

    def __init__(self, path: str, dtype: torch.dtype = torch.float64):
        super().__init__()
        from deepmd.infer import DeepPot

        self.pot = DeepPot(path)
        type_map = self.pot.get_type_map()
        self.type_of_z = np.full(len(chemical_symbols), -1)
        for i, symbol in enumerate(type_map):
            self.type_of_z[chemical_symbols.index(symbol)] = i
        self.device, self.dtype = torch.device("cpu"), dtype
        self.compute_stress, self.compute_forces = False, True
        self.calls = 0
        self.last: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def frames(self, state) -> BatchedFrames:
        n_atoms = torch.bincount(state.system_idx, minlength=state.n_systems).cpu().numpy()
        return BatchedFrames(state.positions.detach().cpu().numpy(), state.row_vector_cell.detach().cpu().numpy(),
                             self.type_of_z[state.atomic_numbers.cpu().numpy()], n_atoms)

    def forward(self, state, **_) -> dict[str, torch.Tensor]:
        frames = self.frames(state)
        energy, forces = np.zeros(len(frames.n_atoms)), np.zeros_like(frames.positions)
        virial = np.zeros((len(frames.n_atoms), 9))
        for group in size_groups(frames.n_atoms):
            energy[group], forces[frames.atoms_of(group)], virial[group] = frames.eval(self.pot, group)
            self.calls += 1
        self.last = (energy, forces, virial)
        as_tensor = lambda a: torch.as_tensor(a, dtype=self.dtype, device=self.device)  # noqa: E731
        return {"energy": as_tensor(energy), "forces": as_tensor(forces)}


class CachedMember:
    """The driver inside ``calc_model_devi``: its results at these very frames, from the MD step."""

    def __init__(self, energy, forces, virial):
        self.results = (energy[:, None], forces, virial)

    def eval(self, *_, **__):
        return self.results


def score(frames: BatchedFrames, group: np.ndarray, members: list, driver: DeepmdModel | None) -> np.ndarray:
    """Deviation rows (deepmd's 8 columns, step left 0) of the replicas in ``group``: every member, one
    call each; ``driver`` (member 0 driving) lends its MD results instead of a call."""
    from deepmd.infer.model_devi import calc_model_devi

    n, idx = int(frames.n_atoms[group[0]]), frames.atoms_of(group)
    scorers = list(members)
    if driver is not None:
        energy, forces, virial = driver.last
        scorers.insert(0, CachedMember(energy[group], forces[idx].reshape(len(group), n, 3), virial[group]))
    return calc_model_devi(frames.positions[idx].reshape(len(group), -1), frames.cells[group].reshape(len(group), 9),
                           frames.types[idx].reshape(len(group), n), scorers, mixed_type=True)


class BatchLangevin:
    """torch-sim's BAOAB Langevin over a batch of replicas, each at its own temperature and friction.

    Each step ends with every replica's centre-of-mass momentum removed, as ASE's ``Langevin`` does
    (``fixcm``): the thermostat's noise would otherwise random-walk a whole 52-atom crystal by about
    1 A in 8 ps at 800 K, across the fixed Li-site lattice the hop analysis assigns against.
    """

    def __init__(self, model, starts: list[Atoms], temperatures_K, frictions_per_fs, timestep_fs: float):
        import torch_sim as ts
        from torch_sim.units import MetalUnits

        self.dt = torch.tensor(timestep_fs * units.fs, dtype=torch.float64)
        self.kT = torch.tensor([t * MetalUnits.temperature for t in temperatures_K], dtype=torch.float64)
        self.gamma = torch.tensor([g / units.fs for g in frictions_per_fs], dtype=torch.float64)
        init, self.update = ts.nvt_langevin(model, dt=self.dt, kT=self.kT, gamma=self.gamma)
        self.state = init(ts.initialize_state(starts, torch.device("cpu"), torch.float64))
        self.state.momenta = torch.tensor(np.concatenate([a.get_momenta() for a in starts]), dtype=torch.float64)
        self._remove_drift()

    def _remove_drift(self) -> None:
        state, n = self.state, self.state.n_systems
        momentum = torch.zeros(n, 3, dtype=torch.float64).index_add_(0, state.system_idx, state.momenta)
        mass = torch.zeros(n, dtype=torch.float64).index_add_(0, state.system_idx, state.masses)
        state.momenta = state.momenta - state.masses[:, None] * (momentum / mass[:, None])[state.system_idx]

    def run(self, n_steps: int) -> None:
        for _ in range(n_steps):
            self.state = self.update(self.state, dt=self.dt, kT=self.kT, gamma=self.gamma)
            self._remove_drift()

    def keep(self, slots: list[int]) -> None:
        """Continue with these replicas only (in this order)."""
        self.state, self.kT, self.gamma = self.state[slots], self.kT[slots], self.gamma[slots]


def check_shared(tasks: list[MDTask]) -> MDTask:
    """The settings every replica of a batch must share; a one-line error names the first that differs."""
    records = [task.record() for task in tasks]
    for key in BATCH_SHARED_KEYS:
        values = {json.dumps(record[key], sort_keys=True) for record in records}
        if len(values) > 1:
            raise SystemExit(f"the replicas of one batch differ in {key!r}; a batch shares {', '.join(BATCH_SHARED_KEYS)}")
    if tasks[0].ensemble != "nvt":
        raise SystemExit(f"ensemble {tasks[0].ensemble!r}: the torch-sim engine runs nvt (Langevin) only")
    return tasks[0]


def run_batch(batch_dir: Path, names: list[str]) -> list[MDResult]:
    use_simple_executor()
    dirs = [batch_dir / name for name in names]
    tasks = [MDTask.read(d) for d in dirs]
    shared = check_shared(tasks)
    system = shared.system
    starts = [ase.io.read(d / "start.extxyz") for d in dirs]
    # deepmd splits an evaluation above this many atoms; a batch is meant to be one call per size
    os.environ.setdefault("DP_INFER_BATCH_SIZE", str(max(1024, sum(len(a) for a in starts))))
    driving_member = not shared.driver
    model = DeepmdModel(shared.driver or shared.models[0])
    from deepmd.infer import DeepPot

    members = [DeepPot(path) for path in shared.models[1 if driving_member else 0:]]
    for atoms, task in zip(starts, tasks):  # each replica's start velocities from its own seed, as ase_md draws them
        MaxwellBoltzmannDistribution(atoms, temperature_K=task.temperature, rng=np.random.default_rng(task.seed))
    torch.manual_seed(tasks[0].seed)  # the batch's Langevin noise
    md = BatchLangevin(model, starts, [t.temperature for t in tasks], [t.friction_per_fs for t in tasks],
                       shared.timestep_fs)

    active = list(range(len(tasks)))  # replica numbers still running, in the state's order
    frames_of: list[list[Atoms]] = [[] for _ in tasks]
    rows_of: list[list] = [[] for _ in tasks]
    results: list[MDResult | None] = [None] * len(tasks)
    start, step, every = time.perf_counter(), 0, shared.score_every

    def record(last: bool) -> dict[int, Stop | None]:
        """Record every active replica's frame; returns the slots that stop here (None: the run's end).
        Frames are scored on schedule; a replica that stops (or the run's end) is always scored."""
        batch = model.frames(md.state)
        on_schedule = last or len(frames_of[active[0]]) % every == 0
        frames = []
        for slot, replica in enumerate(active):
            frame = starts[replica].copy()
            frame.positions = batch.positions[batch.atoms_of([slot])]
            frame.set_momenta(md.state.momenta[batch.atoms_of([slot])].cpu().numpy())
            annotate(frame, system, tasks[replica], step)
            frames.append(frame)
        stops = {} if on_schedule else {slot: stop for slot, frame in enumerate(frames)
                                         if (stop := stop_at(frame, None, tasks[active[slot]]))}
        to_score = np.arange(len(active)) if on_schedule else np.array(sorted(stops), dtype=int)
        rows = {}
        for group in size_groups(batch.n_atoms[to_score]):
            slots = to_score[group]
            for slot, row in zip(slots, score(batch, slots, members, model if driving_member else None)):
                row[0] = step
                rows[int(slot)] = row
        for slot, replica in enumerate(active):
            frames_of[replica].append(frames[slot])
            rows_of[replica].append(rows.get(slot))
            if slot in rows and (on_schedule or slot not in stops):
                stop = stop_at(frames[slot], rows[slot], tasks[replica])
                if stop or last:
                    stops[slot] = stop
        return stops

    stops = record(last=False)
    while True:
        for slot, stop in stops.items():
            replica = active[slot]
            results[replica] = write_outputs(dirs[replica], frames_of[replica], fill_unscored(rows_of[replica]),
                                             DEVI_HEADER, step, stop, time.perf_counter() - start)
        if stops:
            keep = [slot for slot in range(len(active)) if slot not in stops]
            active = [active[slot] for slot in keep]
            if not active:
                break
            md.keep(keep)
        md.run(shared.record_every)
        step += shared.record_every
        stops = record(last=step >= shared.n_steps)
    return results


if __name__ == "__main__":
    run_batch(Path.cwd(), sys.argv[1:] or ["."])  # no names: the task folder itself is a batch of one
