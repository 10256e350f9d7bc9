"""The dry run's text: the plan of ``lfpo_al.loop.dry_run`` as tables of tasks, core-hours, wall time and disk."""

from __future__ import annotations

from omegaconf import DictConfig

from lfpo_al.loop.dry_run import Plan, Stage, make_plan


def hours(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    h = seconds / 3600
    return f"{h:.0f}" if h >= 100 else f"{h:.3g}" if h >= 0.001 else "<0.001"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.2g} {unit}" if seconds < 10 * scale else f"{seconds / scale:.0f} {unit}"
    return f"{seconds:.0f} s"


def size_text(n_bytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  " + "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in [header, *rows]]


def cost_text(stage: Stage) -> str:
    bound = "<=" if stage.cost_is_bound and stage.cost_s else ""
    return f"{bound}{hours(stage.cost_s)} {stage.cost_unit}"


def stage_rows(stages: list[Stage]) -> list[list[str]]:
    return [[s.name, ("<=" if s.at_most else "") + str(s.tasks), str(s.jobs), cost_text(s),
             ("<=" if s.cost_is_bound and s.wall_s else "") + duration(s.wall_s),
             size_text(s.disk_bytes) if s.disk_bytes else "-", s.what] for s in stages]


def plan_text(plan: Plan) -> str:
    train, md, selected = plan.iteration[:3]
    n_labels = sum(s.tasks for s in plan.setup if s.name.startswith("label")) + selected.tasks
    lines = [
        f"Dry run of train '{plan.run_name}': nothing is run or written.",
        f"Run folder: {plan.run_dir} ({plan.run_state})",
        *([f"Where: {plan.where[0]}"] if len(plan.where) == 1 else ["Where:", *(f"  {w}" for w in plan.where)]),
        f"Costs: {plan.cost_model}",
        "",
        f"Iteration 0 submits {train.tasks} training members x {plan.train_steps} steps, "
        f"{md.tasks} MD tasks x {plan.md_steps} steps, {n_labels} label tasks "
        f"({plan.setup[0].tasks} initial + {plan.setup[1].tasks} test + <={selected.tasks} selected).",
        "",
        f"MD tasks (explore.structures x their temperatures = {md.tasks}):",
        *table(["structure", "atoms", "temperatures (K)", "steps", "frames recorded"],
               [[name, str(n), ", ".join(f"{t:g}" for t in temps), str(plan.md_steps),
                 str(plan.frames_per_task)] for (name, n), temps in zip(plan.md_structures, plan.temperatures)],
               right={1, 3, 4}),
        "",
    ]
    header = ["stage", "tasks", "jobs", "cost", "wall", "disk", "what"]
    lines += ["Setup (once, before iteration 0):", *table(header, stage_rows(plan.setup), right={1, 2, 3, 4, 5}), ""]
    lines += ["Each iteration (selected labels capped by what is left of loop.label_budget):",
              *table(header, stage_rows(plan.iteration), right={1, 2, 3, 4, 5}), ""]
    totals, total_bytes = plan.whole_run()
    bound = {s.cost_unit for s in plan.setup + plan.iteration if s.cost_is_bound}
    cost = ", ".join(f"{'<=' if unit in bound else ''}{hours(seconds)} {unit}" for unit, seconds in totals.items())
    lines.append(f"Whole run, at most (loop.max_iters={plan.max_iters}, <= {plan.run_label_cap} selected labels): "
                 f"{cost}, {size_text(total_bytes)}")
    lines += plan.notes
    return "\n".join(lines)


def print_plan(cfg: DictConfig) -> int:
    print(plan_text(make_plan(cfg)))
    return 0
