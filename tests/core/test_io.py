"""deepsolar.core.io: atomic writes, JSON-lines journals, and read errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from deepsolar.core.errors import InputDataError
from deepsolar.core.io import (
    atomic_output,
    atomic_write_text,
    file_sha256,
    iter_json_lines,
    last_per_key,
    reading_input,
    write_table_atomic,
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


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("t.csv", None), ("t.parquet", None), ("t.pq", None), ("table.txt", "csv"), ("t", "parquet")],
)
def test_write_table_atomic_round_trips_and_leaves_no_temp_file(
    tmp_path: Path, name: str, fmt: str | None
) -> None:
    df = pd.DataFrame({"tile_id": ["a", "b"], "area_m2": [1.5, 0.0], "n": [3, 4]}, index=[7, 8])
    dest = tmp_path / "sub" / name
    assert write_table_atomic(df, dest, fmt=fmt) == dest  # type: ignore[arg-type]
    csv = fmt == "csv" or dest.suffix == ".csv"
    back = pd.read_csv(dest) if csv else pd.read_parquet(dest)
    pd.testing.assert_frame_equal(back, df.reset_index(drop=True))  # no index written
    assert [p.name for p in dest.parent.iterdir()] == [name]


def test_write_table_atomic_keeps_the_old_file_on_error_and_refuses_unknown_formats(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "t.parquet"
    write_table_atomic(pd.DataFrame({"a": [1]}), dest)

    class HalfWritten(pd.DataFrame):
        def to_parquet(self, path: Path, **kwargs: object) -> None:  # type: ignore[override]
            Path(path).write_bytes(b"half")
            raise RuntimeError("writer crashed")

    with pytest.raises(RuntimeError):
        write_table_atomic(HalfWritten({"a": [2]}), dest)
    pd.testing.assert_frame_equal(pd.read_parquet(dest), pd.DataFrame({"a": [1]}))
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]
    with pytest.raises(ValueError, match="format"):
        write_table_atomic(pd.DataFrame({"a": [1]}), tmp_path / "t.xlsx")
    with pytest.raises(ValueError, match="format"):
        write_table_atomic(pd.DataFrame({"a": [1]}), dest, fmt="xlsx")  # type: ignore[arg-type]
    written = write_table_atomic(pd.DataFrame({"a": [1]}), tmp_path / "i.csv", index=True)
    assert written.read_text().splitlines()[0] == ",a"


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
