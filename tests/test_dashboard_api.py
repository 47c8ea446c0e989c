"""Dashboard JSON API and offline report, against a results database the test fills.

The database is written only through ResultsStore's write API (study, architectures, trials
incl. dominated / partial-budget / failed / running / rejected ones, baselines via
ensure_baselines, epoch metrics, latency predictions on two devices, a training run). Expected
answers are computed here by brute force from the same random numbers, not hard-coded.
"""
from __future__ import annotations

import csv
import io
import json
import random
import re
import sqlite3
import threading

import pytest

pytest.importorskip("fastapi")

from results.store import ResultsStore  # noqa: E402

DEVICE = "iphone14"
OTHER_DEVICE = "cpu-x86"
FIDELITY = {"epochs": 3, "resolution": 64}
N_CANDIDATES = 14


def dominated(p, others):
    return any(q["top1"] >= p["top1"] and q["latency_ms"] <= p["latency_ms"]
               and (q["top1"] > p["top1"] or q["latency_ms"] < p["latency_ms"]) for q in others)


def fill_db(path, seed: int = 0) -> dict:
    """A small results DB; returns what the test expects to see (by brute force)."""
    from search_space.space import DEFAULT_SPACE
    from search_space.spec import PRESETS

    rng = random.Random(seed)
    store = ResultsStore(path)
    store.ensure_baselines()
    sid = store.get_or_create_study("demo", config={"strategy": "random"}, seed=seed,
                                    dataset_id="cifar10-tiny", fidelity=FIDELITY, device=DEVICE,
                                    code_version="test")
    # HTML in a text field: the report must escape it, the page must show it as text.
    store.get_or_create_study("empty", config={}, seed=1, dataset_id="cifar10-tiny",
                              fidelity=FIDELITY, device="pixel7",
                              code_version="</script><b>x</b>")
    specs = DEFAULT_SPACE.sample_many(N_CANDIDATES + 6, seed=seed)
    full, partial, other_lat = [], [], {}

    def trial(key, spec, status, top1, lat, epochs_done, kind="candidate", name=""):
        h = store.upsert_architecture(spec)
        store.add_latency_prediction(h, DEVICE, "v1", lat, 0.01)
        tid = store.start_trial(sid, key, h, config={"kind": kind, "name": name}, seed=seed)
        for e in range(1, epochs_done + 1):
            store.log_epoch(tid, e, {"top1": top1 * e / epochs_done,
                                     "val_loss": float("nan") if status == "FAILED" else 3.0 / e})
        if status is None:
            return tid, h  # still RUNNING
        metrics = {} if status != "COMPLETED" else {"top1": top1, "latency_ms": lat}
        store.finish_trial(tid, status, metrics=metrics,
                           fidelity_reached={**FIDELITY, "epochs": epochs_done},
                           error="RuntimeError: out of memory" if status == "FAILED" else None)
        return tid, h

    for i, spec in enumerate(specs[:N_CANDIDATES]):
        top1, lat = round(rng.uniform(30, 70), 3), round(rng.uniform(0.5, 3.0), 4)
        tid, h = trial(f"c{i}", spec, "COMPLETED", top1, lat, 3)
        full.append({"trial_id": tid, "arch_hash": h, "top1": top1, "latency_ms": lat})
        if i % 2 == 0:  # a second device with predictions for half of the architectures
            other_lat[h] = lat * 10
            store.add_latency_prediction(h, OTHER_DEVICE, "v1", lat * 10, None)
    # Make sure some points are dominated whatever the random draw: copies, slightly worse.
    for j, p in enumerate(full[:3]):
        spec = specs[N_CANDIDATES + j]
        tid, h = trial(f"d{j}", spec, "COMPLETED", p["top1"] - 1.0, p["latency_ms"] + 0.1, 3)
        full.append({"trial_id": tid, "arch_hash": h, "top1": p["top1"] - 1.0,
                     "latency_ms": p["latency_ms"] + 0.1})
    tid, h = trial("p0", specs[N_CANDIDATES + 3], "COMPLETED", 99.0, 0.1, 1)  # partial budget
    partial.append({"trial_id": tid, "top1": 99.0, "latency_ms": 0.1})
    failed = [trial("f0", specs[N_CANDIDATES + 4], "FAILED", 0, 1.0, 1)[0]]
    running = trial("r0", specs[N_CANDIDATES + 5], None, 40.0, 1.0, 2)[0]
    baselines = {}
    for k, name in enumerate(("XS", "S", "L1", "L3")):
        top1, lat = 50.0 + 5 * k, 0.8 + 0.4 * k
        tid, h = trial(f"baseline-{name}", PRESETS[name], "COMPLETED", top1, lat, 3,
                       kind="baseline", name=name)
        baselines[name] = {"trial_id": tid, "arch_hash": h, "top1": top1, "latency_ms": lat}
    run = store.start_training_run(full[0]["arch_hash"], dataset_id="imagenet-1k", epochs=300,
                                   study_id=sid)
    store.finish_training_run(run, "COMPLETED", top1=75.1, top5=92.3,
                              checkpoint_path="runs/retrain/x/best.pth")
    store.close()
    front = [p for p in full if not dominated(p, full)]
    return {"full": full, "partial": partial, "failed": failed, "running": running,
            "front": front, "baselines": baselines, "other_lat": other_lat}


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    path = tmp_path_factory.mktemp("dash") / "results.db"
    expect = fill_db(str(path))
    return str(path), expect


