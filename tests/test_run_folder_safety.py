"""Run folders that may come from someone else: no write follows a link planted in them, and nothing read
from them reaches a command line (the dispatcher's record: tests/test_dispatch.py)."""

import os

import pytest

from conftest import run_cli
from lfpo_al import atomic
from lfpo_al.errors import UserError
from lfpo_al.label.tasks import exclusive
from lfpo_al.loop.state import RunState


@pytest.fixture
def outside(tmp_path):
    """A file outside the run folder that a planted link points at; it must never change."""
    target = tmp_path / "outside.txt"
    target.write_text("precious\n")
    return target


def test_train_refuses_a_lock_that_is_a_link_without_writing_through_it(tmp_path, outside):
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / ".lock").symlink_to(outside)
    out = run_cli("train", f"runs_dir={tmp_path / 'runs'}", "run_name=r")
    assert out.returncode == 2, out.stderr
    assert ".lock is a symbolic link" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert outside.read_text() == "precious\n"
    assert sorted(p.name for p in run.iterdir()) == [".lock"]  # no config, no record


@pytest.mark.parametrize("name", ["record.jsonl", "config.yaml", "final", "learning_curve.png",
                                  "iter.000000/03.label/.dispatch", "iter.000000/03.label/.lock"])
def test_a_run_folder_holding_a_planted_link_is_refused(tmp_path, outside, name):
    run = tmp_path / "r"
    (run / name).parent.mkdir(parents=True, exist_ok=True)
    (run / name).symlink_to(outside if "." in name.rsplit("/", 1)[-1][1:] else tmp_path)
    with pytest.raises(UserError, match=f"{name} is a symbolic link"), RunState(run).lock():
        pass
    assert outside.read_text() == "precious\n"


def test_the_tools_own_links_are_allowed(tmp_path, outside):
    """dpdispatcher links task files inside .dispatch/, W&B its latest run inside wandb/."""
    run = tmp_path / "r"
    (run / "iter.000000/01.explore/.dispatch/abc").mkdir(parents=True)
    (run / "iter.000000/01.explore/.dispatch/abc/start.extxyz").symlink_to(outside)
    (run / "wandb").mkdir()
    (run / "wandb" / "latest-run").symlink_to(tmp_path)
    with RunState(run).lock():
        pass


def test_the_record_is_never_appended_through_a_link(tmp_path, outside):
    run = tmp_path / "r"
    run.mkdir()
    (run / "record.jsonl").symlink_to(outside)
    with pytest.raises(UserError, match="record.jsonl is a symbolic link"):
        RunState(run).append(0, "train")
    assert outside.read_text() == "precious\n"


def test_whole_file_writes_replace_a_link_and_never_use_a_planted_partial(tmp_path, outside):
    """The old fixed temporary name `.<name>.partial` could be planted as a link and written through."""
    target = tmp_path / "metrics.json"
    (tmp_path / ".metrics.json.partial").symlink_to(outside)
    atomic.write_text(target, "{}\n")
    assert target.read_text() == "{}\n" and outside.read_text() == "precious\n"
    linked = tmp_path / "linked.json"
    linked.symlink_to(outside)
    atomic.write_text(linked, "[]\n")  # the rename replaces the link itself
    assert not linked.is_symlink() and linked.read_text() == "[]\n" and outside.read_text() == "precious\n"
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~atomic._umask())  # as a plain open() makes it


def test_a_folder_written_whole_replaces_a_link_without_following_it(tmp_path, outside):
    data = tmp_path / "data"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("kept\n")
    data.symlink_to(elsewhere)
    with atomic.atomic_dir(data) as partial:
        (partial / "type.raw").write_text("0\n")
    assert not data.is_symlink() and (data / "type.raw").is_file()
    assert (elsewhere / "keep.txt").read_text() == "kept\n"
    with atomic.atomic_dir(tmp_path / "new" / "data" / "train") as partial:  # the folders above are made
        (partial / "type.raw").write_text("0\n")
    assert (tmp_path / "new" / "data" / "train" / "type.raw").is_file()


def test_the_label_lock_is_never_opened_through_a_link(tmp_path, outside):
    (tmp_path / ".lock").symlink_to(outside)
    with pytest.raises(UserError, match=r"\.lock is a symbolic link"), exclusive(tmp_path):
        pass
    assert outside.read_text() == "precious\n"


def test_analyze_refuses_an_output_folder_holding_a_link(tmp_path, outside):
    out_dir = tmp_path / "analysis"
    out_dir.mkdir()
    (out_dir / "summary.json").symlink_to(outside)
    out = run_cli("analyze", f"analysis.output_dir={out_dir}", f"analysis.trajectories=[{tmp_path / 'none.extxyz'}]")
    assert out.returncode == 2 and "summary.json is a symbolic link" in out.stderr, out.stderr
    assert outside.read_text() == "precious\n"


