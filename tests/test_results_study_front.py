"""One study, one front, one hypervolume: ``run_search.py pareto --study``, the dashboard's API
and the offline report all show ``results.study_front.study_front``'s numbers.

The database is built so that a view with another definition would differ: a baseline trained
in the study lies below every searched point (so it moves the reference point), L1's proxy
result comes from another study with the same dataset and budget and its latency from a
prediction beyond every searched latency (so only study_front's baseline markers see it), and
one baseline would be on the front if baselines were members of it.
"""
from __future__ import annotations

import json
import math
import re
from datetime import datetime

import numpy as np
import pytest

pytest.importorskip("fastapi")

import run_search  # noqa: E402
from results.dashboard.app import create_app  # noqa: E402
from results.pareto import REFERENCE_RULE, reference_point  # noqa: E402
from results.schema import COMPLETED, PRUNED, SUPERNET, LatencyPrediction  # noqa: E402
from results.store import PUBLISHED_DEVICE, ResultsStore  # noqa: E402
from results.study_front import (OBJECTIVES, _finite, advantage_within_interval,  # noqa: E402
                                 latency_interval, point_dominates, spec_summary,
                                 study_front)
from search_space.costs import analytic_gmacs, analytic_params  # noqa: E402
from search_space.errors import NotFoundError, UsageError  # noqa: E402
from search_space.space import DEFAULT_SPACE  # noqa: E402
from search_space.spec import PRESETS  # noqa: E402

FID = {"epochs": 2, "resolution": 32}
DEVICE = PUBLISHED_DEVICE  # so L3's published latency is a baseline latency too


def _trial(store, sid, key, spec, top1, lat, reached=FID):
    h = store.upsert_architecture(spec)
    tid = store.start_trial(sid, key, h, config={}, seed=0)
    store.finish_trial(tid, "COMPLETED", metrics={"top1": top1, "latency_ms": lat},
                       fidelity_reached=reached)
    return tid


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sf") / "r.db")
    store = ResultsStore(path)
    store.ensure_baselines()
    kw = dict(config={}, seed=0, dataset_id="c10", fidelity=FID, device=DEVICE,
              code_version="t")
    sid = store.get_or_create_study("s", **kw)
    other = store.get_or_create_study("other", **{**kw, "seed": 1})
    rng = np.random.default_rng(3)
    for i, spec in enumerate(DEFAULT_SPACE.sample_many(25, seed=3)):
        _trial(store, sid, f"c{i}", spec, float(rng.uniform(40, 60)), float(rng.uniform(1, 3)))
    _trial(store, sid, "short", DEFAULT_SPACE.sample_many(1, seed=9)[0], 99.0, 0.1,
           reached={"epochs": 1, "resolution": 32})  # not at full budget: not a point
    _trial(store, sid, "baseline-XS", PRESETS["XS"], 70.0, 0.5)  # would lead any front
    _trial(store, sid, "baseline-S", PRESETS["S"], 20.0, 1.5)    # below every searched top1
    _trial(store, other, "baseline-L1", PRESETS["L1"], 45.0, 9.0)  # another study's proxy
    store.add_latency_prediction(PRESETS["L1"].arch_hash, DEVICE, "p1", 6.0, None)
    store.close()
    return path


def test_the_study_front_itself(db):
    store = ResultsStore(db, readonly=True)
    v = study_front(store, "s")
    names = {b["name"]: b for b in v["baselines"]}
    assert names["XS"]["dominated_by_front"] is False  # not a member, compared against it
    assert names["L1"]["top1"] == 45.0 and names["L1"]["latency_ms"] == 9.0  # other study's trial
    assert names["L3"]["latency_source"] == "published" and names["L3"]["top1"] is None
    assert len(v["cand"]) == 25 and v["hypervolume"] > 0
    assert v["reference_rule"] == REFERENCE_RULE
    searched = v["cand"].values
    with_baselines = np.vstack([searched, [[70.0, 0.5], [20.0, 1.5], [45.0, 9.0]]])
    assert v["reference_point"] == pytest.approx(reference_point(with_baselines, OBJECTIVES))
    assert v["reference_point"] != pytest.approx(reference_point(searched, OBJECTIVES))


