"""Pretrained-model lookup and the shipped starter DPA-2 (fine-tuned for real in the slow test)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lfpo_al.errors import UserError
from lfpo_al.train import pretrained
from lfpo_al.train.pretrained import STARTER, model_heads, resolve_pretrained

ROOT = Path(__file__).resolve().parents[1]


def load_build_script():
    """scripts/build_starter_model.py as a module: its labeling / deepmd writing is reused here."""
    spec = importlib.util.spec_from_file_location("build_starter_model", ROOT / "scripts" / "build_starter_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_one_line_user_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_starter_resolves_exists_and_is_small():
    path = resolve_pretrained("starter")
    assert path == STARTER and path.is_absolute() and path.is_file()
    assert path.stat().st_size < 10 * 1024**2
    assert model_heads(path) is None  # single-task
    provenance = json.loads((path.parent / "provenance.json").read_text())
    assert provenance["held_out"]["force_rmse_ev_per_a"] > 0


def test_existing_file_resolves_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(STARTER.parent)
    assert resolve_pretrained(STARTER.name) == STARTER


def test_missing_path_is_a_one_line_user_error():
    with pytest.raises(UserError) as excinfo:
        resolve_pretrained("/nonexistent/dir/DPA-2.3.1-v3.0.0rc0.pt", head="MP_traj_v024_alldata_mixu")
    assert_one_line_user_error(excinfo, "model.pretrained", "no such file")


def test_uncached_names_are_one_line_user_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "deepmd_cache_dir", lambda: tmp_path)  # an empty cache; never downloads
    with pytest.raises(UserError) as excinfo:
        resolve_pretrained("DPA-3.1-3M")  # known to deepmd-kit, not cached
    assert_one_line_user_error(excinfo, "model.pretrained=/path/to/file.pt", "model.head=", str(tmp_path), "offline")
    with pytest.raises(UserError) as excinfo:
        resolve_pretrained("no-such-model")
    assert_one_line_user_error(excinfo, "model.pretrained", "not cached")


def test_cached_name_resolves_to_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "deepmd_cache_dir", lambda: tmp_path)
    filename = pretrained.known_model_names()["DPA-3.1-3M"]
    (tmp_path / filename).write_bytes(STARTER.read_bytes())
    assert resolve_pretrained("DPA-3.1-3M") == (tmp_path / filename).resolve()


def test_head_is_checked_against_the_checkpoint(tmp_path):
    import torch

    with pytest.raises(UserError) as excinfo:
        resolve_pretrained("starter", head="MP_traj_v024_alldata_mixu")
    assert_one_line_user_error(excinfo, "single-task", "model.head")
    assert resolve_pretrained("starter", head="RANDOM") == STARTER

    # a multi-task checkpoint carries one model config per branch under model_dict
    state = torch.load(STARTER, map_location="cpu", weights_only=True)
    params = state["model"]["_extra_state"]["model_params"]
    multi = {"model_dict": {"MP_traj_v024_alldata_mixu": params, "Domains_Alloy": {**params, "model_branch_alias": ["Alloy"]}}}
    state["model"]["_extra_state"]["model_params"] = multi
    path = tmp_path / "multi.pt"
    torch.save(state, path)
    assert model_heads(path) == ["MP_traj_v024_alldata_mixu", "Domains_Alloy"]
    assert resolve_pretrained(str(path), head="MP_traj_v024_alldata_mixu") == path
    assert resolve_pretrained(str(path), head="Alloy") == path
    with pytest.raises(UserError) as excinfo:
        resolve_pretrained(str(path), head="OC20M")
    assert_one_line_user_error(excinfo, "OC20M", "MP_traj_v024_alldata_mixu, Domains_Alloy")


def test_a_checkpoint_the_installed_deepmd_cannot_build_is_one_line(tmp_path):
    """A newer release's file (a DPA-4 fitting, unknown to deepmd-kit 3.2.0) reads fine but cannot be built:
    refused at start-up, naming the reason and the version it states."""
    import torch

    state = torch.load(STARTER, map_location="cpu", weights_only=True)
    params = state["model"]["_extra_state"]["model_params"]
    params["fitting_net"]["type"] = "dpa4_ener"
    path = tmp_path / "dpa4.pt"
    torch.save(state, path)
    with pytest.raises(UserError) as excinfo:
        resolve_pretrained(str(path))
    assert_one_line_user_error(excinfo, "cannot be built by the installed deepmd-kit", "dpa4_ener")
    params["info"] = {"deepmd_version": "3.3.0"}
    torch.save(state, path)
    with pytest.raises(UserError, match="written by deepmd-kit 3.3.0"):
        resolve_pretrained(str(path))


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError) as excinfo:
        resolve_pretrained(str(junk))
    assert_one_line_user_error(excinfo, "model.pretrained")


def model_params(checkpoint):
    import torch

    return torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]["_extra_state"]["model_params"]


def dp(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1", "DP_INTER_OP_PARALLELISM_THREADS": "1"}
    exe = Path(sys.executable).with_name("dp")
    proc = subprocess.run([str(exe), "--pt", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def lfpo_data(tmp_path_factory, load_system):
    """4 LiFePO4 frames labeled by CHGNet, type map [Li, Fe, P, O] (a subset of the starter's)."""
    from lfpo_al.structures import BuildSpec, build_structure

    script = load_build_script()
    system = load_system("lfpo")
    frames = [build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=seed)) for x, seed in ((1.0, 0), (0.5, 0), (0.5, 1), (0.0, 0))]
    data = script.write_deepmd(script.label_frames(frames), tmp_path_factory.mktemp("lfpo") / "data", list(system.type_map))
    return script, data, list(system.type_map)


