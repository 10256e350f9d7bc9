"""The VASP labeler without VASP: inputs against reference files, POTCAR assembly from a fake POTCAR
folder, and the task command on a real-format OUTCAR (tests/data/vasp/README.md says where it comes from)."""

import shlex
import subprocess

import ase.io
import numpy as np
import pytest

from conftest import DATA
from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.errors import UserError
from lfpo_al.label.base import FAILED_FILE, read_failure
from lfpo_al.label.checks import label_problem
from lfpo_al.label.dft_common import kpoint_mesh
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE
from lfpo_al.label.driver import task_command
from lfpo_al.label.tasks import EXIT_CODE_FILE, OUTPUTS_DIR
from lfpo_al.label.vasp import POTCAR_DIR_ENV, VaspLabeler, poscar_species, species_order
from lfpo_al.label.vasp_task import main, to_frame_order
from lfpo_al.structures import BuildSpec, build_structure

REF = DATA / "vasp"
OUTCAR_NI18 = REF / "OUTCAR.ni18"
NI18_ENERGY = -68.22868532  # free  energy   TOTEN of OUTCAR.ni18
NI18_FORCE_0 = [0.030415, -0.114705, -0.460114]  # first TOTAL-FORCE row
POTCAR_NAMES = ("Li_sv", "Fe_pv", "Mn_pv", "Co", "Ni_pv", "P", "O")


@pytest.fixture(autouse=True)
def no_potcar_env(monkeypatch):
    monkeypatch.delenv(POTCAR_DIR_ENV, raising=False)


@pytest.fixture
def labeler():
    """The VASP labeler with this machine's profile, as a run builds it."""
    cfg = compose_config(["label=vasp"])
    vasp = instantiate_group(cfg, "label")
    vasp.attach_profile(instantiate_group(cfg, "machine").profiles)
    return vasp


@pytest.fixture
def fake_potcars(tmp_path):
    """A POTCAR folder of one-line dummies, one per name of dft_inputs/vasp/potcar_map.yaml."""
    root = tmp_path / "potpaw"
    for name in POTCAR_NAMES:
        (root / name).mkdir(parents=True)
        (root / name / "POTCAR").write_text(f"dummy PAW_PBE {name}\n")
    return root


def lfpo_cell(system, x):
    return build_structure(system, BuildSpec(supercell=[1, 1, 1], x=x, seed=0))


def incar_tags(text):
    tags = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            tags[key.strip()] = value.strip()
    return tags


def expand(run_length):
    values = []
    for word in run_length.split():
        count, star, value = word.partition("*")
        values += [float(value)] * int(count) if star else [float(word)]
    return values


@pytest.mark.parametrize("x, tag", [(1.0, "x1"), (0.75, "x0.75")])
def test_inputs_match_reference_files(labeler, load_system, tmp_path, x, tag):
    system = load_system("lfpo")
    frame = lfpo_cell(system, x)
    labeler.write_inputs_without_potcar(frame, tmp_path, system)
    for name in ("INCAR", "KPOINTS"):
        assert (tmp_path / name).read_text() == (REF / f"{name}.lfpo_1x1x1_{tag}").read_text(), name
    written, reference = (tmp_path / "POSCAR").read_text(), (REF / f"POSCAR.lfpo_1x1x1_{tag}").read_text()
    assert written.splitlines()[5:8] == reference.splitlines()[5:8]  # species, counts, Direct
    ours, ref = ase.io.read(tmp_path / "POSCAR"), ase.io.read(REF / f"POSCAR.lfpo_1x1x1_{tag}")
    assert ours.get_chemical_symbols() == ref.get_chemical_symbols()
    np.testing.assert_allclose(ours.cell.array, ref.cell.array, atol=1e-10)
    np.testing.assert_allclose(ours.get_scaled_positions(), ref.get_scaled_positions(), atol=1e-10)
    assert not (tmp_path / "POTCAR").exists()


def test_incar_carries_mp_settings_and_seeded_polaron(labeler, load_system, tmp_path):
    system = load_system("lfpo")
    frame = lfpo_cell(system, 0.75)
    labeler.write_inputs_without_potcar(frame, tmp_path, system)
    tags = incar_tags((tmp_path / "INCAR").read_text())
    assert (tags["ENCUT"], tags["ISPIN"], tags["LDAUTYPE"], tags["LORBIT"]) == ("520", "2", "2", "11")
    assert (tags["LDAUL"], tags["LDAUU"], tags["LDAUJ"]) == ("-1 2 -1 -1", "0.0 5.3 0.0 0.0", "0.0 0.0 0.0 0.0")
    assert float(tags["EDIFF"]) == pytest.approx(1e-6 * len(frame))
    order = species_order(frame.get_chemical_symbols(), ["Li", "Fe", "P", "O"])
    magmom = np.array(expand(tags["MAGMOM"]))
    valence = frame.arrays["valence"][order]
    assert magmom.shape == (len(frame),)
    assert magmom[valence == 3].tolist() == [5.0]  # the intended Fe3+
    assert sorted(np.abs(magmom[valence == 2])) == [4.0, 4.0, 4.0]
    assert np.all(magmom[valence == 0] == 0)
    np.testing.assert_array_equal(magmom, frame.arrays["initial_magmoms"][order])


