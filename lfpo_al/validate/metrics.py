"""Ensemble predictions on labeled deepmd/npy data: RMSEs per composition, deviation vs true error."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dpdata
import numpy as np


@dataclass
class Predictions:
    """One labeled system (one composition) evaluated by every member."""

    formula: str
    n_atoms: int
    energy_ref: np.ndarray  # (F,)
    force_ref: np.ndarray  # (F, N, 3)
    virial_ref: np.ndarray | None  # (F, 9)
    energy: np.ndarray  # (M, F)
    force: np.ndarray  # (M, F, N, 3)
    virial: np.ndarray  # (M, F, 9)

    def max_force_deviation(self) -> np.ndarray:
        """Per frame: max over atoms of the members' force standard deviation (deepmd's max_devi_f)."""
        spread = np.sqrt(np.mean(np.sum((self.force - self.force.mean(axis=0)) ** 2, axis=-1), axis=0))
        return spread.max(axis=-1)

    def max_force_error(self, member: int = 0) -> np.ndarray:
        """Per frame: max over atoms of |F_member - F_ref|."""
        return np.linalg.norm(self.force[member] - self.force_ref, axis=-1).max(axis=-1)


def load_systems(data_dirs: list[Path]) -> list[dpdata.LabeledSystem]:
    systems = []
    for path in data_dirs:
        multi = dpdata.MultiSystems()
        multi.from_deepmd_npy(str(path), labeled=True)
        systems.extend(multi.systems.values())
    return systems


def predict(models: list, systems: list[dpdata.LabeledSystem]) -> list[Predictions]:
    """Evaluate every member (deepmd ``DeepPot``) on every labeled system, all frames at once."""
    out = []
    for system in systems:
        type_map = models[0].get_type_map()
        names = system["atom_names"]
        atype = np.array([type_map.index(names[t]) for t in system["atom_types"]])
        coords = system["coords"].reshape(len(system), -1)
        cells = system["cells"].reshape(len(system), 9)
        results = [m.eval(coords, cells, atype) for m in models]
        virial_ref = system.data.get("virials")
        out.append(Predictions(
            formula=system.formula,
            n_atoms=system.get_natoms(),
            energy_ref=np.asarray(system["energies"]),
            force_ref=np.asarray(system["forces"]),
            virial_ref=None if virial_ref is None else np.asarray(virial_ref).reshape(len(system), 9),
            energy=np.array([r[0].reshape(-1) for r in results]),
            force=np.array([r[1].reshape(len(system), -1, 3) for r in results]),
            virial=np.array([r[2].reshape(len(system), 9) for r in results]),
        ))
    return out


def rmse(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a)))) if np.size(a) else float("nan")


# the keys of ErrorTable.headline(), as the distillation report stores and prints them
ENERGY_RMSE, FORCE_RMSE = "energy_rmse_mev_per_atom", "force_rmse_ev_per_ang"


@dataclass
class CompositionErrors:
    n_frames: int
    energy_rmse_mev_per_atom: float
    force_rmse_ev_per_ang: float
    virial_rmse_mev_per_atom: float


@dataclass
class ErrorTable:
    """Energy (meV/atom), force (eV/A) and virial (meV/atom) RMSE overall, and by composition (formula)."""

    energy_rmse_mev_per_atom: float
    force_rmse_ev_per_ang: float
    virial_rmse_mev_per_atom: float
    by_composition: dict[str, CompositionErrors]

    def headline(self) -> dict[str, float]:
        """The energy and force RMSE alone (what the distillation gate and the sweeps report)."""
        return {ENERGY_RMSE: self.energy_rmse_mev_per_atom, FORCE_RMSE: self.force_rmse_ev_per_ang}


def error_table(predictions: list[Predictions], member: int = 0) -> ErrorTable:
    """The RMSE of member ``member`` overall and per composition."""
    rows, e_all, f_all, v_all = {}, [], [], []
    for p in predictions:
        e = (p.energy[member] - p.energy_ref) / p.n_atoms * 1000.0
        f = (p.force[member] - p.force_ref).ravel()
        v = (p.virial[member] - p.virial_ref).ravel() / p.n_atoms * 1000.0 if p.virial_ref is not None else np.array([])
        rows[p.formula] = CompositionErrors(int(len(p.energy_ref)), rmse(e), rmse(f), rmse(v))
        e_all.append(e), f_all.append(f), v_all.append(v)
    cat = lambda parts: np.concatenate(parts) if parts else np.array([])  # noqa: E731
    return ErrorTable(rmse(cat(e_all)), rmse(cat(f_all)), rmse(cat(v_all)), rows)
