"""The search end to end: real Ray Tune trials, Optuna, proxy training and the SQLite store.

Two searches share one local Ray session (started once for this module), on a generated
ImageFolder (2 classes, 32 px JPEGs), a tiny fidelity and a tiny space:

* one search with everything switched on -- latency budget, ASHA, TPE, zero-cost pre-ranking,
  injected failures -- checks the rows, the report and what was trained;
* a search killed with SIGKILL (a real ``run_search.py search`` subprocess with its own Ray)
  and resumed, with every training start counted, so "a completed trial is never trained
  again" is observed directly, not inferred from rows whose writes are guarded.

The in-process searches run through ``tests/nas_failures.py`` (the same command-line parsing
and ``search_command`` as ``run_search.py search``), whose trainable wrapper injects failures
and records training starts; production code has no hook for either.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nas_failures
from test_search_driver import (ROOT, TINY_FIDELITY, TINY_SPACE, _args, _budget_for_space, _env,
                                _rows, make_imagefolder)

ray = pytest.importorskip("ray")
from ray import cloudpickle  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module's in-process searches (the driver leaves a Ray it did not
    start running). Workers import the project through PYTHONPATH, as the driver arranges when
    it starts Ray itself; the failure-injecting wrapper travels by value."""
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                             saved.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=256 * 2 ** 20)
    cloudpickle.register_pickle_by_value(nas_failures)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(nas_failures)
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("imgs"))


def _search(argv: list[str], plan: str, starts: Path) -> int:
    """``run_search.py search ARGV`` in this process, with the plan's failures injected."""
    return nas_failures.main(["--starts", str(starts), plan, *argv])


