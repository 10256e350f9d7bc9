"""Real deepmd-kit fine-tuning of a 2-member ensemble from the starter model, then ASE MD exploration."""

import json

import ase.io
import dpdata
import numpy as np
import pytest
from deepmd.infer import DeepPot
from deepmd.infer.model_devi import calc_model_devi

from lfpo_al.structures import BuildSpec
from lfpo_al.errors import UserError
from lfpo_al.explore.md_common import fill_unscored
from lfpo_al.explore.settings import ExploreSettings
from lfpo_al.explore.step import explore_step
from lfpo_al.train.ensemble import count_frames, last_training_rmse, train_ensemble
from lfpo_al.train.pretrained import resolve_pretrained
from lfpo_al.train.settings import ModelSettings

pytestmark = pytest.mark.xdist_group("tiny_members")  # shares the session's trained members (conftest)


@pytest.fixture(scope="module")
def members(tiny_members):
    return tiny_members


def test_members_are_frozen_and_distinct(members, tiny_data):
    from deepmd.infer import DeepPot

    assert all(m.frozen.is_file() and m.checkpoint.is_file() for m in members)
    assert "rmse_trn" in last_training_rmse(members[0]) or "rmse_e_trn" in last_training_rmse(members[0])
    system = dpdata.LabeledSystem(str(tiny_data[0]), fmt="deepmd/npy")
    pots = [DeepPot(str(m.frozen)) for m in members]
    type_map = pots[0].get_type_map()
    atype = np.array([type_map.index(system["atom_names"][t]) for t in system["atom_types"]])
    forces = [p.eval(system["coords"][:1].reshape(1, -1), system["cells"][:1].reshape(1, 9), atype)[1] for p in pots]
    # member 1 re-initialised its fitting net with its own seed: the members must disagree
    assert np.abs(forces[0] - forces[1]).max() > 1e-4


def test_member_zero_keeps_the_pretrained_fitting_net(members):
    """Default diversification: member 0 fine-tunes the pretrained fitting net, member 1 starts a fresh one."""
    import torch

    def fitting_matrix(path):
        state = torch.load(path, map_location="cpu", weights_only=True)["model"]
        return state["model.Default.atomic_model.fitting_net.filter_layers.networks.0.layers.1.matrix"]

    pretrained = fitting_matrix(resolve_pretrained("starter"))
    kept, fresh = (fitting_matrix(m.checkpoint) for m in members)
    relative = lambda w: float(torch.linalg.norm(w - pretrained) / torch.linalg.norm(pretrained))  # noqa: E731
    assert kept.shape == pretrained.shape and relative(kept) < 0.05  # 4 Adam steps move each weight by ~ the lr
    # a re-initialised net shares nothing with the pretrained one (deepmd builds it with its default widths)
    assert fresh.shape != pretrained.shape or relative(fresh) > 0.5


def test_which_members_reinitialise_their_fitting_net():
    assert [ModelSettings().reinitialises_fitting(i) for i in range(3)] == [False, True, True]
    assert all(ModelSettings(diversify="reinit_fitting").reinitialises_fitting(i) for i in range(3))
    assert not any(ModelSettings(diversify="keep_fitting").reinitialises_fitting(i) for i in range(3))


def test_member_zero_trains_on_every_label():
    """Bootstrap subsets diversify the deviation members; member 0, the model that is used, keeps all data."""
    settings = ModelSettings(n_members=3, bootstrap_fraction=0.75)
    assert [settings.bootstraps(i) for i in range(3)] == [False, True, True]
    assert not any(ModelSettings(bootstrap_fraction=1.0).bootstraps(i) for i in range(3))


def test_member_zero_steps_may_grow_with_its_data():
    settings = ModelSettings(numb_steps=20, member0_numb_steps=100, member0_steps_per_frame=10)
    assert [settings.steps_for(0, n) for n in (0, 5, 24)] == [100, 100, 240]  # never below member0_numb_steps
    assert settings.steps_for(1, 24) == 20
    assert ModelSettings(numb_steps=20).steps_for(0, 24) == 20
    with pytest.raises(UserError, match="model.member0_steps_per_frame=0 must be positive"):
        ModelSettings(member0_steps_per_frame=0)


