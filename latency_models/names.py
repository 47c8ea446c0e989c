"""Published display names -> timm model names (``data/published_latency.csv``), so a records
file may say ``MobileNet-v2x1.0`` or ``SwiftFormer-L1`` in its ``model`` column.

Matching ignores case and punctuation ("MobileNetV2x1.0" == "mobilenet-v2 x1.0"). Reads the
CSV with the standard library only.
"""
from __future__ import annotations

import csv
import os
import re
from functools import lru_cache

PUBLISHED_CSV = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                             "published_latency.csv")


def normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9.]", "", name.lower())


@lru_cache(maxsize=1)
def display_names() -> dict[str, str]:
    """normalised display name -> timm name, for every published row that names a timm model
    (first row wins; the "(timm port)" suffix is dropped)."""
    out: dict[str, str] = {}
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            timm_name = (r.get("timm_name") or "").strip()
            if timm_name:
                name = re.sub(r"\s*\(timm port\)\s*$", "", r["model"])
                out.setdefault(normalise(name), timm_name)
    return out


def timm_name_for(display: str) -> str | None:
    """The timm model a published display name refers to, or None."""
    return display_names().get(normalise(display))


def examples(k: int = 3) -> list[str]:
    with open(PUBLISHED_CSV, newline="", encoding="utf-8") as f:
        names = [r["model"] for r in csv.DictReader(f) if (r.get("timm_name") or "").strip()]
    return names[:k]
