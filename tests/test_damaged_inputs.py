"""Bad numbers and damaged trajectories are refused in one line naming the key, or the file and frame,
before any work: a NaN passes every range check unless it is refused as such."""

import ase.io
import numpy as np
import pytest

from lfpo_al.analysis.cli import analyze_command
from lfpo_al.analysis.synthetic import synthetic_trajectory, write_extxyz
from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.errors import UserError


@pytest.mark.parametrize("group, override, message", [
    ("explore", "explore.timestep_fs=0", r"explore.timestep_fs=0(\.0)? must be a positive number"),
    ("explore", "explore.temperatures=[nan]", r"explore.temperatures(\[0\])?=\[?nan\]? must be"),
    ("explore", "explore.friction_per_fs=nan", r"explore.friction_per_fs=nan must be"),
    ("explore", "explore.abort_deviation=nan", r"explore.abort_deviation=nan must be"),
    ("explore", "explore.abort_deviation=-1", r"explore.abort_deviation=-1(\.0)? must be a positive number"),
    ("model", "model.start_lr=nan", r"model.start_lr=nan must be"),
    ("model", "model.stop_lr=0", r"model.stop_lr=0(\.0)? must be a positive learning rate"),
    ("analysis", "analysis.temperatures=[nan]", r"analysis.temperatures(\[0\])?=\[?nan\]? must be"),
    ("validate", "validate.dynamics.friction_per_fs=inf", r"validate.dynamics.friction_per_fs=inf must be a finite"),
    ("selection", "selection.target_force_error=nan", r"selection.target_force_error=nan"),
])
def test_non_finite_or_out_of_range_settings_name_their_key(group, override, message):
    with pytest.raises(UserError, match=message):
        instantiate_group(compose_config([override]), group)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, load_system):
    """A synthetic 52-atom run with Li hops and polaron moves: the control that must pass."""
    traj, _ = synthetic_trajectory(load_system("lfpo"), (1, 2, 2), n_frames=300, polaron_moves=2, li_hops=1, seed=4,
                                   wrap=True)
    path = tmp_path_factory.mktemp("clean") / "run.extxyz"
    write_extxyz(traj, path)
    return path


def analyze(path, out, *overrides):
    return analyze_command(compose_config(["tracking=disabled", "analysis.plots=false", f"analysis.trajectories=[{path}]",
                                           "analysis.temperatures=[600]", f"analysis.output_dir={out}", *overrides]))


def damaged(clean, tmp_path, change) -> str:
    frames = ase.io.read(clean, index=":")
    change(frames)
    path = tmp_path / "damaged.extxyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def oxygen_pair(frames):
    o = [i for i, s in enumerate(frames[0].get_chemical_symbols()) if s == "O"]
    return o[0], o[5]


def test_the_clean_control_is_analysed(clean, tmp_path):
    assert analyze(clean, tmp_path / "out") == 0


def test_a_changed_atom_order_is_refused_naming_the_frame(clean, tmp_path):
    def swap_two_oxygens_from_frame_40(frames):
        a, b = oxygen_pair(frames)
        for frame in frames[40:]:
            frame.positions[[a, b]] = frame.positions[[b, a]]

    with pytest.raises(UserError, match=r"damaged.extxyz frame 40 changes the atom order"):
        analyze(damaged(clean, tmp_path, swap_two_oxygens_from_frame_40), tmp_path / "out")


def test_a_changed_species_sequence_is_refused_naming_the_frame(clean, tmp_path):
    def permute_from_frame_25(frames):
        symbols = frames[0].get_chemical_symbols()
        li, fe = symbols.index("Li"), symbols.index("Fe")
        order = np.arange(len(symbols))
        order[[li, fe]] = order[[fe, li]]
        for i in range(25, len(frames)):
            frames[i] = frames[i][order]

    with pytest.raises(UserError, match=r"damaged.extxyz frame 25 lists its species in another order"):
        analyze(damaged(clean, tmp_path, permute_from_frame_25), tmp_path / "out")


def test_non_finite_positions_are_refused_naming_the_frame(clean, tmp_path):
    def nan_at_frame_7(frames):
        frames[7].positions[3] = np.nan

    with pytest.raises(UserError, match=r"damaged.extxyz frame 7 has non-finite positions"):
        analyze(damaged(clean, tmp_path, nan_at_frame_7), tmp_path / "out")


def test_skip_longer_than_the_trajectory_is_refused(clean, tmp_path):
    with pytest.raises(UserError, match=r"analysis.skip_fs=1e\+06 leaves 0 of the 300 frames"):
        analyze(clean, tmp_path / "out", "analysis.skip_fs=1e6")


def test_a_cell_too_large_for_this_machine_is_refused_before_allocating(load_system, monkeypatch):
    """[12,12,12] would need ~16.6 GB for the nearest-metal polaron seeding (an out-of-memory kill here)."""
    from lfpo_al.structures import builder

    system = load_system("lfpo")
    monkeypatch.setattr(builder, "available_memory", lambda: 24 * 10**9)
    with pytest.raises(UserError, match=r"build.supercell=\[12, 12, 12\] \(48384 atoms\) needs ~16.6 GB"):
        builder.build_structure(system, builder.BuildSpec(supercell=[12, 12, 12]))
    monkeypatch.setattr(builder, "available_memory", lambda: 10**4)  # a tiny machine refuses even a small cell
    with pytest.raises(UserError, match="more than half of the"):
        builder.build_structure(system, builder.BuildSpec(supercell=[1, 2, 2]))
    monkeypatch.setattr(builder, "available_memory", lambda: 24 * 10**9)
    assert len(builder.build_structure(system, builder.BuildSpec(supercell=[1, 2, 2]))) == 104  # control
    assert len(builder.build_structure(system, builder.BuildSpec(supercell=[12, 12, 12], x=1.0))) == 48384  # no vacancy