def test_pareto_dashboard_and_report_agree(db, tmp_path, capsys):
    store = ResultsStore(db, readonly=True)
    v = study_front(store, "s")
    hv, ref = v["hypervolume"], v["reference_point"]
    front_ids = {p["trial_id"] for p in v["front"]}

    # run_search.py pareto --study s (default objectives, no --ref)
    assert run_search.main(["pareto", "--db", db, "--study", "s", "--format", "json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["hypervolume"] == hv and res["reference_point"] == ref
    assert {r["trial_id"] for r in res["front"]} == front_ids
    assert {b["baseline"]: b["dominated_by_front"] for b in res["baselines"]} == {
        b["name"]: b["dominated_by_front"] for b in v["baselines"]}
    assert run_search.main(["pareto", "--db", db, "--study", "s"]) == 0
    out = capsys.readouterr().out
    assert f"hypervolume {hv:.6g}" in out and "baseline XS:" in out

    # the dashboard's API
    from fastapi.testclient import TestClient
    app = create_app(db, poll_seconds=0)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        curve = c.get("/api/studies/s/hypervolume").json()
        front = c.get("/api/studies/s/front").json()
        scatter = c.get("/api/studies/s/scatter").json()
    app.state.store.close()
    assert curve["final"] == pytest.approx(hv, rel=1e-12)
    assert curve["reference_point"] == ref
    assert {r["trial_id"] for r in front["rows"]} == front_ids
    assert {p["trial_id"] for p in scatter["points"] if p["on_front"]} == front_ids

    # the offline report
    out_html = tmp_path / "report.html"
    assert run_search.main(["report", "--db", db, "--out", str(out_html), "--study", "s"]) == 0
    boot = re.search(r"const BOOT = (\{.*?\});\n", out_html.read_text(encoding="utf-8"), re.S)
    view = json.loads(boot.group(1))["data"]["views"]["s"][DEVICE]["full"]
    assert view["hypervolume"]["final"] == pytest.approx(hv, rel=1e-12)
    assert view["hypervolume"]["reference_point"] == ref
    assert {r["trial_id"] for r in view["front"]["rows"]} == front_ids


def test_end_of_search_report_agrees(db):
    """The hypervolume and front printed at the end of a search are study_front's."""
    from search.nas.report import build_report

    with ResultsStore(db, readonly=True) as store:
        view = study_front(store, "s")
        rep = build_report(store, "s")
    assert rep["hypervolume"]["value"] == view["hypervolume"]
    assert [rep["hypervolume"]["reference"]["top1"],
            rep["hypervolume"]["reference"]["latency_ms"]] == view["reference_point"]
    assert {f["trial_key"] for f in rep["front"]} == {p["trial_key"] for p in view["front"]}
    assert {b["name"] for b in rep["baselines"]} == {b["name"] for b in view["baselines"]}


def test_user_baselines_are_baselines_not_front_members(tmp_path):
    """``--extra-arch`` baselines (trial keys base-<name>-<hash>) are compared, never members."""
    path = str(tmp_path / "u.db")
    with ResultsStore(path) as store:
        store.ensure_baselines()
        sid = store.get_or_create_study("u", config={}, seed=0, dataset_id="c10", fidelity=FID,
                                        device=DEVICE, code_version="t")
        a, b = DEFAULT_SPACE.sample_many(2, seed=5)
        _trial(store, sid, "cand-0000-x", a, 50.0, 2.0)
        _trial(store, sid, f"base-user-{b.arch_hash[:8]}-{b.arch_hash}", b, 60.0, 1.0)
        view = study_front(store, "u")
    assert [p["trial_key"] for p in view["front"]] == ["cand-0000-x"]
    user = [x for x in view["baselines"] if x["name"] == f"user-{b.arch_hash[:8]}"]
    assert len(user) == 1 and user[0]["top1"] == 60.0 and user[0]["dominated_by_front"] is False


# -- the other paths: another device, fidelity "any", user baselines, counts, cache, errors ----
OTHER_DEVICE = "pixel-x"
# no latency uncertainty recorded: no interval, nothing to resolve inside one
NO_INTERVAL = {"latency_std_ms": None, "latency_interval_ms": None,
               "dominated_beyond_interval": None}
SEARCHED = [(50.0, 2.0), (55.0, 2.5), (52.0, 1.5), (45.0, 1.0), (55.0, 3.0), (40.0, 1.2)]


@pytest.fixture(scope="module")
def db2(tmp_path_factory):
    """Six searched trials with known values, a user baseline (base-...), a trial short of the
    budget, a failed and a running one, XS trained in the study, and predictions on a second
    device for some architectures (two versions for one: the newest counts)."""
    path = str(tmp_path_factory.mktemp("sf2") / "r.db")
    store = ResultsStore(path)
    store.ensure_baselines()
    sid = store.get_or_create_study("t", config={}, seed=0, dataset_id="c10", fidelity=FID,
                                    device=DEVICE, code_version="t")
    specs = DEFAULT_SPACE.sample_many(9, seed=11)
    for i, (top1, lat) in enumerate(SEARCHED):
        _trial(store, sid, f"cand-{i}", specs[i], top1, lat)
    _trial(store, sid, f"base-mine-{specs[6].arch_hash}", specs[6], 60.0, 1.1)
    _trial(store, sid, "short", specs[7], 99.0, 0.1, reached={"epochs": 1, "resolution": 32})
    # XS trained twice in the study: started a then b, finished b then a -- a is the newest
    hx = store.upsert_architecture(PRESETS["XS"])
    a = store.start_trial(sid, "base-XS-a", hx, config={}, seed=0)
    b = store.start_trial(sid, "base-XS-b", hx, config={}, seed=0)
    for tid, top1 in ((b, 25.0), (a, 30.0)):
        store.finish_trial(tid, "COMPLETED", metrics={"top1": top1, "latency_ms": 0.9},
                           fidelity_reached=FID)
    h = store.upsert_architecture(specs[8])
    pruned = store.start_trial(sid, "stopped", h, config={}, seed=0)  # ASHA: top-1, not final
    store.finish_trial(pruned, "PRUNED", metrics={"top1": 98.0, "latency_ms": 0.2},
                       fidelity_reached={"epochs": 1})
    failed = store.start_trial(sid, "failed", h, config={}, seed=0)
    store.finish_trial(failed, "FAILED", metrics={}, fidelity_reached={"epochs": 0}, error="x")
    store.start_trial(sid, "running", h, config={}, seed=0)
    for i in (0, 2, 3):
        store.add_latency_prediction(specs[i].arch_hash, OTHER_DEVICE, "p1", 10.0 + i, None)
    store.add_latency_prediction(specs[2].arch_hash, OTHER_DEVICE, "p2", 7.0, 0.1)  # newer
    store.add_latency_prediction(specs[0].arch_hash, OTHER_DEVICE, "p2", 20.0, None)
    store.add_latency_prediction(specs[0].arch_hash, OTHER_DEVICE, "p1", 5.0, None)  # redone: newest
    store.add_latency_prediction(specs[4].arch_hash, OTHER_DEVICE, "p1", float("inf"), None)
    store.add_latency_prediction(specs[1].arch_hash, DEVICE, "p1", 1.9, None)  # the study's device
    store.add_latency_prediction(PRESETS["S"].arch_hash, OTHER_DEVICE, "p3", 4.0, None)
    store.close()
    return path, specs, {"XS": a}


def _brute_front_ids(points):
    return {p["trial_id"] for p in points if not any(
        q["top1"] >= p["top1"] and q["latency_ms"] <= p["latency_ms"]
        and (q["top1"] > p["top1"] or q["latency_ms"] < p["latency_ms"]) for q in points)}


def _published(store) -> dict:
    return {b["name"]: {"published_top1": b["published_top1"],
                        "published_latency_ms": b["published_latency_ms"],
                        "published_device": b["latency_device"]} for b in store.baselines()}


def test_front_counts_and_user_baselines(db2):
    path, specs, ids = db2
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "t")
        assert v["devices"] == [DEVICE, OTHER_DEVICE] and v["device"] == DEVICE
        assert v["fidelity"] == "full" and v["latency_source"].startswith("trial")
        pts = [v["cand"].point(i) for i in range(len(v["cand"]))]
        assert sorted((p["top1"], p["latency_ms"]) for p in pts) == sorted(SEARCHED)
        assert {p["trial_key"] for p in pts} == {f"cand-{i}" for i in range(6)}
        assert v["on_front"].tolist() == [p["trial_id"] in _brute_front_ids(pts) for p in pts]
        assert {p["trial_id"] for p in v["front"]} == _brute_front_ids(pts)
        assert all(p["on_front"] and p["arch"].startswith("d ") for p in v["front"])
        front = {(p["top1"], p["latency_ms"]) for p in v["front"]}
        assert front == {(55.0, 2.5), (52.0, 1.5), (45.0, 1.0)}
        assert v["counts"] == {"trials": 13, "completed": 10, "full_budget": 9, "failed": 1,
                               "rejected": 0, "pruned": 1, "running": 1}
        front_pts = {p["trial_key"]: p for p in v["front"]}
        p = front_pts["cand-3"]  # every field of a point
        assert p == {"trial_id": p["trial_id"], "trial_key": "cand-3", "arch_hash":
                     specs[3].arch_hash, "top1": 45.0, "latency_ms": 1.0,
                     "params": analytic_params(specs[3]), "gmacs": pytest.approx(
                         analytic_gmacs(specs[3])), "epochs_reached": 2,
                     "arch": spec_summary(specs[3].to_dict()), "on_front": True,
                     "latency_std_ms": None, "latency_interval_ms": None,
                     "advantage_within_interval": []}
        pub = _published(store)
        markers = {b["name"]: b for b in v["baselines"]}
        assert markers["XS"] == {
            "name": "XS", "arch_hash": PRESETS["XS"].arch_hash, "trial_id": ids["XS"],
            "top1": 30.0, "top1_source": "this study", "latency_ms": 0.9,
            "latency_source": "trial (predicted on the study device)", **pub["XS"],
            "dominated_by_front": False, **NO_INTERVAL}
        for name in ("S", "L1", "L3"):  # untrained: the published latency on its device
            assert markers[name] == {
                "name": name, "arch_hash": PRESETS[name].arch_hash, "trial_id": None,
                "top1": None, "top1_source": None,
                "latency_ms": pub[name]["published_latency_ms"], "latency_source": "published",
                **pub[name], "dominated_by_front": None, **NO_INTERVAL}
        by = {b["name"]: b for b in v["baselines"]}
        assert by["mine"] == {
            "name": "mine", "arch_hash": specs[6].arch_hash,
            "trial_id": by["mine"]["trial_id"], "top1": 60.0, "top1_source": "this study",
            "latency_ms": 1.1, "latency_source": "trial (predicted on the study device)",
            "published_top1": None, "published_latency_ms": None, "published_device": None,
            "dominated_by_front": False, **NO_INTERVAL}
        # XS trained in the study under base- keys: a preset marker, not a user one
        assert sorted(by) == ["L1", "L3", "S", "XS", "mine"]
        assert by["L3"]["latency_source"] == "published" and by["L3"]["top1"] is None
        assert by["L3"]["dominated_by_front"] is None
        # the reference covers searched points and every baseline that has both values
        with_b = [list(x) for x in SEARCHED] + [[60.0, 1.1], [30.0, 0.9]] + [
            [b["top1"], b["latency_ms"]] for n, b in by.items()
            if n not in ("mine", "XS") and b["top1"] is not None and b["latency_ms"] is not None]
        assert v["reference_point"] == pytest.approx(reference_point(np.array(with_b),
                                                                     OBJECTIVES))
        ref = v["reference_point"]
        assert v["hypervolume"] == pytest.approx(
            (55 - ref[0]) * (ref[1] - 2.5) + (52 - ref[0]) * (2.5 - 1.5)
            + (45 - ref[0]) * (1.5 - 1.0))


def test_fidelity_any_keeps_trials_short_of_the_budget(db2):
    path, _, _ = db2
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "t", fidelity="any")
    keys = {v["cand"].point(i)["trial_key"] for i in range(len(v["cand"]))}
    assert keys == {f"cand-{i}" for i in range(6)} | {"short"}  # COMPLETED only: not "stopped"
    assert [p["trial_key"] for p in v["front"]] == ["short"]  # 99 % at 0.1 ms: alone in front


