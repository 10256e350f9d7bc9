"""Build the small DPA-2 shipped as ``lfpo_al/starter/starter_dpa2.pt``.

    python scripts/build_starter_model.py --out /tmp/starter_work [--steps 4000] [--polaron-steps 4000]
                                          [--phase1-checkpoint FILE] [--no-ship]

It stands in for the real DPA-2.3.1 weights (not downloadable offline) so that demos and tests can
fine-tune a genuine DPA-2 checkpoint. Each stage is skipped when its output exists in OUT, so an
interrupted build resumes:

1. frames.extxyz          lfpo/lmpo/lcpo/lnpo cells at x = 0..1 (1x1x1, 1x2x1; random orderings, several
                          seeds; planes_* at x = 0.5), strained + rattled copies, CHGNet NVT MD at 600 K
2. polaron_frames.extxyz  CHGNet NVT MD of mixed-valence cells at 300 and 600 K (LiFePO4 x = 0.25-0.75
                          and an interface; x = 0.5 of the others)
3. *labeled.extxyz        CHGNet energy, forces, stress, moments
4. data/                  deepmd/npy train/ + valid/ (10 % held out per set), type map Li Fe Mn Co Ni P O
5. train/                 phase 1: dp --pt train of a scaled-down DPA-2 on the broad set (frames.extxyz);
                          --phase1-checkpoint FILE reuses an earlier phase-1 model instead
6. train_polaron/, test/  phase 2: the phase-1 model trained on, --finetune ... --use-pretrain-script, on
                          both sets; dp --pt freeze + dp --pt test on the held-out frames
7. ship                   optimizer-free checkpoint + provenance.json into lfpo_al/starter/, once
                          --finetune ... --use-pretrain-script works with and without --model-branch RANDOM

Why two phases: a model trained on the broad set alone drifts out of the teacher's polaron basin within
~40 fs of its own MD (M3+ octahedra expand, M2+ ones contract), so the frames an active-learning loop
then selects are far from anything it will be tested on. Phase 2 teaches the mixed-valence octahedra
as the teacher moves them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

# One intra-op thread was measured fastest on this 2-core machine; must be set before torch loads.
for _var in ("OMP_NUM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS", "DP_INTER_OP_PARALLELISM_THREADS"):
    os.environ.setdefault(_var, "1")

import ase.io
import numpy as np
from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parent))  # starter_frames, also when loaded by path
from starter_frames import (SYSTEMS, frame_counts, generate_frames, label_frames, load_system, log,  # noqa: E402
                            polaron_md_frames, split_valid, write_deepmd)

from lfpo_al.loop.data import deepmd_systems  # noqa: E402
from lfpo_al.train.ensemble import dp_executable  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "lfpo_al" / "starter"
CHECKPOINT_NAME = "starter_dpa2.pt"
TYPE_MAP = ["Li", "Fe", "Mn", "Co", "Ni", "P", "O"]

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
    "precision": "float32",  # 1.6x faster training and 1.4x faster MD than float64 on CPU (docs/costs.md)
}
FITTING_NET = {"neuron": [128, 128], "resnet_dt": True, "precision": "float32"}


def run_dp(args: list[str], cwd: Path, logfile: Path) -> None:
    with logfile.open("w") as fh:
        proc = subprocess.run([dp_executable(), "--pt", *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "".join(logfile.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"dp --pt {' '.join(args)} failed (rc {proc.returncode}) in {cwd}:\n{tail}")



LOSS = {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 20.0, "start_pref_f": 100.0,
        "limit_pref_f": 20.0, "start_pref_v": 0.02, "limit_pref_v": 1.0}
# (start_lr, stop_lr) per phase; decay every steps/40 (exp schedule)
LEARNING_RATES = {"train": (2e-3, 3e-5), "train_polaron": (1e-3, 3e-5)}


def train_input(train_dirs: list[Path], valid_dirs: list[Path], steps: int, seed: int, phase: str = "train") -> dict:
    start_lr, stop_lr = LEARNING_RATES[phase]
    return {
        "model": {"type_map": TYPE_MAP, "descriptor": {**DESCRIPTOR, "seed": seed},
                  "fitting_net": {**FITTING_NET, "seed": seed}},
        "learning_rate": {"type": "exp", "start_lr": start_lr, "stop_lr": stop_lr, "decay_steps": max(1, steps // 40)},
        "loss": LOSS,
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


def train(work: Path, phase: str, data: list[str], steps: int, seed: int, times: dict,
          start_from: Path | None = None) -> Path:
    """Train one phase (``start_from``: a checkpoint to train on, via --finetune --use-pretrain-script),
    or resume it if interrupted; returns the final checkpoint and adds the wall time to ``times[phase]``."""
    train_dir = work / phase
    train_dir.mkdir(parents=True, exist_ok=True)
    final = train_dir / f"model.ckpt-{steps}.pt"
    if final.exists():
        log(f"{phase}: {final.name} exists, skipping")
        return final
    config = train_input([s for d in data for s in deepmd_systems(work / "data/train" / d)],
                         [s for d in data for s in deepmd_systems(work / "data/valid" / d)], steps, seed, phase)
    (train_dir / "input.json").write_text(json.dumps(config, indent=2))
    args = ["train", "input.json"]
    if (train_dir / "checkpoint").exists():  # interrupted earlier: continue from the last checkpoint
        args += ["--restart", (train_dir / "checkpoint").read_text().strip()]
    else:
        times[phase] = 0.0
        if start_from is not None:
            args += ["--finetune", str(start_from), "--use-pretrain-script"]
    log(f"{phase}: dp --pt {' '.join(args)} ({steps} steps) in {train_dir}")
    start = time.time()
    run_dp(args, train_dir, train_dir / "train.log")
    times[phase] = times.get(phase, 0.0) + time.time() - start
    return final


def test_model(work: Path, checkpoint: Path) -> dict:
    """Freeze and test on the held-out frames: all pooled, and per set (dp test's detail files)."""
    test_dir = work / "test"
    test_dir.mkdir(exist_ok=True)
    run_dp(["freeze", "-c", str(checkpoint.parent), "-o", str(test_dir / "frozen.pth")], test_dir, test_dir / "freeze.log")
    metrics = {}
    for name in ("all", "broad", "polaron"):
        folder = work / "data/valid" / ("" if name == "all" else name)
        run_dp(["test", "-m", "frozen.pth", "-s", str(folder), "-d", name], test_dir, test_dir / f"test_{name}.log")
        e = np.loadtxt(test_dir / f"{name}.e_peratom.out", ndmin=2)
        f = np.loadtxt(test_dir / f"{name}.f.out", ndmin=2)
        metrics[name] = {
            "frames": int(len(e)),
            "energy_rmse_mev_per_atom": round(float(np.sqrt(np.mean((e[:, 0] - e[:, 1]) ** 2)) * 1000), 2),
            "force_rmse_ev_per_a": round(float(np.sqrt(np.mean((f[:, :3] - f[:, 3:6]) ** 2))), 4),
            "force_rms_of_labels_ev_per_a": round(float(np.sqrt(np.mean(f[:, :3] ** 2))), 4),  # the RMSE's scale
        }
    return {**metrics.pop("all"), "per_set": metrics}


def strip_checkpoint(src: Path, dst: Path) -> None:
    """Keep only the model weights and their config: drops the Adam state (2x the weights)."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    extra = state["_extra_state"]
    extra["train_infos"] = {"lr": extra.get("train_infos", {}).get("lr", 0.0), "step": 0}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, dst)


def cast_checkpoint(src: Path, dst: Path, precision: str = "float32") -> None:
    """The same model in another precision: its config says so, and every weight is copied into a model
    built from that config (deepmd keeps the energy bias in float64 whatever the precision)."""
    import torch
    from deepmd.pt.model.model import get_model
    from deepmd.pt.train.wrapper import ModelWrapper

    state = dict(torch.load(src, map_location="cpu", weights_only=True).get("model"))
    extra = dict(state["_extra_state"])
    params = json.loads(json.dumps(extra["model_params"]))
    for part in ("descriptor", "fitting_net"):
        params[part]["precision"] = precision
    extra["model_params"] = params
    state["_extra_state"] = extra
    wrapper = ModelWrapper(get_model(json.loads(json.dumps(params))))
    wrapper.load_state_dict(state, strict=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": wrapper.state_dict()}, dst)


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


def ship(work: Path, package_dir: Path, provenance: dict, final: Path, valid_frames: list[Atoms]) -> None:
    package_dir.mkdir(parents=True, exist_ok=True)
    shipped = package_dir / CHECKPOINT_NAME
    staged = work / "ship" / CHECKPOINT_NAME
    strip_checkpoint(final, staged)
    lfpo = [f for f in valid_frames if f.info["config"] == "lfpo"][:4]
    provenance["finetune_check"] = check_finetune(staged, lfpo, work / "ship" / "finetune_check")
    provenance["checkpoint_bytes"] = staged.stat().st_size
    provenance["parameters"] = count_parameters(staged)
    shutil.copy2(staged, shipped)
    (package_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    log(f"ship: {shipped} ({staged.stat().st_size / 1e6:.2f} MB, {provenance['parameters']} parameters)")


def phase_record(work: Path, phase: str, steps: int, data: list[str], times: dict, reused: Path | None = None) -> dict:
    if reused is not None:
        return {"reused_checkpoint": str(reused), "data": data,
                "note": "an earlier phase-1 model (--phase1-checkpoint); see its own provenance"}
    config = json.loads((work / phase / "input.json").read_text())
    per_step = re.search(r"average training time: ([\d.]+) s/batch", (work / phase / "train.log").read_text())
    return {"steps": steps, "data": data, "threads": 1, "s_per_step": float(per_step.group(1)) if per_step else None,
            "wall_s": round(times.get(phase, 0.0), 1), "learning_rate": config["learning_rate"], "loss": config["loss"]}


def provenance_record(labeled: list[Atoms], n_valid: int, times: dict, phases: dict, metrics: dict) -> dict:
    import chgnet
    import deepmd
    import torch
    from chgnet.model import CHGNet

    kinds = ("base", "strain", "rattle", "md", "polaron_md")
    return {
        "file": CHECKPOINT_NAME,
        "created": datetime.date.today().isoformat(),
        "teacher": {"name": "CHGNet", "package_version": chgnet.__version__,
                    "model_version": str(CHGNet.load(use_device="cpu", verbose=False).version)},
        "deepmd_kit": deepmd.__version__, "torch": torch.__version__, "type_map": TYPE_MAP,
        "frames": {"total": len(labeled), "train": len(labeled) - n_valid, "held_out": n_valid,
                   "per_system_and_x": frame_counts(labeled),
                   "per_kind": {k: sum(f.info["kind"] == k for f in labeled) for k in kinds}},
        "wall_s": {k: round(v, 1) for k, v in times.items()},
        "training": phases,
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
    parser.add_argument("--steps", type=int, default=4000, help="phase-1 training steps (broad set)")
    parser.add_argument("--polaron-steps", type=int, default=4000, help="phase-2 training steps (both sets)")
    parser.add_argument("--phase1-checkpoint", type=Path, default=None,
                        help="start phase 2 from this phase-1 model (e.g. an earlier starter) instead of training one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--package-dir", type=Path, default=PACKAGE_DIR, help="where the checkpoint is shipped")
    parser.add_argument("--no-ship", action="store_true", help="stop after the held-out test")
    parser.add_argument("--cast-float32", type=Path, default=None, metavar="CHECKPOINT",
                        help="only ship CHECKPOINT (an earlier float64 build) cast to float32, and record it")
    parser.add_argument("--compare-on", type=Path, nargs="+", default=None, metavar="DIR",
                        help="deepmd/npy systems the cast is compared on (default: the build's held-out frames)")
    args = parser.parse_args()
    if args.cast_float32 is not None:
        compare = args.compare_on or sorted((args.out / "data" / "valid").glob("*/*"))
        ship_cast(args.cast_float32.resolve(), args.package_dir.resolve(), args.out.resolve(), compare)
        return
    if args.phase1_checkpoint is not None and not args.phase1_checkpoint.is_file():
        parser.error(f"--phase1-checkpoint {args.phase1_checkpoint}: no such file; omit it to train phase 1")
    warnings.filterwarnings("ignore", category=UserWarning)
    work = args.out.resolve()
    work.mkdir(parents=True, exist_ok=True)
    times_path = work / "times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}

    sets = {}  # name -> labeled frames; each set is split into train / held-out on its own
    for name, prefix, make in (("broad", "", generate_frames), ("polaron", "polaron_", polaron_md_frames)):
        frames = cached_stage(work / f"{prefix}frames.extxyz", lambda: make(args.seed), times, f"{prefix}frames")
        sets[name] = cached_stage(work / f"{prefix}labeled.extxyz", lambda: label_frames(frames), times, f"{prefix}label")
        times_path.write_text(json.dumps(times, indent=2))
        log(f"{name}: {len(sets[name])} frames labeled")
    held = {name: split_valid(frames, args.seed + 10 * i) for i, (name, frames) in enumerate(sets.items())}
    if not (work / "data").exists():
        shutil.rmtree(work / "data.tmp", ignore_errors=True)  # left by an interrupted write
        for name, frames in sets.items():
            write_deepmd([f for f, h in zip(frames, held[name]) if not h], work / "data.tmp/train" / name, TYPE_MAP)
            write_deepmd([f for f, h in zip(frames, held[name]) if h], work / "data.tmp/valid" / name, TYPE_MAP)
        (work / "data.tmp").rename(work / "data")
    valid_frames = [f for name, frames in sets.items() for f, h in zip(frames, held[name]) if h]
    labeled = [f for frames in sets.values() for f in frames]
    log(f"data: {len(labeled) - len(valid_frames)} train, {len(valid_frames)} held out")

    phases = {}
    if args.phase1_checkpoint is None:
        phase1 = train(work, "train", ["broad"], args.steps, args.seed, times)
        phases["phase_1"] = phase_record(work, "train", args.steps, ["broad"], times)
    else:
        phase1 = args.phase1_checkpoint.resolve()
        phases["phase_1"] = phase_record(work, "train", args.steps, ["broad"], times, reused=phase1)
    times_path.write_text(json.dumps(times, indent=2))
    final = train(work, "train_polaron", ["broad", "polaron"], args.polaron_steps, args.seed, times, start_from=phase1)
    phases["phase_2"] = phase_record(work, "train_polaron", args.polaron_steps, ["broad", "polaron"], times)
    times_path.write_text(json.dumps(times, indent=2))
    metrics = test_model(work, final)
    log(f"test: {metrics}")
    if not args.no_ship:
        provenance = provenance_record(labeled, len(valid_frames), times, phases, metrics)
        ship(work, args.package_dir.resolve(), provenance, final, valid_frames)


def ship_cast(src: Path, package_dir: Path, work: Path, compare_on: list[Path]) -> None:
    """Ship ``src`` in float32; provenance keeps the build's record and adds how far the two disagree on
    the frames of ``compare_on``."""
    import dpdata
    from deepmd.infer import DeepPot

    work.mkdir(parents=True, exist_ok=True)
    cast = work / CHECKPOINT_NAME
    cast_checkpoint(src, cast)
    provenance = json.loads((package_dir / "provenance.json").read_text())
    worst_force, worst_energy = 0.0, 0.0
    n_frames = 0
    for folder in compare_on:
        system = dpdata.LabeledSystem(str(folder), fmt="deepmd/npy")
        n_frames += len(system)
        system.apply_type_map(TYPE_MAP)
        args = (system["coords"].reshape(len(system), -1), system["cells"].reshape(len(system), -1), system["atom_types"])
        e64, f64, *_ = DeepPot(str(src)).eval(*args)
        e32, f32, *_ = DeepPot(str(cast)).eval(*args)
        worst_force = max(worst_force, float(abs(f64 - f32).max()))
        worst_energy = max(worst_energy, float(abs(e64 - e32).max()) / len(system["atom_types"]))
    for part in ("descriptor", "fitting_net"):
        provenance[part]["precision"] = "float32"
    provenance["precision"] = {
        "float32": f"cast from the float64 build by --cast-float32 on {time.strftime('%Y-%m-%d')}",
        "compared_on_frames": n_frames,
        "max_force_difference_ev_per_a": worst_force,
        "max_energy_difference_ev_per_atom": worst_energy,
    }
    provenance["checkpoint_bytes"] = cast.stat().st_size
    shutil.copy2(cast, package_dir / CHECKPOINT_NAME)
    (package_dir / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
    log(f"shipped {package_dir / CHECKPOINT_NAME} in float32: max |dF| {worst_force:.2e} eV/A on {n_frames} frames")


if __name__ == "__main__":
    main()
