"""Labeling: a Labeler interface, one shared task driver (dpdispatcher), DFT and surrogate backends.

    from lfpo_al.label import label_frames
    report = label_frames(frames, labeler, machine, work_dir, system)

Names load on first use: a task command (``python -m lfpo_al.label.chgnet``) imports this package
and should not pay for the driver's imports (dpdispatcher) in every task it runs.
"""

from importlib import import_module

_EXPORTS = {"Labeler": "lfpo_al.label.base", "LabelReport": "lfpo_al.label.driver", "label_frames": "lfpo_al.label.driver"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