def test_another_device_uses_the_newest_prediction(db2):
    path, specs, ids = db2
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "t", device=OTHER_DEVICE)
        pub = _published(store)
    assert v["device"] == OTHER_DEVICE and v["latency_source"] == "newest prediction for the device"
    got = {v["cand"].point(i)["arch_hash"]: v["cand"].point(i)["latency_ms"]
           for i in range(len(v["cand"]))}
    # newest by time (specs[0]'s p1 was redone after its p2); specs[4]'s infinite one dropped;
    # specs[1] has a prediction on the study's device only
    assert got == {specs[0].arch_hash: 5.0, specs[2].arch_hash: 7.0, specs[3].arch_hash: 13.0}
    by = {b["name"]: b for b in v["baselines"]}
    assert sorted(by) == ["L1", "L3", "S", "XS"]  # the user baseline has no latency here
    # XS: the study's own newest proxy result, no latency on this device
    assert by["XS"] == {"name": "XS", "arch_hash": PRESETS["XS"].arch_hash,
                        "trial_id": ids["XS"], "top1": 30.0,
                        "top1_source": "study t (same dataset and budget)", "latency_ms": None,
                        "latency_source": None, **pub["XS"], "dominated_by_front": None, **NO_INTERVAL}
    assert by["S"] == {"name": "S", "arch_hash": PRESETS["S"].arch_hash, "trial_id": None,
                       "top1": None, "top1_source": None, "latency_ms": 4.0,
                       "latency_source": "prediction p3", **pub["S"], "dominated_by_front": None, **NO_INTERVAL}
    assert by["L3"]["latency_ms"] is None  # published figures are for the published device only


