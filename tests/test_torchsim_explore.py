"""torch-sim batched replicas: one process advances several trajectories (cells of two sizes, three
temperatures) with one model call per step and size; outputs as ase_md's, scored by every member."""

import dataclasses
import json

import ase.io
import numpy as np
import pytest
import torch
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from deepmd.infer import DeepPot
from deepmd.infer.model_devi import calc_model_devi

from lfpo_al.errors import UserError
from lfpo_al.explore import torchsim_md
from lfpo_al.explore.md_task import MDTask
from lfpo_al.explore.settings import TorchSimExplorer
from lfpo_al.explore.step import balanced_batches, explore_step
from lfpo_al.structures import BuildSpec, build_structure, write_structure

pytestmark = pytest.mark.xdist_group("tiny_members")  # shares the session's trained members (conftest)

STRUCTURES = [{"x": 0.5, "li_order": "random", "seed": 0, "temperatures": [300.0, 900.0]}, {"x": 1.0}]


def settings(**kw) -> TorchSimExplorer:
    return TorchSimExplorer(**{"temperatures": [600.0], "structures": STRUCTURES, "n_steps": 20, "record_every": 5,
                               "replicas_per_task": 3, **kw})


def write_tasks(members, system, folder, explore, abort=(None, None, None)) -> list[str]:
    """Task folders as explore_step writes them: x = 0.5 at 300 and 900 K, LiFePO4 at 600 K."""
    names = []
    for index, (section, temperature) in enumerate([(STRUCTURES[0], 300.0), (STRUCTURES[0], 900.0), (STRUCTURES[1], 600.0)]):
        task_dir = folder / f"traj.{index:03d}"
        task_dir.mkdir()
        spec = BuildSpec(supercell=[1, 1, 1], **{k: v for k, v in section.items() if k != "temperatures"})
        write_structure(build_structure(system, spec), task_dir / "start.extxyz")
        task = {"models": [str(m.frozen) for m in members], "driver": None, "system": dataclasses.asdict(system),
                "family": "f", "temperature": temperature, "seed": index, **{k: getattr(explore, k) for k in (
                    "ensemble", "n_steps", "timestep_fs", "record_every", "friction_per_fs", "abort_deviation",
                    "min_distance", "score_every")}}
        if abort[index] is not None:
            task["abort_deviation"] = abort[index]
        (task_dir / "task.json").write_text(json.dumps(task))
        names.append(task_dir.name)
    return names