def test_magmom_falls_back_to_valence(labeler, load_system, tmp_path):
    system = load_system("lfpo")
    frame = lfpo_cell(system, 0.75)
    del frame.arrays["initial_magmoms"]
    labeler.write_inputs_without_potcar(frame, tmp_path, system)
    magmom = incar_tags((tmp_path / "INCAR").read_text())["MAGMOM"]
    assert magmom == "3*0.0 2*4.0 5.0 4.0 20*0.0"  # |m| per valence, all parallel


def test_lmpo_gives_mn_u_and_moments(labeler, load_system, fake_potcars, tmp_path):
    system = load_system("lmpo")
    frame = build_structure(system, BuildSpec(supercell=[1, 1, 1], x=0.75, seed=0))
    labeler.profile.data_dir = str(fake_potcars)
    labeler.write_inputs(frame, tmp_path, system)
    tags = incar_tags((tmp_path / "INCAR").read_text())
    assert (tags["LDAUL"], tags["LDAUU"]) == ("-1 2 -1 -1", "0.0 3.9 0.0 0.0")
    magmom = np.array(expand(tags["MAGMOM"]))
    valence = frame.arrays["valence"][species_order(frame.get_chemical_symbols(), ["Li", "Mn", "P", "O"])]
    assert np.abs(magmom[valence == 3]).tolist() == [4.0] and set(np.abs(magmom[valence == 2])) == {5.0}
    assert "Mn_pv" in (tmp_path / "POTCAR").read_text()


def test_potcar_concatenated_in_poscar_species_order(labeler, load_system, fake_potcars, tmp_path):
    system = load_system("lfpo")
    labeler.profile.data_dir = str(fake_potcars)
    lithiated, delithiated = tmp_path / "x1", tmp_path / "x0"
    for folder, x in ((lithiated, 1.0), (delithiated, 0.0)):
        folder.mkdir()
        labeler.write_inputs(lfpo_cell(system, x), folder, system)
        assert set(labeler.forward_files) <= {p.name for p in folder.iterdir()}
    names = lambda folder: [line.split()[-1] for line in (folder / "POTCAR").read_text().splitlines()]
    assert names(lithiated) == ["Li_sv", "Fe_pv", "P", "O"]
    assert names(delithiated) == ["Fe_pv", "P", "O"]  # FePO4: no Li block
    assert ase.io.read(delithiated / "POSCAR").get_chemical_symbols()[0] == "Fe"


def test_potcar_folder_from_environment(labeler, load_system, fake_potcars, tmp_path, monkeypatch):
    monkeypatch.setenv(POTCAR_DIR_ENV, str(fake_potcars))
    system = load_system("lfpo")
    labeler.write_inputs(lfpo_cell(system, 1.0), tmp_path, system)
    assert (tmp_path / "POTCAR").read_text().startswith("dummy PAW_PBE Li_sv")


def test_potcar_problems_are_one_line_errors(labeler, load_system, fake_potcars, tmp_path):
    system = load_system("lfpo")
    frame = lfpo_cell(system, 1.0)
    with pytest.raises(UserError, match=f"machine.programs.vasp.data_dir or {POTCAR_DIR_ENV}") as unset:
        labeler.write_inputs(frame, tmp_path, system)
    labeler.profile.data_dir = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match="does not exist") as absent_dir:
        labeler.write_inputs(frame, tmp_path, system)
    (fake_potcars / "Fe_pv" / "POTCAR").unlink()
    labeler.profile.data_dir = str(fake_potcars)
    with pytest.raises(UserError, match=r"no POTCAR for Fe at .*Fe_pv/POTCAR") as absent_element:
        labeler.write_inputs(frame, tmp_path, system)
    for error in (unset, absent_dir, absent_element):
        assert "\n" not in str(error.value)
    assert not any(tmp_path.glob("INCAR"))  # nothing written before the POTCAR was found


