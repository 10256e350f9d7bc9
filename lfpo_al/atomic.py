"""Files written whole or not at all: a temporary name in the same folder, then a rename.

A run killed mid-write leaves the previous file (or none) and a ``.<name>.partial`` that the next
write replaces; a reader never meets half a file. The record, whose lines are appended, is fsynced
instead (``lfpo_al.loop.state``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed onto ``path`` when the block ends without error."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        partial.replace(path)
    finally:
        if partial.exists():
            partial.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as partial:
        partial.write_text(text)


def write_extxyz(path: str | Path, frames, **kwargs) -> None:
    import ase.io

    with atomic_path(path) as partial:
        ase.io.write(partial, frames, format="extxyz", **kwargs)


def copy_file(source: str | Path, path: str | Path) -> None:
    import shutil

    with atomic_path(path) as partial:
        shutil.copy2(source, partial)
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
