"""The learning curve reads the record: labels accumulate from the initial data, one point per iteration."""

from lfpo_al.loop.learning_curve import curve_points, learning_curve_plot
from lfpo_al.loop.state import SETUP


def _records():
    recs = [{"iter": SETUP, "step": "init_data", "status": "done", "outputs": {"n_frames": 10}}]
    for k, (f, n, w) in enumerate([(0.30, 12, 0.010), (0.25, 8, 0.006), (0.20, 0, 0.004)]):
        recs += [
            {"iter": k, "step": "label", "status": "done", "outputs": {"n_labeled": n}},
            {"iter": k, "step": "validate", "status": "done", "outputs": {
                "force_rmse_ev_per_ang": f, "energy_rmse_mev_per_atom": 10 * f, "valence_agreement": 0.9,
                "dynamics_summary": {"wasserstein_ang": w, "wasserstein_teacher_seeds_ang": 0.005,
                                     "m3_population_rel_error": 0.1, "flip_rate_ratio": 1.2}}},
        ]
    recs.append({"iter": 3, "step": "train", "status": "running", "outputs": {}})  # unfinished: no point
    return recs


def test_points_count_labels_the_training_had_seen():
    points = curve_points(_records())
    assert [p["labels"] for p in points] == [10, 22, 30]
    assert [p["force_rmse_ev_per_ang"] for p in points] == [0.30, 0.25, 0.20]
    assert points[1]["dynamics_wasserstein_ang"] == 0.006 and points[1]["dynamics_noise_ang"] == 0.005
    assert points[0]["dynamics_m3_rel_error"] == 0.1


def test_the_noise_shown_is_the_worst_cells_when_recorded():
    records = _records()
    records[2]["outputs"]["dynamics_summary"]["wasserstein_worst_cell_teacher_seeds_ang"] = 0.002
    assert [p["dynamics_noise_ang"] for p in curve_points(records)] == [0.002, 0.005, 0.005]


def test_plot_written_with_targets(tmp_path):
    path = learning_curve_plot(_records(), tmp_path / "lc.png", {"target_force_rmse": 0.1, "target_flip_rate_ratio": 1.3})
    assert path.is_file() and path.stat().st_size > 10_000
    assert learning_curve_plot(_records()[:1], tmp_path / "none.png") is None
