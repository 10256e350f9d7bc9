"""Selection variants pick what they claim: trust_hi from the teacher's failures, valence-targeted
priority (checked against finite differences of the real members' energies), descriptor diversity."""

import json
import math

import numpy as np
import pytest

from lfpo_al.errors import UserError
from lfpo_al.selection import SelectionSettings, select_step
from lfpo_al.selection.diversity import farthest_point_order
from lfpo_al.selection.ensemble_scores import breathing_forces, metal_ligands, score_frames
from lfpo_al.selection.teacher_failures import run_record, teacher_failure_level
from test_selection import write_exploration

# --- trust_hi from the teacher ------------------------------------------------------------------------


def test_no_failures_no_upper_cut():
    assert math.isinf(teacher_failure_level(np.linspace(0.1, 3.0, 20), np.zeros(20, bool)))
    one = np.zeros(20, bool)
    one[-1] = True  # a single failure is not a pattern
    assert math.isinf(teacher_failure_level(np.linspace(0.1, 3.0, 20), one))


def test_level_where_the_teacher_fails_mostly():
    deviation = np.array([0.2, 0.4, 0.5, 0.6, 0.7, 0.9, 1.0, 1.2, 1.5, 2.0, 2.5])
    failed = np.array([0, 1, 0, 0, 0, 0, 1, 0, 1, 1, 1], bool)  # a stray failure at 0.4 is outvoted
    assert teacher_failure_level(deviation, failed) == pytest.approx(1.0)


def write_history(run, deviations, quarantined):
    """One earlier iteration's select and label reports, as the steps write them."""
    select_dir, label_dir = run / "select", run / "label"
    select_dir.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    selected = [{"source": f"traj.000:frame {i}", "max_devi_f": d} for i, d in enumerate(deviations)]
    (select_dir / "report.json").write_text(json.dumps({"selected": selected}))
    failed = [{"task": f"task.{i:06d}", "reason": "SCF did not converge"} for i in quarantined]
    (label_dir / "report.json").write_text(json.dumps({"failed": failed}))
    return select_dir, label_dir


def test_select_step_cuts_where_the_teacher_failed(tmp_path):
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.2, 0.8, 1.6, 3.2, 6.4]}])
    teacher = SelectionSettings(trust_lo=0.1, trust_hi="teacher", min_frame_distance=0)

    never = run_record([write_history(tmp_path / "it0", [0.3, 2.0, 4.0, 7.0], [])])
    report = select_step(explore, tmp_path / "s0", teacher, teacher_record=never)
    assert report.n_failed == 0 and report.n_selected == 5  # the fixed 4x-target window would drop 3
    assert report.trust_levels.trust_hi is None and "no upper cut" in report.trust_levels.note

    failing = run_record([write_history(tmp_path / "it1", [0.3, 2.0, 3.0, 4.0, 7.0], [2, 3, 4])])
    report = select_step(explore, tmp_path / "s1", teacher, teacher_record=failing)
    assert report.trust_levels.trust_hi == pytest.approx(3.0)
    assert [s["max_devi_f"] for s in report.selected] == [1.6, 0.8, 0.2]


def test_model_scored_variants_need_the_ensemble(tmp_path):
    explore = write_exploration(tmp_path / "explore", [{"family": "a", "deviations": [0.2, 0.3]}])
    with pytest.raises(UserError, match="pass its models"):
        select_step(explore, tmp_path / "s", SelectionSettings(trust_lo=0.1, trust_hi=0.5, priority="valence"))
    with pytest.raises(UserError, match="selection.diversity"):
        SelectionSettings(diversity="random")


# --- descriptor diversity -----------------------------------------------------------------------------


