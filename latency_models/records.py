"""Latency measurement records: the documented format and strict importers.

One record = one measured latency of one model on one device. CSV (header row) or JSON (a list
of objects, or {"records": [...]}) with these columns:

=============  =========  ==============================================================
column         required   meaning
=============  =========  ==============================================================
model          yes        display name ("SwiftFormer-XS", "my-candidate-3")
spec           one of     ArchSpec JSON (SwiftFormer family; featurised analytically)
timm_name      these two  timm model name (featurised from its CoreML conversion / cache)
               (or model  a preset name XS/S/L1/L3 is also accepted in ``model``)
device         yes        free text, e.g. "iPhone 14 (iOS 16)"
os             no         e.g. "iOS 17.5"
runtime        no         e.g. "CoreML (Xcode 15 performance report)", "torch 2.14.1 eager"
compute_unit   no         e.g. "ALL", "CPU_AND_NE", "CPU"
resolution     no         input side in pixels (default: the spec's / timm default)
latency_ms     yes        median latency in milliseconds, > 0
std_ms         no         spread of the measurement (ms, >= 0)
source         no         where the number comes from (paper, URL, "measured <date>")
=============  =========  ==============================================================

Extra columns (params_m, gmacs, top1, ...) are kept but ignored. Malformed rows raise
``RecordError`` (a ``UsageError``) naming the file, the row and the column.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from search_space.errors import NotFoundError, UsageError
from search_space.io import atomic_write
from search_space.spec import PRESETS, ArchSpec, SpecError

from .timm_models import SWIFTFORMER_TIMM

COLUMNS = ("model", "spec", "timm_name", "device", "os", "runtime", "compute_unit",
           "resolution", "latency_ms", "std_ms", "source")
REQUIRED = ("model", "device", "latency_ms")


class RecordError(UsageError):
    """A malformed record; the message names the file, row and column."""


@dataclass
class Record:
    model: str
    device: str
    latency_ms: float
    spec: str = ""            # canonical ArchSpec JSON, or ""
    timm_name: str = ""
    os: str = ""
    runtime: str = ""
    compute_unit: str = ""
    resolution: int | None = None
    std_ms: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return {k: ("" if d[k] is None else d[k]) for k in COLUMNS}

    def arch_spec(self):
        """The ArchSpec of this record (from spec, a preset model name, or a SwiftFormer timm name)."""
        spec = None
        if self.spec:
            spec = ArchSpec.from_json(self.spec)
        elif self.timm_name in SWIFTFORMER_TIMM:
            spec = PRESETS[SWIFTFORMER_TIMM[self.timm_name]]
        elif self.model.upper() in PRESETS:
            spec = PRESETS[self.model.upper()]
        if spec is not None and self.resolution and spec.resolution != self.resolution:
            spec = spec.replace(resolution=self.resolution)
        return spec


def _where(path: str, row: int, col: str) -> str:
    # CSV rows are file line numbers (header = 1); JSON records are counted from 1.
    unit = "record" if str(path).lower().endswith(".json") else "row"
    return f"{path}: {unit} {row}, column '{col}'"


def parse_record(d: dict[str, Any], path: str = "<records>", row: int = 0) -> Record:
    """Validate one raw row (strings or JSON values) into a Record."""
    def text(col: str) -> str:
        v = d.get(col, "")
        return "" if v is None else str(v).strip()

    for col in REQUIRED:
        if not text(col):
            raise RecordError(f"{_where(path, row, col)}: missing (required columns: {list(REQUIRED)})")
    lat_raw = text("latency_ms")
    try:
        lat = float(lat_raw)
    except ValueError:
        raise RecordError(f"{_where(path, row, 'latency_ms')}: {lat_raw!r} is not a number") from None
    if not math.isfinite(lat) or lat <= 0:
        raise RecordError(f"{_where(path, row, 'latency_ms')}: {lat_raw!r} must be a finite number > 0")
    std = None
    if text("std_ms"):
        try:
            std = float(text("std_ms"))
        except ValueError:
            raise RecordError(f"{_where(path, row, 'std_ms')}: {text('std_ms')!r} is not a number") from None
        if not math.isfinite(std) or std < 0:
            raise RecordError(f"{_where(path, row, 'std_ms')}: {text('std_ms')!r} must be >= 0")
    res = None
    if text("resolution"):
        try:
            rf = float(text("resolution"))
        except ValueError:
            raise RecordError(f"{_where(path, row, 'resolution')}: {text('resolution')!r} is not a number") from None
        if not rf.is_integer() or not 16 <= rf <= 4096:
            raise RecordError(f"{_where(path, row, 'resolution')}: {text('resolution')!r} must be an "
                              "integer number of pixels in 16..4096")
        res = int(rf)
    spec_json = ""
    raw_spec = d.get("spec", "")
    if isinstance(raw_spec, dict) or text("spec"):
        try:
            spec = ArchSpec.from_dict(raw_spec) if isinstance(raw_spec, dict) else \
                ArchSpec.from_json(text("spec"))
        except SpecError as e:
            raise RecordError(f"{_where(path, row, 'spec')}: {e}") from None
        if res is not None and spec.resolution != res:
            spec = spec.replace(resolution=res)
        spec_json = spec.canonical_json()
    extra = {k: v for k, v in d.items() if k not in COLUMNS}
    return Record(model=text("model"), device=text("device"), latency_ms=lat, spec=spec_json,
                  timm_name=text("timm_name"), os=text("os"), runtime=text("runtime"),
                  compute_unit=text("compute_unit"), resolution=res, std_ms=std,
                  source=text("source"), extra=extra)


def read_records(path: str) -> list[Record]:
    """Read a CSV or JSON records file; raise RecordError on the first malformed row."""
    if not os.path.isfile(path):
        raise NotFoundError(f"{path}: no such records file (CSV or JSON)")
    try:  # a binary or otherwise non-UTF-8 file: one line naming it, not a codec traceback
        with open(path, encoding="utf-8") as f:
            f.read()
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not UTF-8 text (byte {e.start}); expected a CSV or JSON "
                          "records file") from None
    if path.lower().endswith(".json"):
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}: not valid JSON ({e})") from None
        rows = data.get("records") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise RecordError(f"{path}: expected a JSON list of records or {{\"records\": [...]}}")
        out = []
        for i, r in enumerate(rows, start=1):
            if not isinstance(r, dict):
                raise RecordError(f"{path}: record {i}: expected an object, got {type(r).__name__}")
            out.append(parse_record(r, path, i))
        return out
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise RecordError(f"{path}: empty file (expected a CSV header with {list(REQUIRED)})")
        missing = [c for c in REQUIRED if c not in reader.fieldnames]
        if missing:
            raise RecordError(f"{path}: header lacks required column(s) {missing}; "
                              f"columns are {list(COLUMNS)}")
        out = []
        for line_no, r in enumerate(reader, start=2):  # header is line 1
            if None in r:
                raise RecordError(f"{path}: row {line_no}: more fields than header columns")
            out.append(parse_record(r, path, line_no))
        return out


def write_records(records: Iterable[Record], path: str) -> None:
    """Write records as CSV (atomically: a reader never sees half a file)."""
    rows = [r.to_row() for r in records]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