@pytest.mark.timeout(420)
def test_search_budget_asha_tpe_prerank_failures_rows_and_report(tmp_path, tiny_data, ray_session,
                                                                 capsys):
    budget = _budget_for_space(0.5)
    study, starts = "e2e", tmp_path / "starts.txt"
    argv = _args(tmp_path, tiny_data, study, trials=4, extra=[
        "--latency-budget-ms", f"{budget:.6f}", "--seed", "3", "--asha", "--strategy", "tpe",
        "--prerank", "2"])
    argv[argv.index("--fidelity") + 1] = json.dumps({**TINY_FIDELITY, "epochs": 2})
    del argv[argv.index("--extra-arch"):argv.index("--extra-arch") + 2]  # no baseline here
    # What ASHA sees is fixed (tests/nas_failures.py): #3 starts only when #1 or #2 has ended,
    # so #2's epoch-1 report (top-1 50) is at the first rung before #3's 0.
    assert _search(argv, "0:flat,1:raise,2:nan,3:weak", starts) == 0
    out = capsys.readouterr().out
    rows = _rows(tmp_path / "runs" / "results.db", study)
    by = collections.defaultdict(list)
    for r in rows:
        by[r["status"]].append(r)
    assert not by["RUNNING"]
    cands = {r["config"]["index"]: r for r in rows if r["config"].get("kind") == "candidate"
             and r["config"].get("index") is not None}
    assert sorted(cands) == [0, 1, 2, 3]
    # What was trained: exactly the four candidates, each once (the wrapper counts starts)
    started = nas_failures.read_starts(starts)
    assert sorted(started) == sorted(r["trial_key"] for r in cands.values())
    # injected failures: recorded FAILED with their cause, the search went on
    assert cands[1]["status"] == "FAILED" and "RuntimeError" in cands[1]["error"] \
        and "injected failure for candidate 1" in cands[1]["error"]
    assert cands[2]["status"] == "FAILED" and "NonFiniteLoss" in cands[2]["error"]
    assert cands[2]["n_epochs"] == 1  # its epoch-1 metrics were logged before it failed
    # ASHA stopped the weak one after its first epoch: PRUNED, not full budget, off the front
    weak = cands[3]
    assert weak["status"] == "PRUNED" and weak["error"] == "stopped early by ASHA", weak
    assert weak["full_budget"] == 0 and weak["n_epochs"] == 1
    from search.nas.config import parse_space
    space = parse_space(TINY_SPACE)
    r = cands[0]
    assert r["status"] == "COMPLETED" and r["full_budget"] == 1 and r["n_epochs"] == 2
    assert r["latency_ms"] <= budget + 1e-9
    # re-evaluable: the recorded params rebuild the recorded architecture, seed recorded
    assert space.from_params(r["config"]["params"]).arch_hash == r["arch_hash"]
    assert r["seed"] == r["config"]["seed"] and len({c["seed"] for c in cands.values()}) == 4
    for zc in ("synflow", "naswot", "grad_norm"):
        assert r[zc] is not None and r[zc] == (r["config"]["zero_cost"] or {}).get(zc, r[zc])
    # budget: rejected before training, never trained, recorded with the reason
    rejected = by["REJECTED"]
    assert rejected, "a median budget should reject some suggestions"
    for r in rejected:
        assert r["latency_ms"] > budget and r["n_epochs"] == 0
        assert r["error"].startswith(f"predicted {r['latency_ms']:.3f} ms > budget")
    # pre-ranking: each candidate whose two suggestions were both trainable went through it
    # (its zero-cost scores, computed in the driver, travel in its config and are what its row
    # records); it has one loser, recorded PRUNED with its scores and never trained.
    preranked = [r for r in cands.values() if r["config"]["zero_cost"]]
    pre = [r for r in by["PRUNED"] if r["trial_key"].startswith("pre-")]
    assert preranked and len(pre) == len(preranked)
    assert not {r["trial_key"] for r in pre} & set(started)
    for r in pre:
        assert r["error"] == "pre-ranked out by zero-cost scores (kept 1 of 2)"
        assert r["n_epochs"] == 0 and r["synflow"] is not None and r["latency_ms"] <= budget
    # the study ran the sampler it was asked for
    saved = json.loads((tmp_path / "runs" / study / "search_config.json").read_text())
    assert (saved["strategy"], saved["prerank"], saved["asha"]) == ("tpe", 2, True)
    # report files: the front holds only full-budget completed trials, and front and
    # hypervolume are results.study_front's (what `pareto --study` and the dashboard show)
    rep = json.loads((tmp_path / "runs" / study / "pareto.json").read_text())
    completed = {r["trial_key"] for r in by["COMPLETED"]}  # cand 0 and duplicates reusing it
    assert rep["front"] and {f["trial_key"] for f in rep["front"]} <= completed
    from results.store import ResultsStore
    from results.study_front import study_front
    with ResultsStore(str(tmp_path / "runs" / "results.db"), readonly=True) as store:
        view = study_front(store, study)
    # (one row per architecture: a reused duplicate is the same point under a second key)
    assert {f["trial_key"] for f in rep["front"]} <= {f["trial_key"] for f in view["front"]}
    assert {f["arch_hash"] for f in rep["front"]} == {f["arch_hash"] for f in view["front"]}
    assert rep["hypervolume"]["value"] == view["hypervolume"] > 0
    assert [rep["hypervolume"]["reference"]["top1"],
            rep["hypervolume"]["reference"]["latency_ms"]] == view["reference_point"]
    assert f"hypervolume {view['hypervolume']:.3f}" in out
    assert (tmp_path / "runs" / study / "pareto.png").stat().st_size > 1000
    assert "Pareto front" in out and "database:" in out


def _kill_after_candidates(cmd: list[str], db: Path, study: str, log: Path, n: int) -> list[dict]:
    """Run ``cmd`` (own process group, with its Ray) until the store holds ``n`` COMPLETED
    candidates, then SIGKILL the group; the rows the killed driver left."""
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=log.parent, env=_env(), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    seen = False
    try:
        deadline = time.monotonic() + 240
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                rows = _rows(db, study) if db.exists() else []
            except sqlite3.Error:
                continue
            seen = sum(r["status"] == "COMPLETED" and r["config"].get("kind") == "candidate"
                       for r in rows) >= n
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert seen, log.read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL, "the driver should have been killed mid-run"
    return _rows(db, study)


