"""Polaron dynamics of the model against its teacher, from trajectories that differ only in the forces.

Per held-out structure and temperature, both sides are read by the analysis suite with the same
settings (each seed its own two-state fit and charge-balance d*), and compared on what it reads:
- the valence model per seed: resolved or not, separation, basin centres, M3+ from the fit's weight;
- 1-Wasserstein distance between the two smoothed M-O distributions (A), with the teacher's own
  seed-to-seed distance beside it where there are two seeds or more (the noise floor);
- committed-flip rate ratio with an exact 95 % Poisson interval (conditional binomial, Clopper-Pearson),
  withheld when either side's valence is not resolved;
- M-O and Li-O radial distribution functions: relative L1 distance;
- ``verdicts``: pass / fail / inconclusive / unmeasurable by equivalence (``validate.equivalence``).
Over the structures, ``summarise`` keeps the worst of each (``DynamicsSummary``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lfpo_al.analysis.pipeline import RunResult, analyze_trajectory
from lfpo_al.analysis.settings import AnalysisSettings
from lfpo_al.analysis.trajectory import Trajectory
from lfpo_al.structures.system import OlivineSystem
from lfpo_al.validate import equivalence
from lfpo_al.validate.equivalence import Tolerances
from lfpo_al.stored import from_stored
from lfpo_al.validate.settings import FLIP_EA_VERDICT

# the keys of a case's metrics that are read back (the summary, the figure, the flip Ea), spelled once
M3_REL_ERROR_KEY = "m3_population_rel_error"
W1_KEY = "wasserstein_ang"
W1_TEACHER_SEEDS_KEY = "wasserstein_teacher_seeds_ang"
FLIP_RATE_RATIO_KEY = "flip_rate_ratio"
VERDICTS_KEY = "verdicts"

RDF_MAX_ANG = 4.0
RDF_BIN_ANG = 0.05
RDF_MAX_FRAMES = 100  # frames ~100 fs apart or closer are correlated: more add time, not information


@dataclass
class SideRuns:
    """One side (model or teacher) of one comparison: its trajectories (one per seed) and their analyses."""

    trajectories: list[Trajectory]
    results: list[RunResult]

    @classmethod
    def analyse(cls, trajectories: list[Trajectory], system: OlivineSystem, smoothing_fs: float) -> "SideRuns":
        settings = AnalysisSettings(smoothing_fs=smoothing_fs, sensitivity=False, plots=False, li_dwell_fs=0.0)
        return cls(trajectories, [analyze_trajectory(t, system, settings, trust_level=None) for t in trajectories])

    def smoothed_bonds(self, seed: int | None = None) -> np.ndarray:
        results = self.results if seed is None else [self.results[seed]]
        return np.concatenate([r.smooth.ravel() for r in results])

    def oxidised_counts(self, oxidised: int) -> list[np.ndarray]:
        """Per seed: the number of M3+ in each frame."""
        return [(r.states == oxidised).sum(axis=0) for r in self.results]

    def valence(self) -> list[dict]:
        """Per seed: the two-state model the analysis fitted."""
        return [{"resolved": bool(r.row["valence_resolved"]), "separation": r.row["valence_fit"]["separation"],
                 "centre_ox": r.row["valence_fit"]["centre_ox"], "centre_red": r.row["valence_fit"]["centre_red"],
                 "m3": r.row["m3_mixture"]} for r in self.results]

    def flips_and_exposure(self) -> tuple[int, float]:
        """Counted flips and metal-picoseconds, pooled over seeds."""
        n = sum(int(r.row["n_fe_flips"]) for r in self.results)
        exposure = sum(r.row["n_fe"] * r.row["trusted_duration_ps"] for r in self.results)
        return n, float(exposure)


def wasserstein(u: np.ndarray, v: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(np.asarray(u, float), np.asarray(v, float)))


def rate_ratio(n_a: int, exposure_a: float, n_b: int, exposure_b: float, confidence: float = 0.95) -> dict:
    """Ratio of two Poisson rates (a over b) with an exact interval: given n = n_a + n_b, n_a is
    binomial with p = R e_a / (R e_a + e_b); a Clopper-Pearson interval on p maps onto R."""
    from scipy.stats import beta

    out = {"n_model": int(n_a), "n_teacher": int(n_b), "ratio": None, "low": None, "high": None}
    if exposure_a <= 0 or exposure_b <= 0:
        return out
    n, alpha = n_a + n_b, 1.0 - confidence
    if n_b > 0:
        out["ratio"] = round((n_a / exposure_a) / (n_b / exposure_b), 4)
    if n == 0:
        return out
    p_low = beta.ppf(alpha / 2, n_a, n_b + 1) if n_a > 0 else 0.0
    p_high = beta.ppf(1 - alpha / 2, n_a + 1, n_b) if n_b > 0 else 1.0
    to_ratio = lambda p: p / (1 - p) * exposure_b / exposure_a  # noqa: E731
    out["low"] = round(float(to_ratio(p_low)), 4)
    out["high"] = None if p_high >= 1 else round(float(to_ratio(p_high)), 4)
    return out


def pair_rdf(traj: Trajectory, a: str, b: str, r_max: float = RDF_MAX_ANG, dr: float = RDF_BIN_ANG,
             max_frames: int = RDF_MAX_FRAMES) -> np.ndarray:
    """g_ab(r) on bins of ``dr`` up to ``r_max``, averaged over up to ``max_frames`` evenly spaced frames
    (periodic images included)."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    ia, ib = traj.indices(a), traj.indices(b)
    edges = np.arange(0.0, r_max + dr / 2, dr)
    counts = np.zeros(len(edges) - 1)
    is_b = np.zeros(len(traj.symbols), bool)
    is_b[ib] = True
    is_a = np.zeros(len(traj.symbols), bool)
    is_a[ia] = True
    volume = 0.0
    frames = np.unique(np.linspace(0, len(traj.positions) - 1, min(len(traj.positions), max_frames)).astype(int))
    for positions, cell in zip(traj.positions[frames], traj.cells[frames]):
        atoms = Atoms(numbers=np.ones(len(positions), int), positions=positions, cell=cell, pbc=True)
        i, j, d = neighbor_list("ijd", atoms, r_max)
        keep = is_a[i] & is_b[j]
        counts += np.histogram(d[keep], bins=edges)[0]
        volume += abs(np.linalg.det(cell))
    n_frames = len(frames)
    density_b = len(ib) / (volume / n_frames)
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return counts / (n_frames * len(ia) * density_b * shells)


