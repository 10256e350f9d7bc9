"""Files written whole or not at all, and never through a link planted in a run folder.

A write goes to a fresh temporary file created exclusively in the same folder (a random name: no file
or link placed there beforehand can be it), then is renamed onto its target; a rename replaces a link
at the target instead of writing through it. A run killed mid-write leaves the previous file (or
none) and a ``.<name>.*.partial``; a reader never meets half a file. The record, whose lines are
appended, is opened without following links (``append_line``).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lfpo_al.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# new files and folders get the permissions a plain open() or mkdir() would give them (mkstemp's are 0600,
# mkdtemp's 0700); the umask is read once: reading it sets it, for every thread
UMASK = _umask()
FILE_MODE, DIR_MODE = 0o666 & ~UMASK, 0o777 & ~UMASK


OWN_LINKS = (".dispatch", "wandb")  # folders whose links their tools make: only the folder itself is checked


def planted_links(root: str | Path) -> Iterator[Path]:
    """Symbolic links under ``root``, not descending into (or following) any linked folder."""
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if path.is_symlink():
                yield path
        dirs[:] = [d for d in dirs if d not in OWN_LINKS and not (Path(folder) / d).is_symlink()]


def refuse_planted_links(root: str | Path) -> None:
    """One line naming the first symbolic link planted under ``root`` (its tools' own links aside)."""
    for path in planted_links(root):
        raise planted_link_error(path)


def planted_link_error(path: Path) -> UserError:
    return UserError(f"{path} is a symbolic link (to {os.readlink(path)}); a run folder's own files are never "
                     "links, so nothing is written through it: remove the link and rerun")


@contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A fresh temporary path to write ``path``'s content to; renamed onto ``path`` when the block ends
    without error. ``mode``: the file's permissions (default: as a plain open() would make it)."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    partial = Path(name)
    os.chmod(partial, FILE_MODE if mode is None else mode)
    try:
        yield partial
        partial.replace(path)
    finally:
        if os.path.lexists(partial):
            partial.unlink()


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh temporary folder to fill; it replaces ``path`` (removed first, a link itself not followed)
    when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # as dpdata's writers make the folders above theirs
    partial = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    os.chmod(partial, DIR_MODE)
    try:
        yield partial
        remove(path)
        partial.replace(path)
    finally:
        if partial.exists():
            shutil.rmtree(partial)


def remove(path: str | Path) -> None:
    """Remove a file, a folder tree or a link (the link only, never what it points to)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    with atomic_path(path, mode) as partial:
        partial.write_text(text)


def write_extxyz(path: str | Path, frames, **kwargs) -> None:
    import ase.io

    with atomic_path(path) as partial:
        ase.io.write(partial, frames, format="extxyz", **kwargs)


def copy_file(source: str | Path, path: str | Path) -> None:
    with atomic_path(path) as partial:
        shutil.copyfile(source, partial)
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())


def open_no_follow(path: str | Path, flags: int) -> int:
    """``os.open`` that refuses a link at ``path`` in one line (O_NOFOLLOW), creating it as a plain file."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise planted_link_error(Path(path)) from None
        raise


def append_line(path: str | Path, line: str) -> None:
    """Append one line in one write, fsynced: a killed run leaves whole lines."""
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
