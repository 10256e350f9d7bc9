"""Label faults through the real driver and dispatch: each bad answer is quarantined with its reason, nothing
bad reaches the dataset, and the step stops the run when failures pass label.max_failed_fraction."""

import dataclasses
import json
import shlex
import sys
from pathlib import Path

import dpdata
import pytest

from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.label.chgnet import ChgnetLabeler
from lfpo_al.label.driver import TooManyFailures, label_frames
from lfpo_al.structures import BuildSpec, build_structure

FAULTS = {  # task -> (what the teacher does, the reason the quarantine must give)
    "task.000000": ("good", None),
    "task.000001": ("crash", "no result after 1 attempt(s)"),
    "task.000002": ("unconverged", "SCF not converged after 300 iterations"),
    "task.000003": ("truncated", "unreadable output"),
    "task.000004": ("nan_forces", "non-finite forces in the output"),
    "task.000005": ("wrong_count", "output has 25 atoms, the frame 26"),
    "task.000006": ("wrong_species", "output species differ from the frame's"),
    "task.000007": ("good", None),
}


@dataclasses.dataclass
class FaultyLabeler(ChgnetLabeler):
    """CHGNet's labeler with its command swapped for a teacher that answers with a fault per task."""

    modes_file: str = ""
    supports_batch = False

    def command(self):
        script = Path(__file__).with_name("faulty_teacher.py")
        return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {shlex.quote(self.modes_file)}"


def frames(system):
    return [build_structure(system, BuildSpec(supercell=[1, 1, 1], x=0.5, seed=i)) for i in range(len(FAULTS))]


@pytest.fixture(scope="module")
def parts():
    cfg = compose_config([])
    return instantiate_group(cfg, "system"), instantiate_group(cfg, "machine")


def test_every_fault_is_quarantined_with_its_reason_and_kept_out_of_the_data(parts, tmp_path):
    system, machine = parts
    modes = tmp_path / "modes.json"
    modes.write_text(json.dumps({task: mode for task, (mode, _) in FAULTS.items()}))
    labeler = FaultyLabeler(modes_file=str(modes), batch_size=1, max_attempts=1, max_failed_fraction=0.8)
    report = label_frames(frames(system), labeler, machine, tmp_path / "w", system, progress=False)
    quarantined = {item["task"]: item["reason"] for item in report.failed}
    assert set(quarantined) == {task for task, (_, reason) in FAULTS.items() if reason}
    for task, reason in quarantined.items():
        assert FAULTS[task][1] in reason, (task, reason)
    assert report.n_labeled == 2 and report.data_index == {"Li2Fe4P4O16": ["task.000000", "task.000007"]}
    data = dpdata.LabeledSystem(str(tmp_path / "w" / "data" / "Li2Fe4P4O16"), fmt="deepmd/npy")
    assert data.get_nframes() == 2  # nothing bad reached the dataset


def test_failures_above_the_fraction_stop_the_step(parts, tmp_path):
    system, machine = parts
    modes = tmp_path / "modes.json"
    modes.write_text(json.dumps({task: mode for task, (mode, _) in FAULTS.items()}))
    labeler = FaultyLabeler(modes_file=str(modes), batch_size=1, max_attempts=1)  # default 0.5; 6 of 8 fail
    with pytest.raises(TooManyFailures, match=r"6 of 8 label tasks .* failed \(75% > label.max_failed_fraction=0.5\)"):
        label_frames(frames(system), labeler, machine, tmp_path / "w", system, progress=False)
    assert json.loads((tmp_path / "w" / "report.json").read_text())["n_labeled"] == 2  # the report is kept
