"""A teacher that answers each task with one kind of fault (test fixture of test_label_faults.py).

Run in a task folder: ``python faulty_teacher.py MODES_JSON``; the task's index picks its mode.
"""

import json
import sys
from pathlib import Path

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator

from lfpo_al.label.base import write_failure
from lfpo_al.label.frames import FRAME_FILE, LABELED_FILE, write_labeled

mode = json.loads(Path(sys.argv[1]).read_text())[Path.cwd().name]
frame = ase.io.read(FRAME_FILE)
n = len(frame)
if mode == "crash":
    sys.exit("segmentation fault in the teacher")
if mode == "unconverged":
    write_failure(Path.cwd(), "SCF not converged after 300 iterations")
    sys.exit(0)
if mode == "truncated":
    Path(LABELED_FILE).write_text(f"{n}\nLattice=\"10 0 0 0 6 0 0 0 4.7\" Properties=species:S:1:pos:R:3\nLi 0 0 0\n")
    sys.exit(0)
energy, forces = -7.0 * n, np.zeros((n, 3))
if mode == "nan_forces":
    forces[3, 1] = np.nan
if mode == "wrong_count":
    frame = frame[:-1]
    forces = forces[:-1]
if mode == "wrong_species":
    symbols = frame.get_chemical_symbols()
    symbols[0] = "Na"
    frame.set_chemical_symbols(symbols)
frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces, stress=np.zeros(6))
frame.arrays["magmoms"] = np.where(frame.arrays.get("valence", np.zeros(len(frame))) == 3, 4.3, 3.7)
write_labeled(frame, Path(LABELED_FILE))