def test_kpoint_mesh_from_spacing():
    assert kpoint_mesh(np.diag([10.3244, 6.0064, 4.6901]), 0.3) == [3, 4, 5]
    assert kpoint_mesh(np.diag([10.3244, 12.0128, 9.3802]), 0.3) == [3, 2, 3]  # the 1x2x2 cell
    assert kpoint_mesh(np.diag([50.0, 50.0, 50.0]), 0.3) == [1, 1, 1]


def test_poscar_order_maps_back_to_frame_order(labeler, load_system, tmp_path):
    system = load_system("lfpo")
    frame = lfpo_cell(system, 0.75)
    shuffled = frame[np.random.default_rng(0).permutation(len(frame))]
    labeler.write_inputs_without_potcar(shuffled, tmp_path, system)
    poscar = ase.io.read(tmp_path / "POSCAR")
    symbols = shuffled.get_chemical_symbols()
    order = species_order(symbols, poscar_species(symbols, system.type_map))
    assert poscar.get_chemical_symbols() == [s for s in system.type_map for _ in range(shuffled.symbols.count(s))]
    np.testing.assert_allclose(to_frame_order(poscar.positions, order), shuffled.positions, atol=1e-10)


def test_config_and_settings(labeler, load_system):
    assert labeler.name == "vasp" and labeler.cores_per_task == 16
    assert labeler.core_seconds_per_atom == 600.0
    assert labeler.expected_moments(load_system("lfpo")) == {2: 3.7, 3: 4.3}  # the system's GGA+U values
    command = labeler.command()
    assert "-m lfpo_al.label.vasp" in command and shlex.quote("mpirun -np 16 vasp_std") in command
    with pytest.raises(UserError, match="kpoint_spacing"):
        VaspLabeler(kpoint_spacing=0)


def test_template_with_unknown_placeholder_is_refused(tmp_path):
    template = tmp_path / "INCAR"
    template.write_text("ENCUT = ${ENCUT}\n")
    with pytest.raises(UserError, match=r"unknown placeholders \['ENCUT'\]"):
        VaspLabeler(incar_template=str(template))


@pytest.fixture
def ni18_task(labeler, load_system, tmp_path):
    """A task folder for the Ni18 cluster of OUTCAR.ni18 (system lnpo knows Ni), inputs written by the labeler."""
    frame = ase.io.read(OUTCAR_NI18, format="vasp-out").copy()  # geometry only
    frame.set_initial_magnetic_moments(np.ones(len(frame)))
    task = tmp_path / "task.000000"
    task.mkdir()
    labeler.write_inputs_without_potcar(frame, task, load_system("lnpo"))
    return task, frame


def run_task(task, monkeypatch, vasp_command):
    monkeypatch.chdir(task)
    return main(["--vasp-command", vasp_command])


def copy_outcar(source):
    return f"cp {shlex.quote(str(source))} OUTCAR"


def test_reads_energy_forces_stress_moments(ni18_task, labeler, monkeypatch):
    task, frame = ni18_task
    assert run_task(task, monkeypatch, copy_outcar(OUTCAR_NI18)) == 0
    labeled = labeler.read_outputs(task)
    assert label_problem(frame, labeled) is None
    assert labeled.get_potential_energy() == pytest.approx(NI18_ENERGY, abs=1e-8)
    forces = labeled.get_forces()
    assert forces.shape == (18, 3)
    np.testing.assert_allclose(forces[0], NI18_FORCE_0, atol=1e-6)
    # in kB -4.29 -4.59 -4.50: negative pressure, the box pulls inwards -> ASE stress positive (tension)
    stress = labeled.get_stress()
    assert stress.shape == (6,) and np.all(stress[:3] > 0)
    np.testing.assert_allclose(stress[:3], np.array([4.29429, 4.58894, 4.50342]) * 0.1 / 160.21766, rtol=1e-4)
    np.testing.assert_allclose(stress, ase.io.read(OUTCAR_NI18, format="vasp-out").get_stress(), atol=1e-8)
    magmoms = labeled.arrays["magmoms"]
    assert magmoms.shape == (18,) and np.all(magmoms > 0)
    assert (magmoms[0], magmoms[5], magmoms[15]) == (0.832, 0.898, 0.874)
    assert labeled.info["teacher"] == "vasp" and labeled.arrays["initial_magmoms"].shape == (18,)


