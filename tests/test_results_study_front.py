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
import re

import numpy as np
import pytest

pytest.importorskip("fastapi")

import run_search  # noqa: E402
from results.dashboard.app import create_app  # noqa: E402
from results.pareto import REFERENCE_RULE, reference_point  # noqa: E402
from results.store import PUBLISHED_DEVICE, ResultsStore  # noqa: E402
from results.study_front import OBJECTIVES, _finite, spec_summary, study_front  # noqa: E402
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
    with TestClient(app) as c:
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
