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
from results.study_front import OBJECTIVES, study_front  # noqa: E402
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