def test_bad_arguments_and_the_cache(db2):
    path, _, _ = db2
    with ResultsStore(path, readonly=True) as store:
        with pytest.raises(UsageError, match="fidelity 'some': allowed full, any"):
            study_front(store, "t", fidelity="some")
        with pytest.raises(NotFoundError, match="study 'nope': not in this database"):
            study_front(store, "nope")
        with pytest.raises(UsageError, match=f"device 'tpu': study 't' has latencies for "
                                             f"{DEVICE}, {OTHER_DEVICE}"):
            study_front(store, "t", device="tpu")
        cache: dict = {}
        a = study_front(store, "t", cache=cache)
        assert study_front(store, "t", cache=cache) is a and list(cache) == [("t", None, "full")]
        b = study_front(store, "t", fidelity="any", cache=cache)
        assert b is not a and len(cache) == 2
        assert study_front(store, "t") is not a  # no cache: computed again


def test_spec_summary_and_finite():
    s = {"depths": [1, 2], "widths": [16, 24], "mlp_ratios": [2.0, 3.5], "attn_blocks": [0, 1],
         "resolution": 192}
    assert spec_summary(s) == "d 1-2 | w 16-24 | mlp 2-3.5 | attn 0-1 | 192px"
    assert spec_summary({"depths": None}) == "d ? | w ? | mlp ? | attn ? | ?px"
    assert _finite(None) is None and _finite(float("nan")) is None and _finite("2.5") == 2.5
    assert _finite(float("inf")) is None and _finite(3) == 3.0


# -- the interval rules, on their own (exact values; ties and missing numbers) ------------------
def test_latency_interval_is_k_sigmas_of_log_latency_either_side():
    # std 0.5 at 10 ms: s = 0.05 of log latency; INTERVAL_SIGMAS = 2
    assert latency_interval(10.0, 0.5) == pytest.approx([10 * math.exp(-0.1),
                                                         10 * math.exp(0.1)], rel=1e-12)
    assert latency_interval(10.0, 0.5, k=1.0) == pytest.approx([10 * math.exp(-0.05),
                                                                10 * math.exp(0.05)], rel=1e-12)
    lo, hi = latency_interval("4", "0.25")  # numbers as the DB may hand them
    assert lo * hi == pytest.approx(16.0) and hi == pytest.approx(4 * math.exp(0.125))
    # a wide prediction (a device calibrated from a few rows) stays above zero: ms -+ 2 std
    # gave [-3, 5] here
    assert latency_interval(1.0, 2.0) == pytest.approx([math.exp(-4), math.exp(4)])
    for ms, std in ((None, 0.5), (10.0, None), (float("nan"), 0.5), (10.0, float("inf"))):
        assert latency_interval(ms, std) is None


