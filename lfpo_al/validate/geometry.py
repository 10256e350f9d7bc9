"""Polaron geometry: relax polaron structures with the model and compare with the teacher's relaxation."""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.optimize import FIRE

from lfpo_al.structures.system import OlivineSystem
from lfpo_al.structures.valence import metal_valences


def relax_positions(atoms: Atoms, calculator, fmax: float, steps: int) -> Atoms:
    """Fixed-cell relaxation (both sides use the same cell, so bond lengths compare like with like)."""
    relaxed = atoms.copy()
    relaxed.calc = calculator
    FIRE(relaxed, logfile=None).run(fmax=fmax, steps=steps)
    relaxed.info["relax_fmax"] = float(np.abs(relaxed.get_forces()).max())
    relaxed.calc = None
    return relaxed


def compare_geometry(model_relaxed: list[Atoms], teacher_relaxed: list[Atoms], system: OlivineSystem) -> dict:
    """Per-M mean M-O bond error and valence agreement, over all structures and per structure."""
    bond_errors, agree, per_structure = [], [], []
    for model, teacher in zip(model_relaxed, teacher_relaxed):
        d_model, v_model = metal_valences(model, system)
        d_teacher, v_teacher = metal_valences(teacher, system)
        err = np.abs(d_model - d_teacher)
        same = v_model == v_teacher
        bond_errors.append(err)
        agree.append(same)
        per_structure.append({
            "structure": teacher.info.get("family", teacher.get_chemical_formula()),
            "mean_mo_bond_error_ang": float(err.mean()),
            "valence_agreement": float(same.mean()),
            "n_oxidised_model": int(np.sum(v_model == system.valence.oxidised)),
            "n_oxidised_teacher": int(np.sum(v_teacher == system.valence.oxidised)),
        })
    bond_errors, agree = np.concatenate(bond_errors), np.concatenate(agree)
    return {
        "valence_agreement": float(agree.mean()),
        "mean_mo_bond_error_ang": float(bond_errors.mean()),
        "max_mo_bond_error_ang": float(bond_errors.max()),
        "structures": per_structure,
    }