def rdf_distance(model: np.ndarray, teacher: np.ndarray) -> float | None:
    """Relative L1 distance: integral |g_model - g_teacher| dr over integral g_teacher dr."""
    norm = float(np.sum(teacher))
    return None if norm <= 0 else round(float(np.sum(np.abs(model - teacher)) / norm), 4)


def _population(side: SideRuns) -> dict:
    """M3+ per cell from each seed's two-state fit (its oxidised weight): not forced by the threshold."""
    seeds = [r.row["m3_mixture"] for r in side.results]
    return {"mean": round(float(np.mean(seeds)), 4), "std": round(float(np.std(seeds)), 4), "seed_means": seeds}


def _seed_spread(side: SideRuns) -> float | None:
    """Largest Wasserstein distance between two seeds of one side (None with one seed)."""
    n = len(side.results)
    if n < 2:
        return None
    return round(max(wasserstein(side.smoothed_bonds(i), side.smoothed_bonds(j))
                     for i in range(n) for j in range(i + 1, n)), 5)


def compare_trajectories(model: list[Trajectory], teacher: list[Trajectory], system: OlivineSystem,
                         smoothing_fs: float, targets: Tolerances | None = None) -> tuple[dict, SideRuns, SideRuns]:
    """Both sides read alike; the metrics (``compare``) and the two analysed sides."""
    sides = [SideRuns.analyse(t, system, smoothing_fs) for t in (model, teacher)]
    return compare(*sides, system, targets), sides[0], sides[1]