@pytest.fixture(scope="module")
def client(filled):
    from fastapi.testclient import TestClient

    from results.dashboard.app import create_app
    app = create_app(filled[0], poll_seconds=0)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        yield c
    app.state.store.close()


def test_studies(client, filled):
    r = client.get("/api/studies")
    assert r.status_code == 200
    rows = {s["name"]: s for s in r.json()["studies"]}
    _, exp = filled
    demo = rows["demo"]
    assert demo["devices"] == [DEVICE, OTHER_DEVICE]
    assert demo["failed"] == len(exp["failed"]) and demo["running"] == 1
    assert demo["completed"] == len(exp["full"]) + len(exp["partial"]) + 4
    assert rows["empty"]["trials"] == 0 and rows["empty"]["devices"] == ["pixel7"]


def test_scatter_front_and_baselines(client, filled):
    _, exp = filled
    sc = client.get("/api/studies/demo/scatter").json()
    pts = {p["trial_id"]: p for p in sc["points"]}
    assert set(pts) == {p["trial_id"] for p in exp["full"]}  # no failed/running/partial/baseline
    assert {t for t, p in pts.items() if p["on_front"]} == {p["trial_id"] for p in exp["front"]}
    assert sc["n_front"] == len(exp["front"]) < len(exp["full"])  # some dominated points
    for p in exp["full"]:
        assert pts[p["trial_id"]]["latency_ms"] == pytest.approx(p["latency_ms"])
        assert pts[p["trial_id"]]["arch"].startswith("d ")
    b = {x["name"]: x for x in sc["baselines"]}
    assert list(b) == ["XS", "S", "L1", "L3"]
    for name, want in exp["baselines"].items():
        assert b[name]["trial_id"] == want["trial_id"]
        assert b[name]["top1"] == pytest.approx(want["top1"])
        assert b[name]["latency_ms"] == pytest.approx(want["latency_ms"])
        assert b[name]["dominated_by_front"] == dominated(want, exp["front"])


def test_fidelity_any_includes_partial_budget(client, filled):
    _, exp = filled
    sc = client.get("/api/studies/demo/scatter", params={"fidelity": "any"}).json()
    ids = {p["trial_id"] for p in sc["points"]}
    assert exp["partial"][0]["trial_id"] in ids
    assert len(ids) == len(exp["full"]) + len(exp["partial"])
    # The partial trial (99 % at 0.1 ms) dominates everything else.
    assert [p["trial_id"] for p in sc["points"] if p["on_front"]] == [exp["partial"][0]["trial_id"]]


def test_other_device_uses_predictions(client, filled):
    _, exp = filled
    sc = client.get("/api/studies/demo/scatter", params={"device": OTHER_DEVICE}).json()
    got = {p["arch_hash"]: p["latency_ms"] for p in sc["points"]}
    assert got == pytest.approx(exp["other_lat"])
    assert all(b["latency_ms"] is None for b in sc["baselines"])  # no baseline predictions there


