"""The teacher's references, made once at set-up: what the validate step compares the model with.

``teacher_relaxed``: the teacher relaxes each polaron start (a cheap, in-process teacher), in a second
process while the caller makes and labels the test frames. ``teacher_moments``: the start itself, with
the valence the teacher's moments give each metal on its label (for a DFT teacher, whose relaxation
would cost hours); the start must be among the labeled test frames. Dynamics: the teacher's Langevin
MD from each held-out start (``dynamics_cases``), or the user's AIMD files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from operator import attrgetter
from pathlib import Path
from typing import Callable

import numpy as np
import ase.io
from ase import Atoms

from lfpo_al.errors import UserError
from lfpo_al.label.base import Labeler, read_failure
from lfpo_al.label.checks import valence_from_moments
from lfpo_al.structures.builder import BuildSpec, build_specs, built_structures
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.validate.geometry import TEACHER_VALENCE, relax_all, second_process
from lfpo_al.validate.md import DynamicsCase, LangevinProtocol, run_cases
from lfpo_al.validate.settings import DynamicsSettings, ValidateSettings


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


def dynamics_cases(settings: DynamicsSettings, system: OlivineSystem, build_defaults: BuildSpec | None,
                   teacher_dir: Path) -> list[DynamicsCase]:
    """The held-out dynamics runs: each built start at each temperature (teacher runs to be made in
    ``teacher_dir``), then each of the user's reference trajectories."""
    from lfpo_al.analysis.trajectory import load_trajectory

    cases = []
    specs = build_specs(settings.structures, build_defaults, "validate.dynamics.structures")
    for j, start in enumerate(built_structures(system, specs)):
        for temperature in settings.temperatures:
            name = f"d{j}.{start.info['family']}.T{temperature:g}"
            protocols = [LangevinProtocol(temperature, settings.n_steps, settings.timestep_fs, settings.record_every,
                                          settings.friction_per_fs, seed) for seed in settings.seeds]
            paths = [Path(teacher_dir) / f"{name}.s{p.seed}.teacher.extxyz" for p in protocols]
            cases.append(DynamicsCase(name, start, protocols, paths))
    key = "validate.dynamics.reference_md"
    for i, file in enumerate(settings.reference_md):
        given = settings.reference_temperatures[i] if settings.reference_temperatures else None
        reference = load_trajectory(Path(file).expanduser(), system, temperature=given, key=key)
        if reference.temperature is None:
            raise UserError(f"{key}: {file} gives no temperature; set validate.dynamics.reference_temperatures")
        record_every = reference.frame_interval_fs / settings.timestep_fs
        if abs(record_every - round(record_every)) > 1e-6 or round(record_every) < 1:
            raise UserError(f"{key}: {file} has frames {reference.frame_interval_fs:g} fs apart, not a multiple of "
                            f"validate.dynamics.timestep_fs={settings.timestep_fs:g}; set the timestep to divide it")
        every = int(round(record_every))
        protocol = LangevinProtocol(reference.temperature, every * (reference.n_frames - 1), settings.timestep_fs, every,
                                    settings.friction_per_fs, settings.seeds[0])
        start = ase.io.read(Path(file).expanduser(), index=0)
        start.calc = None
        start.info["family"] = Path(file).stem
        cases.append(DynamicsCase(f"r{i}.{Path(file).stem}.T{reference.temperature:g}", start, [protocol],
                                  [Path(file).expanduser()], user_reference=True))
    return cases


@contextmanager
def teacher_dynamics(cases: list[DynamicsCase], labeler: Labeler, done: bool) -> Iterator[Callable[[], dict]]:
    """The teacher's runs of ``cases`` that are missing, in other processes while the ``with`` block works
    (``done``: the set-up recorded them; nothing is run). The callable it yields waits for them and returns
    the step's record. User trajectories (``reference_md``) exist already and are not run.

    One process per run, as many at once as this machine has cores: the set-up's labeling leaves them
    idle, and when it is done nothing else runs until they are."""
    runs = [case.single(i) for case in cases for i, path in enumerate(case.teacher_paths) if not path.is_file()]
    workers = max(1, min(len(runs), os.cpu_count() or 1))
    with second_process(workers) as pool:
        running = [] if done else [pool.submit(run_cases, labeler.ase_calculator, [run], attrgetter("teacher_paths"))
                                   for run in runs]

        def wait() -> dict:
            written = [path for future in running for path in future.result()]
            return {"n_cases": len(cases), "n_runs": sum(len(c.teacher_paths) for c in cases), "n_written": len(written)}

        yield wait
