"""The learning curve reads the record: labels accumulate from the initial data, one point per iteration."""

from lfpo_al.loop.learning_curve import curve_points, learning_curve_plot
from lfpo_al.loop.state import SETUP, RunState
from lfpo_al.validate.settings import ValidateSettings


def _state(folder, worst_cell_noise=None) -> RunState:
    state = RunState(folder)
    state.append(SETUP, "init_data", outputs={"n_frames": 10})
    for k, (f, n, w) in enumerate([(0.30, 12, 0.010), (0.25, 8, 0.006), (0.20, 0, 0.004)]):
        dynamics = {"wasserstein_ang": w, "wasserstein_teacher_seeds_ang": 0.005, "m3_population_rel_error": 0.1,
                    "flip_rate_ratio": 1.2}
        if k == 0 and worst_cell_noise is not None:
            dynamics["wasserstein_worst_cell_teacher_seeds_ang"] = worst_cell_noise
        state.append(k, "label", outputs={"n_labeled": n})
        state.append(k, "validate", outputs={"force_rmse_ev_per_ang": f, "energy_rmse_mev_per_atom": 10 * f,
                                             "valence_agreement": 0.9, "dynamics_summary": dynamics})
    state.append(3, "train", "running")  # unfinished: no point
    return state


def test_points_count_labels_the_training_had_seen(tmp_path):
    points = curve_points(_state(tmp_path).rows(), init_labels=10)
    assert [p.labels for p in points] == [10, 22, 30]
    assert [p.force_rmse for p in points] == [0.30, 0.25, 0.20]
    assert points[1].dynamics_w1 == 0.006 and points[1].dynamics_noise == 0.005
    assert points[0].dynamics_m3_rel_error == 0.1


def test_the_noise_shown_is_the_worst_cells_when_recorded(tmp_path):
    points = curve_points(_state(tmp_path, worst_cell_noise=0.002).rows(), init_labels=10)
    assert [p.dynamics_noise for p in points] == [0.002, 0.005, 0.005]


def test_plot_written_with_targets(tmp_path):
    targets = ValidateSettings(target_force_rmse=0.1, target_flip_rate_ratio=1.3)
    path = learning_curve_plot(_state(tmp_path / "run"), tmp_path / "lc.png", targets)
    assert path.is_file() and path.stat().st_size > 10_000
    empty = RunState(tmp_path / "empty")
    empty.append(SETUP, "init_data", outputs={"n_frames": 10})
    assert learning_curve_plot(empty, tmp_path / "none.png") is None
