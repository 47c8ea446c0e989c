"""Rendering of query results as a text table, JSON or CSV (the drawing step; no queries)."""
from __future__ import annotations

import csv
import io
import json
from typing import Any, Sequence

from search_space.errors import UsageError
from search_space.io import canonical_json, json_safe

FORMATS = ("table", "json", "csv")


def cell(v: Any) -> str:
    """One value as table text: None "-", floats to 4 significant digits, lists shortened."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if isinstance(v, (list, tuple)):
        return ",".join(map(str, v[:5])) + (f",... ({len(v)})" if len(v) > 5 else "")
    if isinstance(v, dict):
        return canonical_json(v)
    return str(v)


def table(rows: Sequence[dict], columns: Sequence[str] | None = None,
          headers: dict[str, str] | None = None) -> str:
    """Fixed-width text table; numbers right-aligned."""
    if not rows:
        return "(no rows)"
    cols = list(columns or rows[0].keys())
    heads = [(headers or {}).get(c, c) for c in cols]
    cells = [[cell(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(heads)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows)
               for c in cols]
    def fmt(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric)).rstrip()
    return "\n".join([fmt(heads), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


def to_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """CSV with a header row; lists/dicts as JSON text, None as empty."""
    buf = io.StringIO()
    cols = list(columns or (rows[0].keys() if rows else []))
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else
                    json.dumps(r.get(c), separators=(",", ":")) if isinstance(r.get(c), (list, dict))
                    else r.get(c) for c in cols])
    return buf.getvalue()


def to_json(obj: Any) -> str:
    """Strict JSON in the payload's own key order (``search_space.io.json_safe`` values)."""
    return json.dumps(json_safe(obj), indent=2)


def render(fmt: str, payload: Any, rows: Sequence[dict], columns: Sequence[str] | None = None,
           title: str = "", footer: Sequence[str] = ()) -> str:
    """``table``: title + table + footer lines; ``json``: the whole payload; ``csv``: rows."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: allowed {', '.join(FORMATS)}")
    if fmt == "json":
        return to_json(payload)
    if fmt == "csv":
        return to_csv(rows, columns).rstrip("\n")
    parts = ([title] if title else []) + [table(rows, columns)] + list(footer)
    return "\n".join(parts)