@pytest.mark.parametrize("member, expected", [
    ((60.0, 1.0), True),    # better on both
    ((50.0, 0.5), True),    # same top-1, faster
    ((55.0, 1.0), True),    # better top-1, same latency
    ((50.0, 1.0), False),   # the same point: no strict gain
    ((55.0, 1.5), False),   # better top-1, slower
    ((45.0, 0.5), False),   # faster, worse top-1
    ((45.0, 1.5), False),   # worse on both
])
def test_point_dominates_needs_one_strict_gain_and_no_loss(member, expected):
    baseline = {"top1": 50.0, "latency_ms": 1.0}
    got = point_dominates({"top1": member[0], "latency_ms": member[1]}, baseline)
    assert got is expected


def test_point_dominates_is_unknown_without_all_four_numbers():
    full = {"top1": 60.0, "latency_ms": 1.0}
    for key in ("top1", "latency_ms"):
        for bad in (None, float("nan")):
            assert point_dominates({**full, key: bad}, {"top1": 50.0, "latency_ms": 2.0}) is None
            assert point_dominates(full, {"top1": 50.0, "latency_ms": 2.0, key: bad}) is None
        assert point_dominates({k: v for k, v in full.items() if k != key},
                               {"top1": 50.0, "latency_ms": 2.0}) is None
    assert point_dominates({"top1": "60", "latency_ms": "1"}, {"top1": 50, "latency_ms": 2}) \
        is True


def test_advantage_within_interval_combines_both_stds():
    def member(ms, sd):
        return {"top1": 60.0, "latency_ms": ms, "latency_std_ms": sd}

    def base(ms, sd=None):
        return {"top1": 50.0, "latency_ms": ms, "latency_std_ms": sd}

    # in log latency: inside when log(b / m) <= k * hypot(m_sd / m, b_sd / b)
    # member 1.0 +- 0.375 (s 0.375), baseline 2.0 +- 0.5 (s 0.25): log 2 = 0.693 <= 2 x 0.451
    assert advantage_within_interval(member(1.0, 0.375), base(2.0, 0.5)) is True
    assert advantage_within_interval(member(1.0, 0.375), base(2.0, 0.5), k=1.0) is False
    assert advantage_within_interval(member(1.0, 0.375), base(2.4, 0.6)) is True   # 0.875 <= 0.901
    assert advantage_within_interval(member(1.0, 0.375), base(2.5, 0.625)) is False  # 0.916
    assert advantage_within_interval(member(1.75, 0.375 * 1.75), base(2.5, 0.625)) is True
    # a baseline without a std is exact: the member's own interval, up to 1.0 x e^0.75
    edge = math.exp(0.75)
    assert advantage_within_interval(member(1.0, 0.375), base(edge * (1 - 1e-9))) is True
    assert advantage_within_interval(member(1.0, 0.375), base(edge * (1 + 1e-9))) is False
    assert advantage_within_interval(member(1.0, 0.375),
                                     base(edge * (1 + 1e-9), float("nan"))) is False
    # not dominating: False, even without the member's std
    assert advantage_within_interval(member(3.0, 0.375), base(2.0, 0.5)) is False
    assert advantage_within_interval(member(3.0, None), base(2.0)) is False
    # dominating, but the member's std unknown: cannot say
    assert advantage_within_interval(member(1.0, None), base(2.0, 0.5)) is None
    assert advantage_within_interval({"top1": 60.0, "latency_ms": 1.0}, base(2.0)) is None
    # a missing number: cannot say
    assert advantage_within_interval(member(1.0, 0.375), base(None, 0.5)) is None
    assert advantage_within_interval(member(None, 0.375), base(2.0)) is None


# -- latency intervals through study_front: points, markers and the verdicts -------------------
IV_DEVICE2 = "pixel-y"


def _trial_std(store, sid, key, spec, top1, lat, std):
    h = store.upsert_architecture(spec)
    tid = store.start_trial(sid, key, h, config={}, seed=0)
    store.finish_trial(tid, "COMPLETED", fidelity_reached=FID,
                       metrics={"top1": top1, "latency_ms": lat, "latency_std_ms": std})
    return tid


@pytest.fixture(scope="module")
def db_iv(tmp_path_factory):
    """Study "iv": searched points with latency stds (numbers exact in binary) and every kind
    of baseline marker with a std: XS trained in the study, S from another study's trial on the
    same device, L1's top-1 from a study on another device with its latency from a prediction,
    a user baseline without a std, L3 with its published latency only. Study "empty": nothing
    to show. The front is A (60, 1.0), C (50, 0.875), B (45, 0.75); D (44, 2.0) is behind it."""
    path = str(tmp_path_factory.mktemp("iv") / "r.db")
    store = ResultsStore(path)
    store.ensure_baselines()
    kw = dict(config={}, dataset_id="c10", fidelity=FID, code_version="t")
    sid = store.get_or_create_study("iv", seed=0, device=DEVICE, **kw)
    o1 = store.get_or_create_study("o1", seed=1, device=DEVICE, **kw)
    o2 = store.get_or_create_study("o2", seed=2, device=IV_DEVICE2, **kw)
    store.get_or_create_study("empty", seed=3, device=DEVICE,
                              **{**kw, "fidelity": {"epochs": 3, "resolution": 32}})
    a, c, b, d, u = DEFAULT_SPACE.sample_many(5, seed=21)
    ids = {"A": _trial_std(store, sid, "cand-A", a, 60.0, 1.0, 0.125),
           "C": _trial_std(store, sid, "cand-C", c, 50.0, 0.875, 0.03125),
           "B": _trial_std(store, sid, "cand-B", b, 45.0, 0.75, None),
           "D": _trial_std(store, sid, "cand-D", d, 44.0, 2.0, 0.25)}
    ids["XS"] = _trial_std(store, sid, "base-XS-x", PRESETS["XS"], 55.0, 1.5, 0.125)
    ids["mine"] = _trial_std(store, sid, f"base-mine-{u.arch_hash}", u, 48.0, 1.0625, None)
    ids["S"] = _trial_std(store, o1, "base-S-x", PRESETS["S"], 58.0, 1.3125, 0.125)
    ids["L1"] = _trial_std(store, o2, "base-L1-x", PRESETS["L1"], 40.0, 9.0, 0.25)
    store.add_latency_prediction(PRESETS["L1"].arch_hash, DEVICE, "p7", 1.5, 0.5)
    store.add_latency_prediction(a.arch_hash, IV_DEVICE2, "p1", 3.0, 0.25)
    store.close()
    return path, ids


