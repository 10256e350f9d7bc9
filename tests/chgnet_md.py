"""CHGNet + ASE Langevin MD of the relaxed Li0.5FePO4 reference cell (1x2x2, 104 atoms, 600 K, 2 fs).

The analysis test reads a stored run of ``N_STEPS`` (``tests/data/li05fepo4_1x2x2_chgnet_md_600K.npz``); a
fresh run of the first few steps is checked against it, so that the stored run stays CHGNet's own.
Regenerate it (about 3 min on one core) with

    python tests/chgnet_md.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import ase.io
import numpy as np

DATA = Path(__file__).resolve().parent / "data"
START = DATA / "li05fepo4_1x2x2_chgnet_relaxed.extxyz"
STORED = DATA / "li05fepo4_1x2x2_chgnet_md_600K.npz"
N_STEPS, TIMESTEP_FS, TEMPERATURE = 150, 2.0, 600.0


def run_chgnet_md(n_steps: int) -> dict[str, np.ndarray]:
    """Positions of the start, then of every step from step 0 (ASE's observers run at step 0 too), in A;
    CHGNet's |magnetic moments| of every step from step 0 (muB); the cell."""
    import torch
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from chgnet.model.dynamics import CHGNetCalculator

    warnings.filterwarnings("ignore")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core machine one intra-op thread is several times faster
    atoms = ase.io.read(START)
    atoms.calc = CHGNetCalculator(use_device="cpu")
    rng = np.random.default_rng(0)
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE, rng=rng)
    dyn = Langevin(atoms, timestep=TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE, friction=0.02 / units.fs, rng=rng)
    positions, magmoms = [atoms.positions.copy()], []

    def record():
        positions.append(atoms.positions.copy())
        magmoms.append(np.abs(atoms.calc.results["magmoms"]))

    dyn.attach(record, interval=1)
    try:
        dyn.run(n_steps)
    finally:
        torch.set_num_threads(threads)
    return {"positions": np.array(positions, dtype=np.float32), "magmoms": np.array(magmoms, dtype=np.float32),
            "cell": atoms.cell.array.copy()}


def load_stored() -> dict[str, np.ndarray]:
    with np.load(STORED) as stored:
        return {key: stored[key] for key in stored.files}


if __name__ == "__main__":
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else STORED
    run = run_chgnet_md(N_STEPS)
    np.savez_compressed(output, **run)
    print(f"{N_STEPS} steps of {run['positions'].shape[1]} atoms -> {output}")
