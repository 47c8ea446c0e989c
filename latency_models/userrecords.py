"""Calibration input as users have it: ``model,latency_ms`` is enough.

``load_user_records(path, device)`` reads a records file (``records`` format; the device column
may be absent: the device comes from ``--latency-device``), resolves what each ``model`` names,
skips unmeasured rows with a reason, and merges duplicate measurements:

* ``model`` may be a preset (XS/S/L1/L3), a spec JSON file, a ``.mlpackage`` path (both
  relative to the records file or the working directory), a published display name
  ("MobileNet-v2x1.0") or a timm model name, or one of these ending with its input size as
  papers print it ("EfficientFormer-L1 (512)", "XS @256"); anything else stops the import naming the file,
  row, column and the accepted forms (unless the spec / timm_name / mlpackage columns say what
  the model is), or, with ``skip_unknown`` (``--skip-unknown``), skips that row with a warning;
* a blank ``latency_ms`` (or a table's "not measured" mark: "-", "N/A", ...) skips the row
  with a warning naming it;
* the rows of one device: ``--match TEXT`` picks them (rows of other devices are not read
  further), and a file naming several devices without it is refused (a calibration mixing
  phones, OS or toolchain versions fits none of them);
* the same model measured twice on one device is averaged when the values agree within
  ``records.DUPLICATE_TOLERANCE`` and refused otherwise (one row twice is one measurement).

``featurise(loaded)`` then reads each model's features: a broken ``.mlpackage`` stops like an
unknown model (skipped and listed with ``skip_unknown``); a timm model Core ML cannot convert
here is skipped and listed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from search_space.errors import UsageError
from search_space.spec import PRESETS, load_spec

from .featurize import featurize_records
from .names import examples, timm_name_for
from .records import (DUPLICATE_TOLERANCE, REQUIRED, Record, RecordError, check_header,
                      parse_record, raw_rows, split_resolution, where)
from .timm_models import close_timm_names, is_timm_model, timm_names_like


@dataclass
class Loaded:
    """Records ready to fit, and what was left out or merged (one line each, for the user)."""
    path: str
    records: list[Record]
    skipped: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    read_as: list[str] = field(default_factory=list)  # paper names read as a timm model


class UnknownModel(RecordError):
    """A ``model`` that is none of the accepted forms (skipped instead with ``skip_unknown``)."""


def accepted_forms() -> str:
    ex = ", ".join(repr(e) for e in examples(2))
    return ("a preset (XS, S, L1, L3), a spec JSON file, a .mlpackage path, a published model "
            f"name (e.g. {ex}) or a timm model name")


def _local(path: str, ref: str) -> str | None:
    """``ref`` as an existing path: next to the records file first, then as given."""
    for cand in (os.path.join(os.path.dirname(os.path.abspath(path)), ref), ref):
        if os.path.exists(cand):
            return cand
    return None


def resolve_record(rec: Record, path: str, read_as: list[str] | None = None) -> Record:
    """Fill spec / timm_name / mlpackage from what ``model`` names, or raise naming it. A
    paper's spelling of a timm model ("MobileViTV2-0.5", "ConvNeXt-T") is read as the one timm
    model it can mean (``timm_models.timm_names_like``), said in ``read_as``; one that can mean
    several is refused naming them."""
    if rec.mlpackage:   # the column `latency suggest` fills: a package beside the template
        rec = replace(rec, mlpackage=_package(path, rec.mlpackage,
                                              where(path, rec.row, "mlpackage")))
    if rec.spec or rec.timm_name or rec.mlpackage or rec.model.upper() in PRESETS:
        return rec
    ref, at = rec.model, where(path, rec.row, "model")
    if ref.rstrip("/").endswith(".mlpackage"):
        return replace(rec, mlpackage=_package(path, ref, at))
    if ref.endswith(".json") or ref.lstrip().startswith("{"):
        found = ref if ref.lstrip().startswith("{") else _local(path, ref)
        if found is None:
            raise RecordError(f"{at}: {ref!r}: no such spec JSON file")
        try:
            spec = load_spec(found)
        except UsageError as e:                  # SpecError, unreadable file
            raise RecordError(f"{at}: {e}") from None
        if rec.resolution:
            spec = spec.replace(resolution=rec.resolution)
        return replace(rec, spec=spec.canonical_json())
    bare, side = (ref, None) if _named_model(ref) else split_resolution(ref, at)
    if side is not None:                           # "EfficientFormer-L1 (512)"
        if rec.resolution and rec.resolution != side:
            raise RecordError(f"{at}: {ref!r} says {side} px, column 'resolution' says "
                              f"{rec.resolution}: give one")
        rec = replace(rec, resolution=side)
        if bare.upper() in PRESETS:
            spec = PRESETS[bare.upper()].replace(resolution=side)
            _say(read_as, f"{at}: {ref!r} read as the preset {bare.upper()} at {side} px")
            return replace(rec, spec=spec.canonical_json())
    timm_name, from_paper = timm_model_named(bare, at, accepted_forms(), said=ref)
    if from_paper or side is not None:
        at_side = f" at {side} px" if side is not None else ""
        _say(read_as, f"{at}: {ref!r} read as the timm model {timm_name!r}{at_side}")
    return replace(rec, timm_name=timm_name)


def _package(path: str, ref: str, at: str) -> str:
    """A .mlpackage a records file names (next to the file first, then as given)."""
    found = _local(path, ref.rstrip("/"))
    if found is None:
        raise RecordError(f"{at}: {ref!r}: no such .mlpackage")
    return found


def _say(read_as: list[str] | None, line: str) -> None:
    if read_as is not None:
        read_as.append(line)


def _named_model(ref: str) -> str | None:
    """The timm model ``ref`` names exactly: a published display name or a timm name."""
    return timm_name_for(ref) or (ref if is_timm_model(ref) else None)


def timm_model_named(ref: str, at: str, forms: str, said: str | None = None
                     ) -> tuple[str, bool]:
    """(the timm model ``ref`` names, whether it was read from a paper's spelling): a published
    display name, a timm name, or the one timm model a paper's spelling can mean; UnknownModel
    naming ``said`` (default ``ref``) at ``at`` when it is none (with ``forms``, what is
    accepted there, and the closest timm names) or several (naming them)."""
    exact = _named_model(ref)
    if exact is not None:
        return exact, False
    said = ref if said is None else said
    like = timm_names_like(ref)
    if len(like) > 1:
        raise UnknownModel(f"{at}: model {said!r} can mean any of the timm models "
                           f"{', '.join(like)}: write the one you mean")
    if not like:
        close = close_timm_names(ref)
        hint = f"; timm names like it: {', '.join(close)}" if close else ""
        raise UnknownModel(f"{at}: unknown model {said!r}: expected {forms}{hint}")
    return like[0], True


def _blank(v) -> bool:
    return v is None or not str(v).strip()


# What tables print in a cell nobody measured (besides leaving it blank).
NOT_MEASURED = frozenset({"-", "--", "\u2013", "\u2014", "n/a", "na", "n.a.", "none", "null",
                          "?", "x"})


def _not_measured(v) -> bool:
    return _blank(v) or str(v).strip().lower() in NOT_MEASURED


def _device_of(raw: dict, device: str | None) -> str:
    """A row's device: its device column, else ``device`` (``--latency-device``)."""
    if device is not None and _blank(raw.get("device")):
        return device
    return str(raw.get("device") or "").strip()


def _matches(device: str, match: str) -> bool:
    """``--match``: a case-insensitive substring of the device column."""
    return match.lower() in device.lower()


def _check_one_device(path: str, devices: list[str], match: str | None) -> None:
    """A calibration is for one device: the rows ``match`` picks, or a file naming one device
    (one mixing phones, OS or toolchain versions fits none of them)."""
    names = sorted(set(devices))
    if match is not None and not any(_matches(d, match) for d in names):
        raise UsageError(f"--match {match!r}: no record's device contains it; devices: {names}")
    if match is None and len(names) > 1:
        shown = ", ".join(repr(d) for d in names[:6]) + (", ..." if len(names) > 6 else "")
        raise UsageError(f"{path}: column 'device' names {len(names)} devices ({shown}): a "
                         "calibration is for one device; choose its rows with --match TEXT")


def _parse_rows(path: str, device: str | None, match: str | None,
                skip_unknown: bool = False) -> Loaded:
    """The rows of the device ``match`` selects (case-insensitive substring of the device
    column; None: the file must name one device) parsed and resolved. Rows of other devices
    are not read further (their models may be ones this tool cannot featurise)."""
    rows, delim, columns = raw_rows(path)
    required = tuple(c for c in REQUIRED if c != "device" or device is None)
    check_header(path, columns, required)
    rows = [(i, raw) for i, raw in rows if not all(_blank(v) for v in raw.values())]
    _check_one_device(path, [_device_of(raw, device) for _, raw in rows], match)
    out = Loaded(path, [])
    for i, raw in rows:
        dev = _device_of(raw, device)
        if match is not None and not _matches(dev, match):
            continue
        raw = {**raw, "device": dev}
        lat = raw.get("latency_ms")
        if _not_measured(lat) and not _blank(raw.get("model")):
            said = "blank latency_ms" if _blank(lat) else f"latency_ms {str(lat).strip()!r}"
            out.skipped.append(f"{path}: row {i} ({str(raw['model']).strip()!r}): {said} (not "
                               "measured): skipped")
            continue
        rec = parse_record(raw, path, i, decimal_comma=delim != ",")
        try:
            out.records.append(resolve_record(rec, path, out.read_as))
        except UnknownModel:
            if not skip_unknown:
                raise
            out.skipped.append(f"{path}: row {i} ({rec.model!r}): not a preset, spec JSON, "
                               ".mlpackage, published name or timm model: skipped")
    return out


def merge_duplicates(loaded: Loaded, tolerance: float = DUPLICATE_TOLERANCE) -> Loaded:
    """One record per (model, device, runtime, compute unit): the mean of agreeing duplicates
    (reported in ``merged``); duplicates further apart than ``tolerance`` x their mean raise."""
    groups: dict[tuple, list[Record]] = {}
    for r in loaded.records:
        key = (r.identity(), r.device, r.runtime, r.compute_unit)
        groups.setdefault(key, []).append(r)
    out = []
    for recs in groups.values():
        if len(recs) == 1:
            out.append(recs[0])
            continue
        ms = [r.latency_ms for r in recs]
        mean = sum(ms) / len(ms)
        rows = ", ".join(str(r.row) for r in recs)
        values = ", ".join(f"{m:g}" for m in ms)
        if (max(ms) - min(ms)) > tolerance * mean:
            raise RecordError(
                f"{loaded.path}: rows {rows}, column 'latency_ms': {recs[0].model!r} measured "
                f"{len(recs)} times on {recs[0].device!r} disagrees ({values} ms, more than "
                f"{tolerance:.0%} of their mean apart): keep the right row or re-measure")
        out.append(replace(recs[0], latency_ms=mean, std_ms=(max(ms) - min(ms)) / 2))
        loaded.merged.append(f"{loaded.path}: rows {rows}: {recs[0].model!r} measured "
                             f"{len(recs)} times ({values} ms): averaged to {mean:.4g} ms")
    return Loaded(loaded.path, out, loaded.skipped, loaded.merged, loaded.read_as)


def load_user_records(path: str, device: str | None = None, match: str | None = None,
                      skip_unknown: bool = False) -> Loaded:
    """Read, resolve, select (``match``) and de-duplicate a records file (module docstring);
    ``skip_unknown``: a row whose model is none of the accepted forms is skipped (and reported)
    instead of stopping the import."""
    return merge_duplicates(_parse_rows(path, device, match, skip_unknown))


def featurise(loaded: Loaded, skip_unknown: bool = False,
              log: Callable[[str], Any] | None = None) -> tuple[Loaded, np.ndarray]:
    """(the records that can be featurised, their feature rows). A record naming a file of the
    user's that cannot be read (a broken ``.mlpackage``) stops the import naming the file, row
    and column, like an unknown model, unless ``skip_unknown``. A timm model Core ML cannot
    convert here (swin_tiny_patch4_window7_224 with coremltools 9) is this tool's limit, not
    the user's error: that row is skipped. Every skipped row joins ``skipped`` with its
    reason. ``log`` hears of each timm model converted."""
    F, errs = featurize_records(loaded.records, log)
    skipped = list(loaded.skipped)
    for r, e in zip(loaded.records, errs):
        if e is None:
            continue
        if r.mlpackage and not skip_unknown:
            raise RecordError(f"{loaded.path}: row {r.row}, column 'model': {r.model!r} cannot "
                              f"be featurised ({e}); fix or remove the row, or pass "
                              "--skip-unknown")
        skipped.append(f"{loaded.path}: row {r.row} ({r.model!r}): cannot be featurised ({e}): "
                       "skipped")
    ok = np.array([e is None for e in errs], dtype=bool)
    return (replace(loaded, records=[r for r, k in zip(loaded.records, ok) if k],
                    skipped=skipped), F[ok])
