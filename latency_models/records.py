"""Latency measurement records: the documented format and strict importers.

One record = one measured latency of one model on one device. CSV (header row; ``,``, ``;`` or
tab separated) or JSON (a list of objects, or {"records": [...]}) with these columns:

=============  =========  ==============================================================
column         required   meaning
=============  =========  ==============================================================
model          yes        preset (XS/S/L1/L3), spec JSON file, timm model name, .mlpackage
                          path or published display name ("MobileNet-v2x1.0"); any
                          display name when spec / timm_name / mlpackage says what it is
spec           no         ArchSpec JSON (SwiftFormer family; featurised analytically)
timm_name      no         timm model name (featurised from its CoreML conversion / cache)
mlpackage      no         path of the exported .mlpackage that was measured
device         yes*       free text, e.g. "iPhone 14 (iOS 16)" (*or from --latency-device)
os             no         e.g. "iOS 17.5"
runtime        no         e.g. "CoreML (Xcode 15 performance report)", "torch 2.14.1 eager"
compute_unit   no         e.g. "ALL", "CPU_AND_NE", "CPU"
resolution     no         input side in pixels (default: the spec's / timm default)
latency_ms     yes        median latency in milliseconds (a unit suffix "ms"/"us"/"s" and a
                          decimal comma in ;-separated files are accepted); blank = not
                          measured: the row is skipped with a warning
std_ms         no         spread of the measurement (ms, >= 0)
source         no         where the number comes from (paper, URL, "measured <date>")
=============  =========  ==============================================================

Extra columns (params_m, gmacs, top1, ...) are kept but ignored. Malformed rows raise
``RecordError`` (a ``UsageError``) naming the file, the row and the column.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from search_space.errors import UsageError
from search_space.io import atomic_write, parse_json, read_text
from search_space.spec import PRESETS, ArchSpec, SpecError

from .timm_models import SWIFTFORMER_TIMM

COLUMNS = ("model", "spec", "timm_name", "device", "os", "runtime", "compute_unit",
           "resolution", "latency_ms", "std_ms", "source", "mlpackage")
REQUIRED = ("model", "device", "latency_ms")
# A single-image latency outside this range is a typo or a unit mistake (seconds for ms,
# microseconds for ms), never a measurement: refused with the range in the message.
LATENCY_RANGE_MS = (0.01, 100_000.0)
# Two rows measuring the same model on the same device/runtime are averaged when they agree
# within this fraction of their mean, refused otherwise.
DUPLICATE_TOLERANCE = 0.15
_UNITS = {"": 1.0, "ms": 1.0, "msec": 1.0, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "s": 1e3}
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?|nan|inf)\s*"
                     r"(ms|msec|us|µs|μs|s)?\s*$", re.IGNORECASE)

# An input side as papers print it: 512, "512 px", "512x512", "512 × 512", "512²" (square only).
# ("224.0": a JSON writer's float.)
_SIDE_TEXT = r"\d{2,4}(?:\.0*)?\s*(?:px)?(?:\s*[x×*]\s*\d{2,4}(?:\.0*)?\s*(?:px)?|²)?"
_SIDE = re.compile(rf"\s*{_SIDE_TEXT}\s*", re.IGNORECASE)
RESOLUTION_RANGE = (16, 4096)
# The same at the end of a model name: "EfficientFormer-L1 (512)", "... (backbone @512)",
# "... @ 512 px", "... 512x512", "... 512px", "... 512²" (a bare trailing number is not one:
# "RegNetY-600", "ResNet-50").
_NAME_SIDE = re.compile(
    rf"(?:\((?:[^()]*?[\s@])?\s*(?P<paren>{_SIDE_TEXT})\s*\)|@\s*(?P<at>{_SIDE_TEXT})"
    r"|(?:^|[\s_-])(?P<bare>\d{2,4}\s*px|\d{2,4}\s*[x×]\s*\d{2,4}(?:\s*px)?|\d{2,4}²))\s*$",
    re.IGNORECASE)


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
    mlpackage: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    row: int = 0              # CSV line / JSON record number it came from (0: not from a file)

    def to_row(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: ("" if d[k] is None else d[k]) for k in COLUMNS}

    def arch_spec(self):
        """The ArchSpec of this record (from spec, a preset model name, or a SwiftFormer timm name)."""
        spec = None
        if self.spec:
            spec = ArchSpec.from_json(self.spec)
        elif self.timm_name in SWIFTFORMER_TIMM:
            spec = PRESETS[SWIFTFORMER_TIMM[self.timm_name]]
        elif not self.timm_name and not self.mlpackage and self.model.upper() in PRESETS:
            spec = PRESETS[self.model.upper()]
        if spec is not None and self.resolution and spec.resolution != self.resolution:
            spec = spec.replace(resolution=self.resolution)
        return spec

    def family(self) -> str:
        """The model family this row measures, for held-out folds that leave a family out
        (``fewshot.folds``): a timm model's architecture without its size or variant
        ('deit_small_patch16_224' -> 'deit', 'mobilenetv3_large_100' -> 'mobilenetv3');
        every SwiftFormer-space member is a family of its own (a search predicts new members
        of that space, exchangeable with the measured ones); other rows are their own."""
        if self.arch_spec() is None and self.timm_name:
            head = self.timm_name.lower().split("_")[0]       # 'resnet50', 'mobilenetv2'
            m = re.fullmatch(r"(.*?v\d+|[a-z]+)\d*", head)   # a version stays, a depth goes
            return "timm:" + (m.group(1) if m else head)
        return self.identity()

    def identity(self) -> str:
        """What was measured, independent of how the row names it (for duplicate detection)."""
        spec = self.arch_spec()
        if spec is not None:
            return "spec:" + spec.canonical_json()
        if self.timm_name:
            return f"timm:{self.timm_name}@{self.resolution or ''}"
        if self.mlpackage:
            return "mlpackage:" + os.path.abspath(self.mlpackage)
        return "model:" + self.model


def where(path: str, row: int, col: str) -> str:
    # CSV rows are file line numbers (header = 1); JSON records are counted from 1.
    unit = "record" if str(path).lower().endswith(".json") else "row"
    return f"{path}: {unit} {row}, column '{col}'"


def parse_latency(raw: str, where: str, decimal_comma: bool = False) -> float:
    """Milliseconds from '0.95', '0.95 ms', '950 us' ('0,95' with decimal_comma); range-checked."""
    m = _NUMBER.match(raw)
    if m is None or (not decimal_comma and "," in m.group(1)):
        raise RecordError(f"{where}: {raw!r} is not a number (milliseconds; e.g. 0.95 or "
                          "'0.95 ms')")
    value = float(m.group(1).replace(",", ".")) * _UNITS[(m.group(2) or "").lower()]
    lo, hi = LATENCY_RANGE_MS
    if not math.isfinite(value) or not lo <= value <= hi:
        raise RecordError(f"{where}: {raw!r} is not a plausible latency: must be a finite "
                          f"number of milliseconds in {lo:g}..{hi:g}")
    return value


def parse_resolution(raw: str, where: str) -> int:
    """The input side in pixels from '512', '512 px', '512x512', '512 × 512' or '512²'."""
    lo, hi = RESOLUTION_RANGE
    sides = {int(float(n)) for n in re.findall(r"\d+(?:\.0*)?", raw)}   # "224.0 x 224.0": {224}
    if not _SIDE.fullmatch(raw) or len(sides) != 1 or not lo <= min(sides) <= hi:
        raise RecordError(f"{where}: {raw!r}: allowed one side in pixels, {lo}..{hi} (e.g. 512, "
                          "'512 px' or '512x512'; the models here take square inputs)")
    return sides.pop()


def split_resolution(name: str, where: str) -> tuple[str, int | None]:
    """A model name and the input side it ends with, if any ("EfficientFormer-L1 (512)" ->
    ("EfficientFormer-L1", 512)); (name, None) when it names no size. A size that is not one
    square side in range is a RecordError (parse_resolution's)."""
    m = _NAME_SIDE.search(name)
    if m is None:
        return name, None
    raw = m.group("paren") or m.group("at") or m.group("bare")
    return name[:m.start()].rstrip(" -_,"), parse_resolution(raw, where)


def _number(d: dict, col: str, path: str, row: int, check: Callable[[float], bool],
            what: str) -> float | None:
    v = d.get(col, "")
    raw = "" if v is None else str(v).strip()
    if not raw:
        return None
    try:
        x = float(raw)
    except ValueError:
        raise RecordError(f"{where(path, row, col)}: {raw!r} is not a number") from None
    if not math.isfinite(x) or not check(x):
        raise RecordError(f"{where(path, row, col)}: {raw!r} must be {what}")
    return x


def _spec_column(d: dict, path: str, row: int, res: int | None) -> str:
    raw = d.get("spec", "")
    text = "" if raw is None else str(raw).strip()
    if not isinstance(raw, dict) and not text:
        return ""
    try:
        spec = ArchSpec.from_dict(raw) if isinstance(raw, dict) else ArchSpec.from_json(text)
    except SpecError as e:
        raise RecordError(f"{where(path, row, 'spec')}: {e}") from None
    if res is not None and spec.resolution != res:
        spec = spec.replace(resolution=res)
    return spec.canonical_json()


def parse_record(d: dict[str, Any], path: str = "<records>", row: int = 0,
                 decimal_comma: bool = False) -> Record:
    """Validate one raw row (strings or JSON values) into a Record."""
    def text(col: str) -> str:
        v = d.get(col, "")
        return "" if v is None else str(v).strip()

    for col in REQUIRED:
        if not text(col):
            raise RecordError(f"{where(path, row, col)}: missing (required columns: {list(REQUIRED)})")
    lat = parse_latency(text("latency_ms"), where(path, row, "latency_ms"), decimal_comma)
    std = _number(d, "std_ms", path, row, lambda x: x >= 0, ">= 0")
    raw_res = text("resolution")
    res = parse_resolution(raw_res, where(path, row, "resolution")) if raw_res else None
    extra = {k: v for k, v in d.items() if k not in COLUMNS}
    return Record(model=text("model"), device=text("device"), latency_ms=lat,
                  spec=_spec_column(d, path, row, res), timm_name=text("timm_name"),
                  os=text("os"), runtime=text("runtime"), compute_unit=text("compute_unit"),
                  resolution=res, std_ms=std, source=text("source"),
                  mlpackage=text("mlpackage"), extra=extra, row=row)


# -- reading files -------------------------------------------------------------------------------
def _delimiter(header: str) -> str:
    """',' unless the header line is clearly ';'- or tab-separated."""
    for d in (";", "\t"):
        if d in header and "," not in header:
            return d
    return ","


def raw_rows(path: str) -> tuple[list[tuple[int, dict]], str, list[str] | None]:
    """(row number, raw dict) of a CSV or JSON records file, the CSV delimiter, and the columns
    (a CSV's header, so a header-only file is checked too; a JSON file's first record's keys,
    None when it has none)."""
    text = read_text(path, "records file (CSV or JSON)", RecordError)
    if path.lower().endswith(".json"):
        data = parse_json(text, path, RecordError)
        rows = data.get("records") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise RecordError(f"{path}: expected a JSON list of records or {{\"records\": [...]}}")
        for i, r in enumerate(rows, start=1):
            if not isinstance(r, dict):
                raise RecordError(f"{path}: record {i}: expected an object, got {type(r).__name__}")
        return list(enumerate(rows, start=1)), ",", (list(rows[0]) if rows else None)
    delim = _delimiter(text.split("\n", 1)[0])
    # strict: an unbalanced '"' is an error, not a field that swallows the rest of the file
    # newline="": a quoted field spanning lines keeps its line break (the csv module's rule)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delim, strict=True)
    with _csv_errors(path, reader):
        columns = reader.fieldnames
    if columns is None:
        raise RecordError(f"{path}: empty file (expected a CSV header with {list(REQUIRED)})")
    reader.fieldnames = [column_name(c) for c in columns]
    twice = sorted({c for c in reader.fieldnames if reader.fieldnames.count(c) > 1})
    if twice:   # csv.DictReader would silently keep the last of each
        raise RecordError(f"{path}: header: column(s) {twice} appear more than once")
    out = []
    rows = iter(reader)
    while True:
        with _csv_errors(path, reader):
            r = next(rows, None)
        if r is None:
            break
        # the file's line the row begins on (blank lines, which are skipped, count; a quoted
        # field spanning lines moves line_num to the row's last line)
        line_no = reader.line_num - sum(v.count("\n") for v in r.values() if isinstance(v, str))
        if None in r:
            raise RecordError(f"{path}: row {line_no}: more fields than header columns")
        out.append((line_no, r))
    return out, delim, list(reader.fieldnames)


@contextmanager
def _csv_errors(path: str, reader: csv.DictReader) -> Iterator[None]:
    """A csv.Error while reading the next row -> one RecordError naming the line it began on."""
    start = reader.reader.line_num + 1
    try:
        yield
    except csv.Error as e:
        raise RecordError(f"{path}: row {start}: not valid CSV ({e}): a field holding the "
                          "separator must be in double quotes, and every opening '\"' needs its "
                          "closing one") from None


def column_name(header: str) -> str:
    """A CSV header cell as the records column it names: case and spaces ignored, a unit in
    milliseconds as papers head it ("Latency (ms)", "latency [ms]", "Latency") is ``_ms``."""
    c = re.sub(r"\s*[(\[]\s*ms\s*[)\]]$|\s+ms$", "_ms", header.strip().lower())
    return "latency_ms" if c == "latency" else c


def check_header(path: str, columns: list[str] | None, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in (columns or ())]
    if columns is not None and missing:
        shown = [c[:40] for c in columns[:8]] + (["..."] if len(columns) > 8 else [])
        raise RecordError(f"{path}: header lacks required column(s) {missing} (it has "
                          f"{shown}); the records columns are {list(COLUMNS)}")


def read_records(path: str) -> list[Record]:
    """Read a CSV or JSON records file strictly: every row needs model, device and latency_ms;
    raise RecordError on the first malformed row."""
    rows, delim, columns = raw_rows(path)
    check_header(path, columns, REQUIRED)
    return [parse_record(r, path, i, decimal_comma=delim != ",") for i, r in rows]


def write_records(records: Iterable[Record], path: str) -> None:
    """Write records as CSV (atomically: a reader never sees half a file)."""
    rows = [r.to_row() for r in records]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(COLUMNS))
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
