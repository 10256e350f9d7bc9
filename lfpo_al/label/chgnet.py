"""CHGNet as a surrogate teacher: its pip package ships the weights, so it labels anywhere, offline.

Two halves: ``ChgnetLabeler`` (the driver's side: inputs, command, reading back) and the task
command ``python -m lfpo_al.label.chgnet``, run inside one task folder: it reads ``frame.extxyz``
and writes ``labeled.extxyz``, returning at once if the folder already holds a decision. A frame it
cannot label gets ``failed.json`` and exit status 0, so that the failure is quarantined instead of
retried. Only a model that does not load (an environment problem, not the frame's) exits non-zero,
which the driver retries up to ``max_attempts``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from lfpo_al.label.base import FAILED_FILE, Labeler, write_failure
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, read_labeled, write_labeled
from lfpo_al.structures.system import OlivineSystem


@dataclass
class ChgnetLabeler(Labeler):
    """CHGNet energies, forces, stress and magnetic moments (``task="efsm"``).

    model_name: a CHGNet release known to ``CHGNet.load`` (e.g. ``0.3.0``).
    device: ``cpu`` or ``cuda``; threads per task come from ``cores_per_task``.
    """

    model_name: str = "0.3.0"
    device: str = "cpu"

    @property
    def forward_files(self) -> list[str]:
        return [FRAME_FILE]

    @property
    def backward_files(self) -> list[str]:
        return [LABELED_FILE, FAILED_FILE]

    def write_inputs(self, atoms: Atoms, task_dir: Path, system: OlivineSystem) -> None:
        frame = atoms.copy()  # copy() drops any calculator: the teacher must not see old labels
        ase.io.write(Path(task_dir) / FRAME_FILE, frame, format="extxyz")

    def command(self) -> str:
        return (
            f"{shlex.quote(sys.executable)} -m lfpo_al.label.chgnet --model {shlex.quote(self.model_name)} "
            f"--device {shlex.quote(self.device)} --threads {self.cores_per_task}"
        )

    def is_finished(self, task_dir: Path) -> bool:
        task_dir = Path(task_dir)
        return (task_dir / LABELED_FILE).is_file() or (task_dir / FAILED_FILE).is_file()

    def read_outputs(self, task_dir: Path) -> Atoms:
        return read_labeled(Path(task_dir) / LABELED_FILE)

    def ase_calculator(self):
        """CHGNet's own ASE calculator (stress in eV/A^3, ASE sign), for relaxing in-process."""
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=load_model(self.model_name, self.device), use_device=self.device)




def label_atoms(model, atoms: Atoms) -> Atoms:
    """One CHGNet prediction as a labeled copy of ``atoms``."""
    from pymatgen.io.ase import AseAtomsAdaptor

    prediction = model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="efsm")
    labeled = atoms.copy()
    energy = float(prediction["e"]) * len(atoms)  # CHGNet predicts energy per atom
    # CHGNet's stress is (1/V) dE/d(strain) in GPa: ASE's sign (positive under tension), other unit.
    stress = np.asarray(prediction["s"], dtype=float) * units.GPa
    labeled.new_array("magmoms", np.asarray(prediction["m"], dtype=float))
    labeled.calc = SinglePointCalculator(
        labeled, energy=energy, free_energy=energy, forces=np.asarray(prediction["f"], dtype=float), stress=stress
    )
    return labeled




def load_model(model_name: str, device: str, threads: int | None = None):
    """CHGNet weights; ``threads`` sets torch's (process-wide) thread count, so only task processes pass it."""
    import torch
    from chgnet.model import CHGNet

    if threads is not None:
        torch.set_num_threads(threads)
    return CHGNet.load(model_name=model_name, use_device=device, verbose=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lfpo_al.label.chgnet", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="0.3.0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    task_dir = Path.cwd()

    decided = [name for name in (LABELED_FILE, FAILED_FILE) if (task_dir / name).exists()]
    if decided:  # a job resubmitted after a kill reruns every task it had not tagged finished
        print(f"already decided ({decided[0]} present): nothing to do")
        return 0
    start = time.perf_counter()
    try:
        frame = ase.io.read(task_dir / FRAME_FILE, format="extxyz")
    except Exception as exc:  # the frame itself is bad: deterministic, record it
        return _fail(task_dir, exc)
    model = load_model(args.model, args.device, args.threads)  # raises -> non-zero exit -> retried
    loaded = time.perf_counter()
    try:
        labeled = label_atoms(model, frame)
        labeled.info.update(teacher=f"chgnet-{args.model}", labeled_at=datetime.now(timezone.utc).isoformat())
        write_labeled(labeled, task_dir / LABELED_FILE)
    except Exception as exc:  # CHGNet cannot handle this frame: as deterministic as the frame
        return _fail(task_dir, exc)
    print(f"labeled {len(frame)} atoms: model load {loaded - start:.2f} s, prediction {time.perf_counter() - loaded:.2f} s")
    return 0


def _fail(task_dir: Path, exc: Exception) -> int:
    traceback.print_exc()
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    write_failure(task_dir, f"chgnet: {type(exc).__name__}: {first_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