def test_max_points_thins_dominated_only(client, filled):
    _, exp = filled
    sc = client.get("/api/studies/demo/scatter", params={"max_points": 1}).json()
    assert sc["n_considered"] == len(exp["full"])
    assert {p["trial_id"] for p in sc["points"]} == {p["trial_id"] for p in exp["front"]}


def test_front_json_and_csv(client, filled):
    _, exp = filled
    f = client.get("/api/studies/demo/front").json()
    lat = [r["latency_ms"] for r in f["rows"]]
    assert lat == sorted(lat) and {r["trial_id"] for r in f["rows"]} == {
        p["trial_id"] for p in exp["front"]}
    r = client.get("/api/studies/demo/front", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [int(x["trial_id"]) for x in rows] == [x["trial_id"] for x in f["rows"]]
    assert float(rows[0]["top1"]) == pytest.approx(f["rows"][0]["top1"])


def test_hypervolume_curve(client, filled):
    from results.pareto import Objective, hypervolume
    _, exp = filled
    hv = client.get("/api/studies/demo/hypervolume").json()
    objs = [Objective("top1", "max"), Objective("latency_ms", "min")]
    ref = hv["reference_point"]
    vals = [[p["top1"], p["latency_ms"]] for p in exp["full"]]  # exp["full"] is finish order
    import numpy as np
    curve = [hypervolume(np.array(vals[:n]), objs, ref) for n in range(1, len(vals) + 1)]
    assert hv["n_trials"] == len(vals)
    for s in hv["steps"]:
        assert s["hypervolume"] == pytest.approx(curve[s["n"] - 1])
    assert hv["final"] == pytest.approx(curve[-1])
    assert all(a["hypervolume"] <= b["hypervolume"] for a, b in zip(hv["steps"], hv["steps"][1:]))
    # Explicit reference point: both coordinates or neither.
    r = client.get("/api/studies/demo/hypervolume", params={"ref_top1": 0, "ref_latency_ms": 10})
    assert r.json()["reference_point"] == [0, 10]
    assert client.get("/api/studies/demo/hypervolume", params={"ref_top1": 0}).status_code == 400


def test_trial_detail(client, filled):
    _, exp = filled
    p = exp["full"][0]
    d = client.get(f"/api/trials/{p['trial_id']}").json()
    assert d["arch_hash"] == p["arch_hash"] and d["focus_trial_id"] == p["trial_id"]
    assert len(d["stages"]) == 4 and sum(s["depth"] for s in d["stages"]) == sum(d["spec"]["depths"])
    assert all(s["blocks"].count("attn") == s["attn_blocks"] for s in d["stages"])
    from search_space.costs import analytic_gmacs, analytic_params
    from search_space.spec import ArchSpec
    spec = ArchSpec.from_dict(d["spec"])
    assert d["params"] == analytic_params(spec)
    assert d["gmacs"] == pytest.approx(analytic_gmacs(spec))
    devs = {x["device"] for x in d["latency"]}
    assert DEVICE in devs and OTHER_DEVICE in devs  # c0 is an even index: both devices
    t = next(t for t in d["trials"] if t["id"] == p["trial_id"])
    assert [e["epoch"] for e in t["epochs"]] == [1, 2, 3]
    assert t["epochs"][-1]["top1"] == pytest.approx(p["top1"])
    assert d["training_runs"][0]["top1"] == pytest.approx(75.1)
    assert f"export --trial {p['trial_id']} " in d["commands"]["export"]
    assert d["commands"]["retrain"].startswith("python run_search.py retrain --arch '{")
    # A baseline: named, published figures, preset in the retrain command.
    b = exp["baselines"]["S"]
    d = client.get(f"/api/trials/{b['trial_id']}").json()
    assert d["baseline"]["name"] == "S" and "--arch S " in d["commands"]["retrain"]
    assert any(x["kind"] == "published" for x in d["latency"])
    # A failed trial whose loss diverged (NaN logged): strict JSON, NaN -> null, error shown.
    f = client.get(f"/api/trials/{exp['failed'][0]}")
    assert f.status_code == 200
    ft = next(t for t in f.json()["trials"] if t["id"] == exp["failed"][0])
    assert ft["status"] == "FAILED" and "out of memory" in ft["error"]
    assert ft["epochs"][0]["val_loss"] is None
    # Architecture route gives the same architecture.
    a = client.get(f"/api/architectures/{b['arch_hash']}").json()
    assert a["arch_hash"] == b["arch_hash"] and a["focus_trial_id"] is None


@pytest.mark.parametrize("url,code,needle", [
    ("/api/studies/nope/scatter", 404, "study 'nope'"),
    ("/api/studies/demo/scatter?fidelity=half", 422, "fidelity"),
    ("/api/studies/demo/scatter?device=pixel9", 400, "device 'pixel9'"),
    ("/api/studies/demo/scatter?device=a%27%3B%20DROP%20TABLE", 422, "device"),
    ("/api/studies/demo/scatter?max_points=0", 422, "max_points"),
    ("/api/studies/demo/scatter?max_points=abc", 422, "max_points"),
    ("/api/studies/demo/front?format=xml", 422, "format"),
    ("/api/studies/demo/hypervolume?ref_top1=nan&ref_latency_ms=1", 422, "ref_top1"),
    ("/api/trials/0", 422, "trial_id"),
    ("/api/trials/99999999", 404, "trial 99999999"),
    ("/api/trials/1x", 422, "trial_id"),
    ("/api/architectures/ZZZ", 422, "arch_hash"),
    ("/api/architectures/0123456789abcdef", 404, "architecture"),
])
def test_bad_input(client, url, code, needle):
    r = client.get(url)
    assert r.status_code == code, r.text
    assert needle in r.text


def test_readonly_and_updates_while_writing(filled, tmp_path):
    """The app's store cannot write; a writer is not blocked by the app's reads; the stamp and
    the scatter see a trial committed after the app started."""
    import shutil

    from fastapi.testclient import TestClient

    from results.dashboard.app import create_app
    db = str(tmp_path / "live.db")
    shutil.copy(filled[0], db)
    app = create_app(db, poll_seconds=0)
    ro = app.state.store
    from sqlalchemy.exc import OperationalError
    with pytest.raises(PermissionError, match="read-only"):
        ro.ensure_baselines()
    with ro.engine.connect() as conn, pytest.raises(OperationalError, match="readonly"):
        conn.exec_driver_sql("CREATE TABLE sneaky (x INTEGER)")
    writer = ResultsStore(db)
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    with TestClient(app, base_url="http://127.0.0.1") as c:
        s0 = c.get("/api/stamp").json()
        n0 = c.get("/api/studies/demo/scatter").json()["n_considered"]
        # Hold a read transaction open in the app's store while the writer commits.
        done = threading.Event()
        with ro.transaction() as s:
            from sqlalchemy import text
            s.execute(text("SELECT count(*) FROM sfn_trials")).scalar()

            def write():
                from search_space.spec import ArchSpec
                spec = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32),
                                mlp_ratios=(2, 2, 2, 2), attn_blocks=(0, 0, 0, 1))
                h = writer.upsert_architecture(spec)
                sid = writer.study_id("demo")
                tid = writer.start_trial(sid, "late", h, config={"kind": "candidate"}, seed=0)
                writer.finish_trial(tid, "COMPLETED", metrics={"top1": 1.0, "latency_ms": 9.0},
                                    fidelity_reached=FIDELITY)
                done.set()
            th = threading.Thread(target=write)
            th.start()
            th.join(timeout=60)
            assert done.is_set()  # the writer committed while the read transaction was open
        s1 = c.get("/api/stamp").json()
        assert s1["stamp"] != s0["stamp"] and s1["trials"] == s0["trials"] + 1
        assert c.get("/api/studies/demo/scatter").json()["n_considered"] == n0 + 1
    writer.close()
    ro.close()


