"""The house rules, checked by tools rather than by discipline.

* Import contracts (``.importlinter``, run with import-linter): search -> results ->
  latency_models -> search_space, no cycles inside a package, nothing imports run_search.py.
  A second test copies the packages, plants an upward import and a cycle, and shows that the
  same contracts then fail: a contract that cannot fail proves nothing.
* No function in the packages is longer than 80 lines.
* No library function takes an ``argparse.Namespace``: only the ``cli.py`` modules see argparse
  results; everything below them takes typed config objects.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("search", "results", "latency_models", "search_space")
MAX_FUNCTION_LINES = 80

pytestmark = pytest.mark.timeout(120)


def _lint_imports_cmd() -> list[str]:
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    return [exe] if exe else [sys.executable, "-m", "importlinter.cli"]


def _run_lint(cwd: Path) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    r = subprocess.run(_lint_imports_cmd() + ["--no-cache"], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def _contract_lines(out: str) -> dict[str, str]:
    res = {}
    for line in out.splitlines():
        for verdict in ("KEPT", "BROKEN"):
            if line.endswith(" " + verdict):
                res[line[: -len(verdict) - 1].strip()] = verdict
    return res


def test_import_contracts_hold():
    rc, out = _run_lint(ROOT)
    verdicts = _contract_lines(out)
    assert len(verdicts) == 3, out
    assert rc == 0 and set(verdicts.values()) == {"KEPT"}, out


def _copy_packages(dst: Path) -> None:
    for pkg in PACKAGES:
        for src in (ROOT / pkg).rglob("*.py"):
            target = dst / src.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
    shutil.copyfile(ROOT / ".importlinter", dst / ".importlinter")


@pytest.mark.parametrize("plant, broken", [
    # search_space is the bottom layer: importing results from it is an upward import
    ({"search_space/spec.py": "from results import pareto\n"},
     "search -> results -> latency_models -> search_space"),
    # two sibling modules of results importing each other
    ({"results/pareto.py": "from results import queries\n"}, "no import cycles inside a package"),
    # a cycle kept alive by a function-level import is still a cycle
    ({"results/pareto.py": "def _late():\n    from results import queries\n"},
     "no import cycles inside a package"),
    ({"latency_models/features.py": "import run_search\n"},
     "nothing imports the command line (run_search.py)"),
])
def test_import_contracts_can_fail(tmp_path, plant, broken):
    _copy_packages(tmp_path)
    rc, out = _run_lint(tmp_path)
    assert rc == 0, f"the unmodified copy must pass first:\n{out}"
    for rel, text in plant.items():
        with open(tmp_path / rel, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    rc, out = _run_lint(tmp_path)
    assert rc != 0
    assert _contract_lines(out)[broken] == "BROKEN", out


def _functions():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield path.relative_to(ROOT), node


def test_no_function_longer_than_80_lines():
    long = [f"{path}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions()
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_only_cli_modules_take_argparse_namespaces():
    offenders = []
    for path, node in _functions():
        if path.name == "cli.py":
            continue
        args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        for a in args:
            ann = ast.unparse(a.annotation) if a.annotation is not None else ""
            if "Namespace" in ann:
                offenders.append(f"{path}:{node.lineno} {node.name}({a.arg}: {ann})")
    assert not offenders, "library functions taking argparse.Namespace:\n" + "\n".join(offenders)


# Imports inside function bodies that stay, each with its reason. Everything else is imported
# at module top: project modules plainly (so the contracts above see them), heavy third-party
# packages through search_space.lazy.lazy_import.
FUNCTION_IMPORT_EXEMPTIONS: dict[str, str] = {}


def test_no_imports_inside_functions():
    found = []
    for path, node in _functions():
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                where = f"{path}:{sub.lineno}"
                if f"{path}:{node.name}" not in FUNCTION_IMPORT_EXEMPTIONS:
                    found.append(f"{where} in {node.name}: {ast.unparse(sub)}")
    assert not found, f"{len(found)} imports inside functions:\n" + "\n".join(sorted(set(found)))


def test_lazy_imports_of_project_modules_only_in_cli_modules():
    """``lazy_import`` hides a dependency from the contracts, so it is allowed for project
    modules only where the command line must stay light (``cli.py``), and only within the
    same package."""
    offenders = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for call in ast.walk(tree):
                if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "lazy_import"
                        and call.args and isinstance(call.args[0], ast.Constant)):
                    continue
                target = str(call.args[0].value).split(".")[0]
                if target in PACKAGES + ("run_search",) and (path.name != "cli.py" or target != pkg):
                    offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {call.args[0].value}")
    assert not offenders, "\n".join(offenders)
