"""The dashboard's family view: a family made by ``run_search.py scale`` against XS/S/L1/L3,
with proxy top-1 from its ladder study, through the JSON API and the offline report.

Expected values come from the scale command's own family.json and from the top-1 values the
test writes, not from hard-coded numbers.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")

from search_space.spec import PRESETS  # noqa: E402

FID = {"epochs": 2, "resolution": 32}


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """A results DB with one family from the real `scale` CLI (generic analytic predictor)."""
    from latency_models.predictor import LatencyPredictor, prior_coef
    from run_search import main

    tmp = tmp_path_factory.mktemp("fam")
    pred = LatencyPredictor("generic-analytic", prior_coef(None))
    dev = tmp / "generic.json"
    pred.save(str(dev))
    t = pred.predict(PRESETS["XS"])[0]
    db, out = str(tmp / "r.db"), tmp / "out"
    rc = main(["scale", "--base", "XS", "--targets", f"{t * 0.9:.4f},{t * 1.6:.4f},{t * 2.5:.4f}",
               "--latency-device", str(dev), "--coefficients", "1.2,1.1,1.15", "--db", db,
               "--name", "xs-fam", "--out", str(out)])
    assert rc == 0
    return db, json.loads((out / "family.json").read_text())


def _client(db):
    from fastapi.testclient import TestClient

    from results.dashboard.app import create_app

    return TestClient(create_app(db, poll_seconds=0), base_url="http://127.0.0.1")


def test_family_view_without_ladder(scaled):
    db, fam = scaled
    with _client(db) as c:
        lst = c.get("/api/families").json()["families"]
        assert [f["name"] for f in lst] == ["xs-fam"]
        assert lst[0]["n_members"] == 3 and lst[0]["has_comparison"]
        v = c.get("/api/families/xs-fam").json()
        assert c.get("/api/families/nope").status_code == 404
    # the comparison the scale command printed and wrote is the one the dashboard serves
    assert [r["baseline"] for r in v["comparison"]] == [r["baseline"] for r in fam["comparison"]]
    for got, want in zip(v["comparison"], fam["comparison"]):
        assert got["baseline_latency_ms"] == pytest.approx(want["baseline_latency_ms"])
        assert got["member_position"] == want["member_position"]
        assert got["member_gmacs"] == pytest.approx(want["member_gmacs"])
    assert [m["latency_ms"] for m in v["members"]] == \
        pytest.approx([m["latency_ms"] for m in fam["members"]])
    assert all(m["top1"] is None and m["n_seeds"] == 0 for m in v["members"])
    assert v["ladder_study"] is None and any("ladder --family xs-fam" in n for n in v["notes"])
    by = {b["name"]: b for b in v["baselines"]}
    assert set(by) == {"XS", "S", "L1", "L3"}
    assert by["L3"]["published_top1"] == 83.0  # shipped published value, not computed here
    cmp_by = {r["baseline"]: r for r in fam["comparison"]}
    assert by["S"]["gmacs"] == pytest.approx(cmp_by["S"]["baseline_gmacs"])


def test_family_view_with_ladder_accuracy(scaled, tmp_path):
    import shutil

    from results.families import get_family
    from results.store import ResultsStore

    db, _ = scaled
    db2 = str(tmp_path / "copy.db")
    shutil.copy(db, db2)
    with ResultsStore(db2) as store:
        fam = get_family(store, "xs-fam")
        sid = store.get_or_create_study("ladder-xs-fam", config={"kind": "ladder"}, seed=0,
                                        dataset_id="t", fidelity=FID, device=fam["device"],
                                        code_version="test")
        # seed 1 in a second study (`ladder --seed 1 --study ...` writes the family in its
        # config); an unrelated study training the same architectures must not count
        sid1 = store.get_or_create_study("xs-fam-seed1", config={"kind": "ladder",
                                                                 "family": "xs-fam"},
                                         seed=1, dataset_id="t", fidelity=FID,
                                         device=fam["device"], code_version="test")
        other = store.get_or_create_study("unrelated", config={"kind": "search"}, seed=0,
                                          dataset_id="t", fidelity=FID, device=fam["device"],
                                          code_version="test")
        want = {}
        for seed, study in ((0, sid), (1, sid1), (2, other)):
            for m in fam["members"]:
                h = m["arch_hash"]
                top1 = 40.0 + 5 * m["position"] + seed * (1 if study != other else 20)
                tid = store.start_trial(study, f"member{m['position']}:seed{seed}", h,
                                        config={}, seed=seed)
                store.finish_trial(tid, "COMPLETED", metrics={"top1": top1},
                                   fidelity_reached=FID)
                if study != other:
                    want.setdefault(h, []).append(top1)
        # a partial-budget run must not count
        xs = store.upsert_architecture(PRESETS["XS"])
        tid = store.start_trial(sid, "XS:seed0", xs, config={}, seed=0)
        store.finish_trial(tid, "COMPLETED", metrics={"top1": 99.0},
                           fidelity_reached={**FID, "epochs": 1})
        tid = store.start_trial(sid, "S:seed0", store.upsert_architecture(PRESETS["S"]),
                                config={}, seed=0)
        store.finish_trial(tid, "COMPLETED", metrics={"top1": 47.5}, fidelity_reached=FID)
    with _client(db2) as c:
        v = c.get("/api/families/xs-fam").json()
        stamp_before = c.get("/api/stamp").json()["stamp"]
    for m in v["members"]:
        assert m["top1"] == pytest.approx(sum(want[m["arch_hash"]]) / 2) and m["n_seeds"] == 2
    by = {b["name"]: b for b in v["baselines"]}
    assert by["S"]["top1"] == 47.5 and by["XS"]["top1"] is None
    assert v["ladder_study"] == "ladder-xs-fam, xs-fam-seed1" and v["ladder_fidelity"] == FID
    assert not any("ladder --family" in n for n in v["notes"])
    # a new family changes the stamp, so an open page refetches
    from search.scaling import scale_family
    from latency_models.predictor import LatencyPredictor, prior_coef
    from results.families import save_family

    pred = LatencyPredictor("generic-analytic", prior_coef(None))
    f2 = scale_family(PRESETS["XS"], [pred.predict(PRESETS["XS"])[0] * 1.2], pred,
                      coefficients=None)
    with ResultsStore(db2) as store:
        save_family(store, "second", base_spec=f2.base, base_source="XS", device=f2.device,
                    predictor_version=f2.predictor_version,
                    coefficients=f2.coefficients.to_dict(), config=f2.config(),
                    members=[{**m.to_dict(), "spec": m.spec} for m in f2.members])
    with _client(db2) as c:
        assert c.get("/api/stamp").json()["stamp"] != stamp_before
        v2 = c.get("/api/families/second").json()
    assert v2["comparison"] is None and any("no comparison stored" in n for n in v2["notes"])


def test_report_carries_family_views(scaled, tmp_path):
    from results.dashboard.page import build_report
    from results.store import ResultsStore

    db, fam = scaled
    out = tmp_path / "report.html"
    with ResultsStore(db, readonly=True) as store:
        build_report(store, out)
    html = out.read_text()
    assert 'id="family-section"' in html
    boot = json.loads(html.split("const BOOT = ", 1)[1].split(";\nconst STATIC", 1)[0])
    view = boot["data"]["family_views"]["xs-fam"]
    assert [m["latency_ms"] for m in view["members"]] == \
        pytest.approx([m["latency_ms"] for m in fam["members"]])
    assert len(view["comparison"]) == 4 and boot["data"]["families"]["families"][0]["name"] == "xs-fam"
