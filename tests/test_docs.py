"""Every path and module the README and docs/ name exists.

A newcomer follows the docs to find their room: a path that moved or a module that was renamed
is a wrong door. Checked: markdown links to files, backticked repository paths
(``search/proxy/data.py``), and backticked dotted names (``search.proxy.trial.run_candidate``:
the longest prefix must be a module or package, and the rest an attribute of it).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOP = ("search/", "search_space/", "latency_models/", "results/", "tests/", "bench/", "docs/",
       "notes/", ".ci/")
PACKAGES = ("search", "search_space", "latency_models", "results")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
TICK = re.compile(r"`([^`\s]+)`")


def _paths(doc: Path) -> set[str]:
    text = doc.read_text(encoding="utf-8")
    found = {m for m in LINK.findall(text) if "://" not in m}
    found |= {m.rstrip("/") for m in TICK.findall(text) if m.startswith(TOP)
              and not any(c in m for c in "*<>{}$")}
    return {p.split(":")[0] for p in found}


def _dotted(doc: Path) -> set[str]:
    names = set()
    for m in TICK.findall(doc.read_text(encoding="utf-8")):
        m = m.split("(")[0].rstrip(".,;:")
        if re.fullmatch(r"[a-z_]+(\.[A-Za-z_][A-Za-z0-9_]*)+", m) and m.split(".")[0] in PACKAGES:
            names.add(m)
    return names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_paths_exist(doc):
    base = doc.parent
    missing = sorted(p for p in _paths(doc)
                     if not ((base / p).exists() or (ROOT / p).exists()))
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        mod = ".".join(parts[:i])
        rel = Path(*parts[:i])
        if not ((ROOT / rel).with_suffix(".py").is_file() or (ROOT / rel / "__init__.py").is_file()):
            continue
        obj = importlib.import_module(mod)
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_named_modules_and_attributes_exist(doc):
    bad = sorted(n for n in _dotted(doc) if not _resolves(n))
    assert not bad, f"{doc.relative_to(ROOT)} names modules/attributes that do not exist: {bad}"