def test_a_lock_on_a_filesystem_without_locks_is_one_line_naming_host_and_pid(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*_):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(UserError, match=rf"does not support locks.*pid {os.getpid()} on \S+"), RunState(tmp_path).lock():
        pass


def test_secrets_never_reach_the_frozen_config_or_tracking(tmp_path, monkeypatch):
    """An SSH password and TOTP secret, a job's token and a value read from a secret environment variable
    are redacted before the config is frozen (then 0600) or logged; the rest stays as given."""
    import yaml

    from lfpo_al.config import compose_config, shareable

    monkeypatch.setenv("LAB_TOKEN", "s3cr3t-from-env")
    cfg = compose_config(["machine=slurm", "+machine.machine.remote_profile={hostname: login, username: me, "
                          "password: s3cr3t-pw, totp_secret: s3cr3t-totp, key_filename: /home/me/.ssh/id}",
                          "+machine.envs.HF_TOKEN=s3cr3t-hf", "+machine.envs.LAB_LICENSE='${oc.env:LAB_TOKEN}'"])
    config, redacted = shareable(cfg)
    assert sorted(redacted) == ["machine.envs.HF_TOKEN", "machine.envs.LAB_LICENSE",
                                "machine.machine.remote_profile.password", "machine.machine.remote_profile.totp_secret"]
    assert "s3cr3t" not in yaml.safe_dump(config)
    assert config["machine"]["machine"]["remote_profile"]["hostname"] == "login"
    assert config["machine"]["envs"]["OMPI_ALLOW_RUN_AS_ROOT"] == "1"
    state = RunState(tmp_path / "r")
    state.freeze_config(config, private=bool(redacted))
    assert (tmp_path / "r" / "config.yaml").stat().st_mode & 0o777 == 0o600
    state.freeze_config(shareable(cfg)[0], private=True)  # a resume compares redacted with redacted
    assert shareable(compose_config([]))[1] == []  # the shipped configs hold no secret



@pytest.mark.parametrize("name", ["", ".", "..", "../elsewhere", "a/b", "/abs", "x y"])
def test_run_name_must_be_a_plain_folder_name(name):
    from lfpo_al.layout import RunLayout

    with pytest.raises(UserError, match="must be a plain folder name"):
        RunLayout.of("runs", name)


def test_plain_run_names_pass():
    from lfpo_al.layout import RunLayout

    assert RunLayout.of("runs", "demo-2.b_1").run_dir.name == "demo-2.b_1"
    assert RunLayout.of("runs", 7).run_dir.name == "7"


def test_an_empty_run_name_is_refused_by_the_command(tmp_path):
    out = run_cli("train", "--dry-run", f"runs_dir={tmp_path}", "run_name=''")
    assert out.returncode == 2 and "run_name='' must be a plain folder name" in out.stderr, out.stderr


def test_a_record_line_missing_a_key_is_named_not_a_traceback(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "record.jsonl").write_text('{"iter": -1, "step": "init_data", "status": "done"}\n{"iter": 0, "status": "done"}\n')
    out = run_cli("status", f"runs_dir={tmp_path}", "run_name=r")
    assert out.returncode == 2, out.stderr
    assert "record.jsonl line 2 is not a record (no str 'step')" in out.stderr and "Traceback" not in out.stderr


def test_a_copied_run_logs_to_a_new_wandb_run(tmp_path):
    from lfpo_al.tracking import folder_identity, own_run_id

    here = tmp_path / "run"
    here.mkdir()
    (here / "wandb_id.txt").write_text(f"abc123 {folder_identity(here)}\n")
    assert own_run_id(here / "wandb_id.txt") == "abc123"  # the same folder resumes its W&B run
    (here / "wandb_id.txt").write_text("abc123 colleague-host:/home/colleague/runs/run\n")
    assert own_run_id(here / "wandb_id.txt") != "abc123"


def test_a_dry_run_leaves_the_current_folder_empty(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "lfpo_al", "train", "--dry-run", f"runs_dir={tmp_path / 'runs'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert list(tmp_path.iterdir()) == []  # no dpdispatcher.log, no run folder


def test_a_non_utf8_output_folder_is_refused_before_any_work(tmp_path):
    from omegaconf import OmegaConf

    from lfpo_al.analysis.cli import analyze_command
    from lfpo_al.config import compose_config

    bad = os.fsdecode(bytes(tmp_path) + b"/out\xff")  # a byte no UTF-8 name holds
    cfg = compose_config(["tracking=disabled", f"analysis.trajectories=[{tmp_path / 'a.extxyz'}]"])
    OmegaConf.update(cfg, "analysis.output_dir", bad)
    with pytest.raises(UserError, match="is not valid UTF-8"):
        analyze_command(cfg)
    assert not os.path.exists(bad)
