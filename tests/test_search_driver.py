"""Search driver (search.nas) without Ray trials: fail-fast input checks, the CLI derived from
SearchConfig, the searcher (budget rejections, strategies, zero-cost pre-ranking, checkpoint
and resume replay) and the context's reuse of stored results, over a real results store.

The end-to-end searches (real Ray Tune trials, SIGKILL and resume) are in
tests/test_search_e2e.py; the helpers here (tiny data, space, fidelity, argv) serve both.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tiny import (TINY_BASELINE, TINY_FIDELITY, TINY_SPACE,  # noqa: F401  (re-exported)
                  make_imagefolder)

import run_search

ROOT = Path(__file__).resolve().parents[1]




def _args(tmp: Path, data: Path, study: str, trials: int, extra=()) -> list[str]:
    return ["search", "--study", study, "--data", str(data), "--trials", str(trials),
            "--fidelity", json.dumps(TINY_FIDELITY), "--space", json.dumps(TINY_SPACE),
            "--baselines", "", "--extra-arch", json.dumps(TINY_BASELINE),
            "--db", str(tmp / "runs" / "results.db"), "--out", str(tmp / "runs"), *extra]


def _env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(extra)
    return env


def _rows(db: Path, study: str) -> list[dict]:
    con = sqlite3.connect(str(db), timeout=30)  # read only in practice; WAL allows it mid-write
    con.row_factory = sqlite3.Row
    try:
        rows = con.execute(
            "SELECT t.* FROM sfn_trials t JOIN sfn_studies s ON s.id = t.study_id "
            "WHERE s.name = ? ORDER BY t.id", (study,)).fetchall()
        out = [dict(r) for r in rows]
        for r in out:
            r["config"] = json.loads(r["config"]) if r.get("config") else {}
            r["n_epochs"] = con.execute("SELECT COUNT(*) FROM sfn_epoch_metrics WHERE trial_id=?",
                                        (r["id"],)).fetchone()[0]
        return out
    finally:
        con.close()


# -- fail fast, before Ray ------------------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["search", "--data", "{tmp}"], "missing train/"),
    (["search", "--latency-device", "nokia-3310"], "--latency-device 'nokia-3310': allowed"),
    (["search", "--latency-device", "nowhere/phone.json"], "no such calibration file"),
    (["search", "--latency-budget-ms", "0.001"], "no architecture of the space meets it"),
    (["search", "--extra-arch", '{"depths": [1, 2]}'], "missing required field"),
    (["search", "--extra-arch", '{"depths": [1,1,1,1], "widths": [16,16,32,32], '
      '"mlp_ratios": [2,2,2,2], "attn_blocks": [0,0,0,5]}'], "attn_blocks[3]=5"),
    (["search", "--strategy", "annealing"], "invalid choice"),
    (["search", "--fidelity", '{"epoch": 2}'], "unknown field"),
    (["search", "--fidelity", '{"epochs": 0}'], "fidelity.epochs=0"),
    (["search", "--space", '{"depth": [[1]]}'], "--space: unknown field"),
    (["search", "--trials", "0"], "argument --trials: 0: allowed integers 1..100000"),
    (["search", "--cpus-per-trial", "0"], "--cpus-per-trial 0.0: allowed numbers > 0"),
    (["search", "--study", "a/b"], "--study 'a/b'"),
    (["search", "--resume"], "--resume: give the --study NAME"),
    (["search", "--study", "nothing-here", "--resume"], "nothing to resume"),
    (["search", "--torch-device", "tpu"], "argument --torch-device: 'tpu': allowed auto"),
])
def test_bad_input_fails_fast_with_one_line(tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    argv += ["--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "runs")]
    try:
        code = run_search.main(argv)
    except SystemExit as e:  # argparse choice errors exit by themselves
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err, err
    if "invalid" not in needle and "argument" not in needle:  # argparse's own: with usage
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    import ray
    assert not ray.is_initialized()
    assert not (tmp_path / "r.db").exists()  # nothing written before validation passed


# -- end to end: tests/test_search_e2e.py (real Ray Tune trials) ---------------------------
def _budget_for_space(q: float) -> float:
    """A latency budget at quantile q of the tiny space's predicted latencies."""
    from latency_models import load_predictor
    from search.nas.config import parse_space

    space = parse_space(TINY_SPACE)
    p = load_predictor()
    lats = sorted(p.predict(s)[0] for s in space.sample_many(200, seed=1))
    return float(lats[int(q * (len(lats) - 1))])