@pytest.mark.parametrize("branch", [[], ["--model-branch", "RANDOM"]], ids=["keep_fitting", "random_fitting"])
def test_starter_finetunes_on_chgnet_frames_and_freezes(tmp_path, lfpo_data, branch):
    script, data, type_map = lfpo_data
    (tmp_path / "input.json").write_text(json.dumps(script.finetune_input(data, type_map, steps=4)))
    starter = resolve_pretrained("starter")
    dp("train", "input.json", "--finetune", str(starter), "--use-pretrain-script", *branch, cwd=tmp_path)
    assert model_params(tmp_path / "model.ckpt-4.pt")["type_map"] == type_map  # the subset, not the starter's 7
    assert len((tmp_path / "lcurve.out").read_text().splitlines()) >= 2
    dp("freeze", "-c", ".", "-o", "member.pth", cwd=tmp_path)
    assert (tmp_path / "member.pth").stat().st_size > 0


@pytest.mark.slow
def test_build_polaron_md_frames_are_mixed_valence_teacher_md(monkeypatch):
    script = load_build_script()
    frames_module = sys.modules["starter_frames"]
    monkeypatch.setattr(frames_module, "SYSTEMS", ("lfpo",))
    monkeypatch.setattr(frames_module, "POLARON_MD_STEPS", 10)  # one snapshot per run
    frames = script.polaron_md_frames(seed=0)
    # x = 0.25, 0.5, 0.75 random + an interface, each at 300 and 600 K
    assert len(frames) == 8
    assert sorted({(float(f.info["x"]), f.info["li_order"]) for f in frames}) == [
        (0.25, "random"), (0.5, "interface_b"), (0.5, "random"), (0.75, "random")]
    assert {f.info["temperature_k"] for f in frames} == {300.0, 600.0}
    assert all(f.info["kind"] == "polaron_md" and f.info["config"] == "lfpo" for f in frames)
    for frame in frames:  # both valences present: the octahedra the phase teaches
        assert set(frame.arrays["valence"][frame.arrays["valence"] > 0]) == {2, 3}
    assert not np.allclose(frames[0].positions, frames[1].positions)  # 300 K and 600 K runs differ


@pytest.mark.slow
def test_build_phase_two_trains_on_both_sets_from_a_checkpoint_and_skips_when_done(tmp_path, load_system):
    from lfpo_al.structures import BuildSpec, build_structure

    script = load_build_script()
    system = load_system("lfpo")
    frames = script.label_frames([build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=1))
                                  for x in (1.0, 0.5, 0.0)])
    for name in ("broad", "polaron"):  # the layout main() writes, one frame held out per set
        script.write_deepmd(frames[:2], tmp_path / "data/train" / name, script.TYPE_MAP)
        script.write_deepmd(frames[2:], tmp_path / "data/valid" / name, script.TYPE_MAP)
    times = {}
    final = script.train(tmp_path, "train_polaron", ["broad", "polaron"], 2, 0, times, start_from=STARTER)
    assert final == tmp_path / "train_polaron" / "model.ckpt-2.pt" and final.is_file()
    config = json.loads((tmp_path / "train_polaron" / "input.json").read_text())
    assert {Path(p).parent.name for p in config["training"]["training_data"]["systems"]} == {"broad", "polaron"}
    assert model_params(final)["descriptor"]["type"] == "dpa2" and times["train_polaron"] > 0
    # started from the checkpoint's weights (2 steps move them little), not from a fresh initialisation
    import torch

    start = torch.load(STARTER, map_location="cpu", weights_only=True)["model"]
    trained = torch.load(final, map_location="cpu", weights_only=True)["model"]
    key = next(k for k in start if "descriptor" in k and k.endswith("matrix"))
    change = torch.linalg.norm(trained[key] - start[key]) / torch.linalg.norm(start[key])
    assert change < 0.05, (key, float(change))
    # rerun: the finished phase is not trained again
    mtime = final.stat().st_mtime
    assert script.train(tmp_path, "train_polaron", ["broad", "polaron"], 2, 0, times, start_from=STARTER) == final
    assert final.stat().st_mtime == mtime
    metrics = script.test_model(tmp_path, final)
    assert metrics["frames"] == 2 and set(metrics["per_set"]) == {"broad", "polaron"}
    assert metrics["per_set"]["polaron"]["frames"] == 1 and metrics["force_rmse_ev_per_a"] > 0
