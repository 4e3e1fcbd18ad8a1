"""Evaluation tables: flat rows (one per source x predictor) to text, markdown, CSV and JSON.

A row is a dict; a statistic with an interval is three keys ``k``, ``k_lo``, ``k_hi`` (see
:func:`ci_cells`). A column says how to show a key: ``int``, ``num`` (3 decimals), ``pct``,
``ci`` (``0.812 [0.701, 0.904]``), ``pct_ci`` or ``text``. Missing values print as ``n/a``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from deepsolar.core.bootstrap import Interval

Kind = Literal["text", "int", "num", "pct", "ci", "pct_ci"]
NA = "n/a"


@dataclass(frozen=True)
class Column:
    """How one column of a report table is shown.

    Attributes:
        header: The column title.
        key: The row key it shows (with ``{key}_lo`` / ``{key}_hi`` for interval kinds).
        kind: ``text``, ``int``, ``num`` (3 decimals), ``pct``, ``ci`` or ``pct_ci``.
    """

    header: str
    key: str
    kind: Kind = "num"


def ci_cells(key: str, ci: Interval) -> dict[str, float | None]:
    """Row cells of a statistic with its interval.

    Args:
        key: The statistic's row key.
        ci: Its point estimate and bootstrap interval.

    Returns:
        ``{key: point, key_lo: lo, key_hi: hi}``.
    """
    return {key: ci.point, f"{key}_lo": ci.lo, f"{key}_hi": ci.hi}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt_value(v: Any, kind: Kind = "num") -> str:
    """Format one value for a table.

    Args:
        v: The value; ``None`` or NaN prints as ``n/a``.
        kind: ``text`` (as is), ``int``, ``pct``/``pct_ci`` (a fraction 0-1 shown as a
            percentage with 1 decimal), otherwise a number with 3 decimals.

    Returns:
        The formatted text.
    """
    if _missing(v):
        return NA
    if kind == "text":
        return str(v)
    if kind == "int":
        return f"{int(v)}"
    if kind in ("pct", "pct_ci"):
        return f"{float(v):.1%}"
    return f"{float(v):.3f}"


def fmt_cell(row: dict[str, Any], col: Column) -> str:
    """Format a row's cell of one column, with ``[lo, hi]`` for interval kinds.

    Args:
        row: The table row.
        col: The column to show.

    Returns:
        The formatted cell text.
    """
    v = row.get(col.key)
    s = fmt_value(v, col.kind)
    if col.kind in ("ci", "pct_ci") and not _missing(v):
        lo, hi = row.get(f"{col.key}_lo"), row.get(f"{col.key}_hi")
        if not (_missing(lo) or _missing(hi)):
            s += f" [{fmt_value(lo, col.kind)}, {fmt_value(hi, col.kind)}]"
    return s


def format_text(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A fixed-width table for a terminal: text columns left-aligned, numbers right-aligned.

    Args:
        rows: The table rows.
        columns: The columns to show, in order.

    Returns:
        The table text, a header line then one line per row.
    """
    cells = [[fmt_cell(r, c) for c in columns] for r in rows]
    widths = [max([len(c.header)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        out = []
        for v, w, c in zip(values, widths, columns, strict=True):
            out.append(v.ljust(w) if c.kind == "text" else v.rjust(w))
        return "  ".join(out).rstrip()

    return "\n".join([line([c.header for c in columns]), *(line(r) for r in cells)])


def format_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A markdown table: text columns left-aligned, numbers right-aligned.

    Args:
        rows: The table rows.
        columns: The columns to show, in order.

    Returns:
        The markdown table text.
    """
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---" if c.kind == "text" else "---:" for c in columns) + "|"
    body = ["| " + " | ".join(fmt_cell(r, c) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def _jsonable(v: Any) -> Any:
    return None if _missing(v) else v


def write_report(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[Column],
    out_dir: str | Path,
    *,
    title: str,
    meta: dict[str, Any],
    notes: Sequence[str] = (),
    stem: str = "report",
) -> dict[str, Path]:
    """``{stem}.json`` (meta + rows), ``{stem}.csv`` (every key of every row), ``{stem}.md``.

    Args:
        rows: The table rows.
        columns: The columns the markdown table shows.
        out_dir: Folder to write to; created if missing.
        title: The report title.
        meta: Run facts written to the JSON and, scalar ones, listed in the markdown.
        notes: Lines listed under the markdown table (and in the JSON).
        stem: File name stem of the three files.

    Returns:
        The paths written, keyed ``json``, ``csv`` and ``md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "md": out / f"{stem}.md"}
    payload = {"title": title, **meta, "notes": list(notes), "rows": clean}
    paths["json"].write_text(json.dumps(payload, indent=2, default=str) + "\n")
    pd.DataFrame(clean).to_csv(paths["csv"], index=False)
    md = [f"# {title}", ""]
    md += [f"- {k}: `{v}`" for k, v in meta.items() if not isinstance(v, dict | list)]
    md += ["", format_markdown(rows, columns), ""]
    md += [f"- {n}" for n in notes]
    paths["md"].write_text("\n".join(md).rstrip() + "\n")
    return paths
