"""Frozen deepmd models (TorchScript ``model.pth``) run under TorchScript's simple executor.

The default (profiling) executor re-optimises each loaded model during its first three calls
and then evaluates slower than the simple executor does from its second call on, with forces equal to
1e-6 eV/A (measured in docs/costs.md, *TorchScript executor*).
Every process that evaluates frozen models calls this first; the setting is per process.
"""

from __future__ import annotations


def use_simple_executor() -> None:
    import torch

    setter = getattr(torch._C, "_jit_set_profiling_executor", None)  # absent in a torch without it: keep the default
    if setter is not None:
        setter(False)
