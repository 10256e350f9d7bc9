"""Machine profiles: the launcher and data folder of each DFT code live in configs/machine/, apart from its physics."""

import pytest

from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.errors import UserError
from lfpo_al.label.gpaw import GpawLabeler
from lfpo_al.label.profile import ProgramProfile, profiles_from
from lfpo_al.loop.components import Components


@pytest.mark.parametrize("machine", ["local", "slurm"])
def test_every_shipped_machine_profiles_both_dft_codes(machine):
    profiles = instantiate_group(compose_config([f"machine={machine}"]), "machine").profiles
    assert set(profiles) == {"gpaw", "vasp"}
    assert profiles["vasp"].launcher(16) == "mpirun -np 16 vasp_std"


def test_a_run_hands_the_machine_profile_to_its_labeler(tmp_path):
    (tmp_path / "Fe.PBE.gz").write_bytes(b"")
    comp = Components.from_config(compose_config([
        "label=gpaw", "validate.dynamics.structures=[]", "label.cores_per_task=3", "machine.programs.gpaw.command='srun -n {cores}'",
        f"machine.programs.gpaw.data_dir={tmp_path}"]))
    assert comp.labeler.setup_folder(["Fe"]) == tmp_path
    command = comp.labeler.command()
    assert "srun -n 3 " in command and "--ranks 3" in command and "mpirun" not in command
    assert not hasattr(comp.labeler, "setup_path")  # the physics config holds no site paths


def test_labelers_that_need_no_launcher_ignore_the_profiles():
    comp = Components.from_config(compose_config([]))  # the CHGNet surrogate
    assert comp.labeler.program is None and comp.labeler.profile is None


@pytest.mark.parametrize("programs,message", [
    ({"gpaw": {"command": "mpirun -np {ranks}"}}, r"machine.programs.gpaw.command='mpirun -np \{ranks\}' may use only"),
    ({"gpaw": {"command": "mpirun", "setups": "/x"}}, r"machine.programs.gpaw has unknown key\(s\) setups"),
    ({"vasp": "vasp_std"}, r"machine.programs.vasp must give at least a command"),
])
def test_bad_profiles_are_refused_in_one_line(programs, message):
    with pytest.raises(UserError, match=message) as error:
        profiles_from(programs)
    assert "\n" not in str(error.value)


def test_a_machine_without_the_labelers_program_is_refused():
    with pytest.raises(UserError, match=r"machine.programs has no gpaw entry; add machine.programs.gpaw.command"):
        GpawLabeler().attach_profile({"vasp": ProgramProfile("vasp_std")})
