"""Relax a built LixMPO4 structure with CHGNet (cell and positions) and write it as extxyz.

    python scripts/relax_with_chgnet.py IN.extxyz OUT.extxyz [--fmax 0.05] [--steps 500]

The per-atom ``valence`` array of the input is kept, CHGNet's magnetic moments are added as
``chgnet_magmoms`` and the energy (eV) as info ``chgnet_energy``. Used to make the relaxed
Li0.5FePO4 reference in ``tests/data/``.
"""

from __future__ import annotations

import argparse
import warnings

import ase.io
import numpy as np


def relax(atoms, fmax: float = 0.05, steps: int = 500, relax_cell: bool = True):
    from chgnet.model import StructOptimizer
    from pymatgen.io.ase import AseAtomsAdaptor

    warnings.filterwarnings("ignore", category=UserWarning)
    structure = AseAtomsAdaptor.get_structure(atoms)
    structure.remove_site_property("magmom") if "magmom" in structure.site_properties else None
    result = StructOptimizer(use_device="cpu").relax(
        structure, fmax=fmax, steps=steps, relax_cell=relax_cell, verbose=False
    )
    final = result["final_structure"]
    relaxed = AseAtomsAdaptor.get_atoms(final)
    relaxed.arrays.pop("initial_magmoms", None)
    for name in ("valence", "initial_magmoms"):
        if name in atoms.arrays:
            relaxed.new_array(name, atoms.arrays[name].copy())
    magmoms = final.site_properties.get("magmom")
    if magmoms is not None:
        relaxed.new_array("chgnet_magmoms", np.asarray(magmoms, dtype=float))
    relaxed.info.update({k: v for k, v in atoms.info.items() if isinstance(v, (int, float, str))})
    relaxed.info["chgnet_energy"] = float(result["trajectory"].energies[-1])
    relaxed.info["relax_steps"] = len(result["trajectory"].energies)
    return relaxed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--fmax", type=float, default=0.05)
    p.add_argument("--steps", type=int, default=500)
    args = p.parse_args()
    relaxed = relax(ase.io.read(args.input), args.fmax, args.steps)
    ase.io.write(args.output, relaxed, format="extxyz")
    print(f"relaxed in {relaxed.info['relax_steps']} steps -> {args.output}")


if __name__ == "__main__":
    main()
