"""A key of a step's result is spelled, as a string, in one module at most: everywhere else it is an
attribute of the result's dataclass, so a renamed or missing key fails at import or in a type checker
rather than as a ``None`` read from a dict.

Only compound names (with an underscore) are held to it: single words such as ``source`` or
``calibration`` are also file names, plot names and config values elsewhere.
"""

import ast
from dataclasses import fields
from pathlib import Path

from lfpo_al.explore.md_task import MDResult
from lfpo_al.explore.result import ExplorationResult, TrajectoryResult
from lfpo_al.loop import outcomes
from lfpo_al.selection.calibration import Calibration
from lfpo_al.selection.report import SelectionReport, TrustLevels
from lfpo_al.validate.dynamics import DynamicsSummary
from lfpo_al.validate.geometry import GeometryComparison
from lfpo_al.validate.metrics import ErrorTable

PACKAGE = Path(__file__).resolve().parents[1] / "lfpo_al"
RESULTS = [MDResult, TrajectoryResult, ExplorationResult, SelectionReport, TrustLevels, Calibration, DynamicsSummary,
           ErrorTable, GeometryComparison, outcomes.TrainOutcome, outcomes.ExploreOutcome, outcomes.SelectOutcome,
           outcomes.LabelOutcome, outcomes.ValidateOutcome, outcomes.FinalOutcome, outcomes.LabeledSet,
           outcomes.TestSet, outcomes.TeacherDynamics]


def modules_spelling(keys: set[str], package: Path) -> dict[str, set[str]]:
    """Per key, the modules of ``package`` holding it as a string literal (docstrings left out)."""
    found: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in keys and id(node) not in docstrings:
                found.setdefault(node.value, set()).add(str(path.relative_to(package.parent)))
    return found


def result_keys() -> set[str]:
    return {f.name for cls in RESULTS for f in fields(cls) if "_" in f.name}


# other commands' own records that use the same word, each spelling it once: the analysis's rows of a
# trajectory and the distillation report's held-out errors both count frames as ``n_frames``
OTHER_RECORDS = {"n_frames": {"lfpo_al/analysis/pipeline.py", "lfpo_al/distill/step.py"}}


def test_no_result_key_is_spelled_in_two_modules():
    spelled = modules_spelling(result_keys(), PACKAGE)
    spelled = {key: modules - OTHER_RECORDS.get(key, set()) for key, modules in spelled.items()}
    twice = {key: sorted(modules) for key, modules in spelled.items() if len(modules) > 1}
    assert not twice, f"result keys spelled as strings in more than one module: {twice}"


def test_the_scan_finds_a_key_spelled_twice(tmp_path):
    """The control: a key read back by string in a second module is found."""
    for name, text in (("writer.py", 'row = {"stop_step": 3}\n'), ("reader.py", 'def f(row):\n    return row["stop_step"]\n'),
                       ("documented.py", '"""stop_step in a docstring does not count."""\n')):
        (tmp_path / name).write_text(text)
    assert modules_spelling({"stop_step"}, tmp_path) == {"stop_step": {f"{tmp_path.name}/writer.py", f"{tmp_path.name}/reader.py"}}
