"""Mutation testing of the core modules with mutmut 3: kills / total per module.

    /work/venv/bin/python bench/mutation.py                 # every module below
    /work/venv/bin/python bench/mutation.py spec pareto     # some of them
    /work/venv/bin/python bench/mutation.py --list          # what is configured

Each module runs in its own copy of the checkout (``runs/mutation/<module>/``, the files git
tracks or would track) whose ``[tool.mutmut]`` section is the repository's with the module's
``only_mutate`` and its small test selection, so the modules never share mutmut's ``mutants/``
cache and each mutant runs only the few fast tests that reach the mutated function (mutmut
records which tests call which function before it starts). The Ray/browser end-to-end tests
are never in a selection: a mutant must fail a unit test in seconds.

Prints one line per module (killed / total, survivors, no-test mutants) and writes
``runs/mutation/summary.json`` plus ``runs/mutation/<module>/survivors.txt`` (the diff of every
mutant that survived, for review: notes/testing.md says which are equivalent).

Not part of CI: a full run takes about 30-60 minutes on a loaded 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = [sys.executable, "-c", "import sys; from mutmut.__main__ import cli; sys.exit(cli())"]

# module -> files to mutate, optional mutant-name globs (functions) to restrict to, and the
# tests that must kill the mutants (pytest arguments, relative to the repository root).
MODULES: dict[str, dict] = {
    "spec": {"mutate": ["search_space/spec.py"], "tests": ["tests/test_spec.py"]},
    "costs": {"mutate": ["search_space/costs.py"],  # fvcore equality (slow) checked in the suite
              "tests": ["tests/test_costs.py", "-m", "not slow"]},
    "pareto": {"mutate": ["results/pareto.py"], "tests": ["tests/test_pareto.py"]},
    "study_front": {"mutate": ["results/study_front.py"],
                    "tests": ["tests/test_results_study_front.py"]},
    "checkpoint": {"mutate": ["search_space/checkpoint.py"],
                   "tests": ["tests/test_checkpoint.py"]},
    "record": {"mutate": ["search/proxy/record.py"], "tests": ["tests/test_proxy_record.py"]},
    # The latency predictor and its few-shot fit (issue 16 lists the fit's five surviving bugs).
    "predictor": {"mutate": ["latency_models/predictor.py", "latency_models/fewshot.py"],
                  "tests": ["tests/test_latency_predictor.py", "-m", "not slow"]},
    # The search driver's resume / replay: what a resumed search does with the store's final
    # rows, the searcher checkpoint (save / restore / set_state) and the requeued trials.
    "resume": {
        "mutate": ["search/nas/searcher.py", "search/nas/context.py"],
        "functions": [
            "search.nas.searcher.xǁArchSearcherǁ_next_requeued__mutmut_*",
            "search.nas.searcher.xǁArchSearcherǁget_state__mutmut_*",
            "search.nas.searcher.xǁArchSearcherǁset_state__mutmut_*",
            "search.nas.searcher.xǁArchSearcherǁsave__mutmut_*",
            "search.nas.searcher.xǁArchSearcherǁrestore__mutmut_*",
            "search.nas.searcher.xǁArchSearcherǁ__getstate____mutmut_*",
            "search.nas.searcher.xǁArchSearcherǁ_screen_batch__mutmut_*",
            "search.nas.searcher.xǁArchSearcherǁon_trial_complete__mutmut_*",
            "search.nas.context.xǁSearchContextǁ_load_existing__mutmut_*",
            "search.nas.context.xǁSearchContextǁfinish__mutmut_*",
            "search.nas.context.xǁSearchContextǁstored__mutmut_*",
            "search.nas.context.xǁSearchContextǁtold__mutmut_*",
            "search.nas.context.xǁSearchContextǁscreen_candidate__mutmut_*",
            "search.nas.context.xǁSearchContextǁcandidates_final__mutmut_*",
            "search.nas.context.xǁSearchContextǁclose_orphans__mutmut_*",
        ],
        # GP fits: slow, no resume
        "tests": ["tests/test_search_driver.py", "tests/test_search_resume_units.py",
                  "-k", "not gp"],
    },
    # The weight-sharing supernet (issue 16): the store, its slicing / functional forward and
    # the spec mapping. The subprocess tests (SIGKILL resume, GPU script) are left out: they
    # take a minute each and run the code in another process, out of mutmut's reach.
    "supernet_model": {
        "mutate": ["search/proxy/supernet/model.py", "search/proxy/supernet/config.py"],
        "tests": ["tests/test_supernet.py", "tests/test_supernet_units.py",
                  "-k", "not sigkill and not gpu_script"],
    },
    # Its sandwich-rule training and subnet scoring: the single-process functions (the DDP
    # paths need several processes, tests/test_supernet_ddp.py, minutes per mutant).
    "supernet_train": {
        "mutate": ["search/proxy/supernet/training.py", "search/proxy/supernet/scoring.py"],
        "functions": [
            "search.proxy.supernet.training.x_kd_loss__mutmut_*",
            "search.proxy.supernet.training.x_space_key__mutmut_*",
            "search.proxy.supernet.training.x__space_from_dict__mutmut_*",
            "search.proxy.supernet.training.x_json_space__mutmut_*",
            "search.proxy.supernet.training.x__as_tuple__mutmut_*",
            "search.proxy.supernet.training.x__sandwich_step__mutmut_*",
            "search.proxy.supernet.training.x__buckets__mutmut_*",
            "search.proxy.supernet.training.x__train_epoch__mutmut_*",
            "search.proxy.supernet.training.x_train_supernet__mutmut_*",
            "search.proxy.supernet.training.x_load_supernet__mutmut_*",
            "search.proxy.supernet.training.xǁ_Runǁ__init____mutmut_*",
            "search.proxy.supernet.training.xǁ_Runǁmeta__mutmut_*",
            "search.proxy.supernet.training.xǁ_Runǁstate__mutmut_*",
            "search.proxy.supernet.training.xǁ_Runǁrestore__mutmut_*",
            "search.proxy.supernet.scoring.x_*",
        ],
        "tests": ["tests/test_supernet.py", "tests/test_supernet_units.py",
                  "-k", "not sigkill and not gpu_script"],
    },
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [p for p in out.split("\0") if p and (ROOT / p).is_file()]


def mutmut_section(name: str, spec: dict) -> str:
    """The [tool.mutmut] section of the module's copy."""
    lines = ["[tool.mutmut]",
             'source_paths = ["search_space", "results", "search", "latency_models"]',
             f"only_mutate = {json.dumps(spec['mutate'])}",
             'also_copy = ["run_search.py", ".importlinter"]',
             # -x: the first failure kills the mutant; no cache; a hung mutant is a timeout
             'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "--timeout", "300"]',
             f"pytest_add_cli_args_test_selection = {json.dumps(spec['tests'])}"]
    return "\n".join(lines) + "\n"


