"""Config dataclasses from JSON: the one check of a field mapping, shared by every config.

``ArchSpec``, ``SearchSpace`` overrides, ``Fidelity``, ``SupernetConfig`` and ``SearchConfig``
all come from user JSON. Each refuses what is not an object and any unknown field (a typo must
not silently take the default) with one line naming the input and the allowed fields, and
reads JSON's single number type into the declared Python type (``1.0`` is an int field's 1,
``1`` a float field's 1.0). Their own value checks stay in their ``__post_init__``.
"""
from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Mapping

from .errors import UsageError

__all__ = ["is_int", "is_number", "known_fields", "json_numbers"]


def is_int(v: Any) -> bool:
    """An int that is not a bool (JSON true must not pass as 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def known_fields(cls: type, d: Any, what: str, error: type[UsageError] = UsageError,
                 hint: str = "") -> dict[str, Any]:
    """``d`` as a dict, after checking it is a mapping of ``cls``'s dataclass fields only.

    Raises ``error`` (a UsageError) naming ``what``: not an object, or unknown field(s) with
    the allowed ones; ``hint`` is added after the unknown fields (e.g. where they came from)."""
    if not isinstance(d, Mapping):
        raise error(f"{what}: expected a JSON object, got {type(d).__name__}")
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise error(f"{what}: unknown field(s) {unknown}{hint}; allowed: {sorted(allowed)}")
    return dict(d)


def json_numbers(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with whole floats in ``int`` fields made ints and ints in ``float`` fields made
    floats (JSON has one number type); other values untouched (the config checks them)."""
    out = dict(d)
    for f in fields(cls):
        v = out.get(f.name)
        if f.type in ("int", int) and isinstance(v, float) and v.is_integer():
            out[f.name] = int(v)
        elif f.type in ("float", float) and is_int(v):
            out[f.name] = float(v)
    return out


