"""Atomic writes: a write that fails midway leaves the old file whole and no temporary behind."""

import pytest

from lfpo_al import atomic


def test_a_failed_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic.write_text(path, '{"a": 1}')
    with pytest.raises(RuntimeError), atomic.atomic_path(path) as partial:
        partial.write_text('{"a": 2, "b"')  # half written, then the writer dies
        raise RuntimeError("killed")
    assert path.read_text() == '{"a": 1}' and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_extxyz_and_copies_arrive_whole(tmp_path, unit_cells):
    import ase.io

    atomic.write_extxyz(tmp_path / "frames.extxyz", unit_cells)
    assert [len(a) for a in ase.io.read(tmp_path / "frames.extxyz", index=":")] == [len(a) for a in unit_cells]
    atomic.copy_file(tmp_path / "frames.extxyz", tmp_path / "copy.extxyz")
    assert (tmp_path / "copy.extxyz").read_bytes() == (tmp_path / "frames.extxyz").read_bytes()
    assert not list(tmp_path.glob(".*.partial"))
