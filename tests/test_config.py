"""The config tree: every option of every group composes and instantiates; the CLI's surface."""

import pytest

from conftest import run_cli
from lfpo_al.config import GROUPS, compose_config, group_options, instantiate_group
from lfpo_al.errors import UserError

OPTIONS = [(group, option) for group in GROUPS for option in group_options(group)]


def test_every_group_has_options():
    assert {group for group, _ in OPTIONS} == set(GROUPS)
    assert set(group_options("system")) == {"lfpo", "lmpo", "lcpo", "lnpo"}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_compose_and_instantiate(group, option, monkeypatch):
    monkeypatch.setenv("LFPO_AL_PRETRAINED", "/models/DPA-2.3.1.pt")
    cfg = compose_config([f"{group}={option}"])
    groups = [g for g in GROUPS if g != "experiment"] if group == "experiment" else [group]
    for name in groups:
        obj = instantiate_group(cfg, name)
        assert type(obj).__module__.startswith("lfpo_al."), (name, type(obj))


def test_system_swap_changes_only_chemistry():
    fe, mn = compose_config(["system=lfpo"]), compose_config(["system=lmpo"])
    assert fe.system.metal == "Fe" and mn.system.metal == "Mn"
    assert fe.system.type_map == ["Li", "Fe", "P", "O"] and mn.system.type_map == ["Li", "Mn", "P", "O"]
    fe.system = mn.system = None
    assert fe == mn


def test_unknown_group_option_is_one_line():
    with pytest.raises(UserError, match=r"unknown system 'lxpo'; choose one of: lcpo, lfpo, lmpo, lnpo"):
        compose_config(["system=lxpo"])


def test_unknown_key_names_it():
    with pytest.raises(UserError, match=r"unknown key build\.frac"):
        compose_config(["build.frac=0.5"])


def test_user_config_folder_adds_and_replaces_options(tmp_path, monkeypatch):
    """The user's folder is searched first: a new option is listed and composed, a same-named one wins."""
    lfpo = compose_config([]).system
    (tmp_path / "machine").mkdir()
    (tmp_path / "machine" / "my_cluster.yaml").write_text("defaults: [slurm, _self_]\nresources: {queue_name: mine}\n")
    (tmp_path / "machine" / "local.yaml").write_text("defaults: [slurm, _self_]\nresources: {queue_name: replaced}\n")
    monkeypatch.setenv("LFPO_AL_CONFIG_DIR", str(tmp_path))
    assert "my_cluster" in group_options("machine") and "slurm" in group_options("machine")
    assert compose_config(["machine=my_cluster"]).machine.resources.queue_name == "mine"
    assert compose_config([]).machine.resources.queue_name == "replaced"  # the default option, the user's file
    assert compose_config([]).system == lfpo  # groups the user does not have come from the package
    monkeypatch.setenv("LFPO_AL_CONFIG_DIR", str(tmp_path / "absent"))
    with pytest.raises(UserError, match="absent .*is not a directory"):
        compose_config([])


def test_invalid_settings_rejected():
    with pytest.raises(UserError, match="model.n_members=1"):
        instantiate_group(compose_config(["model.n_members=1"]), "model")
    with pytest.raises(UserError, match="selection.trust_lo=0.7 must be >= 0 and below"):
        instantiate_group(compose_config(["selection=trust_window", "selection.trust_lo=0.7"]), "selection")
    with pytest.raises(UserError, match="machine.machine is not a valid dpdispatcher machine"):
        instantiate_group(compose_config(["machine.machine.batch_type=7"]), "machine")


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("train", "build", "analyze", "status"):
        assert command in out.stdout


def test_analyze_without_input_fails_clearly(tmp_path):
    out = run_cli("analyze", f"runs_dir={tmp_path}")
    assert out.returncode == 2
    assert "nothing to analyse" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_cfg_prints_composed_config():
    out = run_cli("build", "--cfg", "system=lnpo")
    assert out.returncode == 0 and "metal: Ni" in out.stdout


@pytest.mark.parametrize("override, message", [
    ("loop.max_iters=abc", "loop.max_iters='abc' must be a whole number >= 1"),
    ("loop.max_iters=0", "loop.max_iters=0 must be a whole number >= 1"),
    ("loop.max_iters=-1", "loop.max_iters=-1 must be a whole number >= 1"),
    ("loop.label_budget=0", "loop.label_budget=0 must be a whole number >= 1"),
    ("loop.init_rattle_ang=-0.1", "loop.init_rattle_ang=-0.1 must be a length >= 0"),
    ("+loop.max_iter=3", "unknown key loop.max_iter"),
    ("model.n_members=abc", "bad value in model: TypeError"),
    ("explore.structures=[{x: 0.5, supercell: [1, 1, 0]}]", "explore.structures[0].supercell=[1, 1, 0]"),
    ("explore.structures=[{x: 0.3, supercell: [1, 1, 1]}]", "explore.structures[0].x=0.3 is not reachable"),
    ("validate.test_structures=[{x: 0.5, li_order: zigzag}]", "validate.test_structures[0].li_order='zigzag'"),
])
def test_bad_settings_are_one_line_before_any_work(tmp_path, override, message):
    out = run_cli("train", f"runs_dir={tmp_path}", override)
    assert out.returncode == 2 and message in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir()), "a refused command left a run folder behind"


def test_a_refused_pretrained_model_freezes_no_config(tmp_path):
    out = run_cli("train", f"runs_dir={tmp_path}", "run_name=bad", "model.pretrained=/nonexistent.pt")
    assert out.returncode == 2 and "model.pretrained" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad" / "config.yaml").exists()


def test_dry_run_flag_may_stand_among_the_overrides(tmp_path):
    out = run_cli("train", f"runs_dir={tmp_path}", "--dry-run", "run_name=plan")
    assert out.returncode == 0 and "Dry run of train 'plan'" in out.stdout, out.stderr[-2000:]
    bad = run_cli("train", f"runs_dir={tmp_path}", "--no-such-flag")
    assert bad.returncode == 2 and "unrecognized arguments: --no-such-flag" in bad.stderr