def _iv(ms: float, std: float):
    """The +-2 sigma interval of log latency: ms e^(-+2 std / ms)."""
    return pytest.approx([ms * math.exp(-2 * std / ms), ms * math.exp(2 * std / ms)], rel=1e-12)


def test_intervals_of_points_and_baseline_markers(db_iv):
    path, ids = db_iv
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "iv")
    front = {p["trial_key"]: p for p in v["front"]}
    assert [p["trial_key"] for p in v["front"]] == ["cand-A", "cand-C", "cand-B"]
    assert {k: (p["latency_std_ms"], p["latency_interval_ms"]) for k, p in front.items()} == {
        "cand-A": (0.125, _iv(1.0, 0.125)), "cand-C": (0.03125, _iv(0.875, 0.03125)),
        "cand-B": (None, None)}
    behind = v["cand"].point(3)
    assert behind["trial_key"] == "cand-D" and behind["latency_interval_ms"] == _iv(2.0, 0.25)
    by = {b["name"]: b for b in v["baselines"]}
    want = {  # name: trial, top1, source, latency, std, latency source, interval
        "XS": (ids["XS"], 55.0, "this study", 1.5, 0.125,
               "trial (predicted on the study device)", _iv(1.5, 0.125)),
        "S": (ids["S"], 58.0, "study o1 (same dataset and budget)", 1.3125, 0.125,
              f"trial {ids['S']}", _iv(1.3125, 0.125)),
        "L1": (ids["L1"], 40.0, "study o2 (same dataset and budget)", 1.5, 0.5,
               "prediction p7", _iv(1.5, 0.5)),
        "mine": (ids["mine"], 48.0, "this study", 1.0625, None,
                 "trial (predicted on the study device)", None),
        "L3": (None, None, None, by["L3"]["published_latency_ms"], None, "published", None)}
    fields = ("trial_id", "top1", "top1_source", "latency_ms", "latency_std_ms",
              "latency_source", "latency_interval_ms")
    assert {n: tuple(b[f] for f in fields) for n, b in by.items()} == want


def test_interval_verdicts_between_front_and_baselines(db_iv):
    """In log latency, log(b / m) against 2 hypot(m_sd / m, b_sd / b): A dominates XS beyond
    the interval (log 1.5 = 0.405 > 0.300), S and L1 only inside it (S: 0.272 <= 0.314, beyond
    A's 2 sd alone, 0.25; L1: 0.405, inside only with L1's prediction std: 0.712), "mine" inside
    (0.061 <= 0.25); C dominates "mine" beyond (0.194 > 0.071); B (no std) dominates L1: no
    verdict for B, so none for L1."""
    path, _ = db_iv
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "iv")
    front = {p["trial_key"]: p["advantage_within_interval"] for p in v["front"]}
    assert front == {"cand-A": ["L1", "S", "mine"], "cand-C": ["L1"], "cand-B": []}
    by = {b["name"]: (b["dominated_by_front"], b["dominated_beyond_interval"])
          for b in v["baselines"]}
    assert by == {
        "XS": (True, True),     # its one dominating member is beyond the interval
        "S": (True, False),     # every dominating member only inside it
        "L1": (True, None),     # B (no std) dominates it too: cannot say
        "mine": (True, True),   # A inside, C beyond: beyond
        "L3": (None, None)}     # no top-1: not compared



def test_another_device_takes_the_predictions_std(db_iv):
    path, ids = db_iv
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "iv", device=IV_DEVICE2)
    assert v["devices"] == [DEVICE, IV_DEVICE2]
    (p,) = v["front"]  # the one searched architecture with a prediction there
    assert (p["trial_id"], p["top1"], p["latency_ms"], p["latency_std_ms"],
            p["latency_interval_ms"], p["epochs_reached"]) == (ids["A"], 60.0, 3.0, 0.25,
                                                               _iv(3.0, 0.25), 2)


def test_an_empty_study(db_iv):
    """No trials: no points, no front, hypervolume 0, no reference point (no baseline has both
    numbers: nothing was trained at this budget and L3's published latency has no top-1)."""
    path, _ = db_iv
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "empty")
    assert len(v["cand"]) == 0 and v["cand"].values.shape == (0, 2)
    assert v["on_front"].dtype == bool and v["on_front"].shape == (0,)
    assert v["front"] == [] and v["hypervolume"] == 0.0 and v["reference_point"] is None
    assert {b["name"]: (b["top1"], b["dominated_by_front"]) for b in v["baselines"]} == {
        n: (None, None) for n in ("XS", "S", "L1", "L3")}
    assert v["counts"] == {"trials": 0, "completed": 0, "full_budget": 0, "failed": 0,
                           "rejected": 0, "pruned": 0, "running": 0}


