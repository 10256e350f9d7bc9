"""The teacher's polaron references, made once at set-up: what the validate step compares the model with.

``teacher_relaxed``: the teacher relaxes each polaron start (a cheap, in-process teacher), in a second
process while the caller makes and labels the test frames. ``teacher_moments``: the start itself, with
the valence the teacher's moments give each metal on its label (for a DFT teacher, whose relaxation
would cost hours); the start must be among the labeled test frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
from ase import Atoms

from lfpo_al.label.base import Labeler, read_failure
from lfpo_al.label.checks import valence_from_moments
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.validate.geometry import TEACHER_VALENCE, relax_all, second_process
from lfpo_al.validate.settings import ValidateSettings


def moments_reference(start: Atoms, task_dir: Path, labeler: Labeler, system: OlivineSystem) -> Atoms:
    """The built start with the teacher's valence per atom, from its moments on that very frame."""
    if not labeler.is_finished(task_dir) or read_failure(task_dir) is not None:
        raise RuntimeError(f"the teacher did not label the polaron start {task_dir}: "
                           f"{read_failure(task_dir) or 'no result'}; see {task_dir.parent / 'report.json'}")
    labeled = labeler.read_outputs(task_dir)
    if not np.allclose(labeled.positions, start.positions, atol=1e-6):
        raise RuntimeError(f"{task_dir} is not the unperturbed polaron start (validate.frames_per_structure changed?)")
    metal = np.array(start.get_chemical_symbols()) == system.metal
    valence = np.zeros(len(start), dtype=int)
    valence[metal] = valence_from_moments(labeled.arrays["magmoms"][metal], labeler.expected_moments(system),
                                          labeler.magmom_tolerance)
    reference = start.copy()
    reference.new_array(TEACHER_VALENCE, valence)
    return reference


@contextmanager
def teacher_references(starts: list[Atoms], labeler: Labeler, system: OlivineSystem, settings: ValidateSettings,
                       start_task_dirs: list[Path]) -> Iterator[Callable[[], list[Atoms]]]:
    """While the ``with`` block makes and labels the test frames, the teacher relaxes ``starts`` in a second
    process (where ``settings`` asks for relaxed references); the callable it yields gives the references,
    each tagged with its start's family. ``start_task_dirs``: the label task of each unperturbed start."""
    relaxed = settings.reference_for(labeler.core_seconds_per_atom) == "teacher_relaxed"
    with second_process() as pool:
        relaxing = (pool.submit(relax_all, labeler.ase_calculator, starts, settings.relax_fmax, settings.relax_steps)
                    if relaxed else None)

        def references() -> list[Atoms]:
            refs = (relaxing.result() if relaxing is not None else
                    [moments_reference(start, Path(d), labeler, system) for start, d in zip(starts, start_task_dirs)])
            for start, frame in zip(starts, refs):
                frame.info["family"] = start.info["family"]
            return refs

        yield references
