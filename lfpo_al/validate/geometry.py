"""Polaron geometry: relax polaron structures with the model and compare with the teacher's relaxation."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, fields
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from ase import Atoms
from ase.optimize import FIRE

from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import metal_valences
from lfpo_al.torchscript import use_simple_executor


def relax_positions(atoms: Atoms, calculator, fmax: float, steps: int) -> Atoms:
    """Fixed-cell relaxation (both sides use the same cell, so bond lengths compare like with like)."""
    relaxed = atoms.copy()
    relaxed.calc = calculator
    FIRE(relaxed, logfile=None).run(fmax=fmax, steps=steps)
    relaxed.info["relax_fmax"] = float(np.abs(relaxed.get_forces()).max())
    relaxed.calc = None
    return relaxed


def relax_all(make_calculator: Callable, starts: list[Atoms], fmax: float, steps: int) -> list[Atoms]:
    """``relax_positions`` of every start with one calculator from ``make_calculator()``.

    Picklable arguments (a bound ``ase_calculator`` method, a ``partial(DP, model=...)``), so that it
    can run in ``second_process()``.
    """
    calculator = make_calculator()
    return [relax_positions(a, calculator, fmax, steps) for a in starts]


def second_process(workers: int = 1) -> ProcessPoolExecutor:
    """A pool of ``workers`` (default one) for relaxations or MD that overlap the caller's own work on other cores.

    Spawned, not forked: the caller holds torch's threads. Frozen models run under the simple executor.
    Its start-up (~5 s of imports) is paid only when something is submitted.
    """
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=use_simple_executor)


TEACHER_VALENCE = "teacher_valence"  # per-atom array of a reference taken from the teacher's moments


@dataclass
class GeometryComparison:
    """The model's relaxed polaron structures against the teacher's: overall, then per structure."""

    valence_agreement: float
    mean_mo_bond_error_ang: float | None  # None: references from moments, no bonds to compare
    max_mo_bond_error_ang: float | None
    structures: list[dict]

    def overall(self) -> dict:
        """The overall figures (``metrics.json`` keys), without the per-structure rows."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "structures"}


def compare_geometry(model_relaxed: list[Atoms], references: list[Atoms], system: OlivineSystem) -> GeometryComparison:
    """Per-M mean M-O bond error and valence agreement, over all structures and per structure.

    A reference is the teacher's relaxed structure (valence and bonds from its geometry), or a built
    start carrying the teacher's valence per atom in ``arrays["teacher_valence"]`` (moments, no
    relaxation): then only the valence is compared and the bond errors are None.
    """
    bond_errors, agree, per_structure = [], [], []
    for model, reference in zip(model_relaxed, references):
        d_model, v_model = metal_valences(model, system)
        if TEACHER_VALENCE in reference.arrays:
            metal = np.array(reference.get_chemical_symbols()) == system.metal
            v_teacher, err = reference.arrays[TEACHER_VALENCE][metal], None
        else:
            d_teacher, v_teacher = metal_valences(reference, system)
            err = np.abs(d_model - d_teacher)
            bond_errors.append(err)
        same = v_model == v_teacher
        agree.append(same)
        per_structure.append({
            "structure": reference.info.get("family", reference.get_chemical_formula()),
            "mean_mo_bond_error_ang": None if err is None else float(err.mean()),
            "valence_agreement": float(same.mean()),
            "n_oxidised_model": int(np.sum(v_model == system.valence.oxidised)),
            "n_oxidised_teacher": int(np.sum(v_teacher == system.valence.oxidised)),
        })
    agree = np.concatenate(agree)
    bond_errors = np.concatenate(bond_errors) if bond_errors else None
    return GeometryComparison(
        valence_agreement=float(agree.mean()),
        mean_mo_bond_error_ang=None if bond_errors is None else float(bond_errors.mean()),
        max_mo_bond_error_ang=None if bond_errors is None else float(bond_errors.max()),
        structures=per_structure,
    )