def test_member_zero_may_train_longer_than_the_deviation_members(tmp_path):
    """Member 0's input asks for member0_numb_steps, the others for numb_steps (nothing trained here)."""
    from lfpo_al.errors import UserError
    from lfpo_al.train.ensemble import training_input

    settings = ModelSettings(n_members=3, numb_steps=20, member0_numb_steps=100)
    assert [settings.steps_for(i) for i in range(3)] == [100, 20, 20]
    inputs = [training_input(settings, ["Li", "Fe", "P", "O"], [tmp_path], seed=i, numb_steps=settings.steps_for(i))
              for i in range(3)]
    assert [i["training"]["numb_steps"] for i in inputs] == [100, 20, 20]
    assert [i["learning_rate"]["decay_steps"] for i in inputs] == [10, 2, 2]  # the schedule follows each length
    assert json.loads(json.dumps(inputs[0]))["training"]["save_freq"] == 100
    assert ModelSettings(numb_steps=20).steps_for(0) == 20
    with pytest.raises(UserError, match="model.member0_numb_steps=0 must be a positive"):
        ModelSettings(member0_numb_steps=0)


def test_training_skips_finished_members(members, tiny_data, machine, load_system):
    # the shared ensemble trains with bootstrap_fraction 0.75: only the deviation member drew a subset
    trained_on = [json.loads((m.dir / "input.json").read_text())["training"]["training_data"]["systems"] for m in members]
    assert trained_on[0] == [str(p.resolve()) for p in tiny_data] and "bootstrap" in trained_on[1][0]
    assert count_frames(tiny_data) == sum(len(dpdata.LabeledSystem(str(p), fmt="deepmd/npy")) for p in tiny_data)
    before = [m.frozen.stat().st_mtime_ns for m in members]
    settings = ModelSettings(n_members=2, numb_steps=4)
    again = train_ensemble(settings, load_system("lfpo").type_map, tiny_data, members[0].dir.parent, machine,
                           resolve_pretrained("starter"))
    assert [m.frozen.stat().st_mtime_ns for m in again] == before


def test_explore_writes_frames_and_deviation(members, machine, load_system, tmp_path):
    settings = ExploreSettings(temperatures=[500.0], structures=[{"x": 0.5, "li_order": "random", "seed": 0,
                               "supercell": [1, 1, 1]}], n_steps=20, record_every=5)
    exploration = explore_step(settings, load_system("lfpo"), BuildSpec(supercell=[1, 1, 1]),
                               [m.frozen for m in members], tmp_path, machine)
    (traj,) = exploration.trajectories
    assert traj.n_frames == 5 and traj.stop_reason is None and traj.stop_step is None
    assert traj.family == "x0.50-random-s0-1x1x1"
    frames = ase.io.read(tmp_path / "traj.000" / "frames.extxyz", index=":")
    devi = np.loadtxt(tmp_path / "traj.000" / "model_devi.out")
    assert len(frames) == 5 and devi.shape == (5, 8)
    np.testing.assert_array_equal(devi[:, 0], [0, 5, 10, 15, 20])
    assert np.all(devi[:, 4] > 0) and np.all(devi[:, 4] >= devi[:, 6])
    # member 0's MD forces stand in for its rescoring: the rows equal deepmd's own deviation of every member
    models = [DeepPot(str(m.frozen)) for m in members]
    atype = [load_system("lfpo").type_map.index(s) for s in frames[0].get_chemical_symbols()]
    rescored = [calc_model_devi(f.positions.reshape(1, -1), f.cell.array.reshape(1, 9), atype, models)[0] for f in frames]
    np.testing.assert_allclose(np.array(rescored)[:, 1:], devi[:, 1:], rtol=1e-4, atol=1e-5)
    assert set(np.unique(frames[-1].arrays["valence_geometry"])) <= {0, 2, 3}
    np.testing.assert_array_equal(frames[-1].arrays["valence"], frames[0].arrays["valence"])  # seeded pattern kept
    assert np.sum(frames[0].arrays["valence"] == 3) == 2
    assert json.loads((tmp_path / "summary.json").read_text())["trajectories"][0]["n_frames"] == 5


