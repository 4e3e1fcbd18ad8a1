"""deepsolar.core.io: atomic writes, JSON-lines journals, and read errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from deepsolar.core.errors import InputDataError
from deepsolar.core.io import (
    atomic_output,
    atomic_write_text,
    file_sha256,
    iter_json_lines,
    last_per_key,
    reading_input,
)


def test_atomic_output_renames_on_success_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "out.txt"
    atomic_write_text(dest, "first")
    with pytest.raises(RuntimeError), atomic_output(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer crashed")
    assert dest.read_text() == "first"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600


def test_atomic_output_for_writers_that_create_the_file(tmp_path: Path) -> None:
    dest = tmp_path / "layer.gpkg"
    with atomic_output(dest, suffix=".tmp.gpkg", create=False) as tmp:
        assert not tmp.exists() and tmp.parent == tmp_path and ".tmp" in tmp.name
        tmp.write_bytes(b"db")
        Path(f"{tmp}-wal").write_bytes(b"side file")
    assert dest.read_bytes() == b"db"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layer.gpkg"]


def test_file_sha256(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert file_sha256(p, chunk=1) == file_sha256(p)


def test_journal_lines_skip_torn_and_blank_lines_and_last_record_wins(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    assert list(iter_json_lines(journal)) == []  # missing: nothing
    recs = [{"tile_id": "a", "n": 1}, {"tile_id": "b", "n": 1}, {"tile_id": "a", "n": 2}]
    text = "".join(json.dumps(r) + "\n" for r in recs) + "\n[1, 2]\n" + '{"tile_id": "c", "n'
    journal.write_text(text)
    garbled: list[int] = []
    lines = list(iter_json_lines(journal, on_garbled=lambda n, err: garbled.append(n)))
    assert [n for n, _ in lines] == [1, 2, 3, 5] and lines[3][1] == [1, 2]
    assert garbled == [6]  # the torn last line of a killed run
    latest = last_per_key((v for _, v in lines if isinstance(v, dict)), key=lambda r: r["tile_id"])
    assert list(latest) == ["b", "a"] and latest["a"]["n"] == 2


def test_reading_input_names_what_where_and_the_fix(tmp_path: Path) -> None:
    where = tmp_path / "bad.gpkg"
    with (
        pytest.raises(InputDataError) as e,
        reading_input("cannot read the table", where=where, fix="pass a table"),
    ):
        raise ValueError("not a table")
    assert e.value.what == "cannot read the table (ValueError: not a table)"
    assert e.value.where == str(where) and e.value.fix == "pass a table"
    assert e.value.__cause__ is None and e.value.__suppress_context__
    with pytest.raises(KeyboardInterrupt), reading_input("x", where=where, fix="y"):
        raise KeyboardInterrupt  # not an input problem: passes through
