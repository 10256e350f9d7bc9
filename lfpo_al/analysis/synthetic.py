"""Synthetic olivine trajectories with programmed polaron flips and Li hops (known frames).

For tests and ``scripts/bench_events.py``. A built LixMPO4 cell (octahedra not contracted) is the
lattice; an M3+ is made by contracting its octahedron to ``system.valence.bond_length[3]`` (displacements
of all M3+ superposed), so the geometry, not a label, carries the valence. A polaron move at frame t
turns one M3+ into M2+ (sign -1) and one M2+ into M3+ (+1); a Li hop moves a Li onto the vacant 4a
site next to it in its channel (3 A along b) at frame t; an excursion moves it back a few frames
later. Frames add Gaussian noise; ``wrap`` folds every frame back into the cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lfpo_al.analysis.sites import li_site_lattice
from lfpo_al.analysis.trajectory import Trajectory
from lfpo_al.structures.builder import BuildSpec, build_structure
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import nearest_oxygen


@dataclass
class Truth:
    """Programmed events: (frame, atom index, sign) for flips, (frame, atom index) for hops."""

    flips: list[tuple[int, int, int]] = field(default_factory=list)
    hops: list[tuple[int, int]] = field(default_factory=list)


def _octahedra(atoms, metal: np.ndarray, oxygen: np.ndarray):
    """Per M: its six O (atom indices), the M-O vectors and their mean length."""
    nearest, vectors = nearest_oxygen(atoms.positions, atoms.cell.array, metal, oxygen, 6)
    return oxygen[nearest], vectors, np.linalg.norm(vectors, axis=-1).mean(axis=1)


def breathing(n_frames: int, n_metal: int, amplitude_ang: float, time_fs: float, frame_interval_fs: float,
              rng: np.random.Generator) -> np.ndarray:
    """(frames, metals) Ornstein-Uhlenbeck amplitudes: thermal breathing of each octahedron, std
    ``amplitude_ang`` and correlation time ``time_fs``, stationary from the first frame."""
    from scipy.signal import lfilter

    if amplitude_ang <= 0:
        return np.zeros((n_frames, n_metal), np.float32)
    phi = float(np.exp(-frame_interval_fs / max(time_fs, 1e-9)))
    kicks = rng.standard_normal((n_frames, n_metal)) * np.sqrt(1 - phi ** 2)
    kicks[0] = rng.standard_normal(n_metal)
    return (lfilter([1.0], [1.0, -phi], kicks, axis=0) * amplitude_ang).astype(np.float32)


def synthetic_trajectory(system: OlivineSystem, supercell=(1, 2, 2), n_frames: int = 1000,
                         frame_interval_fs: float = 10.0, polaron_moves: int = 4, li_hops: int = 2,
                         excursions: int = 0, excursion_frames: int = 3, noise_ang: float = 0.01,
                         min_gap_frames: int = 60, seed: int = 0, wrap: bool = False,
                         temperature: float = 600.0, li_order: str = "random", bond_ang: dict | None = None,
                         breathing_ang: float = 0.0, breathing_time_fs: float = 100.0,
                         move_frames: list[int] | None = None) -> tuple[Trajectory, Truth]:
    """A trajectory of a built x = 0.5 cell with programmed events at random, well separated frames.

    ``bond_ang`` ({reduced: d, oxidised: d}) sets both basin centres (default: the lattice's own
    octahedra for M2+, the system's M3+ bond length); equal values make one basin, in which a polaron
    move changes nothing. ``breathing_ang`` / ``breathing_time_fs``: per-octahedron correlated bond
    noise (see ``breathing``) on top of the white ``noise_ang`` of every atom. ``move_frames``: the
    frames of the polaron moves (instead of ``polaron_moves`` random ones; ``min_gap_frames`` still
    separates the Li events from them)."""
    rng = np.random.default_rng(seed)
    atoms = build_structure(system, BuildSpec(supercell=list(supercell), x=0.5, li_order=li_order, seed=seed, contract=False))
    symbols = np.array(atoms.get_chemical_symbols())
    metal, oxygen = np.flatnonzero(symbols == system.metal), np.flatnonzero(symbols == system.oxygen)
    li = np.flatnonzero(symbols == system.mobile_ion)
    rule = system.valence
    o_index, vectors, mean = _octahedra(atoms, metal, oxygen)
    bond_ang = bond_ang or {}
    red = float(bond_ang.get(rule.reduced, 0.0)) or None
    ox = float(bond_ang.get(rule.oxidised, rule.bond_length[rule.oxidised]))
    scale = {False: (0.0 if red is None else red / mean - 1.0), True: ox / mean - 1.0}
    unit = vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)
    oxidised = atoms.arrays["valence"][metal] == rule.oxidised
    cell = atoms.cell.array

    slots = np.arange(min_gap_frames, n_frames - min_gap_frames, min_gap_frames)
    if move_frames is not None:
        slots = np.array([s for s in slots if np.all(np.abs(np.asarray(move_frames) - s) >= min_gap_frames)], int)
        polaron_moves = 0
    n_events = polaron_moves + li_hops + excursions
    if n_events > len(slots):
        raise ValueError(f"{n_events} events do not fit in {n_frames} frames with gaps of {min_gap_frames}")
    times = list(rng.choice(slots, size=n_events, replace=False))
    kinds = list(rng.permutation(["flip"] * polaron_moves + ["hop"] * li_hops + ["excursion"] * excursions))
    if move_frames is not None:
        times, kinds = times + [int(f) for f in move_frames], kinds + ["flip"] * len(move_frames)
    order = np.argsort(times, kind="stable")
    times, kinds = [int(times[i]) for i in order], [kinds[i] for i in order]

    sites = li_site_lattice(system, cell, li_order) @ cell
    li_pos = atoms.positions[li].copy()
    occupied = np.array([np.argmin(np.linalg.norm(_mic(sites - p, cell), axis=1)) for p in li_pos])

    truth = Truth()
    config = np.zeros(n_frames, dtype=int)
    states, li_tracks = [oxidised.copy()], np.repeat(li_pos[None], n_frames, axis=0)
    for t, kind in zip(times, kinds):  # loops over the handful of programmed events
        if kind == "flip":
            state = states[-1].copy()
            out = rng.choice(np.flatnonzero(state))
            dist = np.linalg.norm(_mic(atoms.positions[metal] - atoms.positions[metal[out]], cell), axis=1)
            candidates = np.flatnonzero(~state)
            into = candidates[np.argmin(dist[candidates])]
            state[out], state[into] = False, True
            states.append(state)
            config[t:] = len(states) - 1
            truth.flips += [(int(t), int(metal[out]), -1), (int(t), int(metal[into]), 1)]
        else:  # a Li with a vacant neighbour site in its channel (3.0 A along b) moves there
            free = np.setdiff1d(np.arange(len(sites)), occupied)
            for k in rng.permutation(len(li)):
                vec = _mic(sites[free] - li_tracks[t, k], cell)
                dist = np.linalg.norm(vec, axis=1)
                if dist.min() < 3.3:
                    break
            else:
                raise ValueError("no Li has a vacant channel neighbour; use a larger supercell")
            target = int(np.argmin(dist))
            stop = t + excursion_frames if kind == "excursion" else n_frames
            li_tracks[t:stop, k] = li_tracks[t, k] + vec[target]
            if kind == "hop":
                occupied[k] = free[target]
                truth.hops.append((int(t), int(li[k])))
    truth.flips.sort()

    base = atoms.positions.copy()
    configs = np.empty((len(states), len(atoms), 3))
    for c, state in enumerate(states):
        configs[c] = base
        shift = vectors * np.where(state, scale[True], scale[False])[:, None, None]
        np.add.at(configs[c], o_index.ravel(), shift.reshape(-1, 3))
    positions = configs.astype(np.float32)[config]
    positions[:, li] = li_tracks
    if breathing_ang > 0:  # each octahedron's O move along its M-O bonds with the M's own amplitude
        amplitude = breathing(n_frames, len(metal), breathing_ang, breathing_time_fs, frame_interval_fs, rng)
        shift = amplitude[:, :, None, None] * unit[None].astype(np.float32)
        np.add.at(positions, (slice(None), o_index.ravel()), shift.reshape(n_frames, -1, 3))
    positions += rng.standard_normal(size=positions.shape, dtype=np.float32) * np.float32(noise_ang)
    if wrap:
        frac = positions @ np.linalg.inv(cell).astype(np.float32)
        positions = ((frac % 1.0) @ cell.astype(np.float32)).astype(np.float32)
    initial = np.zeros(len(atoms), dtype=int)
    initial[metal] = np.where(oxidised, system.valence.oxidised, system.valence.reduced)
    traj = Trajectory(name=f"synthetic-s{seed}", symbols=symbols, positions=positions,
                      cells=np.repeat(cell[None], n_frames, axis=0), frame_interval_fs=frame_interval_fs,
                      temperature=temperature, info={"li_order": li_order, "family": f"synthetic-{li_order}"},
                      initial_valence=initial)
    return traj, truth


def _mic(vectors: np.ndarray, cell: np.ndarray) -> np.ndarray:
    frac = vectors @ np.linalg.inv(cell)
    return (frac - np.rint(frac)) @ cell


def write_extxyz(traj: Trajectory, path, with_time: bool = True) -> None:
    """Write a Trajectory as extxyz (``temperature`` and, unless ``with_time`` is false, ``time_fs`` per frame)."""
    import ase.io
    from ase import Atoms

    frames = []
    for f in range(traj.n_frames):  # file writing is per frame by nature; analysis never is
        atoms = Atoms(symbols=list(traj.symbols), positions=traj.positions[f], cell=traj.cells[f], pbc=True)
        atoms.info.update(traj.info)
        if traj.temperature is not None:
            atoms.info["temperature"] = traj.temperature
        if with_time:
            atoms.info["time_fs"] = f * traj.frame_interval_fs
        if traj.initial_valence is not None:
            atoms.new_array("valence", traj.initial_valence)
        frames.append(atoms)
    ase.io.write(str(path), frames, format="extxyz")
