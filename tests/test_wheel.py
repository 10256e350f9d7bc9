"""The installable package: a wheel built from this tree works outside the checkout.

The wheel is installed into a fresh virtual environment with no access to the checkout; its
dependencies are borrowed from the test's own environment (a path entry, not an install), so the test
needs no network and checks what the wheel itself holds: the package, its configs, DFT templates and
starter model, and the ``lfpo-al`` entry point. A user's config folder is searched before the package's.
"""

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

SHIPPED = ["lfpo_al/configs/config.yaml", "lfpo_al/configs/system/lfpo.yaml", "lfpo_al/configs/machine/slurm_gpu.yaml",
           "lfpo_al/dft_inputs/vasp/INCAR", "lfpo_al/dft_inputs/gpaw/pbe_u.yaml", "lfpo_al/starter/starter_dpa2.pt"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's bin folder, the wheel), the wheel built from a copy of the tree."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (src / name).write_bytes((ROOT / name).read_bytes())
    subprocess.run(["cp", "-r", str(ROOT / "lfpo_al"), str(src / "lfpo_al")], check=True)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((tmp / "dist").glob("lfpo_al-*.whl"))
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                              "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    # the dependencies, after the fresh environment's own site-packages; a plain path line, so this
    # environment's editable install of the checkout (a .pth there) is not processed
    fresh_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    (Path(fresh_site) / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin", wheel


def run_installed(bin_dir: Path, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LFPO_AL_CONFIG_DIR")}
    return subprocess.run([str(bin_dir / "lfpo-al"), *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**environment, "WANDB_MODE": "offline", **(env or {})})


def test_wheel_holds_configs_templates_and_starter(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in SHIPPED if name not in names]
    assert not missing, f"the wheel lacks {missing}"


def test_installed_wheel_runs_from_an_empty_folder(installed, tmp_path):
    bin_dir, _ = installed
    where = subprocess.run([str(bin_dir / "python"), "-c", "import lfpo_al; print(lfpo_al.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert str(bin_dir.parent) in where and str(ROOT) not in where, where

    cfg = run_installed(bin_dir, tmp_path, "train", "--cfg", "system=lmpo")
    assert cfg.returncode == 0, cfg.stderr[-2000:]
    assert "metal: Mn" in cfg.stdout

    built = run_installed(bin_dir, tmp_path, "build", "build.supercell=[1,1,1]", "build.output=cell.extxyz")
    assert built.returncode == 0, built.stderr[-2000:]
    assert (tmp_path / "cell.extxyz").stat().st_size > 0

    plan = run_installed(bin_dir, tmp_path, "train", "--dry-run", "experiment=production", "label=vasp",
                         "machine=slurm_gpu")
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "Dry run of train" in plan.stdout and "GPU-h" in plan.stdout and "core-h" in plan.stdout
    assert not (tmp_path / "runs").exists()  # a dry run writes no run folder


def test_user_config_folder_is_searched_first(installed, tmp_path):
    """``system=my_olivine`` from the user's folder; a user's ``lfpo.yaml`` replaces the shipped one."""
    bin_dir, _ = installed
    shipped = (ROOT / "lfpo_al/configs/system/lfpo.yaml").read_text()
    (tmp_path / "mine/system").mkdir(parents=True)
    (tmp_path / "mine/system/my_olivine.yaml").write_text(shipped.replace("name: LiFePO4", "name: MyOlivine"))
    (tmp_path / "mine/system/lfpo.yaml").write_text(shipped.replace("name: LiFePO4", "name: ReplacedLFP"))
    assert "name: LiFePO4" in shipped

    own = run_installed(bin_dir, tmp_path, "--config-dir", "mine", "build", "--cfg", "system=my_olivine")
    assert own.returncode == 0, own.stderr[-2000:]
    assert "name: MyOlivine" in own.stdout

    replaced = run_installed(bin_dir, tmp_path, "build", "--cfg", env={"LFPO_AL_CONFIG_DIR": str(tmp_path / "mine")})
    assert "name: ReplacedLFP" in replaced.stdout

    unknown = run_installed(bin_dir, tmp_path, "build", "--cfg", "system=my_olivine")
    assert unknown.returncode == 2 and "unknown system 'my_olivine'" in unknown.stderr