@pytest.mark.timeout(480)
def test_resume_after_sigkill_trains_only_what_was_not_done(tmp_path, tiny_data, ray_session,
                                                            capsys):
    """The killed driver saved Tune's experiment state (with the searcher) only at its start
    (``--checkpoint-period``), so what finished afterwards is known to the store alone: the
    resumed search must replay it from there and train only what had not finished. Killed
    after two candidates completed: #0 was suggested before that save (a requeued trial, told
    to Optuna from its row), #1 after it (unknown to the searcher: ``replay_store`` has Optuna
    suggest it again, and its stored result is reused)."""
    study, db = "resume", tmp_path / "runs" / "results.db"
    argv = _args(tmp_path, tiny_data, study, trials=4, extra=["--seed", "5"])
    cmd = [sys.executable, str(ROOT / "tests" / "nas_failures.py"), "--checkpoint-period",
           "3600", "", *argv]
    before = _kill_after_candidates(cmd, db, study, tmp_path / "first.log", 2)
    done_before = {r["trial_key"]: r for r in before if r["status"] == "COMPLETED"}
    assert 2 <= len([r for r in done_before.values() if r["config"]["kind"] == "candidate"]) < 4

    starts = tmp_path / "resumed-starts.txt"
    assert _search(["search", "--study", study, "--resume", "--db", str(db), "--out",
                    str(tmp_path / "runs")], "", starts) == 0
    assert "resuming" in capsys.readouterr().out
    after = _rows(db, study)
    keys = [r["trial_key"] for r in after]
    assert len(keys) == len(set(keys))  # (study, trial_key) unique: no duplicated rows
    assert not [r for r in after if r["status"] == "RUNNING"]
    cands = [r for r in after if r["config"].get("kind") == "candidate"
             and r["config"].get("index") is not None and r["status"] == "COMPLETED"]
    # exactly the budget of 4 candidates, one per index, none twice
    assert sorted(r["config"]["index"] for r in cands) == [0, 1, 2, 3], \
        [(r["trial_key"], r["status"]) for r in after]
    # Observed directly: the resumed driver started no trial that had completed, and trained
    # each of the others exactly once.
    started = collections.Counter(nas_failures.read_starts(starts))
    assert not set(started) & set(done_before), (sorted(started), sorted(done_before))
    assert set(started) == {r["trial_key"] for r in after if r["status"] == "COMPLETED"
                            and r["trial_key"] not in done_before
                            and r["config"].get("index") is not None}
    assert set(started.values()) == {1}
    # no architecture trained twice (a resumed sampler replays the killed run's suggestions:
    # those already trained are DUPLICATE rows, those in training are not started again)
    trained = [k.rsplit("-", 1)[1] for k in [*started, *done_before] if k.startswith("cand-")]
    assert len(trained) == len(set(trained)), sorted(trained)
    for key, r0 in done_before.items():
        r1 = next(r for r in after if r["trial_key"] == key)
        # not re-run: same final row, same finish time, same epoch rows
        assert (r1["status"], r1["finished_at"], r1["top1"], r1["n_epochs"]) == \
            (r0["status"], r0["finished_at"], r0["top1"], r0["n_epochs"])
    # the baseline trained once (before or after the kill) with the study's proxy budget
    base = [r for r in after if r["config"].get("kind") == "baseline"]
    assert len(base) == 1 and base[0]["status"] == "COMPLETED" and base[0]["full_budget"] == 1
    assert base[0]["n_epochs"] == TINY_FIDELITY["epochs"]
    assert (tmp_path / "runs" / study / "pareto.png").exists()