def test_explore_scores_every_nth_frame_and_bounds_the_rest(members, machine, load_system, tmp_path):
    """score_every=3 over 5 frames: frames 0, 3 and the last are scored; 1 and 2 take the larger of 0 and 3."""
    settings = ExploreSettings(temperatures=[500.0], structures=[{"x": 0.5, "li_order": "random", "seed": 0,
                               "supercell": [1, 1, 1]}], n_steps=20, record_every=5, score_every=3)
    explore_step(settings, load_system("lfpo"), BuildSpec(supercell=[1, 1, 1]), [m.frozen for m in members], tmp_path, machine)
    frames = ase.io.read(tmp_path / "traj.000" / "frames.extxyz", index=":")
    devi = np.loadtxt(tmp_path / "traj.000" / "model_devi.out")
    np.testing.assert_array_equal(devi[:, 0], [0, 5, 10, 15, 20])
    models = [DeepPot(str(m.frozen)) for m in members]
    atype = [load_system("lfpo").type_map.index(s) for s in frames[0].get_chemical_symbols()]
    for i in (0, 3, 4):
        rescored = calc_model_devi(frames[i].positions.reshape(1, -1), frames[i].cell.array.reshape(1, 9), atype, models)[0]
        np.testing.assert_allclose(rescored[1:], devi[i, 1:], rtol=1e-4, atol=1e-5)
    for i in (1, 2):
        np.testing.assert_array_equal(devi[i, 1:], np.maximum(devi[0, 1:], devi[3, 1:]))


def test_finished_md_of_other_settings_is_refused_before_any_work(machine, load_system, tmp_path):
    settings = ExploreSettings(temperatures=[500.0], structures=[{"x": 0.5, "li_order": "random", "seed": 0,
                               "supercell": [1, 1, 1], "temperatures": [500.0, 700.0]}], n_steps=20, record_every=5)
    assert settings.n_trajectories == 2
    done = tmp_path / "traj.001"
    done.mkdir()
    (done / "result.json").write_text("{}")
    (done / "task.json").write_text(json.dumps({"temperature": 700.0, "n_steps": 100, "record_every": 5}))
    with pytest.raises(UserError, match=r"holds finished MD of other settings: traj.001 \(n_steps\)"):
        explore_step(settings, load_system("lfpo"), None, [tmp_path / "m.pth"], tmp_path, machine)
    assert not (tmp_path / ".dispatch").exists()


def test_fill_unscored_takes_the_larger_neighbour():
    rows = [np.array([0, 1.0, 5.0]), None, None, np.array([30, 2.0, 4.0]), None, np.array([50, 0.5, 0.5])]
    filled = fill_unscored(rows)
    np.testing.assert_array_equal(filled[:, 0], [0, 10, 20, 30, 40, 50])
    np.testing.assert_array_equal(filled[1, 1:], [2.0, 5.0])
    np.testing.assert_array_equal(filled[4, 1:], [2.0, 4.0])


def test_explore_stops_on_deviation(members, machine, load_system, tmp_path):
    settings = ExploreSettings(temperatures=[500.0], structures=[{"x": 1.0, "supercell": [1, 1, 1]}],
                               n_steps=20, record_every=5, abort_deviation=1e-6)
    (traj,) = explore_step(settings, load_system("lfpo"), None, [m.frozen for m in members], tmp_path, machine).trajectories
    assert traj.n_frames == 1 and traj.stop_reason.startswith("deviation") and traj.stop_step == 0


def test_a_model_with_more_elements_than_the_system_scores_by_its_own_type_map(machine, load_system, tmp_path):
    """The starter names Li, Fe, Mn, Co, Ni, P, O: two copies of it agree (deviation ~0) only when every
    atom is typed by the model's map, not the system's Li, Fe, P, O."""
    starter = resolve_pretrained("starter")
    assert DeepPot(str(starter)).get_type_map() != load_system("lfpo").type_map
    settings = ExploreSettings(temperatures=[500.0], structures=[{"x": 0.5, "seed": 0, "supercell": [1, 1, 1]}],
                               n_steps=10, record_every=5)
    explore_step(settings, load_system("lfpo"), None, [starter, starter], tmp_path, machine)
    devi = np.loadtxt(tmp_path / "traj.000" / "model_devi.out", ndmin=2)
    assert len(devi) == 3 and devi[:, 4].max() < 1e-4, devi
