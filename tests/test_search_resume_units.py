"""Unit tests of the search driver's resume bookkeeping (issue 16): SearchContext's screening,
final rows, store loading and orphan closing; ArchSearcher's requeue, batch screening, Optuna
telling and checkpoint state. No Ray trials, no training: a real results store with the fake
predictor and data of tests/test_search_driver.py.
"""
from __future__ import annotations

import io
import pickle

import pytest
from test_search_driver import TINY_FIDELITY, _context, _FakePredictor

from results.schema import SUPERNET
from search.nas.context import SearchContext
from search.nas.progress import Progress
from search.nas.searcher import ArchSearcher
from search.proxy.record import TrialRecorder, fidelity_reached

FULL = TINY_FIDELITY["epochs"]


def _by_latency(ctx) -> list:
    """Distinct architectures of the tiny space, cheapest first (fake predictor)."""
    specs = {s.arch_hash: s for s in ctx.space.sample_many(200, seed=0)}
    return sorted(specs.values(), key=lambda s: _FakePredictor().predict(s)[0])


def _lat(spec) -> float:
    return float(_FakePredictor().predict(spec)[0])


def _reopen(ctx) -> SearchContext:
    """A resumed driver's context over the same store, with its own (empty) progress."""
    return SearchContext(ctx.resolved, TrialRecorder(ctx.store, ctx.study_id, ctx.fid), ctx.data,
                         Progress(ctx.progress.total, io.StringIO()))


def _rows(ctx) -> dict[str, dict]:
    return {t["trial_key"]: t for t in ctx.store.trials(ctx.study_id)}


def _train(ctx, key, spec, top1=50.0, status="COMPLETED", epochs=FULL, **config):
    config = {"trial_key": key, "kind": "candidate", "spec": spec.canonical_json(), **config}
    ctx.start(key, spec, config, 7)
    ctx.finish(key, status, {"top1": top1, "latency_ms": _lat(spec)}, epochs_done=epochs)
    return config


