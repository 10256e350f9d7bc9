"""Frozen deepmd models (TorchScript ``model.pth``) run under TorchScript's simple executor.

The default (profiling) executor re-optimises each loaded model during its first three calls
(0.8-1.3 s each on one core) and then evaluates the demo's 52-atom cell in 70 ms; the simple executor
takes 39 ms from the second call on, forces equal to 1e-6 eV/A (docs/costs.md, *TorchScript executor*).
Every process that evaluates frozen models calls this first; the setting is per process.
"""

from __future__ import annotations


def use_simple_executor() -> None:
    import torch

    setter = getattr(torch._C, "_jit_set_profiling_executor", None)  # absent in a torch without it: keep the default
    if setter is not None:
        setter(False)