def compare(model: SideRuns, teacher: SideRuns, system: OlivineSystem, targets: Tolerances | None = None) -> dict:
    """The dynamics metrics of one structure and temperature (``metrics.json`` entry); the verdicts hold
    each target that is set, and the default tolerance where it is not."""
    first = model.results[0].row
    pop_model, pop_teacher = _population(model), _population(teacher)
    rel = (None if pop_teacher["mean"] == 0 else
           round(abs(pop_model["mean"] - pop_teacher["mean"]) / pop_teacher["mean"], 4))
    bonds_model, bonds_teacher = model.smoothed_bonds(), teacher.smoothed_bonds()
    rdf = {}
    for label, (a, b) in (("mo", (system.metal, system.oxygen)), ("lio", (system.mobile_ion, system.oxygen))):
        if len(model.trajectories[0].indices(a)):
            g_model = np.mean([pair_rdf(t, a, b) for t in model.trajectories], axis=0)
            g_teacher = np.mean([pair_rdf(t, a, b) for t in teacher.trajectories], axis=0)
            rdf[f"rdf_{label}_distance"] = rdf_distance(g_model, g_teacher)
    n_model, exposure_model = model.flips_and_exposure()
    n_teacher, exposure_teacher = teacher.flips_and_exposure()
    valence_model, valence_teacher = model.valence(), teacher.valence()
    resolved = all(v["resolved"] for v in valence_model + valence_teacher)
    ratio = rate_ratio(n_model, exposure_model, n_teacher, exposure_teacher) if resolved else {
        "n_model": n_model, "n_teacher": n_teacher, "ratio": None, "low": None, "high": None,
        "withheld": "valence not resolved on both sides"}
    w1, w1_noise = round(wasserstein(bonds_model, bonds_teacher), 5), _seed_spread(teacher)
    tolerances = (targets or Tolerances()).or_defaults()
    return {
        "temperature_K": first["temperature_K"], "duration_ps": first["duration_ps"], "n_seeds": len(model.results),
        "n_metal": first["n_fe"], "m3_expected": first.get("m3_expected"), "threshold_ang": first.get("threshold_ang"),
        "m3_model": pop_model, "m3_teacher": pop_teacher, M3_REL_ERROR_KEY: rel,
        "valence_model": valence_model, "valence_teacher": valence_teacher,
        W1_KEY: w1, W1_TEACHER_SEEDS_KEY: w1_noise, "wasserstein_model_seeds_ang": _seed_spread(model),
        "flip_rate_model_per_metal_ps": None if exposure_model <= 0 or not resolved else round(n_model / exposure_model, 4),
        "flip_rate_teacher_per_metal_ps": None if exposure_teacher <= 0 or not resolved else round(n_teacher / exposure_teacher, 4),
        FLIP_RATE_RATIO_KEY: ratio, "flip_exposure_metal_ps": [round(exposure_model, 4), round(exposure_teacher, 4)],
        "flips_resolved": resolved,
        VERDICTS_KEY: equivalence.case_verdicts(valence_model, valence_teacher, ratio, w1, w1_noise,
                                              first["duration_ps"], tolerances),
        **rdf,
    }


def flip_ea_by_structure(per_case: dict[str, dict], tolerance_ev: float, level: float = 0.95) -> dict[str, dict]:
    """Per held-out structure run at >= 3 temperatures (cases named ``<structure>.T<K>``): Ea of the
    committed flips, model - teacher, by equivalence (``equivalence.flip_ea_verdict``); inconclusive unless
    both sides are resolved with flips at three temperatures or more."""
    by_structure: dict[str, list[dict]] = {}
    for name, case in per_case.items():
        by_structure.setdefault(name.rsplit(".T", 1)[0], []).append(case)
    out = {}
    for structure, cases in by_structure.items():
        if len({c.get("temperature_K") for c in cases} - {None}) < 3:
            continue
        usable = [c for c in cases if c.get("flips_resolved") and c.get("flip_exposure_metal_ps") and c.get("temperature_K")]
        flips = tuple([c[FLIP_RATE_RATIO_KEY][key] for c in usable] for key in ("n_model", "n_teacher"))
        exposures = tuple([c["flip_exposure_metal_ps"][side] for c in usable] for side in (0, 1))
        out[structure] = equivalence.flip_ea_verdict([c["temperature_K"] for c in usable], flips, exposures,
                                                     tolerance_ev, level)
    return out