def test_labels_follow_a_rotated_frame(labeler, load_system, tmp_path, monkeypatch):
    """dpdata turns cells lower-triangular; the labels must come back in the frame's own axes."""
    reference = ase.io.read(OUTCAR_NI18, format="vasp-out")  # ASE's own reading, in the OUTCAR's axes
    frame = reference.copy()
    frame.rotate(30, "z", rotate_cell=True)
    frame.rotate(20, "x", rotate_cell=True)
    rotation = np.linalg.solve(reference.cell.array, frame.cell.array)  # rows: v_frame = v_ref @ rotation
    frame.set_initial_magnetic_moments(np.ones(len(frame)))
    labeler.write_inputs_without_potcar(frame, tmp_path, load_system("lnpo"))
    assert run_task(tmp_path, monkeypatch, copy_outcar(OUTCAR_NI18)) == 0
    labeled = labeler.read_outputs(tmp_path)
    np.testing.assert_allclose(labeled.get_forces(), reference.get_forces() @ rotation, atol=1e-6)
    expected = rotation.T @ reference.get_stress(voigt=False) @ rotation
    np.testing.assert_allclose(labeled.get_stress(voigt=False), expected, atol=1e-8)


def test_outcar_of_another_geometry_is_failed(labeler, load_system, tmp_path, monkeypatch):
    frame = ase.io.read(OUTCAR_NI18, format="vasp-out").copy()
    frame.positions[3] += [0.1, 0.0, 0.0]  # not the structure VASP computed
    frame.set_initial_magnetic_moments(np.ones(len(frame)))
    labeler.write_inputs_without_potcar(frame, tmp_path, load_system("lnpo"))
    assert run_task(tmp_path, monkeypatch, copy_outcar(OUTCAR_NI18)) == 0
    assert "positions differ" in read_failure(tmp_path)


def test_unconverged_scf_is_failed(ni18_task, monkeypatch):
    task, _ = ni18_task
    # the same run with NELM = 63: its SCF used all 63 steps, which VASP does not tell from convergence
    text = OUTCAR_NI18.read_text()
    assert "NELM   =    120;" in text
    (task.parent / "OUTCAR.nelm63").write_text(text.replace("NELM   =    120;", "NELM   =     63;"))
    assert run_task(task, monkeypatch, copy_outcar(task.parent / "OUTCAR.nelm63")) == 0
    assert "unconverged SCF" in read_failure(task)
    assert not (task / LABELED_FILE).exists()


def test_outcar_without_moment_table_is_failed(ni18_task, monkeypatch):
    task, _ = ni18_task
    text = OUTCAR_NI18.read_text()
    stripped = text[:text.index("\n total charge     \n")] + text[text.rindex("\n total amount of memory"):]
    assert "magnetization (x)" not in stripped
    (task.parent / "OUTCAR.lorbit0").write_text(stripped)
    assert run_task(task, monkeypatch, copy_outcar(task.parent / "OUTCAR.lorbit0")) == 0
    assert "magnetization (x)" in read_failure(task)


def test_missing_or_truncated_outcar(ni18_task, monkeypatch):
    task, _ = ni18_task
    assert run_task(task, monkeypatch, "exit 3") == 3  # VASP never ran: retried by the driver, not decided
    assert not (task / FAILED_FILE).exists() and not (task / LABELED_FILE).exists()
    truncated = task.parent / "OUTCAR.killed"
    truncated.write_text("\n".join(OUTCAR_NI18.read_text().splitlines()[:2000]))  # stopped mid-SCF
    assert run_task(task, monkeypatch, copy_outcar(truncated) + "; exit 137") == 137
    assert not (task / FAILED_FILE).exists()
    assert run_task(task, monkeypatch, copy_outcar(truncated)) == 0
    assert "no finished ionic step" in read_failure(task)
    (task / FAILED_FILE).unlink()
    assert run_task(task, monkeypatch, "true") == 0
    assert "missing OUTCAR" in read_failure(task)


def test_decided_task_returns_at_once(ni18_task, monkeypatch):
    task, _ = ni18_task
    (task / FAILED_FILE).write_text('{"reason": "decided before"}\n')
    assert run_task(task, monkeypatch, "touch vasp_ran") == 0
    assert not (task / "vasp_ran").exists()


def test_driver_wrapped_command_labels_the_task(ni18_task, labeler):
    """The command exactly as the driver dispatches it (bash wrapper, quoting, outputs/ folder)."""
    task, frame = ni18_task
    labeler.profile.command = copy_outcar(OUTCAR_NI18)
    subprocess.run(task_command(labeler, 1), shell=True, cwd=task, check=True, timeout=120)
    assert (task / EXIT_CODE_FILE).read_text().strip() == "0"
    labeled = ase.io.read(task / OUTPUTS_DIR / LABELED_FILE)
    assert len(labeled) == len(frame) and (task / FRAME_FILE).is_file()
