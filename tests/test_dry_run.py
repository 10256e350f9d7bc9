"""``train --dry-run``: the plan of one iteration, counted by hand, and no trace on disk.

Hand-computed config (HAND), its structures pinned here: 4 explore structures (1x2x1 x = 0.5 random: 56 - 4 Li = 52
atoms; 1x1x2 planes_c: 52; 1x2x1 x = 0.25: 56 - 6 = 50; 1x1x2 interface_c: 52) x 2 temperatures
= 8 MD tasks of 40 steps, recording the start and every 10th step = 5 frames; 3 members x 50 steps;
labels: (4 explore + 2 end-member structures) x 2 = 12 initial, 3 test structures x 2 = 6 test
(x = 1 1x1x1: 28 atoms, x = 0.5 1x2x1: 52, x = 0 1x1x1: 24), min(max_selected 7, budget 5) = 5 selected.
A teacher cost of 3600 core-s per atom makes the test set cost 2 x (28 + 52 + 24) = 208 core-h
plus start-up.
"""

import json

import pytest

from conftest import run_cli
from lfpo_al.config import compose_config, instantiate_group
from lfpo_al.errors import UserError
from lfpo_al.loop.dry_run import (
    LABEL_TASK_STARTUP_S, LARGE_COST, STARTER_COST, TRAIN_TASK_STARTUP_S, Stage, batch_atoms, make_plan,
)
from lfpo_al.loop.plan_text import plan_text

HAND = [
    "explore.structures=[{x: 0.5, li_order: random, seed: 0, supercell: [1, 2, 1]},"
    "{x: 0.5, li_order: planes_c, supercell: [1, 1, 2]}, {x: 0.25, li_order: random, seed: 1, supercell: [1, 2, 1]},"
    "{x: 0.5, li_order: interface_c, supercell: [1, 1, 2]}]",
    "loop.init_structures=[{x: 1.0, supercell: [1, 1, 1]}, {x: 0.0, supercell: [1, 1, 1]}]",
    "explore.temperatures=[300,600]", "explore.n_steps=40", "explore.record_every=10",
    "model.n_members=3", "model.numb_steps=50", "model.member0_numb_steps=null",
    "loop.init_frames_per_structure=2", "validate.frames_per_structure=2",
    "selection.max_selected=7", "loop.label_budget=5", "label.core_seconds_per_atom=3600",
    "validate.dynamics.structures=[]",
]


def test_counts_and_costs_match_hand_computed_config(tmp_path):
    plan = make_plan(compose_config(HAND + [f"runs_dir={tmp_path}"]))
    assert [n for _, n in plan.md_structures] == [52, 52, 50, 52]
    assert plan.stage("MD tasks").tasks == 8 and plan.frames_per_task == 5
    assert plan.stage("train members").tasks == 3
    assert [plan.stage(name).tasks for name in ("label init data", "label test set", "label selected")] == [12, 6, 5]
    # the CHGNet labeler labels a round in one process: one start-up for the 6 tasks
    assert plan.stage("label test set").core_s == pytest.approx(208 * 3600 + LABEL_TASK_STARTUP_S)
    # auto batches (>= 32 atoms): 52, 52, 50, 52 and 2 x 28, 2 x 24 -> mean 51.7 -> 52 atoms per step
    member_s = 50 * 52 * STARTER_COST.train_core_s_per_batch_atom + TRAIN_TASK_STARTUP_S
    assert plan.stage("train members").core_s == pytest.approx(3 * member_s)
    text = plan_text(plan)
    assert "3 training members x 50 steps, 8 MD tasks x 40 steps, 23 label tasks" in text
    assert " 208 " in text.split("label test set")[1].splitlines()[0]
    assert not any(tmp_path.iterdir())


def test_cli_dry_run_prints_the_plan_and_creates_no_run_folder(tmp_path):
    runs = tmp_path / "runs"
    out = run_cli("train", "--dry-run", f"runs_dir={runs}", *HAND)
    assert out.returncode == 0, out.stderr
    for expected in ("3 training members", "8 MD tasks", "23 label tasks", "core-h", "label selected", "Shell"):
        assert expected in out.stdout
    assert not runs.exists()