# -- driver-side logic without Ray trials (fast) ----------------------------------------------
class _FakePredictor:
    version = "fake-1"

    def predict(self, spec):
        from search_space.costs import analytic_gmacs
        return 10.0 * analytic_gmacs(spec), 0.1


class _FakeData:
    dataset_id = "fake-data"
    num_classes = 2


def _context(tmp_path, study: str, budget=None, n_trials=3, db="r.db"):
    """A SearchContext over a real store with a fake predictor and data (no Ray, no torch)."""
    import io

    from results.store import ResultsStore
    from search.nas.config import ResolvedSearch, SearchConfig, parse_fidelity_fields, parse_space
    from search.nas.context import SearchContext
    from search.nas.progress import Progress
    from search.proxy.record import TrialRecorder

    cfg = SearchConfig(study=study, n_trials=n_trials, latency_budget_ms=budget,
                       fidelity=parse_fidelity_fields(TINY_FIDELITY), space=parse_space(TINY_SPACE),
                       baselines=(), db=str(tmp_path / db), out_root=str(tmp_path))
    store = ResultsStore(cfg.db)
    recorder = TrialRecorder.for_study(store, study, config=cfg.identity(), seed=0,
                                       dataset_id="fake-data", fidelity=cfg.fidelity.to_dict(),
                                       device="fake")
    resolved = ResolvedSearch(config=cfg, baselines=(), latency_device="fake",
                              predictor=_FakePredictor())
    return SearchContext(resolved, recorder, _FakeData(), Progress(n_trials, io.StringIO()))


def test_baseline_result_reused_across_studies_same_data_and_fidelity(tmp_path):
    from search_space.spec import ArchSpec

    spec = ArchSpec.from_dict(TINY_BASELINE)
    a = _context(tmp_path, "first")
    cfg = a.baseline_config("tiny", spec.canonical_json())
    assert cfg is not None  # nothing to reuse yet: it must be trained
    a.start(cfg["trial_key"], spec, cfg, cfg["seed"])
    a.finish(cfg["trial_key"], "COMPLETED", {"top1": 61.0, "latency_ms": cfg["latency_ms"]},
             epochs_done=TINY_FIDELITY["epochs"])
    b = _context(tmp_path, "second")
    assert b.baseline_config("tiny", spec.canonical_json()) is None  # reused, not retrained
    rows = b.store.trials(b.study_id)
    assert len(rows) == 1 and rows[0]["status"] == "COMPLETED" and rows[0]["top1"] == 61.0
    assert rows[0]["full_budget"] and rows[0]["config"]["reused_from_trial"] is not None
    # a different fidelity is a different proxy: no reuse
    c = _context(tmp_path, "third")
    c.fidelity_key = "other"
    assert c.baseline_config("tiny", spec.canonical_json()) is not None


