"""CHGNet as a surrogate teacher: its pip package ships the weights, so it labels anywhere, offline.

Two halves: ``ChgnetLabeler`` (the driver's side: inputs, command, reading back) and the task
command ``python -m lfpo_al.label.chgnet``, run inside one task folder: it reads ``frame.extxyz``
and writes ``labeled.extxyz``, returning at once if the folder already holds a decision. A frame it
cannot label gets ``failed.json`` and exit status 0, so that the failure is quarantined instead of
retried. Only a model that does not load (an environment problem, not the frame's) exits non-zero,
which the driver retries up to ``max_attempts``.

Loading CHGNet costs several labels (docs/costs.md): with ``batch_size > 1`` the command also gets its job's
other folders (``--batch``) and labels every undecided one with the model it loaded, so a job of
twelve tasks loads it once. Each folder is decided on its own, as above; a job killed midway leaves
the rest undecided for whichever task of the job runs next.
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
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from lfpo_al.errors import first_line
from lfpo_al.label.base import Labeler, decided_file, write_failure
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, write_labeled

if TYPE_CHECKING:
    from lfpo_al.structures.system import OlivineSystem


@dataclass
class ChgnetLabeler(Labeler):
    """CHGNet energies, forces, stress and magnetic moments (``task="efsm"``).

    model_name: a CHGNet release known to ``CHGNet.load`` (e.g. ``0.3.0``).
    device: ``cpu`` or ``cuda``; threads per task come from ``cores_per_task``.
    """

    model_name: str = "0.3.0"
    device: str = "cpu"

    supports_batch = True

    @property
    def forward_files(self) -> list[str]:
        return [FRAME_FILE]

    def write_inputs(self, atoms: Atoms, task_dir: Path, system: OlivineSystem) -> None:
        import ase.io  # ase.io costs ~0.5 s: the task command, often finding its folder decided, imports it late

        frame = atoms.copy()  # copy() drops any calculator: the teacher must not see old labels
        ase.io.write(Path(task_dir) / FRAME_FILE, frame, format="extxyz")

    def command(self) -> str:
        return (
            f"{shlex.quote(sys.executable)} -m lfpo_al.label.chgnet --model {shlex.quote(self.model_name)} "
            f"--device {shlex.quote(self.device)} --threads {self.cores_per_task}"
        )

    def job_command(self, job_tasks: list[str]) -> str:
        if self.batch_size == 1 or not job_tasks:
            return self.command()
        return f"{self.command()} --batch {' '.join(shlex.quote(name) for name in job_tasks)}"

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
    parser.add_argument("--batch", nargs="*", default=[], metavar="TASK",
                        help="the job's other task folders (siblings of this one), labeled after it")
    args = parser.parse_args(argv)
    own = Path.cwd()
    others = [own.parent / name for name in args.batch if (own.parent / name).resolve() != own.resolve()]
    todo = [d for d in [own, *others] if not decided_file(d)]
    if own not in todo:  # a job resubmitted after a kill reruns every task it had not tagged finished
        print(f"already decided ({decided_file(own)} present): nothing to do")
    if not todo:
        return 0
    start = time.perf_counter()
    model = load_model(args.model, args.device, args.threads)  # raises -> non-zero exit -> retried
    print(f"model load {time.perf_counter() - start:.2f} s")
    for task_dir in todo:
        if not decided_file(task_dir):  # another process of a resubmitted job may have got there first
            label_task(model, task_dir, args.model)
    return 0


def label_task(model, task_dir: Path, model_name: str) -> None:
    """Label one task folder, or record why its frame cannot be labeled (``failed.json``)."""
    import ase.io

    start = time.perf_counter()
    try:
        frame = ase.io.read(task_dir / FRAME_FILE, format="extxyz")
        labeled = label_atoms(model, frame)
        labeled.info.update(teacher=f"chgnet-{model_name}", labeled_at=datetime.now(timezone.utc).isoformat())
        write_labeled(labeled, task_dir / LABELED_FILE)
    except Exception as exc:  # a bad frame, or one CHGNet cannot handle: as deterministic as the frame
        _fail(task_dir, exc)
        return
    print(f"{task_dir.name}: labeled {len(frame)} atoms in {time.perf_counter() - start:.2f} s")


def _fail(task_dir: Path, exc: Exception) -> None:
    traceback.print_exc()
    write_failure(task_dir, f"chgnet: {type(exc).__name__}: {first_line(exc)}")


if __name__ == "__main__":
    sys.exit(main())