# -- imported trials (bulk_add_trials: one finish time for all), two studies, odd keys ---------
def _row(key, spec, top1, lat, full=True, status=COMPLETED, **more):
    return {"trial_key": key, "arch_hash": spec.arch_hash, "status": status, "top1": top1,
            "latency_ms": lat, "full_budget": full, **more}


@pytest.fixture(scope="module")
def db_bulk(tmp_path_factory):
    """Study "p" imported in one bulk_add_trials call (every row finishes at the same instant,
    so ids give the finish order), beside study "q" whose one point would lead p's front.
    Imported rows carry no params. Two predictions on "dev3" share one created_at."""
    path = str(tmp_path_factory.mktemp("bulk") / "r.db")
    store = ResultsStore(path)
    store.ensure_baselines()
    kw = dict(config={}, dataset_id="c10", fidelity=FID, device=DEVICE, code_version="t")
    p = store.get_or_create_study("p", seed=0, **kw)
    q = store.get_or_create_study("q", seed=1, **kw)
    specs = DEFAULT_SPACE.sample_many(7, seed=31)
    for spec in specs:
        store.upsert_architecture(spec)
    xs = PRESETS["XS"]
    store.bulk_add_trials(q, [_row("q-0", specs[6], 99.0, 0.1)])
    store.bulk_add_trials(p, [
        _row("base-XS-1", xs, 35.0, 0.5),
        _row("k-z", specs[0], 50.0, 1.0),
        _row("base-XS-2", xs, 30.0, 0.5, full=False),  # the newest XS, short of the budget
        _row("k-a", specs[1], 55.0, 2.0, full=False),
        _row(f"base-mine-{specs[2].arch_hash}", specs[2], 52.0, 1.25),
        _row(f"base--{specs[3].arch_hash}", specs[3], 40.0, 3.0),  # no name: its hash
        _row("k-nolat", specs[4], 70.0, None, params=123),  # no latency: not a point
        _row("k-pruned", specs[5], 80.0, 0.2, status=PRUNED)])  # not COMPLETED
    when = datetime(2026, 1, 1)
    with store.transaction() as s:  # the same instant: the later row (higher id) is newer
        s.add(LatencyPrediction(arch_hash=specs[0].arch_hash, device="dev3",
                                predictor_version="p9", latency_ms=4.0, std_ms=None,
                                created_at=when))
    with store.transaction() as s:
        s.add(LatencyPrediction(arch_hash=specs[0].arch_hash, device="dev3",
                                predictor_version="p1", latency_ms=2.0, std_ms=0.5,
                                created_at=when))
    store.close()
    return path, specs


def test_imported_trials_of_one_study_only(db_bulk):
    path, specs = db_bulk
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "p")
    assert v["study"] == {"id": v["study"]["id"], "name": "p", "device": DEVICE,
                          "dataset_id": "c10", "fidelity": FID,
                          "fidelity_key": v["study"]["fidelity_key"], "seed": 0}
    assert [v["cand"].point(i)["trial_key"] for i in range(len(v["cand"]))] == ["k-z"]
    assert [(p["trial_key"], p["params"]) for p in v["front"]] == [("k-z", None)]
    assert v["counts"] == {"trials": 8, "completed": 7, "full_budget": 5, "failed": 0,
                           "rejected": 0, "pruned": 1, "running": 0}
    by = {b["name"]: (b["top1"], b["latency_ms"]) for b in v["baselines"]
          if b["top1"] is not None}  # XS: its full-budget trial; the user baselines after it
    assert by == {"XS": (35.0, 0.5), "mine": (52.0, 1.25), specs[3].arch_hash: (40.0, 3.0)}


def test_ties_in_finish_time_go_by_id(db_bulk):
    """Fidelity "any": all rows of the import finished at once; their order (and so the newest
    XS trial, the one its marker shows) is the order they were recorded in."""
    path, specs = db_bulk
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "p", fidelity="any")
    assert [v["cand"].point(i)["trial_key"] for i in range(len(v["cand"]))] == ["k-z", "k-a"]
    assert v["on_front"].tolist() == [True, True]
    assert [p["trial_key"] for p in v["front"]] == ["k-z", "k-a"]
    xs = next(b for b in v["baselines"] if b["name"] == "XS")
    assert (xs["top1"], xs["top1_source"]) == (30.0, "this study")


def test_newest_prediction_ties_in_time_go_by_id(db_bulk):
    path, specs = db_bulk
    with ResultsStore(path, readonly=True) as store:
        v = study_front(store, "p", device="dev3")
    assert [(p["trial_key"], p["latency_ms"], p["latency_std_ms"]) for p in v["front"]] == [
        ("k-z", 2.0, 0.5)]


# -- the supernet rung: its own rows, its score, its baselines, its cache entry ---------------
def _rung_trial(store, sid, key, spec, rung, **metrics):
    h = store.upsert_architecture(spec)
    tid = store.start_trial(sid, key, h, config={}, seed=0, rung=rung)
    store.finish_trial(tid, "COMPLETED", metrics=metrics, fidelity_reached=FID)
    return tid


