"""Build the small DPA-2 shipped as ``lfpo_al/starter/starter_dpa2.pt``.

    python scripts/build_starter_model.py --out /tmp/starter_work [--steps 4000] [--no-ship]

It stands in for the real DPA-2.3.1 weights (not downloadable offline) so that demos and tests can
fine-tune a genuine DPA-2 checkpoint. Each stage is skipped when its output exists in OUT, so an
interrupted build resumes:

1. frames.extxyz   lfpo/lmpo/lcpo/lnpo cells at x = 0..1 (1x1x1, 1x2x1; random orderings, several
                   seeds; planes_* at x = 0.5), strained + rattled copies, CHGNet NVT MD at 600 K
2. labeled.extxyz  CHGNet energy, forces, stress
3. data/           deepmd/npy train + valid (10 % held out), type map Li Fe Mn Co Ni P O
4. train/, test/   dp --pt train of a scaled-down DPA-2; dp --pt freeze + dp --pt test on valid
5. ship            optimizer-free checkpoint + provenance.json into lfpo_al/starter/, once
                   --finetune ... --use-pretrain-script works with and without --model-branch RANDOM
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import time
import warnings
from collections import Counter
from pathlib import Path

# One intra-op thread was measured fastest on this 2-core machine; must be set before torch loads.
for _var in ("OMP_NUM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS", "DP_INTER_OP_PARALLELISM_THREADS"):
    os.environ.setdefault(_var, "1")

import ase.io
import numpy as np
from ase import Atoms, units

from lfpo_al.train.ensemble import dp_executable

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "lfpo_al" / "starter"
CHECKPOINT_NAME = "starter_dpa2.pt"
SYSTEMS = ("lfpo", "lmpo", "lcpo", "lnpo")
TYPE_MAP = ["Li", "Fe", "Mn", "Co", "Ni", "P", "O"]
XS = (0.0, 0.25, 0.5, 0.75, 1.0)
VALID_FRACTION = 0.1

# Scaled-down DPA-2 (DPA-2.3.1 uses repinit nsel 120 / neuron [25,50,100], repformer 6-12 layers,
# g1 128, g2 32); same block structure and update style so fine-tuning exercises the same code path.
DESCRIPTOR = {
    "type": "dpa2",
    "repinit": {"tebd_dim": 8, "rcut": 6.0, "rcut_smth": 0.5, "nsel": 120, "neuron": [16, 32, 64],
                "axis_neuron": 8, "activation_function": "tanh"},
    "repformer": {
        "rcut": 4.0, "rcut_smth": 3.5, "nsel": 40, "nlayers": 2, "g1_dim": 64, "g2_dim": 16,
        "attn2_hidden": 16, "attn2_nhead": 2, "attn1_hidden": 64, "attn1_nhead": 2, "axis_neuron": 4,
        "update_h2": False, "update_g1_has_conv": True, "update_g1_has_grrg": True,
        "update_g1_has_drrd": True, "update_g1_has_attn": False, "update_g2_has_g1g1": False,
        "update_g2_has_attn": True, "update_style": "res_residual", "update_residual": 0.01,
        "update_residual_init": "norm", "attn2_has_gate": True, "use_sqrt_nnei": True,
        "g1_out_conv": True, "g1_out_mlp": True,
    },
    "add_tebd_to_repinit_out": False,
}
FITTING_NET = {"neuron": [128, 128], "resnet_dt": True}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_dp(args: list[str], cwd: Path, logfile: Path) -> None:
    with logfile.open("w") as fh:
        proc = subprocess.run([dp_executable(), "--pt", *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "".join(logfile.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"dp --pt {' '.join(args)} failed (rc {proc.returncode}) in {cwd}:\n{tail}")


def load_system(name: str):
    from lfpo_al.config import compose_config, instantiate_group

    return instantiate_group(compose_config([f"system={name}"]), "system")


def base_structures(system) -> list[Atoms]:
    """Every Li arrangement of one system: random orderings (several seeds) and planes_* at x = 0.5."""
    from lfpo_al.structures import BuildSpec, build_structure

    specs = []
    for cell, seeds in (([1, 1, 1], (0, 1)), ([1, 2, 1], (0, 1, 2))):
        for x in XS:
            # x = 0 and x = 1 have a single arrangement: one seed is enough
            for seed in (seeds[:1] if x in (0.0, 1.0) else seeds):
                specs.append(BuildSpec(supercell=cell, x=x, li_order="random", seed=seed))
        specs += [BuildSpec(supercell=cell, x=0.5, li_order=f"planes_{axis}") for axis in "abc"]
    return [build_structure(system, spec) for spec in specs]


def strained(atoms: Atoms, rng: np.random.Generator, max_axial: float = 0.03, max_shear: float = 0.01) -> Atoms:
    """A copy with a random homogeneous strain: up to a few % per axis plus a small shear."""
    eps = np.diag(rng.uniform(-max_axial, max_axial, 3))
    upper = np.triu_indices(3, 1)
    eps[upper] = rng.uniform(-max_shear, max_shear, 3)
    eps = np.triu(eps) + np.triu(eps, 1).T  # symmetric: no rigid rotation
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def rattled(atoms: Atoms, rng: np.random.Generator, sigma: float) -> Atoms:
    out = atoms.copy()
    out.positions += rng.normal(0.0, sigma, out.positions.shape)
    return out


def md_snapshots(atoms: Atoms, calc, rng: np.random.Generator, temperature_k: float = 600.0,
                 steps: int = 100, every: int = 10) -> list[Atoms]:
    """Snapshots of a short CHGNet Langevin NVT run (1 fs steps) from a built cell."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    work = atoms.copy()
    work.calc = calc
    MaxwellBoltzmannDistribution(work, temperature_K=temperature_k, rng=rng)
    dyn = Langevin(work, 1.0 * units.fs, temperature_K=temperature_k, friction=0.02 / units.fs, rng=rng)
    snaps = []
    for _ in range(steps // every):
        dyn.run(every)
        snap = work.copy()
        snap.calc = None
        snaps.append(snap)
    return snaps


def generate_frames(seed: int) -> list[Atoms]:
    from chgnet.model.dynamics import CHGNetCalculator

    rng = np.random.default_rng(seed)
    calc = CHGNetCalculator(use_device="cpu")
    frames = []
    for name in SYSTEMS:
        system = load_system(name)
        bases = base_structures(system)
        for atoms in bases:
            # sigma 0.08 A gave median max forces of ~12 eV/A (stiff P-O bonds): 0.04 stays physical
            variants = [("base", atoms), ("strain", rattled(strained(atoms, rng), rng, 0.02)),
                        ("rattle", rattled(strained(atoms, rng, 0.015, 0.005), rng, 0.04))]
            for kind, frame in variants:
                frame.info.update(config=name, kind=kind)
                frames.append(frame)
        # MD from three cells per system: half-lithiated 1x2x1 and both end members
        md_starts = [a for a in bases if a.info["supercell"] == "1 2 1" and a.info["x"] == 0.5
                     and a.info["li_order"] == "random"][:1]
        md_starts += [a for a in bases if a.info["supercell"] == "1 1 1" and a.info["x"] in (0.0, 1.0)]
        for start in md_starts:
            for snap in md_snapshots(start, calc, rng):
                snap.info.update(config=name, kind="md")
                frames.append(snap)
        log(f"frames: {name} done, {len(frames)} so far")
    return frames


def label_frames(frames: list[Atoms], model=None) -> list[Atoms]:
    """CHGNet energy, forces, stress (ASE convention) and moments for each frame, one at a time
    (batched prediction measured slower here), through the project's CHGNet labeler."""
    from chgnet.model import CHGNet

    from lfpo_al.label.chgnet import label_atoms

    model = model or CHGNet.load(use_device="cpu", verbose=False)
    return [label_atoms(model, atoms) for atoms in frames]


def write_deepmd(frames: list[Atoms], out: Path, type_map: list[str]) -> list[Path]:
    """deepmd/npy systems (one per formula) under ``out``; returns their folders."""
    import dpdata

    multi = dpdata.MultiSystems(type_map=type_map)
    for atoms in frames:
        multi.append(dpdata.LabeledSystem(atoms, fmt="ase/structure"))
    multi.to_deepmd_npy(str(out))
    return sorted(p.parent for p in out.glob("*/type.raw"))


def split_valid(frames: list[Atoms], seed: int) -> np.ndarray:
    """Boolean mask of held-out frames: ~10 % of each system, drawn at random."""
    rng = np.random.default_rng(seed + 1)
    configs = np.array([f.info["config"] for f in frames])
    held = np.zeros(len(frames), dtype=bool)
    for name in SYSTEMS:
        idx = np.flatnonzero(configs == name)
        held[rng.choice(idx, size=max(1, round(VALID_FRACTION * len(idx))), replace=False)] = True
    return held


def frame_counts(frames: list[Atoms]) -> dict[str, dict[str, int]]:
    pairs = Counter((f.info["config"], f"x={float(f.info['x']):g}") for f in frames)
    return {name: {x: n for (c, x), n in sorted(pairs.items()) if c == name} for name in SYSTEMS}


def train_input(train_dirs: list[Path], valid_dirs: list[Path], steps: int, seed: int) -> dict:
    return {
        "model": {"type_map": TYPE_MAP, "descriptor": {**DESCRIPTOR, "seed": seed},
                  "fitting_net": {**FITTING_NET, "seed": seed}},
        "learning_rate": {"type": "exp", "start_lr": 2e-3, "stop_lr": 3e-5, "decay_steps": max(1, steps // 40)},
        "loss": {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 20.0, "start_pref_f": 100.0,
                 "limit_pref_f": 20.0, "start_pref_v": 0.02, "limit_pref_v": 1.0},
        "training": {
            "training_data": {"systems": [str(p) for p in train_dirs], "batch_size": "auto"},
            "validation_data": {"systems": [str(p) for p in valid_dirs], "batch_size": "auto", "numb_btch": 2},
            "numb_steps": steps, "seed": seed, "disp_file": "lcurve.out", "disp_freq": 100,
            "save_freq": max(1, steps // 5), "save_ckpt": "model.ckpt",
        },
    }


def finetune_input(data_dirs: list[Path], type_map: list[str], steps: int, seed: int = 0) -> dict:
    """Input for ``--use-pretrain-script``: only a type map; architecture comes from the checkpoint."""
    systems = [str(p) for p in data_dirs]
    return {
        "model": {"type_map": type_map, "descriptor": {}, "fitting_net": {}},
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 1e-4, "decay_steps": max(1, steps)},
        "loss": {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 1.0, "start_pref_f": 100.0, "limit_pref_f": 60.0},
        "training": {"training_data": {"systems": systems, "batch_size": 1},
                     "numb_steps": steps, "seed": seed, "disp_freq": 1, "save_freq": steps},
    }


def train(work: Path, steps: int, seed: int, times: dict) -> None:
    """Train, or resume an interrupted training; adds the wall time to ``times["train"]``."""
    train_dir = work / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    final = train_dir / f"model.ckpt-{steps}.pt"
    if final.exists():
        log(f"train: {final.name} exists, skipping")
        return
    config = train_input(sorted(p.parent for p in (work / "data/train").glob("*/type.raw")),
                         sorted(p.parent for p in (work / "data/valid").glob("*/type.raw")), steps, seed)
    (train_dir / "input.json").write_text(json.dumps(config, indent=2))
    args = ["train", "input.json"]
    if (train_dir / "checkpoint").exists():  # interrupted earlier: continue from the last checkpoint
        args += ["--restart", (train_dir / "checkpoint").read_text().strip()]
    else:
        times["train"] = 0.0
    log(f"train: dp --pt {' '.join(args)} ({steps} steps) in {train_dir}")
    start = time.time()
    run_dp(args, train_dir, train_dir / "train.log")
    times["train"] = times.get("train", 0.0) + time.time() - start


def test_model(work: Path) -> dict:
    """Freeze and test on the held-out set; RMSEs from dp test's detail files (all frames pooled)."""
    test_dir = work / "test"
    test_dir.mkdir(exist_ok=True)
    run_dp(["freeze", "-c", str(work / "train"), "-o", str(test_dir / "frozen.pth")], test_dir, test_dir / "freeze.log")
    run_dp(["test", "-m", "frozen.pth", "-s", str(work / "data/valid"), "-d", "detail"], test_dir, test_dir / "test.log")
    e = np.loadtxt(test_dir / "detail.e_peratom.out", ndmin=2)
    f = np.loadtxt(test_dir / "detail.f.out", ndmin=2)
    return {
        "frames": int(len(e)),
        "energy_rmse_mev_per_atom": round(float(np.sqrt(np.mean((e[:, 0] - e[:, 1]) ** 2)) * 1000), 2),
        "force_rmse_ev_per_a": round(float(np.sqrt(np.mean((f[:, :3] - f[:, 3:6]) ** 2))), 4),
        "force_rms_of_labels_ev_per_a": round(float(np.sqrt(np.mean(f[:, :3] ** 2))), 4),  # scale for the RMSE
    }


def strip_checkpoint(src: Path, dst: Path) -> None:
    """Keep only the model weights and their config: drops the Adam state (2x the weights)."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    extra = state["_extra_state"]
    extra["train_infos"] = {"lr": extra.get("train_infos", {}).get("lr", 0.0), "step": 0}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, dst)


def count_parameters(checkpoint: Path) -> int:
    """Trainable parameters of the model rebuilt from the checkpoint's own config."""
    import torch
    from deepmd.pt.model.model import get_model

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    params = state.get("model", state)["_extra_state"]["model_params"]
    model = get_model(json.loads(json.dumps(params)))  # a deep copy, leaving the loaded config as is
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def check_finetune(checkpoint: Path, frames: list[Atoms], work: Path) -> dict[str, str]:
    """A few fine-tuning steps on LiFePO4 frames with the [Li, Fe, P, O] subset type map, both ways."""
    lfpo_map = list(load_system("lfpo").type_map)
    data_dirs = write_deepmd(frames, work / "data", lfpo_map)  # own type map: deepmd rejects extra names
    commands = {}
    for label, extra in (("keep_fitting", []), ("random_fitting", ["--model-branch", "RANDOM"])):
        run_dir = work / label
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "input.json").write_text(json.dumps(finetune_input(data_dirs, lfpo_map, steps=4), indent=2))
        args = ["train", "input.json", "--finetune", str(checkpoint), "--use-pretrain-script", *extra]
        run_dp(args, run_dir, run_dir / "train.log")
        if not (run_dir / "model.ckpt-4.pt").exists():
            raise RuntimeError(f"fine-tune check {label}: no model.ckpt-4.pt in {run_dir}")
        commands[label] = "dp --pt " + " ".join(args)
        log(f"ship: fine-tune check ok: {commands[label]}")
    return commands


def ship(work: Path, package_dir: Path, provenance: dict, valid_frames: list[Atoms], steps: int) -> None:
    package_dir.mkdir(parents=True, exist_ok=True)
    shipped = package_dir / CHECKPOINT_NAME
    staged = work / "ship" / CHECKPOINT_NAME
    strip_checkpoint(work / "train" / f"model.ckpt-{steps}.pt", staged)
    lfpo = [f for f in valid_frames if f.info["config"] == "lfpo"][:4]
    provenance["finetune_check"] = check_finetune(staged, lfpo, work / "ship" / "finetune_check")
    provenance["checkpoint_bytes"] = staged.stat().st_size
    provenance["parameters"] = count_parameters(staged)
    shutil.copy2(staged, shipped)
    (package_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    log(f"ship: {shipped} ({staged.stat().st_size / 1e6:.2f} MB, {provenance['parameters']} parameters)")


def provenance_record(work: Path, labeled: list[Atoms], n_valid: int, steps: int, times: dict, metrics: dict) -> dict:
    import chgnet
    import deepmd
    import torch
    from chgnet.model import CHGNet

    config = json.loads((work / "train" / "input.json").read_text())
    per_step = re.search(r"average training time: ([\d.]+) s/batch", (work / "train" / "train.log").read_text())
    return {
        "file": CHECKPOINT_NAME,
        "created": datetime.date.today().isoformat(),
        "teacher": {"name": "CHGNet", "package_version": chgnet.__version__,
                    "model_version": str(CHGNet.load(use_device="cpu", verbose=False).version)},
        "deepmd_kit": deepmd.__version__, "torch": torch.__version__, "type_map": TYPE_MAP,
        "frames": {"total": len(labeled), "train": len(labeled) - n_valid, "held_out": n_valid,
                   "per_system_and_x": frame_counts(labeled),
                   "per_kind": {k: sum(f.info["kind"] == k for f in labeled) for k in ("base", "strain", "rattle", "md")}},
        "wall_s": {k: round(v, 1) for k, v in times.items()},
        "training": {"steps": steps, "threads": 1, "s_per_step": float(per_step.group(1)) if per_step else None,
                     "learning_rate": config["learning_rate"], "loss": config["loss"]},
        "held_out": metrics,
        "descriptor": DESCRIPTOR, "fitting_net": FITTING_NET,
        "rebuild": "python scripts/build_starter_model.py --out DIR",
    }


def cached_stage(path: Path, make, times: dict, key: str) -> list[Atoms]:
    """Frames from ``path``, made (and timed) first if absent; written via a temp file so a crash leaves none."""
    if not path.exists():
        start = time.time()
        frames = make()
        times[key] = time.time() - start
        ase.io.write(path.with_suffix(".tmp.extxyz"), frames, format="extxyz")
        path.with_suffix(".tmp.extxyz").rename(path)
    return ase.io.read(path, index=":")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="work folder (frames, data, training); kept out of git")
    parser.add_argument("--steps", type=int, default=4000, help="training steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--package-dir", type=Path, default=PACKAGE_DIR, help="where the checkpoint is shipped")
    parser.add_argument("--no-ship", action="store_true", help="stop after the held-out test")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    times_path = work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}

    frames = cached_stage(work / "frames.extxyz", lambda: generate_frames(args.seed), times, "frames")
    log(f"frames: {len(frames)}")
    labeled = cached_stage(work / "labeled.extxyz", lambda: label_frames(frames), times, "label")
    log(f"label: {len(labeled)} frames labeled in {times.get('label', 0):.0f} s")
    times_path.write_text(json.dumps(times, indent=2))

    held = split_valid(labeled, args.seed)
    valid_frames = [f for f, h in zip(labeled, held) if h]
    if not (work / "data").exists():
        shutil.rmtree(work / "data.tmp", ignore_errors=True)  # left by an interrupted write
        write_deepmd([f for f, h in zip(labeled, held) if not h], work / "data.tmp" / "train", TYPE_MAP)
        write_deepmd(valid_frames, work / "data.tmp" / "valid", TYPE_MAP)
        (work / "data.tmp").rename(work / "data")
    log(f"data: {len(labeled) - len(valid_frames)} train, {len(valid_frames)} held out")

    train(work, args.steps, args.seed, times)
    times_path.write_text(json.dumps(times, indent=2))
    metrics = test_model(work)
    log(f"test: {metrics}")
    if not args.no_ship:
        provenance = provenance_record(work, labeled, len(valid_frames), args.steps, times, metrics)
        ship(work, args.package_dir.resolve(), provenance, valid_frames, args.steps)


if __name__ == "__main__":
    main()
