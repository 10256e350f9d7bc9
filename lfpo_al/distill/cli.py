"""``python -m lfpo_al distill``: a run's final model distilled into a gated, compressed student.

The student lands in ``runs/<run_name>/distill/student.pth`` with ``report.json`` beside it; ``analyze``
drives its production MD with the student when the report says it passed (``analysis.student``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from lfpo_al import atomic
from lfpo_al.config import instantiate_group, make_settings, to_plain
from lfpo_al.distill.gate import gate_checks
from lfpo_al.distill.settings import DistillSettings
from lfpo_al.distill.step import HELDOUT_FRAMES, eval_ms, heldout_errors, label_trajectories, run_dynamics, teacher_md, train_student
from lfpo_al.errors import UserError
from lfpo_al.layout import REPORT_PASSED, DistillLayout, RunLayout
from lfpo_al.loop.data import deepmd_systems
from lfpo_al.loop.state import RunState
from lfpo_al.structures.builder import BuildSpec
from lfpo_al.train.ensemble import count_frames
from lfpo_al.validate.settings import DynamicsSettings
from lfpo_al.validate.metrics import ENERGY_RMSE, FORCE_RMSE

log = logging.getLogger(__name__)


def teacher_model(settings: DistillSettings, run: RunLayout) -> Path:
    if settings.teacher:
        path = Path(settings.teacher).expanduser()
        if not path.is_file():
            raise UserError(f"distill.teacher={settings.teacher} does not exist; give a frozen deepmd model (.pth)")
        return path.resolve()
    models = run.final_models()
    if not models:
        raise UserError(f"no final models in {run.final}: finish the run with `python -m lfpo_al train run_name="
                        f"{run.run_dir.name}` or pass distill.teacher=PATH")
    return models[0].resolve()


def distill_command(cfg: DictConfig) -> int:
    settings: DistillSettings = instantiate_group(cfg, "distill")
    settings.check_runnable()
    system = instantiate_group(cfg, "system")
    explore = instantiate_group(cfg, "explore")
    machine = instantiate_group(cfg, "machine")
    build_defaults = make_settings(BuildSpec, to_plain(cfg.build), "build") if "build" in cfg else None
    dynamics = DynamicsSettings(structures=settings.dynamics_structures, temperatures=settings.dynamics_temperatures,
                                seeds=settings.dynamics_seeds, n_steps=settings.dynamics_steps,
                                record_every=settings.dynamics_record_every, friction_per_fs=explore.friction_per_fs,
                                smoothing_fs=settings.smoothing_fs)
    run = RunLayout.of(cfg.runs_dir, cfg.run_name)
    teacher = teacher_model(settings, run)
    layout = run.distill_layout
    from lfpo_al.validate.reference import dynamics_cases

    cases = dynamics_cases(dynamics, system, build_defaults, layout.dynamics)  # checked before any work
    with RunState(run.run_dir).lock():
        report = distill(settings, system, explore, build_defaults, machine, teacher, layout, cases)
    print_report(report, layout)
    return 0


def distill(settings, system, explore, build_defaults, machine, teacher: Path, layout: DistillLayout, cases) -> dict:
    from lfpo_al.validate.plots import dynamics_plot
    from lfpo_al.validate.step import compare_dynamics_cases

    type_map = list(system.type_map)
    if not layout.train_data.is_dir():
        trajectories = teacher_md(settings, explore, system, build_defaults, teacher, layout, machine.for_step("explore"))
        n_frames = label_trajectories(teacher, trajectories, type_map, layout.train_data)
        log.info("distill: %d frames labeled by the teacher model in %s", n_frames, layout.train_data)
    student = train_student(settings, type_map, layout, machine.for_step("train"))
    run_dynamics(cases, teacher, student, layout.dynamics)
    models = {"student": layout.student_dir / "model.pth"}
    if settings.compress:
        models["compressed"] = student
    errors = heldout_errors(teacher, models, cases, type_map, layout.heldout_data)
    per_case, compared = compare_dynamics_cases(cases, system, settings.smoothing_fs, layout.dynamics,
                                                settings.gate.targets())
    dynamics_plot(compared, system.valence.oxidised, layout.root / "dynamics.png")
    used = "compressed" if settings.compress else "student"
    checks = gate_checks(errors, per_case, settings.gate, used)
    start = cases[0].start
    speed = {name: eval_ms(path, start) for name, path in {"teacher": teacher, **models}.items()}
    report = {
        "teacher": str(teacher), "student": str(layout.student), "used": used,
        "n_train_frames": count_frames(deepmd_systems(layout.train_data)),
        "heldout": errors, "dynamics": per_case, "eval_ms_per_frame": speed,
        "speedup_vs_teacher": {k: round(speed["teacher"] / v, 2) for k, v in speed.items() if k != "teacher"},
        "eval_atoms": len(start), "checks": checks, REPORT_PASSED: all(c["passed"] for c in checks),
    }
    atomic.copy_file(student, layout.student)
    atomic.write_text(layout.report, json.dumps(report, indent=2, default=float))
    return report


def print_report(report: dict, layout: DistillLayout) -> None:
    held = report["heldout"][report["used"]]
    print(f"\nstudent {report['student']} ({report['used']}): held-out vs teacher model, "
          f"F {held[FORCE_RMSE]:.4f} eV/A, E {held[ENERGY_RMSE]:.2f} meV/atom "
          f"({report['heldout'][HELDOUT_FRAMES]} frames); {report['eval_atoms']}-atom evaluation "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in report["eval_ms_per_frame"].items()))
    for c in report["checks"]:
        print(f"  {'pass' if c['passed'] else 'FAIL'}  {c['check']}: {c['value']} (limit {c['limit']})"
              + (f" [{c['note']}]" if c.get("note") else ""))
    verdict = ("passed: `analyze` drives production MD with it" if report[REPORT_PASSED] else
               "FAILED: `analyze` keeps the fine-tuned model (see the checks above)")
    print(f"gate {verdict}; report {layout.report}, figure {layout.root / 'dynamics.png'}")