def test_supernet_rung_view(tmp_path):
    path = str(tmp_path / "sn.db")
    a, c, u = DEFAULT_SPACE.sample_many(3, seed=41)
    xs = PRESETS["XS"]
    with ResultsStore(path) as store:
        store.ensure_baselines()
        kw = dict(config={}, dataset_id="c10", fidelity=FID, device=DEVICE, code_version="t")
        sid = store.get_or_create_study("r", seed=0, **kw)
        other = store.get_or_create_study("r2", seed=1, **kw)
        _rung_trial(store, other, "base-S-x", PRESETS["S"], "standalone", top1=50.0,
                    latency_ms=0.75)  # S trained stand-alone elsewhere: not a supernet score
        _rung_trial(store, sid, "cand-a", a, "standalone", top1=40.0, latency_ms=1.0)
        _rung_trial(store, sid, f"base-XS-{xs.arch_hash}", xs, "standalone", top1=45.0,
                    latency_ms=0.7)
        ids = {"c": _rung_trial(store, sid, "sn-0-c", c, SUPERNET, score=-0.5, top1=999.0,
                                latency_ms=0.5),
               "a": _rung_trial(store, sid, "sn-1-a", a, SUPERNET, score=-2.0, top1=10.0,
                                latency_ms=1.0),
               "XS": _rung_trial(store, sid, f"sn-base-XS-{xs.arch_hash}", xs, SUPERNET,
                                 score=-1.5, top1=30.0, latency_ms=0.7, latency_std_ms=0.25),
               "mine": _rung_trial(store, sid, f"sn-base-mine-{u.arch_hash}", u, SUPERNET,
                                   score=-1.0, latency_ms=0.625)}
        _rung_trial(store, sid, "sn-2-u", u, SUPERNET, top1=70.0, latency_ms=0.1)  # no score
        cache: dict = {}
        sa_view = study_front(store, "r", cache=cache)
        v = study_front(store, "r", rung=SUPERNET, cache=cache)
        assert study_front(store, "r", rung=SUPERNET, cache=cache) is v
        with pytest.raises(UsageError, match="rung 'third': allowed standalone, supernet"):
            study_front(store, "r", rung="third")
    assert list(cache) == [("r", None, "full"), ("r", None, "full", SUPERNET)] and v is not sa_view
    assert (v["rung"], v["metric"], sa_view["metric"]) == (SUPERNET, "score", "top1")
    assert [(v["cand"].point(i)["trial_key"], v["cand"].point(i)["top1"])
            for i in range(len(v["cand"]))] == [("sn-0-c", -0.5), ("sn-1-a", -2.0)]
    assert [p["trial_id"] for p in v["front"]] == [ids["c"]]
    assert [p["trial_key"] for p in sa_view["front"]] == ["cand-a"]
    by = {b["name"]: (b["trial_id"], b["top1"], b["latency_ms"], b["latency_std_ms"],
                      b["dominated_by_front"]) for b in v["baselines"] if b["name"] != "L3"}
    assert by == {"XS": (ids["XS"], -1.5, 0.7, 0.25, True),  # c dominates both
                  "mine": (ids["mine"], -1.0, 0.625, None, True),
                  # no stand-alone proxy fallback on this rung: published latency, no score
                  "S": (None, None, 0.8, None, None), "L1": (None, None, 1.1, None, None)}
    assert {b["name"]: b["top1"] for b in sa_view["baselines"]} == {
        "XS": 45.0, "S": 50.0, "L1": None, "L3": None}
    assert (v["counts"]["trials"], v["counts"]["completed"], v["counts"]["full_budget"]) == (
        5, 5, 5)
    assert sa_view["counts"]["trials"] == 2
    ref = v["reference_point"]  # over the scores and the two scored baselines
    assert ref == pytest.approx(reference_point(
        np.array([[-0.5, 0.5], [-2.0, 1.0], [-1.5, 0.7], [-1.0, 0.625]]), OBJECTIVES))
    assert v["hypervolume"] == pytest.approx((-0.5 - ref[0]) * (ref[1] - 0.5))


def test_end_of_search_report_gives_the_trials_peak_memory(tmp_path):
    """The report's memory line: median and max of the trials' recorded ``peak_rss_mib``, the
    trial that reached the max; trials without one (older rows) are left out of both."""
    from search.nas.report import build_report, render_table

    store = ResultsStore(str(tmp_path / "m.db"))
    sid = store.get_or_create_study("m", config={}, seed=0, dataset_id="c10", fidelity=FID,
                                    device=DEVICE, code_version="t")
    specs = DEFAULT_SPACE.sample_many(4, seed=5)
    for key, spec, peak in zip(("a", "b", "c", "old"), specs, (900.0, 1250.5, 1000.0, None)):
        tid = store.start_trial(sid, key, store.upsert_architecture(spec), config={}, seed=0)
        metrics = {"top1": 50.0, "latency_ms": 1.0}
        if peak is not None:
            metrics["peak_rss_mib"] = peak
        store.finish_trial(tid, "COMPLETED", metrics=metrics, fidelity_reached=FID)
    rep = build_report(store, "m")
    store.close()
    assert rep["peak_rss_mib"] == {"median": 1000.0, "max": 1250.5, "max_trial": "b",
                                   "trials": 3}
    assert ("peak RSS per trial worker: median 1,000 MiB, max 1,250 MiB (b; 3 trials)"
            in render_table(rep).splitlines())