def _budget_searcher(tmp_path, n_trials=3):
    from search.nas.searcher import ArchSearcher

    ctx0 = _context(tmp_path, "probe", db="probe.db")
    lats = sorted(_FakePredictor().predict(s)[0] for s in ctx0.space.sample_many(100, seed=0))
    budget = lats[len(lats) // 3]
    ctx = _context(tmp_path, "s", budget=budget, n_trials=n_trials)
    return ctx, budget, ArchSearcher(ctx, ctx.space, "nsga2", 0, n_trials, [])


def test_searcher_rejects_over_budget_without_trials_and_checkpoints(tmp_path):
    from ray.tune.search import Searcher

    from search.nas.searcher import ArchSearcher

    ctx, budget, searcher = _budget_searcher(tmp_path)
    configs = []
    for i in range(3):
        c = searcher.suggest(f"t{i}")
        assert isinstance(c, dict) and c["latency_ms"] <= budget and c["index"] == i
        configs.append(c)
    assert searcher.suggest("t3") == Searcher.FINISHED
    rejected = ctx.store.trials(ctx.study_id, status="REJECTED")
    assert rejected and all(r["latency_ms"] > budget for r in rejected)
    assert len(ctx.store.trials(ctx.study_id)) == len(rejected)  # trials are the callback's job
    # Optuna was told about every rejection (COMPLETE with top1 0) and nothing else yet
    study = searcher.inner._ot_study
    told = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(told) == len(rejected) and all(t.values[0] == 0.0 for t in told)
    searcher.on_trial_complete("t0", {"top1": 55.0, "latency_ms": configs[0]["latency_ms"],
                                      "final": True})
    searcher.on_trial_complete("t1", {"top1": 20.0, "final": False})  # stopped early
    searcher.on_trial_complete("t2", None, error=True)
    states = sorted(t.state.name for t in study.trials if t.state.name != "COMPLETE")
    assert states == ["FAIL", "PRUNED"]
    # checkpoint round trip (what a resume does): counters and the Optuna study survive
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    fresh = ArchSearcher(ctx, ctx.space, "nsga2", 0, 3, [])
    fresh.restore(str(path))
    assert fresh.n_candidates == 3 and len(fresh.inner._ot_study.trials) == len(study.trials)
    assert fresh.suggest("t9") == Searcher.FINISHED


def test_resumed_searcher_reruns_live_trials_and_tells_finished_ones_from_the_store(tmp_path):
    """A resume restores the searcher's last checkpoint into a fresh searcher (fresh context):
    trials live at the checkpoint run again with the same config, unless the store has their
    final row (they finished after the checkpoint): then Optuna learns the stored result."""
    import pickle

    from ray.tune.search import Searcher
    from search_space.spec import ArchSpec

    from search.nas.context import SearchContext
    from search.nas.searcher import ArchSearcher

    ctx, _, searcher = _budget_searcher(tmp_path)
    first = [searcher.suggest(f"t{i}") for i in range(2)]
    for c in first:  # what the callback does when Tune starts them
        ctx.start(c["trial_key"], ArchSpec.from_json(c["spec"]), c, c["seed"])
    searcher.save_to_dir(str(tmp_path), session_str="2000-01-01_00-00-00")
    # after the checkpoint, the first trial completed; then the driver was killed
    ctx.finish(first[0]["trial_key"], "COMPLETED", {"top1": 42.0,
               "latency_ms": first[0]["latency_ms"]}, epochs_done=TINY_FIDELITY["epochs"])
    pickle.dumps(searcher)  # Tune pickles it into tuner.pkl: the context must stay out
    fresh_ctx = SearchContext(ctx.resolved, type(ctx.recorder)(ctx.store, ctx.study_id, ctx.fid),
                              ctx.data, ctx.progress)
    fresh = ArchSearcher(fresh_ctx, ctx.space, "nsga2", 0, 3, [])
    fresh.restore_from_dir(str(tmp_path))
    again = fresh.suggest("n0")
    assert again == first[1]  # same key, same seed, same spec
    completed = [t for t in fresh.inner._ot_study.trials
                 if t.state.name == "COMPLETE" and t.values[0] == 42.0]
    assert len(completed) == 1  # Optuna learnt the stored result, nothing was retrained
    third = fresh.suggest("n1")
    assert third["index"] == 2 and fresh.suggest("n2") == Searcher.FINISHED
    keys = [t["trial_key"] for t in ctx.store.trials(ctx.study_id)]
    assert len(keys) == len(set(keys))


def _fresh_context(ctx):
    """What a resumed driver builds: a new context (and recorder) over the same store."""
    from search.nas.context import SearchContext

    return SearchContext(ctx.resolved, type(ctx.recorder)(ctx.store, ctx.study_id, ctx.fid),
                         ctx.data, ctx.progress)


def test_resume_without_checkpoint_replays_final_candidates_from_the_store(tmp_path):
    """Killed before the searcher's first checkpoint: the resumed driver's fresh searcher has
    Optuna suggest the stored candidates again (``replay_store``, as the driver does on
    resume); those already final are told to Optuna from their rows and never emitted (= never
    trained) again, an interrupted one runs again under its own key, index and seed."""
    from ray.tune.search import Searcher
    from search_space.spec import ArchSpec

    from search.nas.searcher import ArchSearcher

    ctx, _, first = _budget_searcher(tmp_path, n_trials=4)
    c0, c1, c2 = first.suggest("t0"), first.suggest("t1"), first.suggest("t2")
    for c in (c0, c1, c2):
        ctx.start(c["trial_key"], ArchSpec.from_json(c["spec"]), c, c["seed"])
    # c1 finished first (told to Optuna in another order than a replay would), c2 was running
    ctx.finish(c1["trial_key"], "COMPLETED", {"top1": 42.0, "latency_ms": c1["latency_ms"]},
               epochs_done=TINY_FIDELITY["epochs"])
    ctx.finish(c0["trial_key"], "FAILED", {"latency_ms": c0["latency_ms"]}, epochs_done=0,
               error="RuntimeError: boom")
    rows_before = {t["trial_key"]: t for t in ctx.store.trials(ctx.study_id)}

    fresh = ArchSearcher(_fresh_context(ctx), ctx.space, "nsga2", 0, 4, [])
    assert fresh.replay_store() == 3
    emitted = [fresh.suggest("n0"), fresh.suggest("n1")]
    assert fresh.suggest("n2") == Searcher.FINISHED  # the budget of 4
    assert emitted[0] == c2  # interrupted: runs again, same key, index and seed
    assert emitted[1]["index"] == 3 and emitted[1]["trial_key"] not in rows_before
    told = [t for t in fresh.inner._ot_study.trials if t.state.name != "RUNNING"]
    completed = [t.values for t in told if t.state.name == "COMPLETE" and t.values[0] != 0.0]
    assert completed == [[42.0, c1["latency_ms"]]]  # the stored result, as Optuna learnt it
    assert [t.params for t in told if t.state.name == "PRUNED"] == [c0["params"]]  # failed
    after = {t["trial_key"]: t for t in ctx.store.trials(ctx.study_id)}
    assert all(after[k]["finished_at"] == r["finished_at"] for k, r in rows_before.items())
    # new rows: only rejections of the new suggestions for index 3 (the replay wrote none)
    assert {after[k]["status"] for k in set(after) - set(rows_before)} <= {"REJECTED"}


def test_driver_resume_queues_the_stored_candidates_for_replay(tmp_path):
    """The driver's searcher for --resume (no searcher checkpoint in the experiment directory)
    has Optuna ask the stored candidates again first, in index order; a new run does not."""
    from search_space.spec import ArchSpec

    from search.nas import driver
    from search.nas.storage import experiment_storage

    ctx, _, first = _budget_searcher(tmp_path)
    made = [first.suggest(f"t{i}") for i in range(2)]
    for c in made:
        ctx.start(c["trial_key"], ArchSpec.from_json(c["spec"]), c, c["seed"])
    fresh = _fresh_context(ctx)
    where = experiment_storage(None, str(tmp_path / "no-experiment"), "s")
    resumed = driver._searcher(fresh, where, resume=True)
    waiting = [t.system_attrs["fixed_params"] for t in resumed.inner._ot_study.trials
               if t.state.name == "WAITING"]  # enqueued, not asked yet
    assert waiting == [c["params"] for c in made]
    new = driver._searcher(_fresh_context(ctx), where, resume=False)
    assert not new.inner._ot_study.trials


STRATEGY_SAMPLERS = {"nsga2": "NSGAIISampler", "tpe": "TPESampler", "gp": "GPSampler",
                     "random": "RandomSampler"}


@pytest.mark.parametrize("strategy", list(STRATEGY_SAMPLERS))
def test_strategy_option_selects_the_optuna_sampler_seeded(tmp_path, strategy):
    """--strategy reaches the searcher as that Optuna sampler, which takes told results (the
    fifth suggestion is past every sampler's random start-up of 4 at this budget); the same
    seed gives the same suggestions, another seed others."""
    from search.nas.cli import config_from_args
    from search.nas.searcher import ArchSearcher, make_sampler
    from search_space.spec import ArchSpec

    cfg = config_from_args(_search_parser().parse_args(["--strategy", strategy]))
    assert cfg.strategy == strategy
    runs = iter(range(100))

    def run(seed: int, n: int = 5) -> list[dict]:
        # one driver run = one context; each trial starts and finishes as the callback does
        name = f"s{next(runs)}"
        ctx = _context(tmp_path, name, n_trials=5, db=f"{name}.db")
        searcher = ArchSearcher(ctx, ctx.space, cfg.strategy, seed, 5, [])
        assert type(searcher.inner._ot_study.sampler).__name__ == STRATEGY_SAMPLERS[strategy]
        out = []
        for i in range(n):
            c = searcher.suggest(f"t{i}")
            out.append(c["params"])
            top1 = float(sum(v for k, v in c["params"].items() if k.startswith("w")) % 97)
            ctx.start(c["trial_key"], ArchSpec.from_json(c["spec"]), c, c["seed"])
            ctx.finish(c["trial_key"], "COMPLETED", {"top1": top1, "latency_ms": c["latency_ms"]},
                       epochs_done=TINY_FIDELITY["epochs"])
            searcher.on_trial_complete(f"t{i}", {"top1": top1, "latency_ms": c["latency_ms"],
                                                 "final": True})
        # every ask was told (a repeated architecture: as a duplicate with its stored top-1)
        assert {t.state.name for t in searcher.inner._ot_study.trials} == {"COMPLETE"}
        return out

    first = run(11)
    assert run(11, 4) == first[:4]
    assert run(12, 4) != first[:4]
    with pytest.raises(ValueError, match="strategy 'annealing': allowed nsga2, tpe, gp, random"):
        make_sampler("annealing", 0, 5)


def _zero_cost_key(v: float) -> float:
    return -v if math.isfinite(v) else math.inf  # higher is better; non-finite ranks last


def _expected_winner(scores: list[dict]) -> int:
    """Brute force of the pre-ranking rule: lowest sum over synflow and naswot of each
    candidate's rank (number of candidates ranked before it; ties by ask order)."""
    total = []
    for i, s in enumerate(scores):
        r = 0
        for m in ("synflow", "naswot"):
            ki = _zero_cost_key(s[m])
            r += sum(_zero_cost_key(o[m]) < ki or (j < i and _zero_cost_key(o[m]) == ki)
                     for j, o in enumerate(scores))
        total.append((r, i))
    return min(total)[1]


def test_prerank_trains_the_best_zero_cost_rank_and_records_the_rest(tmp_path, monkeypatch):
    """--prerank K: K suggestions are scored (zero-cost proxies, stubbed here to known values),
    the best mean rank is emitted with its scores, the others are recorded PRUNED with theirs,
    told to Optuna as pruned and never emitted."""
    from ray.tune.search import Searcher
    from search_space.spec import ArchSpec

    import search.nas.context as context_mod
    from search.nas.searcher import ArchSearcher

    def fake_scores(spec, data, seed):
        syn = float("nan") if spec.widths[1] == 24 else float(sum(spec.widths))
        return {"synflow": syn, "naswot": -float(spec.num_blocks) + spec.widths[3] / 100.0,
                "grad_norm": 1.0}

    monkeypatch.setattr(context_mod, "zero_cost_scores", fake_scores)
    ctx = _context(tmp_path, "pre", n_trials=2)
    searcher = ArchSearcher(ctx, ctx.space, "random", 4, 2, [], prerank=3)
    for index in range(2):
        c = searcher.suggest(f"t{index}")
        inner = searcher.live[f"t{index}"]["inner"]
        asks = {f"ask{3 * index + k:05d}" for k in (1, 2, 3)}  # this suggestion's batch
        assert c["index"] == index and inner in asks
        losers = [t for t in ctx.store.trials(ctx.study_id, status="PRUNED")
                  if t["trial_key"].split("-")[1] in asks]
        assert len(losers) == 2
        batch = sorted([(inner, ArchSpec.from_json(c["spec"]))] + [
            (t["trial_key"].split("-")[1], ArchSpec.from_json(t["config"]["spec"]))
            for t in losers], key=lambda x: x[0])  # ask order
        scores = [fake_scores(spec, None, 0) for _, spec in batch]
        assert batch[_expected_winner(scores)][0] == inner
        assert c["zero_cost"] == pytest.approx(fake_scores(ArchSpec.from_json(c["spec"]), None,
                                                           0), nan_ok=True)
        for t in losers:
            assert t["error"] == "pre-ranked out by zero-cost scores (kept 1 of 3)"
            assert t["metrics"]["naswot"] == t["config"]["zero_cost"]["naswot"]
            assert t["epochs_reached"] == 0 and t["seed"] == 0
    assert searcher.suggest("t2") == Searcher.FINISHED
    states = [t.state.name for t in searcher.inner._ot_study.trials]
    assert sorted(states) == ["PRUNED"] * 4 + ["RUNNING"] * 2  # losers told, winners live


# -- the command line is derived from SearchConfig ---------------------------------------------
def _search_parser():
    import argparse

    from search.nas.cli import add_search_arguments

    p = argparse.ArgumentParser()
    add_search_arguments(p)
    return p


def test_every_config_field_is_an_option_and_the_dataclass_holds_the_defaults(capsys):
    import dataclasses

    from search.nas.cli import config_from_args
    from search.nas.config import SearchConfig

    p = _search_parser()
    dests = {a.dest for a in p._actions}
    assert {f.name for f in dataclasses.fields(SearchConfig)} <= dests
    for f in dataclasses.fields(SearchConfig):
        default = p.get_default(f.name)
        if "shared" in f.metadata["cli"]:  # declared once elsewhere: the same value
            assert default is None or default == f.default, f.name
        else:  # no default restated in argparse
            assert default == "==SUPPRESS==", f.name
    cfg = config_from_args(p.parse_args([]))
    assert dataclasses.replace(cfg, study="x") == SearchConfig(study="x")
    assert cfg.study.startswith("search-")
    cfg = config_from_args(p.parse_args([
        "--study", "s1", "--latency-device", "iphone12-ane", "--torch-device", "cpu",
        "--trials", "3", "--baselines", "XS, S", "--extra-arch", "L1", "--fidelity",
        '{"epochs": 1}', "--space", '{"resolutions": [224]}', "--out", "o", "--db", "o/r.db"]))
    assert (cfg.study, cfg.latency_device, cfg.torch_device, cfg.n_trials) == \
        ("s1", "iphone12-ane", "cpu", 3)
    assert cfg.baselines == ("XS", "S") and cfg.extra_archs == ("L1",)
    assert cfg.fidelity.epochs == 1 and cfg.space.resolutions == (224,)
    assert (cfg.out_root, cfg.db) == ("o", "o/r.db")
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg  # search_config.json round trip
    for old in ("--device", "--train-device"):  # the phone and the torch device, renamed
        with pytest.raises(SystemExit):
            p.parse_args([old, "cpu"])
        assert f"unrecognized arguments: {old} cpu" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    [],  # building the parser (`run_search.py --help`)
    ["search", "--data", "/nonexistent", "--db", "/nonexistent/r.db"],  # failing validation
    ["search", "--trials", "0"],  # refused by the option's parse step
    ["search", "--latency-budget-ms", "-1"],  # refused by SearchConfig's check
])
def test_help_and_bad_input_stay_light(argv):
    """The command line and its validation import no torch, ray, optuna or matplotlib."""
    code = ("import sys, run_search\n"
            "try:\n"
            "    rc = run_search.main(sys.argv[1:]) if len(sys.argv) > 1 else "
            "(run_search.build_parser(), 0)[1]\n"
            "except SystemExit as e:  # argparse's own refusal\n"
            "    rc = e.code\n"
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'matplotlib') "
            "if m in sys.modules))\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    if argv:  # one line naming the input, exit 2
        assert r.returncode == 2 and r.stderr.startswith("error: ") \
            and r.stderr.count("\n") == 1, r.stderr