@pytest.mark.slow  # the first test of its group on its worker: it also trains the session's tiny_members
def test_a_batch_writes_what_ase_md_writes_scored_by_every_member(tiny_members, machine, load_system, tmp_path):
    exploration = explore_step(settings(score_every=2, replicas_per_task=2), load_system("lfpo"),
                               BuildSpec(supercell=[1, 1, 1]), [m.frozen for m in tiny_members], tmp_path, machine)
    entries = exploration.trajectories
    # the largest cell first into the emptiest batch: the two 26-atom cells share the second
    assert [e.dir for e in entries] == ["batch.001/traj.000", "batch.001/traj.001", "batch.000/traj.002"]
    assert [e.temperature for e in entries] == [300.0, 900.0, 600.0] and exploration.engine == "torchsim"
    models = [DeepPot(str(m.frozen)) for m in tiny_members]
    type_map = load_system("lfpo").type_map
    for entry in entries:
        assert entry.n_frames == 5 and entry.stop_reason is None and entry.stop_step is None
        frames = ase.io.read(tmp_path / entry.dir / "frames.extxyz", index=":")
        devi = np.loadtxt(tmp_path / entry.dir / "model_devi.out")
        np.testing.assert_array_equal(devi[:, 0], [0, 5, 10, 15, 20])
        atype = [type_map.index(s) for s in frames[0].get_chemical_symbols()]
        # frames 0, 2 and the last are scored (the driver's MD forces stand in for member 0); 1 and 3 bounded
        for i in (0, 2, 4):
            rescored = calc_model_devi(frames[i].positions.reshape(1, -1), frames[i].cell.array.reshape(1, 9), atype,
                                       models)[0]
            np.testing.assert_allclose(rescored[1:], devi[i, 1:], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(devi[1, 1:], np.maximum(devi[0, 1:], devi[2, 1:]))
        assert not np.allclose(frames[0].positions, frames[-1].positions)
    assert len(ase.io.read(tmp_path / entries[2].dir / "frames.extxyz")) == 28  # the LiFePO4 cell beside x = 0.5


def test_a_batch_of_one_runs_in_its_trajectory_folder(tiny_members, machine, load_system, tmp_path):
    explore = settings(structures=[{"x": 1.0}], n_steps=10, replicas_per_task=None)
    assert explore.replicas_per_process(machine.parallel_jobs) == 1
    (entry,) = explore_step(explore, load_system("lfpo"), BuildSpec(supercell=[1, 1, 1]),
                            [m.frozen for m in tiny_members], tmp_path, machine).trajectories
    assert entry.dir == "traj.000" and entry.n_frames == 3 and entry.stop_reason is None


@pytest.mark.slow
def test_one_model_call_per_step_and_size_and_each_replica_at_its_temperature(tiny_members, load_system, tmp_path,
                                                                              monkeypatch):
    """3 replicas (26 and 28 atoms) over 200 steps: one driver call per step for all three, and the 300 K
    and 900 K copies of one cell hold their own temperatures (second half, within 30 %)."""
    names = write_tasks(tiny_members, load_system("lfpo"), tmp_path, settings(n_steps=200, record_every=10))
    calls = []
    forward = torchsim_md.DeepmdModel.forward
    monkeypatch.setattr(torchsim_md.DeepmdModel, "forward", lambda self, state, **kw: calls.append(1) or forward(self, state))
    results = torchsim_md.run_batch(tmp_path, names)
    assert [r.n_steps_run for r in results] == [200, 200, 200]
    assert len(calls) == 201  # the start, then one per step, each call covering all three replicas
    for name, target in zip(names, (300.0, 900.0, 600.0)):
        frames = ase.io.read(tmp_path / name / "frames.extxyz", index=":")
        kinetic = [f.get_kinetic_energy() / (1.5 * units.kB * len(f)) for f in frames[10:]]
        assert abs(np.mean(kinetic) / target - 1) < 0.3, (name, np.mean(kinetic))


def test_a_replica_that_stops_leaves_the_batch_and_the_others_run_on(tiny_members, load_system, tmp_path):
    names = write_tasks(tiny_members, load_system("lfpo"), tmp_path, settings(), abort=(None, 1e-6, None))
    results = torchsim_md.run_batch(tmp_path, names)
    assert results[1].n_frames == 1 and results[1].stop_reason.startswith("deviation") and results[1].stop_step == 0
    assert [(r.n_frames, r.stop_reason, r.stop_step) for r in (results[0], results[2])] == [(5, None, None)] * 2
    np.testing.assert_array_equal(np.loadtxt(tmp_path / names[2] / "model_devi.out")[:, 0], [0, 5, 10, 15, 20])


def test_replicas_split_evenly_over_the_machines_jobs_unless_set():
    assert settings(replicas_per_task=None).replicas_per_process(2) == 2  # 3 trajectories over 2 jobs
    assert settings(replicas_per_task=None).replicas_per_process(None) == 3
    assert settings(replicas_per_task=1).replicas_per_process(2) == 1


def test_batches_balance_their_atoms():
    """analysis=production_cpu: 14 cells of 52 atoms, then the interface at 104 twice, 8 per batch:
    by index the second batch would carry 520 atoms against 416; balanced, both carry 468."""
    atoms = [52] * 14 + [104] * 2
    batch_of = balanced_batches(atoms, 8)
    assert [sum(n for n, b in zip(atoms, batch_of) if b == k) for k in (0, 1)] == [468, 468]
    assert sorted(batch_of) == [0] * 8 + [1] * 8 and batch_of[14] != batch_of[15]
    assert balanced_batches([26, 26, 28], 3) == [0, 0, 0] and balanced_batches([5, 5, 5], 1) == [0, 1, 2]


def test_a_batch_shares_its_settings_and_runs_nvt_only(load_system):
    with pytest.raises(UserError, match="nvt"):
        settings(ensemble="npt")
    with pytest.raises(UserError, match="replicas_per_task"):
        settings(replicas_per_task=0)
    task = MDTask(models=["m.pth"], system=load_system("lfpo"), family="f", temperature=300.0, seed=0, ensemble="nvt",
                  n_steps=20, timestep_fs=1.0, record_every=5, friction_per_fs=0.01, abort_deviation=3.0,
                  min_distance=0.8)
    with pytest.raises(SystemExit, match="differ in 'n_steps'"):
        torchsim_md.check_shared([task, dataclasses.replace(task, n_steps=2)])
    with pytest.raises(SystemExit, match="runs nvt"):
        torchsim_md.check_shared([dataclasses.replace(task, ensemble="npt")])
    assert torchsim_md.check_shared([task, dataclasses.replace(task, temperature=900.0, seed=1)]) is task


class FreeParticles(torch.nn.Module):
    """No forces: only the thermostat moves the atoms (this test is of the integrator, not a model)."""

    device, dtype, compute_stress, compute_forces = torch.device("cpu"), torch.float64, False, True

    def forward(self, state, **_):
        return {"energy": torch.zeros(state.n_systems, dtype=torch.float64),
                "forces": torch.zeros_like(state.positions)}


def test_each_replica_keeps_its_centre_of_mass_as_ase_langevin_does(load_system):
    """Two cells at 900 K over 300 fs: the noise alone would move a 28-atom cell's centre of mass ~0.4 A;
    each replica's stays within 0.01 A and its momentum at zero, while its atoms move."""
    system = load_system("lfpo")
    starts = [build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x)) for x in (1.0, 0.5)]
    for seed, atoms in enumerate(starts):
        MaxwellBoltzmannDistribution(atoms, temperature_K=900.0, rng=np.random.default_rng(seed))
    torch.manual_seed(0)
    md = torchsim_md.BatchLangevin(FreeParticles(), starts, [900.0, 900.0], [0.01, 0.01], 1.0)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in starts])])
    inverse_cells = [np.linalg.inv(a.cell.array) for a in starts]

    def positions():
        return [md.state.positions[offsets[r]:offsets[r + 1]].numpy().copy() for r in range(len(starts))]

    displacement, before = [np.zeros((len(a), 3)) for a in starts], positions()
    for _ in range(300):  # the state wraps positions: follow each atom step by step (minimum image)
        md.run(1)
        after = positions()
        for replica, atoms in enumerate(starts):
            shift = (after[replica] - before[replica]) @ inverse_cells[replica]
            displacement[replica] += (shift - np.rint(shift)) @ atoms.cell.array
        before = after
    for replica, atoms in enumerate(starts):
        masses = atoms.get_masses()
        assert np.linalg.norm(masses @ displacement[replica] / masses.sum()) < 0.01
        assert np.sqrt(np.mean(np.sum(displacement[replica] ** 2, axis=1))) > 0.1
        momenta = md.state.momenta[offsets[replica]:offsets[replica + 1]].numpy()
        np.testing.assert_allclose(momenta.sum(axis=0), 0.0, atol=1e-9)