def test_the_plan_command_does_the_same_and_unknown_teacher_cost_says_so(tmp_path):
    runs = tmp_path / "runs"
    out = run_cli("plan", f"runs_dir={runs}", *HAND[:-1], "label.core_seconds_per_atom=null")
    assert out.returncode == 0, out.stderr
    assert "8 MD tasks" in out.stdout and "23 label tasks" in out.stdout
    label_rows = [line for line in out.stdout.splitlines() if line.strip().startswith("label ")]
    assert len(label_rows) == 3 and all("unknown" in line for line in label_rows)
    assert "label.core_seconds_per_atom" in out.stdout  # the hint names the key to set
    assert not runs.exists()


def test_production_experiment_plans_with_the_large_model_cost(tmp_path):
    plan = make_plan(compose_config(["experiment=production", "label=chgnet", f"runs_dir={tmp_path}"]))
    assert plan.stage("MD tasks").tasks == 8 * 3
    assert plan.stage("label init data").tasks == (8 + 2) * 3
    assert plan.stage("label selected").tasks == 100 and plan.run_label_cap == min(3000, 20 * 100)
    assert LARGE_COST.name in plan.cost_model
    assert plan.whole_run()[0]["core-h"] > 20 * plan.stage("MD tasks").core_s


def test_existing_run_folder_is_read_not_touched(tmp_path):
    run_dir = tmp_path / "demo"
    run_dir.mkdir()
    (run_dir / "record.jsonl").write_text(json.dumps({"iter": -1, "step": "init_data", "status": "done"}) + "\n")
    before = sorted(p.name for p in run_dir.iterdir())
    text = plan_text(make_plan(compose_config([f"runs_dir={tmp_path}", "run_name=demo"])))
    assert "1 recorded step, the last iter -1 init_data" in text
    assert sorted(p.name for p in run_dir.iterdir()) == before  # no lock, no config.yaml


@pytest.mark.parametrize("batch_size, natoms, expected", [
    ("auto", 28, 56), ("auto", 52, 52), ("auto:100", 28, 112), (2, 28, 56), ("max:60", 28, 56), ("max:10", 28, 28),
])
def test_batch_atoms_follows_deepmd_rules(batch_size, natoms, expected):
    assert batch_atoms(batch_size, natoms) == expected


def test_wall_time_spreads_tasks_over_parallel_jobs():
    assert Stage("x", tasks=4, what="", core_s=400.0, disk_bytes=0, jobs=2).wall_s == pytest.approx(200.0)
    assert Stage("x", tasks=3, what="", core_s=300.0, disk_bytes=0, jobs=2).wall_s == pytest.approx(200.0)
    assert Stage("x", tasks=2, what="", core_s=None, disk_bytes=0).wall_s is None
    # member 0 trains 300 s, the three others 40 s each: the long one sets the wall, not the mean
    assert Stage("x", tasks=4, what="", core_s=420.0, disk_bytes=0, jobs=2, longest_task_s=300.0).wall_s == pytest.approx(300.0)


def test_negative_teacher_cost_is_rejected():
    with pytest.raises(UserError, match="label.core_seconds_per_atom"):
        instantiate_group(compose_config(["label.core_seconds_per_atom=-1"]), "label")


def test_member_zero_steps_that_grow_with_the_data_are_planned_at_their_mean(tmp_path):
    """12 initial frames, then 5 labels (the budget) after iteration 0: member 0 at 10 steps per frame trains
    120, 170, 170 steps over 3 iterations; the deviation members 50 each."""
    plan = make_plan(compose_config(HAND + ["model.member0_steps_per_frame=10", "loop.max_iters=3", f"runs_dir={tmp_path}"]))
    steps = (120 + 170 + 170) / 3 + 2 * 50
    assert plan.stage("train members").core_s == pytest.approx(
        steps * 52 * STARTER_COST.train_core_s_per_batch_atom + 3 * TRAIN_TASK_STARTUP_S)
    assert "member 0: 120, up to 170 on the last iteration's 17 frames" in plan_text(plan)