# -- SearchContext.screen_candidate --------------------------------------------------------
def test_screen_over_budget_is_recorded_rejected_and_told_top1_zero(tmp_path):
    probe = _context(tmp_path, "probe", db="probe.db")
    specs = _by_latency(probe)
    budget = _lat(specs[len(specs) // 2])
    ctx = _context(tmp_path, "s", budget=budget)
    spec = specs[-1]
    lat = _lat(spec)
    params = ctx.space.to_params(spec)
    verdict = ctx.screen_candidate(params, 5, "ask00007")
    assert verdict == {"action": "rejected", "tell": {"top1": 0.0, "latency_ms": lat}}
    key = f"rej-ask00007-{spec.arch_hash}"
    rows = _rows(ctx)
    assert list(rows) == [key]
    row = rows[key]
    assert row["status"] == "REJECTED" and row["seed"] == 0
    assert row["latency_ms"] == pytest.approx(lat) and row["latency_std_ms"] == pytest.approx(0.1)
    assert row["error"] == f"predicted {lat:.3f} ms > budget {budget:g} ms on fake"
    assert row["fidelity_reached"]["epochs"] == 0 and not row["full_budget"]
    assert row["config"] == {"trial_key": key, "kind": "candidate", "name": "", "index": None,
                             "spec": spec.canonical_json(), "params": params, "latency_ms": lat,
                             "latency_std_ms": 0.1, "seed": None}
    assert ctx.configs[key] == row["config"]
    assert key in ctx.done_keys and ctx.progress.counts == {"REJECTED": 1}


def test_screen_at_the_budget_or_without_one_trains(tmp_path):
    probe = _context(tmp_path, "probe", db="probe.db")
    specs = _by_latency(probe)
    spec = specs[len(specs) // 2]
    lat = _lat(spec)
    for ctx in (_context(tmp_path, "at", budget=lat), _context(tmp_path, "none", budget=None)):
        for s in (spec, specs[-1]) if ctx.cfg.latency_budget_ms is None else (spec,):
            v = ctx.screen_candidate(ctx.space.to_params(s), 0, "ask00001")
            assert v == {"action": "train", "spec": s, "latency_ms": _lat(s),
                         "latency_std_ms": 0.1}
        assert ctx.store.trials(ctx.study_id) == [] and ctx.progress.counts == {}
        assert ctx.done_keys == set()


def test_screen_index_final_in_the_store_is_reused_not_duplicate(tmp_path):
    ctx = _context(tmp_path, "s")
    spec = _by_latency(ctx)[3]
    lat = _lat(spec)
    _train(ctx, f"cand-0003-{spec.arch_hash}", spec, top1=42.0, index=3)
    before = _rows(ctx)
    v = ctx.screen_candidate(ctx.space.to_params(spec), 3, "ask00009")
    assert v == {"action": "reused", "tell": {"top1": 42.0, "latency_ms": lat}}
    assert _rows(ctx) == before and ctx.progress.counts == {"COMPLETED": 1}
    # another index: not this candidate's row, but its architecture was trained -> duplicate
    v = ctx.screen_candidate(ctx.space.to_params(spec), 4, "ask00010")
    assert v["action"] == "duplicate"
    # a failed final row of this index: reused, and Optuna learns nothing (None)
    other = _by_latency(ctx)[5]
    _train(ctx, f"cand-0006-{other.arch_hash}", other, status="FAILED", epochs=0, index=6)
    assert ctx.screen_candidate(ctx.space.to_params(other), 6, "ask00011") == \
        {"action": "reused", "tell": None}


def test_screen_trained_elsewhere_records_one_duplicate_and_tells_the_stored_top1(tmp_path):
    first = _context(tmp_path, "first")
    spec = _by_latency(first)[2]
    lat = _lat(spec)
    _train(first, f"cand-0000-{spec.arch_hash}", spec, top1=61.0, index=0)
    prev_id = _rows(first)[f"cand-0000-{spec.arch_hash}"]["id"]
    ctx = _context(tmp_path, "s")
    params = ctx.space.to_params(spec)
    want = {"action": "duplicate", "tell": {"top1": 61.0, "latency_ms": lat}}
    assert ctx.screen_candidate(params, 0, "ask00002") == want
    key = f"dup-ask00002-{spec.arch_hash}"
    rows = _rows(ctx)
    assert list(rows) == [key]
    row = rows[key]
    assert row["status"] == "COMPLETED" and row["top1"] == 61.0 and row["full_budget"]
    assert row["config"]["reused_from_trial"] == prev_id and row["config"]["params"] == params
    assert row["config"]["index"] is None and row["config"]["kind"] == "candidate"
    assert row["config"]["trial_key"] == key and row["config"]["latency_ms"] == lat
    assert row["config"]["latency_std_ms"] == 0.1 and set(ctx.configs) == {key}
    assert row["metrics"]["reused_from_study"] == "first"
    assert ctx.progress.counts == {"DUPLICATE": 1}
    text = ctx.progress.stream.getvalue()
    assert (f"suggestion ask00002 {lat:.2f} ms: architecture already trained at this fidelity "
            f"(trial {prev_id}, study first): reused top1 61.00%, not retrained") in text
    # the same suggestion again (a replay): nothing written or printed twice
    assert ctx.screen_candidate(params, 0, "ask00002") == want
    assert _rows(ctx) == rows and ctx.progress.counts == {"DUPLICATE": 1}
    assert ctx.progress.stream.getvalue() == text


def test_screen_an_architecture_in_training_is_not_trained_twice(tmp_path):
    """A resumed search's sampler replays the killed run's suggestions: one that is being
    trained right now under another index waits for that result (seen flaky before: two
    indices trained one architecture at once)."""
    ctx = _context(tmp_path, "s")
    spec = _by_latency(ctx)[4]
    params = ctx.space.to_params(spec)
    v = ctx.screen_candidate(params, 2, "ask00003")
    assert v["action"] == "train"
    cfg = ctx.candidate_config(params, 2, v)
    key = cfg["trial_key"]
    assert key == f"cand-0002-{spec.arch_hash}"
    ctx.start(key, spec, cfg, cfg["seed"])
    assert ctx.screen_candidate(params, 3, "ask00005") == {"action": "duplicate", "tell": None}
    assert list(_rows(ctx)) == [key] and ctx.progress.counts == {}
    assert (f"suggestion ask00005 {_lat(spec):.2f} ms: architecture in training as {key}; "
            "not trained twice") in ctx.progress.stream.getvalue()
    # once it is final, a later suggestion of it is a duplicate told the stored result
    ctx.finish(key, "COMPLETED", {"top1": 55.0, "latency_ms": _lat(spec)}, epochs_done=FULL)
    assert ctx.screen_candidate(params, 3, "ask00006") == \
        {"action": "duplicate", "tell": {"top1": 55.0, "latency_ms": _lat(spec)}}
    # a failed training frees the architecture for another try under a new index
    other = _by_latency(ctx)[6]
    p2 = ctx.space.to_params(other)
    cfg2 = ctx.candidate_config(p2, 4, ctx.screen_candidate(p2, 4, "ask00007"))
    ctx.start(cfg2["trial_key"], other, cfg2, cfg2["seed"])
    ctx.finish(cfg2["trial_key"], "FAILED", {}, epochs_done=0, error="boom")
    assert ctx.screen_candidate(p2, 5, "ask00008")["action"] == "train"


# -- SearchContext.finish / stored / told ----------------------------------------------------
def test_finish_writes_once_counts_and_notes_full_budget_points(tmp_path):
    ctx = _context(tmp_path, "s")
    a, b, c = _by_latency(ctx)[:3]
    _train(ctx, "cand-a", a, top1=40.0, index=0)
    row = _rows(ctx)["cand-a"]
    assert row["status"] == "COMPLETED" and row["full_budget"] and row["top1"] == 40.0
    assert row["fidelity_reached"] == fidelity_reached(ctx.fid, FULL)
    assert ctx.front_points == {"cand-a": (a.arch_hash, 40.0, pytest.approx(_lat(a)))}
    assert ctx.done_keys == {"cand-a"} and ctx.progress.counts == {"COMPLETED": 1}
    # final already: a second finish changes nothing
    ctx.finish("cand-a", "FAILED", {"top1": 1.0}, epochs_done=0, count_as="X")
    assert _rows(ctx)["cand-a"] == row and ctx.progress.counts == {"COMPLETED": 1}
    # short of the budget: final, counted, but no front point
    _train(ctx, "cand-b", b, top1=45.0, epochs=FULL / 2, index=1)
    assert not _rows(ctx)["cand-b"]["full_budget"] and "cand-b" not in ctx.front_points
    # not completed: no front point even at the full budget; count_as overrides the status
    ctx.start("pre-c", c, {"kind": "candidate", "spec": c.canonical_json()}, 0)
    ctx.finish("pre-c", "PRUNED", {"top1": 50.0, "latency_ms": 1.0}, epochs_done=FULL,
               error="why", count_as="PRERANKED_OUT")
    assert _rows(ctx)["pre-c"]["error"] == "why" and "pre-c" not in ctx.front_points
    assert ctx.progress.counts == {"COMPLETED": 2, "PRERANKED_OUT": 1}
    # an explicit ``reached`` wins over epochs_done
    ctx.start("base", c, {"kind": "baseline", "name": "XS"}, 0)
    ctx.finish("base", "COMPLETED", {"top1": 30.0, "latency_ms": 2.0}, epochs_done=0,
               reached=fidelity_reached(ctx.fid, FULL))
    assert _rows(ctx)["base"]["full_budget"] and ctx.baseline_points == {"XS": (30.0, 2.0)}


def test_stored_is_the_final_row_of_that_key_only(tmp_path):
    ctx = _context(tmp_path, "s")
    a, b, c = _by_latency(ctx)[:3]
    _train(ctx, "k-a", a, top1=10.0)
    _train(ctx, "k-b", b, top1=20.0)
    ctx.start("k-c", c, {"kind": "candidate"}, 0)  # running: not final
    assert ctx.stored("k-b")["top1"] == 20.0 and ctx.stored("k-b")["trial_key"] == "k-b"
    assert ctx.stored("k-a")["top1"] == 10.0
    assert ctx.stored("k-c") is None and ctx.stored("nope") is None


def test_told_is_the_objectives_of_a_completed_row_else_none():
    got = SearchContext.told({"status": "COMPLETED", "top1": 7, "latency_ms": 3})
    assert got == {"top1": 7.0, "latency_ms": 3.0}
    assert type(got["top1"]) is float and type(got["latency_ms"]) is float
    assert SearchContext.told({"status": "COMPLETED", "top1": None, "latency_ms": 3}) is None
    assert SearchContext.told({"status": "COMPLETED", "latency_ms": 3}) is None
    assert SearchContext.told({"status": "PRUNED", "top1": 7, "latency_ms": 3}) is None


# -- SearchContext._load_existing / candidates_final / close_orphans -------------------------
def _mixed_study(tmp_path):
    ctx = _context(tmp_path, "s")
    s = _by_latency(ctx)
    _train(ctx, "cand-0000-a", s[0], top1=40.0, index=0)
    _train(ctx, "cand-0001-b", s[1], status="FAILED", epochs=0, index=1)
    _train(ctx, "rej-ask1-c", s[2], status="REJECTED", epochs=0)
    _train(ctx, "dup-ask2-d", s[3], top1=41.0)
    _train(ctx, "pre-ask3-e", s[4], status="PRUNED", epochs=0)
    ctx.start("bl-XS", s[5], {"kind": "baseline", "name": "XS", "index": -1}, 0)
    ctx.finish("bl-XS", "COMPLETED", {"top1": 30.0, "latency_ms": 2.0}, epochs_done=FULL)
    ctx.start("cand-0002-f", s[6], {"kind": "candidate", "index": 2}, 0)  # running
    supernet = TrialRecorder(ctx.store, ctx.study_id, ctx.fid, rung=SUPERNET)  # not this rung
    supernet.start("sn-g", s[7], config={"kind": "candidate", "index": 9}, seed=0)  # running
    supernet.start("sn-h", s[8], config={"kind": "candidate", "index": 8}, seed=0)
    supernet.finish("sn-h", "COMPLETED", {"top1": 99.0, "latency_ms": 1.0}, epochs_done=FULL)
    return ctx, s


def test_load_existing_knows_counts_adopts_and_notes_the_standalone_rows(tmp_path):
    ctx, s = _mixed_study(tmp_path)
    rows = {k: r for k, r in _rows(ctx).items() if r["rung"] != SUPERNET}
    new = _reopen(ctx)
    assert new.done_keys == set(rows) - {"cand-0002-f"}
    assert new.progress.counts == {"COMPLETED": 2, "FAILED": 1, "REJECTED": 1,
                                   "DUPLICATE": 1, "PRERANKED_OUT": 1}
    assert new.recorder.trial_ids == {k: r["id"] for k, r in rows.items()}
    assert new.configs == {k: r["config"] for k, r in rows.items()}
    assert new.front_points == {  # completed full-budget candidates, a duplicate included
        "cand-0000-a": (s[0].arch_hash, 40.0, pytest.approx(_lat(s[0]))),
        "dup-ask2-d": (s[3].arch_hash, 41.0, pytest.approx(_lat(s[3])))}
    assert new.baseline_points == {"XS": (30.0, 2.0)}


def test_candidates_final_counts_final_candidate_indices(tmp_path):
    ctx, _ = _mixed_study(tmp_path)
    assert ctx.candidates_final() == 2  # 0 and 1; not the running 2, the baseline, the others
    assert _reopen(ctx).candidates_final() == 2
    ctx.finish("cand-0002-f", "COMPLETED", {"top1": 1.0}, epochs_done=FULL)
    assert ctx.candidates_final() == 3


def test_close_orphans_fails_the_running_standalone_rows(tmp_path):
    ctx, _ = _mixed_study(tmp_path)
    before = _rows(ctx)
    new = _reopen(ctx)
    new.recorder.trial_ids.clear()  # close_orphans adopts the row itself
    new.close_orphans()
    after = _rows(ctx)
    row = after["cand-0002-f"]
    assert row["status"] == "FAILED" and row["id"] == before["cand-0002-f"]["id"]
    assert row["error"] == ("interrupted: the driver stopped while this trial ran and the "
                            "resumed search did not run it again")
    assert row["fidelity_reached"] == fidelity_reached(ctx.fid, 0)
    assert after["sn-g"]["status"] == "RUNNING"  # the supernet rung is not this context's
    assert {k: r for k, r in after.items() if k != "cand-0002-f"} == \
        {k: r for k, r in before.items() if k != "cand-0002-f"}
    assert "cand-0002-f" in new.done_keys and new.progress.counts["FAILED"] == 2
    assert len(after) == len(before)


def test_close_orphans_leaves_rows_finished_after_the_context_loaded(tmp_path):
    ctx, _ = _mixed_study(tmp_path)
    late = _reopen(ctx)  # loaded while cand-0002-f was running
    ctx.finish("cand-0002-f", "COMPLETED", {"top1": 12.0}, epochs_done=FULL)
    done = _rows(ctx)["cand-0002-f"]
    late.close_orphans()
    assert _rows(ctx)["cand-0002-f"] == done and late.progress.counts.get("FAILED") == 1


# -- ArchSearcher ------------------------------------------------------------------------------
def _searcher(ctx, n_trials=3, prerank=0):
    return ArchSearcher(ctx, ctx.space, "random", 0, n_trials, [], prerank=prerank)


def _record_tells(searcher):
    told = []
    searcher._tell = lambda inner, result, error=False: told.append((inner, result, error))
    return told


def test_next_requeued_emits_the_first_not_final_and_tells_the_final_ones(tmp_path):
    ctx = _context(tmp_path, "s")
    s = _by_latency(ctx)
    _train(ctx, "k-done", s[0], top1=33.0)
    _train(ctx, "k-failed", s[1], status="FAILED", epochs=0)
    _train(ctx, "k-base", s[2], top1=20.0)
    searcher = _searcher(ctx)
    told = _record_tells(searcher)
    info = [{"inner": "a1", "config": {"trial_key": "k-done"}},
            {"inner": "a2", "config": {"trial_key": "k-failed"}},
            {"inner": None, "config": {"trial_key": "k-base"}},
            {"inner": "a4", "config": {"trial_key": "k-run", "x": 1}},
            {"inner": "a5", "config": {"trial_key": "k-later"}}]
    searcher.requeued = list(info)
    assert searcher._next_requeued("t7") == {"trial_key": "k-run", "x": 1}
    assert searcher.live == {"t7": {"inner": "a4", "config": {"trial_key": "k-run", "x": 1}}}
    assert told == [("a1", {"top1": 33.0, "latency_ms": _lat(s[0])}, False),
                    ("a2", None, True)]
    assert searcher.requeued == [info[4]]
    assert searcher._next_requeued("t8") == {"trial_key": "k-later"}
    assert searcher._next_requeued("t9") is None and searcher.requeued == []
    # a requeued candidate is in training again: its architecture is not trained twice
    cand = {"trial_key": f"cand-0001-{s[5].arch_hash}", "kind": "candidate",
            "spec": s[5].canonical_json()}
    searcher.requeued = [{"inner": "a6", "config": cand}]
    assert searcher._next_requeued("t10") == cand
    assert ctx.in_training == {s[5].arch_hash: cand["trial_key"]}
    assert ctx.screen_candidate(ctx.space.to_params(s[5]), 2, "ask00009") == \
        {"action": "duplicate", "tell": None}


def _scripted(searcher, verdicts):
    """The context screens suggestion i with verdicts[i]; returns the calls it got."""
    calls = []
    it = iter(verdicts)

    def screen(params, index, inner_id):
        calls.append((params, index, inner_id))
        return next(it)

    searcher.context.screen_candidate = screen
    return calls


def test_screen_batch_keeps_the_trainable_and_tells_the_rest(tmp_path):
    ctx = _context(tmp_path, "s")
    searcher = _searcher(ctx, n_trials=5, prerank=4)
    told = _record_tells(searcher)
    train1, train2 = {"action": "train", "n": 1}, {"action": "train", "n": 2}
    calls = _scripted(searcher, [train1, {"action": "rejected", "tell": {"top1": 0.0}},
                                 {"action": "reused", "tell": None}, train2])
    batch, skipped = searcher._screen_batch()
    ids = [c[2] for c in calls]
    assert ids == ["ask00001", "ask00002", "ask00003", "ask00004"]
    assert [c[1] for c in calls] == [0, 0, 0, 1]  # a reused index is accounted for at once
    assert batch == [(ids[0], calls[0][0], train1), (ids[3], calls[3][0], train2)]
    assert skipped == 2 and searcher.n_candidates == 1 and searcher.n_suggested == 4
    assert told == [(ids[1], {"top1": 0.0}, False), (ids[2], None, False)]


def test_screen_batch_stops_when_reused_rows_fill_the_budget(tmp_path):
    ctx = _context(tmp_path, "s")
    searcher = _searcher(ctx, n_trials=2, prerank=3)
    searcher.n_candidates = 1
    told = _record_tells(searcher)
    calls = _scripted(searcher, [{"action": "reused", "tell": {"top1": 5.0}},
                                 {"action": "train"}, {"action": "train"}])
    assert searcher._screen_batch() == ([], 1)
    assert len(calls) == 1 and searcher.n_candidates == 2
    assert told == [("ask00001", {"top1": 5.0}, False)]
    # without pre-ranking: exactly one suggestion per batch
    one = _searcher(_context(tmp_path, "t"), prerank=0)
    calls = _scripted(one, [{"action": "train"}, {"action": "train"}])
    batch, skipped = one._screen_batch()
    assert len(batch) == 1 and skipped == 0 and len(calls) == 1


def test_on_trial_complete_tells_optuna_what_the_trial_reached(tmp_path):
    searcher = _searcher(_context(tmp_path, "s"))
    told = _record_tells(searcher)
    searcher.live = {f"t{i}": {"inner": f"a{i}", "config": {}} for i in range(5)}
    searcher.live["tb"] = {"inner": None, "config": {}}
    searcher.on_trial_complete("nope", {"top1": 1.0, "final": True})
    searcher.on_trial_complete("tb", {"top1": 1.0, "latency_ms": 1.0, "final": True})
    searcher.on_trial_complete("t0", {"top1": 5, "latency_ms": 2, "final": True, "other": 1})
    searcher.on_trial_complete("t1", {"top1": 5.0, "latency_ms": 2.0, "final": True}, error=True)
    searcher.on_trial_complete("t2", {"top1": 5.0, "latency_ms": 2.0, "final": False})
    searcher.on_trial_complete("t3", {"top1": None, "latency_ms": 2.0, "final": True})
    searcher.on_trial_complete("t4", None)
    assert told == [("a0", {"top1": 5.0, "latency_ms": 2.0}, False), ("a1", None, True),
                    ("a2", None, False), ("a3", None, False), ("a4", None, False)]
    assert type(told[0][1]["top1"]) is float and type(told[0][1]["latency_ms"]) is float
    assert searcher.live == {}


def test_searcher_state_round_trip_requeues_the_live_trials(tmp_path):
    ctx = _context(tmp_path, "s")
    searcher = _searcher(ctx, n_trials=4)
    first = searcher.suggest("t0")
    searcher.n_candidates, searcher.n_suggested = 2, 6
    searcher.requeued = [{"inner": "old", "config": {"trial_key": "k-old"}}]
    state = searcher.get_state()
    assert set(state) == {"self", "inner"}
    assert "inner" not in state["self"] and "context" not in state["self"]
    assert state["self"]["n_candidates"] == 2 and state["self"]["n_suggested"] == 6
    assert state["self"]["live"] == {"t0": {"inner": "ask00001", "config": first}}
    assert state["inner"] == searcher.inner.__dict__
    assert state["inner"] is not searcher.inner.__dict__
    path = tmp_path / "ckpt.pkl"
    searcher.save(str(path))
    fresh = _searcher(_reopen(ctx), n_trials=4)
    fresh.restore(str(path))
    assert fresh.n_candidates == 2 and fresh.n_suggested == 6 and fresh.live == {}
    assert fresh.requeued == [{"inner": "old", "config": {"trial_key": "k-old"}},
                              {"inner": "ask00001", "config": first}]
    assert fresh.context is not ctx and fresh.inner is not searcher.inner
    assert len(fresh.inner._ot_study.trials) == len(searcher.inner._ot_study.trials)
    # set_state straight from get_state: the same
    again = _searcher(_reopen(ctx), n_trials=4)
    again.set_state(searcher.get_state())
    assert again.requeued == fresh.requeued and again.live == {}
    assert searcher.live != {}  # the checkpointed searcher itself is unchanged


def test_pickled_searcher_leaves_the_context_behind(tmp_path):
    ctx = _context(tmp_path, "s")
    searcher = _searcher(ctx)
    searcher.suggest("t0")
    d = searcher.__getstate__()
    assert d["context"] is None and searcher.context is ctx
    assert {k: v for k, v in d.items() if k != "context"} == \
        {k: v for k, v in searcher.__dict__.items() if k != "context"}
    back = pickle.loads(pickle.dumps(searcher))
    assert back.context is None and back.n_candidates == 1 and back.live.keys() == {"t0"}