def prepare(name: str, spec: dict, work: Path) -> Path:
    d = work / name
    if d.exists():
        shutil.rmtree(d)
    for rel in tracked_files():
        target = d / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    py = (d / "pyproject.toml").read_text(encoding="utf-8")
    py = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", py).rstrip() + "\n\n"
    (d / "pyproject.toml").write_text(py + mutmut_section(name, spec), encoding="utf-8")
    return d


def results(d: Path) -> dict[str, str]:
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=d, capture_output=True,
                         text=True, check=True).stdout
    return dict(line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)


def run_module(name: str, spec: dict, work: Path, children: int) -> dict:
    d = prepare(name, spec, work)
    t0 = time.monotonic()
    with open(d / "mutmut.log", "w") as log:
        subprocess.run([*MUTMUT, "run", "--max-children", str(children),
                        *spec.get("functions", [])], cwd=d, stdout=log, stderr=subprocess.STDOUT,
                       check=True)
    status = results(d)
    if spec.get("functions"):
        pats = [re.compile(p.replace("*", ".*")) for p in spec["functions"]]
        status = {k: v for k, v in status.items() if any(p.fullmatch(k) for p in pats)}
    survivors = sorted(k for k, v in status.items() if v not in KILLED)
    with open(d / "survivors.txt", "w") as f:
        for k in survivors:
            diff = subprocess.run([*MUTMUT, "show", k], cwd=d, capture_output=True,
                                  text=True).stdout
            f.write(f"{diff}\n")
    killed = sum(v in KILLED for v in status.values())
    return {"module": name, "files": spec["mutate"], "tests": spec["tests"], "total": len(status),
            "killed": killed, "survived": sum(v == "survived" for v in status.values()),
            "no_tests": sum(v == "no tests" for v in status.values()),
            "kill_rate": round(killed / max(1, len(status)), 3), "survivors": survivors,
            "minutes": round((time.monotonic() - t0) / 60, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    ap.add_argument("--list", action="store_true", help="print the configuration and stop")
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutants (default 2)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "mutation"))
    args = ap.parse_args()
    if args.list:
        print(json.dumps(MODULES, indent=1, ensure_ascii=False))
        return 0
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        ap.error(f"unknown module(s) {unknown}; allowed {', '.join(MODULES)}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    summary_path = work / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for name in args.modules or list(MODULES):
        r = run_module(name, MODULES[name], work, args.max_children)
        summary[name] = r
        summary_path.write_text(json.dumps(summary, indent=1, ensure_ascii=False))
        print(f"{name:12s} {r['killed']:4d}/{r['total']:<4d} killed ({100 * r['kill_rate']:.1f}%)"
              f"  survived {r['survived']}  no tests {r['no_tests']}  {r['minutes']} min  "
              f"-> {work / name / 'survivors.txt'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