GPU_CPU = ["machine=slurm_gpu", "machine.resources.queue_name=cpu_part", "machine.train.resources.queue_name=gpu_part",
           "machine.explore.resources.queue_name=gpu_part"]


def test_each_step_is_priced_on_its_own_machine(tmp_path):
    """slurm_gpu: training and MD in GPU-hours on the GPU partition, labels in core-hours on the CPU one."""
    cpu = make_plan(compose_config([f"runs_dir={tmp_path}", "machine=slurm", *HAND]))
    unknown = make_plan(compose_config([f"runs_dir={tmp_path}", *GPU_CPU, *HAND]))
    measured = make_plan(compose_config([f"runs_dir={tmp_path}", *GPU_CPU, *HAND, "machine.train.gpu_speedup=20",
                                         "machine.explore.gpu_speedup=4"]))
    for name in ("train members", "MD tasks"):
        on_cpu, bound = cpu.stage(name), unknown.stage(name)
        assert (on_cpu.cost_unit, bound.cost_unit) == ("core-h", "GPU-h")
        assert bound.cost_is_bound and bound.cost_s == pytest.approx(on_cpu.core_s)  # one GPU per job, one core's time
    assert measured.stage("train members").cost_s == pytest.approx(cpu.stage("train members").core_s / 20)
    assert measured.stage("MD tasks").cost_s == pytest.approx(cpu.stage("MD tasks").core_s / 4)
    assert measured.stage("MD tasks").wall_s == pytest.approx(cpu.stage("MD tasks").wall_s / 4)
    for name in ("label init data", "label test set", "label selected"):
        assert measured.stage(name).cost_unit == "core-h" and measured.stage(name).cost_s == cpu.stage(name).core_s
    totals = measured.whole_run()[0]
    assert set(totals) == {"core-h", "GPU-h"}
    gpu_stages = [measured.stage("train members"), measured.stage("MD tasks")]
    assert totals["GPU-h"] == pytest.approx(measured.max_iters * sum(s.cost_s for s in gpu_stages))

    text = plan_text(unknown)
    assert "train: Slurm via LocalContext, queue gpu_part" in text and "label: Slurm via LocalContext, queue cpu_part" in text
    train_row = next(line for line in text.splitlines() if line.strip().startswith("train members"))
    label_row = next(line for line in text.splitlines() if line.strip().startswith("label test set"))
    assert "<=" in train_row and "GPU-h" in train_row and "core-h" in label_row
    assert "gpu_speedup" in text  # the note says how to price the GPU time


def test_step_machines_merge_key_by_key_and_refuse_unknown_keys():
    machine = instantiate_group(compose_config(GPU_CPU), "machine")
    train, label = machine.for_step("train"), machine.for_step("label")
    assert train.resources["queue_name"] == "gpu_part" and train.resources["gpu_per_node"] == 1
    assert train.resources["module_list"] == machine.resources["module_list"]  # not restated: the shared value
    assert train.envs == machine.envs and train.machine == machine.machine
    assert label.resources == machine.resources and label.gpus_per_job == 0 and train.gpus_per_job == 1
    shared = instantiate_group(compose_config([]), "machine")
    assert all(shared.for_step(step).resources == shared.resources for step in ("train", "explore", "label"))
    for override, message in (
        ("+machine.train.partition=gpu", r"machine.train has unknown key\(s\) partition"),
        ("machine.train=5", "machine.train must be a mapping"),
        ("+machine.label.resources.queue_name=7", "machine.label: machine.resources is not a valid dpdispatcher"),
        ("machine.gpu_speedup=0", "gpu_speedup=0 must be a positive number"),
        ("machine.gpu_speedup=nan", "gpu_speedup=nan must be a positive number"),
    ):
        with pytest.raises(UserError, match=message):
            instantiate_group(compose_config([override]), "machine")
