"""Table helpers of the commands: CSV files and Markdown tables of result rows (`sweep`, `report`)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any


def columns_of(rows: list[dict]) -> list[str]:
    """The union of the rows' keys, first seen first."""
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_csv(rows: list[dict], path: Path) -> Path:
    """Every column of `rows` (the union of their keys, first seen first; a missing cell is empty) as CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns_of(rows))
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buf.getvalue())
    return path


def markdown_table(rows: list[dict], columns: list[str], header: list[str] | None = None) -> str:
    """The `columns` of `rows` as a Markdown table (floats to 4 decimals; `header` renames the columns)."""
    lines = ["| " + " | ".join(header or columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell_text(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def cell_text(v: Any) -> str:
    """A table cell: floats to 4 decimals (nan as such), anything else as str."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)
