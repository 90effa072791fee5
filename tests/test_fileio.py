"""Atomic writes leave nothing that looks valid, and clean up after a killed writer."""

import pytest

from spxflow.fileio import atomic_path, write_json_atomic


def test_failed_write_leaves_nothing(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer died")
    assert list(tmp_path.iterdir()) == []


def test_leftover_of_a_killed_writer_is_removed_on_the_next_write(tmp_path):
    final = tmp_path / "out.json"
    (tmp_path / ".out.json.abc123.part").write_text("half-written by a SIGKILLed job")
    (tmp_path / ".other.json.abc123.part").write_text("another file's writer: not ours")
    write_json_atomic(final, {"a": 1})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".other.json.abc123.part", "out.json"]