@dataclass
class DynamicsSummary:
    """The worst of each metric over the held-out structures: what a convergence target is held against.

    Stored as ``dataclasses.asdict`` (``dynamics_summary`` in ``metrics.json`` and in the validate step's
    record); ``from_record`` reads it back. ``wasserstein_teacher_seeds_ang`` is the largest teacher noise
    of any cell, ``wasserstein_worst_cell_teacher_seeds_ang`` that of the cell with the worst W1;
    ``flip_rate_ratio`` the ratio farthest from 1 either way; ``flip_ea`` the flip-Ea verdict entry per
    structure run at three temperatures or more; ``verdicts`` the worst verdict per check."""

    m3_population_rel_error: float | None
    wasserstein_ang: float | None
    wasserstein_teacher_seeds_ang: float | None
    wasserstein_worst_cell_teacher_seeds_ang: float | None
    flip_rate_ratio: float | None
    flip_ea: dict
    verdicts: dict
    n_structures: int

    @classmethod
    def from_record(cls, stored: dict | None) -> DynamicsSummary | None:
        """The summary a record holds (None where it holds none); a key an older record lacks reads as None,
        or as {} for ``flip_ea`` and ``verdicts``."""
        if not isinstance(stored, dict):
            return None
        summary = from_stored(cls, stored)
        summary.flip_ea, summary.verdicts = summary.flip_ea or {}, summary.verdicts or {}  # null or absent: none
        return summary

    @property
    def noise_of_worst_cell_ang(self) -> float | None:
        """The teacher's seed-to-seed W1 to set beside ``wasserstein_ang``: that of its own cell, or, for a
        record older than that, the largest of any cell."""
        if self.wasserstein_worst_cell_teacher_seeds_ang is not None:
            return self.wasserstein_worst_cell_teacher_seeds_ang
        return self.wasserstein_teacher_seeds_ang


def summarise(per_structure: dict[str, dict], ea_tolerance_ev: float = 0.03) -> DynamicsSummary:
    """The worst of each metric over the structures; where a structure ran at three temperatures or more,
    its flip Ea model against teacher (``flip_ea``)."""
    def worst(values, key=lambda v: v):
        values = [v for v in values if v is not None]
        return max(values, key=key) if values else None

    rows = list(per_structure.values())
    ratios = [r[FLIP_RATE_RATIO_KEY]["ratio"] for r in rows]
    # the worst W1 is judged against its own cell's teacher noise: another cell's may be twice as large
    worst_w1 = worst(rows, key=lambda r: r[W1_KEY] if r[W1_KEY] is not None else -np.inf)
    flip_ea = flip_ea_by_structure(per_structure, ea_tolerance_ev)
    verdicts = equivalence.worst([r[VERDICTS_KEY] for r in rows if r.get(VERDICTS_KEY)] + [
        {FLIP_EA_VERDICT: entry} for entry in flip_ea.values()])
    return DynamicsSummary(
        m3_population_rel_error=worst([r[M3_REL_ERROR_KEY] for r in rows]),
        wasserstein_ang=worst([r[W1_KEY] for r in rows]),
        wasserstein_teacher_seeds_ang=worst([r[W1_TEACHER_SEEDS_KEY] for r in rows]),
        wasserstein_worst_cell_teacher_seeds_ang=worst_w1.get(W1_TEACHER_SEEDS_KEY) if worst_w1 else None,
        # a model without flips where the teacher has some is 0
        flip_rate_ratio=worst(ratios, key=lambda v: abs(np.log(v)) if v > 0 else np.inf),
        flip_ea=flip_ea, verdicts=verdicts, n_structures=len(rows),
    )
