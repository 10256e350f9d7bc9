"""torch-sim batched replicas: one process advances several trajectories (cells of two sizes, three
temperatures) with one model call per step and size; outputs as ase_md's, scored by every member."""

import dataclasses
import json

import ase.io
import numpy as np
import pytest
from ase import units
from deepmd.infer import DeepPot
from deepmd.infer.model_devi import calc_model_devi

from lfpo_al.errors import UserError
from lfpo_al.explore import torchsim_md
from lfpo_al.explore.settings import TorchSimExplorer
from lfpo_al.explore.step import explore_step
from lfpo_al.structures import BuildSpec, build_structure, write_structure

pytestmark = pytest.mark.xdist_group("tiny_members")  # shares the session's trained members (conftest)

STRUCTURES = [{"x": 0.5, "li_order": "random", "seed": 0, "temperatures": [300.0, 900.0]}, {"x": 1.0}]


def settings(**kw) -> TorchSimExplorer:
    return TorchSimExplorer(**{"temperatures": [600.0], "structures": STRUCTURES, "n_steps": 20, "record_every": 5,
                               "replicas_per_task": 3, **kw})


def test_a_batch_writes_what_ase_md_writes_scored_by_every_member(tiny_members, machine, load_system, tmp_path):
    summary = explore_step(settings(score_every=2), load_system("lfpo"), BuildSpec(supercell=[1, 1, 1]),
                           [m.frozen for m in tiny_members], tmp_path, machine)
    entries = summary["trajectories"]
    assert [e["dir"] for e in entries] == ["batch.000/traj.000", "batch.000/traj.001", "batch.000/traj.002"]
    assert [e["temperature"] for e in entries] == [300.0, 900.0, 600.0] and summary["engine"] == "torchsim"
    models = [DeepPot(str(m.frozen)) for m in tiny_members]
    type_map = load_system("lfpo").type_map
    for entry in entries:
        assert entry["n_frames"] == 5 and entry["stop_reason"] is None
        frames = ase.io.read(tmp_path / entry["dir"] / "frames.extxyz", index=":")
        devi = np.loadtxt(tmp_path / entry["dir"] / "model_devi.out")
        np.testing.assert_array_equal(devi[:, 0], [0, 5, 10, 15, 20])
        atype = [type_map.index(s) for s in frames[0].get_chemical_symbols()]
        # frames 0, 2 and the last are scored (the driver's MD forces stand in for member 0); 1 and 3 bounded
        for i in (0, 2, 4):
            rescored = calc_model_devi(frames[i].positions.reshape(1, -1), frames[i].cell.array.reshape(1, 9), atype,
                                       models)[0]
            np.testing.assert_allclose(rescored[1:], devi[i, 1:], rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(devi[1, 1:], np.maximum(devi[0, 1:], devi[2, 1:]))
        assert not np.allclose(frames[0].positions, frames[-1].positions)
    assert len(ase.io.read(tmp_path / entries[2]["dir"] / "frames.extxyz")) == 28  # the LiFePO4 cell beside x = 0.5


def test_one_model_call_per_step_and_size_and_each_replica_at_its_temperature(tiny_members, load_system, tmp_path,
                                                                              monkeypatch):
    """3 replicas (26 and 28 atoms) over 200 steps: one driver call per step for all three, and the 300 K and 900 K copies of
    one cell hold their own temperatures (second half, within 30 %)."""
    explore = settings(n_steps=200, record_every=10)
    names = []
    for index, (section, temperature) in enumerate([(STRUCTURES[0], 300.0), (STRUCTURES[0], 900.0), (STRUCTURES[1], 600.0)]):
        task_dir = tmp_path / f"traj.{index:03d}"
        task_dir.mkdir()
        spec = BuildSpec(supercell=[1, 1, 1], **{k: v for k, v in section.items() if k != "temperatures"})
        write_structure(build_structure(load_system("lfpo"), spec), task_dir / "start.extxyz")
        task = {"models": [str(m.frozen) for m in tiny_members], "driver": None,
                "system": dataclasses.asdict(load_system("lfpo")), "family": "f", "temperature": temperature,
                "seed": index, **{k: getattr(explore, k) for k in (
                    "ensemble", "n_steps", "timestep_fs", "record_every", "friction_per_fs", "abort_deviation",
                    "min_distance", "score_every")}}
        (task_dir / "task.json").write_text(json.dumps(task))
        names.append(task_dir.name)
    calls = []
    forward = torchsim_md.DeepmdModel.forward
    monkeypatch.setattr(torchsim_md.DeepmdModel, "forward", lambda self, state, **kw: calls.append(1) or forward(self, state))
    results = torchsim_md.run_batch(tmp_path, names)
    assert [r["n_steps_run"] for r in results] == [200, 200, 200]
    assert len(calls) == 201  # the start, then one per step, each call covering all three replicas
    for name, target in zip(names, (300.0, 900.0, 600.0)):
        frames = ase.io.read(tmp_path / name / "frames.extxyz", index=":")
        kinetic = [f.get_kinetic_energy() / (1.5 * units.kB * len(f)) for f in frames[10:]]
        assert abs(np.mean(kinetic) / target - 1) < 0.3, (name, np.mean(kinetic))


def test_a_batch_shares_its_settings_and_runs_nvt_only():
    with pytest.raises(UserError, match="nvt"):
        settings(ensemble="npt")
    with pytest.raises(UserError, match="replicas_per_task"):
        settings(replicas_per_task=0)
    tasks = [{k: 1 for k in torchsim_md.SHARED_KEYS}, {**{k: 1 for k in torchsim_md.SHARED_KEYS}, "n_steps": 2}]
    with pytest.raises(SystemExit, match="differ in 'n_steps'"):
        torchsim_md.check_shared(tasks)
