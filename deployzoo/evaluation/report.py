"""Shared output helpers for evaluation and benchmark reports."""

from __future__ import annotations

import os
from pathlib import Path


def write_json(obj: object, path: str | os.PathLike) -> Path:
    """Write JSON atomically (temporary file beside it, then rename)."""
    from deployzoo.atomic import write_json as _write

    return _write(obj, path)


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A markdown table; ``align`` is one char per column ('<' or '>'), numbers right-aligned by default."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "".join(">" if rows and isinstance(rows[0][i], (int, float)) else "<" for i in range(len(header)))
    out = []
    for j, r in enumerate(cells):
        out.append("| " + " | ".join(f"{c:{align[i]}{widths[i]}}" for i, c in enumerate(r)) + " |")
        if j == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def _fmt(c) -> str:
    if isinstance(c, float):
        return f"{c:.4f}" if abs(c) < 10 else f"{c:.1f}"
    return str(c)