def test_page_served_without_cdn(client):
    html = client.get("/").text
    assert 'src="static/plotly.min.js"' in html and '"mode": "api"' in html
    assert not re.search(r"<script[^>]+src=[\"']https?:", html)
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and "plotly.js" in js.text[:200]


def test_report_self_contained(filled, tmp_path, capsys):
    import run_search
    from plotly.offline import get_plotlyjs
    db, exp = filled
    out = tmp_path / "report.html"
    assert run_search.main(["report", "--db", db, "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    bundle = get_plotlyjs()
    assert bundle in html  # the whole bundle, inlined
    assert not re.search(r"<script[^>]+src=", html)  # no external script at all
    # Outside the bundle (whose strings mention plotly.com links) nothing refers to the web.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html.replace(bundle, ""))
    boot = re.search(r"const BOOT = (\{.*?\});\n", html, re.S).group(1)
    data = json.loads(boot)["data"]
    assert "<" not in boot  # "</script><b>x</b>" (a code_version) is escaped
    assert any(st["code_version"] == "</script><b>x</b>" for st in data["studies"]["studies"])
    sc = data["views"]["demo"][DEVICE]["full"]["scatter"]
    assert {p["trial_id"] for p in sc["points"]} == {p["trial_id"] for p in exp["full"]}
    assert [b["name"] for b in sc["baselines"]] == ["XS", "S", "L1", "L3"]
    assert set(data["views"]["demo"]) == {DEVICE, OTHER_DEVICE}
    for p in exp["front"]:  # details embedded for every front member
        assert data["trials"][str(p["trial_id"])]["arch_hash"] == p["arch_hash"]
    # --study filter and bad input
    assert run_search.main(["report", "--db", db, "--out", str(out), "--study", "nope"]) == 2
    assert "--study 'nope'" in capsys.readouterr().err
    assert run_search.main(["report", "--db", str(tmp_path / "none.db"), "--out", str(out)]) == 2
    capsys.readouterr()
    pdf = tmp_path / "r.pdf"   # an HTML page under another name: refused, nothing written
    assert run_search.main(["report", "--db", db, "--out", str(pdf)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out {pdf}: the report is one HTML "
                                               "page; give a .html file name")
    assert not pdf.exists()


def test_dashboard_cli_validates_before_serving(tmp_path, capsys):
    import run_search
    assert run_search.main(["dashboard", "--db", str(tmp_path / "none.db")]) == 2
    assert "no such results database" in capsys.readouterr().err
    assert run_search.main(["dashboard", "--db", str(tmp_path / "none.db"),
                            "--host", "not a host"]) == 2
    with pytest.raises(SystemExit):
        run_search.main(["dashboard", "--port", "70000"])
    assert "argument --port: 70000: allowed integers 1..65535" in capsys.readouterr().err


def test_host_check_and_headers(filled):
    from fastapi.testclient import TestClient

    from results.dashboard.app import LOOPBACK_HOSTS, create_app
    app = create_app(filled[0], poll_seconds=0, allowed_hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1:8050") as c:
        r = c.get("/")
        assert r.status_code == 200
        assert "connect-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
        assert c.get("/api/health").json()["readonly"] is True
        # A page on another name (DNS rebinding) cannot read the API.
        assert c.get("/api/studies", headers={"host": "evil.example"}).status_code == 400
        assert c.get("/docs").status_code == 404  # Swagger UI would load a CDN
        assert "/api/studies/{study}/scatter" in c.get("/api/openapi.json").json()["paths"]
    app.state.store.close()


def test_the_host_check_is_on_by_default(filled):
    """create_app() itself refuses other Host names (not only the CLI's server); accepting any
    Host takes an explicit ("*",)."""
    from fastapi.testclient import TestClient

    from results.dashboard.app import create_app
    app = create_app(filled[0], poll_seconds=0)
    with TestClient(app, base_url="http://localhost") as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"host": "evil.example"}).status_code == 400
    app.state.store.close()
    anyhost = create_app(filled[0], poll_seconds=0, allowed_hosts=("*",))
    with TestClient(anyhost) as c:   # Host: testserver
        assert c.get("/api/health").status_code == 200
    anyhost.state.store.close()