def test_farthest_point_covers_clusters_before_repeating_one():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    features = np.concatenate([c + rng.normal(scale=0.1, size=(5, 2)) for c in centres])
    scores = np.concatenate([np.full(5, 3.0), np.full(5, 2.0), np.full(5, 1.0)])  # cluster 0 most uncertain
    order = farthest_point_order(features, scores, 3)
    assert order[0] == 0  # the most uncertain, ties to the earlier frame
    assert sorted(order // 5) == [0, 1, 2]  # ranking by score alone would take three of cluster 0


# --- on real members ------------------------------------------------------------------------------------


def breathing_displacement(atoms, metal, ligands):
    """Gradient of the summed M-O bond lengths: each O along its bond, the metal against their sum."""
    from ase.geometry import find_mic

    bonds, lengths = find_mic(atoms.positions[ligands] - atoms.positions[metal], atoms.cell, atoms.pbc)
    units = bonds / lengths[:, None]
    step = np.zeros_like(atoms.positions)
    step[ligands] = units
    step[metal] = -units.sum(axis=0)
    return step


def finite_difference_breathing(model, atoms, metal, ligands, eps=1e-2):
    """-dE/dt along the breathing displacement, from two energy evaluations (eV/A)."""
    type_map = model.get_type_map()
    atom_types = np.array([type_map.index(s) for s in atoms.get_chemical_symbols()])
    step = breathing_displacement(atoms, metal, ligands)
    energy = [model.eval((atoms.positions + sign * eps * step).reshape(1, -1), atoms.cell.array.reshape(1, -1),
                         atom_types)[0].item() for sign in (1, -1)]
    return -(energy[0] - energy[1]) / (2 * eps)


@pytest.fixture(scope="module")
def real_pool(unit_cells):
    """Twelve frames: LiFePO4 and Li0.75FePO4 (one contracted Fe3+ octahedron), each thermally shaken."""
    rng = np.random.default_rng(3)
    frames = []
    for cell in unit_cells:
        for _ in range(6):
            atoms = cell.copy()
            atoms.positions += rng.normal(scale=0.04, size=atoms.positions.shape)
            atoms.info.update(family="pool", temperature=600.0)
            frames.append(atoms)
    return frames


@pytest.mark.slow  # when it is the first of its group, the session's members are trained for it
@pytest.mark.xdist_group("tiny_members")  # shares the session's trained members (conftest)
def test_valence_priority_picks_the_largest_member_disagreement_on_breathing(tmp_path, tiny_members, real_pool,
                                                                               load_system):
    from deepmd.infer import DeepPot

    system = load_system("lfpo")
    models = [m.frozen for m in tiny_members]
    scores = score_frames(models, real_pool, system.metal, system.oxygen)
    members = [DeepPot(str(path)) for path in models]
    measured = []  # the members' spread of the finite-difference breathing force, max over metal sites
    for atoms in real_pool:
        metals, ligands = metal_ligands(atoms, system.metal, system.oxygen)
        slopes = np.array([[finite_difference_breathing(m, atoms, i, lig) for i, lig in zip(metals, ligands)]
                           for m in members])
        analytic = breathing_forces(np.stack([m.eval(atoms.positions.reshape(1, -1), atoms.cell.array.reshape(1, -1),
                                              np.array([m.get_type_map().index(s) for s in atoms.get_chemical_symbols()])
                                              )[1].reshape(-1, 3) for m in members]), atoms, metals, ligands)
        np.testing.assert_allclose(analytic, slopes, rtol=5e-3, atol=5e-3)  # the force along the bonds
        measured.append(slopes.std(axis=0).max())
    np.testing.assert_allclose(scores.valence_disagreement, measured, rtol=2e-2, atol=5e-3)

    for i, atoms in enumerate(real_pool):
        atoms.info["step"] = i
    explore = write_exploration(tmp_path / "explore", [{"family": "pool", "frames": real_pool,
                                                         "deviations": scores.max_devi_f}])
    chosen = select_step(explore, tmp_path / "s", SelectionSettings(trust_lo=0.0, trust_hi="teacher", max_selected=3,
                         min_frame_distance=0, priority="valence"), models=models, system=system).selected
    picked = [int(s["source"].split()[-1]) for s in chosen]
    assert picked == list(np.argsort(-np.asarray(measured), kind="stable")[:3])


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_members")
def test_descriptor_diversity_spans_both_compositions(tmp_path, tiny_members, real_pool, load_system):
    system = load_system("lfpo")
    models = [m.frozen for m in tiny_members]
    scores = score_frames(models, real_pool, system.metal, system.oxygen, descriptors=True)
    for i, atoms in enumerate(real_pool):
        atoms.info["step"] = i
    # one family, deviations that rank all six LiFePO4 frames first: only the descriptor can split them
    deviations = np.r_[np.linspace(1.0, 0.9, 6), np.linspace(0.5, 0.4, 6)]
    explore = write_exploration(tmp_path / "explore", [{"family": "pool", "frames": real_pool, "deviations": deviations}])
    base = dict(trust_lo=0.1, trust_hi="teacher", max_selected=2, min_frame_distance=0)
    plain = select_step(explore, tmp_path / "plain", SelectionSettings(**base)).selected
    diverse = select_step(explore, tmp_path / "diverse", SelectionSettings(**base, diversity="descriptor"),
                          models=models, system=system, scores=scores).selected
    composition = [[int(s["source"].split()[-1]) // 6 for s in chosen] for chosen in (plain, diverse)]
    assert composition[0] == [0, 0]
    assert composition[1] == [0, 1]
    assert scores.descriptors.shape[0] == len(real_pool) and np.isfinite(scores.descriptors).all()
