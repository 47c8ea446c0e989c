"""``search --proxy supernet``: the rung column and its migration, fronts that never mix rungs,
bad settings in one line before any work, and (one Ray session) the two-rung search end to end
with the supernet trial killed after its first epoch's checkpoint and resumed (the baselines,
trained beside rung 1, are not trained again)."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import run_search
from results.schema import STANDALONE, SUPERNET
from results.store import ResultsStore, head_revision
from results.study_front import study_front
from search.nas.config import SUPERNET_FIELDS, SearchConfig
from search.nas.report import build_report, build_supernet_report, render_rungs
from search.nas.supernet_search import spread_picks
from search.nas.supernet_trial import work_name
from search.proxy.record import TrialRecorder
from search.proxy.supernet.config import SupernetConfig
from search.proxy.supernet.scoring import reference_tau
from search.proxy.supernet.training import CHECKPOINT_NAME
from search_space.space import DEFAULT_SPACE
from search_space.spec import PRESETS
from test_results_store import old_database
from test_search_driver import ROOT, TINY_BASELINE, TINY_FIDELITY, TINY_SPACE, make_imagefolder

FID = {"epochs": 1}


# -- the store: rungs ---------------------------------------------------------------------------
def _study(tmp_path) -> tuple[ResultsStore, TrialRecorder, TrialRecorder]:
    store = ResultsStore(tmp_path / "r.db")
    store.ensure_baselines()
    sa_ = TrialRecorder.for_study(store, "two", config={"proxy": "supernet"}, seed=0,
                                  dataset_id="d", fidelity=FID, device="iphone14-ane")
    sn = TrialRecorder(store, sa_.study_id, FID, rung=SUPERNET)
    return store, sa_, sn


def _row(rec: TrialRecorder, key: str, spec, **metrics) -> None:
    rec.start(key, spec, config={"kind": "candidate"}, seed=0)
    rec.finish(key, "COMPLETED", metrics, reached=FID)


def _two_rungs(tmp_path):
    """Study "two": two stand-alone candidates; on the supernet rung a dominating score AND a
    huge proxy top-1 at the lowest latency, another candidate, and XS scored. Returns the
    store, the stand-alone recorder and the three specs."""
    store, standalone, supernet = _study(tmp_path)
    a, b, c = DEFAULT_SPACE.sample_many(3, seed=3)
    _row(standalone, "cand-0000-a", a, top1=40.0, latency_ms=1.0, latency_std_ms=0.1)
    _row(standalone, "cand-0001-b", b, top1=50.0, latency_ms=2.0, latency_std_ms=0.1)
    _row(supernet, "sn-00000-c", c, score=-0.1, top1=999.0, val_loss=0.1, latency_ms=0.5,
         latency_std_ms=0.1)
    _row(supernet, "sn-00001-a", a, score=-2.0, top1=10.0, val_loss=2.0, latency_ms=1.0,
         latency_std_ms=0.1)
    _row(supernet, f"sn-base-XS-{PRESETS['XS'].arch_hash}", PRESETS["XS"], score=-1.5,
         top1=30.0, val_loss=1.5, latency_ms=0.7, latency_std_ms=0.05)
    return store, standalone, (a, b, c)


def test_fronts_and_hypervolumes_never_mix_rungs(tmp_path):
    store, standalone, (a, b, c) = _two_rungs(tmp_path)
    _row(standalone, f"base-XS-{PRESETS['XS'].arch_hash}", PRESETS["XS"], top1=45.0,
         latency_ms=0.7, latency_std_ms=0.05)

    sa_view = study_front(store, "two")
    sn_view = study_front(store, "two", rung=SUPERNET)
    assert {p["trial_key"] for p in sa_view["front"]} == {"cand-0000-a", "cand-0001-b"}
    assert max(p["top1"] for p in sa_view["front"]) == 50.0  # the 999 stays on its rung
    assert {p["trial_key"] for p in sn_view["front"]} == {"sn-00000-c"}
    assert sn_view["front"][0]["top1"] == -0.1  # the supernet front is over the score
    assert (sa_view["metric"], sn_view["metric"]) == ("top1", "score")
    # baselines: each rung's own number for XS, never the other rung's
    xs = {v["rung"]: next(b for b in v["baselines"] if b["name"] == "XS")
          for v in (sa_view, sn_view)}
    assert (xs[STANDALONE]["top1"], xs[SUPERNET]["top1"]) == (45.0, -1.5)
    # hypervolumes per rung: the stand-alone one is what the stand-alone rows alone give
    alone = ResultsStore(tmp_path / "alone.db")
    alone.ensure_baselines()
    rec = TrialRecorder.for_study(alone, "two", config={"proxy": "supernet"}, seed=0,
                                  dataset_id="d", fidelity=FID, device="iphone14-ane")
    _row(rec, "cand-0000-a", a, top1=40.0, latency_ms=1.0, latency_std_ms=0.1)
    _row(rec, "cand-0001-b", b, top1=50.0, latency_ms=2.0, latency_std_ms=0.1)
    _row(rec, f"base-XS-{PRESETS['XS'].arch_hash}", PRESETS["XS"], top1=45.0, latency_ms=0.7,
         latency_std_ms=0.05)
    assert sa_view["hypervolume"] == study_front(alone, "two")["hypervolume"] > 0
    assert sn_view["hypervolume"] > 0 and sn_view["reference_point"][0] < 0
    assert sa_view["counts"]["trials"] == 3 and sn_view["counts"]["trials"] == 3
    # a supernet-rung row is never reused as a proxy training
    assert store.find_proxy_result(c.arch_hash, "d", sa_view["study"]["fidelity_key"]) is None
    assert store.find_proxy_result(a.arch_hash, "d", sa_view["study"]["fidelity_key"])["top1"] \
        == 40.0
    # the report: each rung's front from its own rows
    rep, sn = build_report(store, "two"), build_report(store, "two", rung=SUPERNET)
    assert {f["trial_key"] for f in rep["front"]} == {"cand-0000-a", "cand-0001-b"}
    assert {f["trial_key"] for f in sn["front"]} == {"sn-00000-c"}
    assert rep["hypervolume"]["value"] == sa_view["hypervolume"]
    assert sn["hypervolume"]["value"] == sn_view["hypervolume"]
    with pytest.raises(ValueError, match="rung 'third'"):
        store.start_trial(1, "x", a.arch_hash, config={}, seed=0, rung="third")


def test_pareto_shows_the_supernet_rung_of_one_study(tmp_path, capsys):
    store = _two_rungs(tmp_path)[0]
    db = str(tmp_path / "r.db")
    assert run_search.main(["pareto", "--db", db, "--study", "two", "--rung", "supernet",
                            "--format", "json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["objectives"] == ["score:max", "latency_ms:min"] and res["rung"] == "supernet"
    assert [(r["trial_key"], r["score"]) for r in res["front"]] == [("sn-00000-c", -0.1)]
    assert "top1" not in res["front"][0]      # the column says what it holds
    assert [(b["baseline"], b["score"]) for b in res["baselines"] if b["score"] is not None] \
        == [("XS", -1.5)]
    assert res["hypervolume"] == study_front(store, "two", rung=SUPERNET)["hypervolume"]
    # the default stays the stand-alone rung
    assert run_search.main(["pareto", "--db", db, "--study", "two", "--format", "json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {r["trial_key"] for r in res["front"]} == {"cand-0000-a", "cand-0001-b"}
    assert res["objectives"] == ["top1:max", "latency_ms:min"]
    # the table names the rung and the score column
    assert run_search.main(["pareto", "--db", db, "--study", "two", "--rung", "supernet"]) == 0
    out = capsys.readouterr().out
    assert "supernet rung" in out and "score" in out and "sn-00000-c" in out


@pytest.mark.parametrize("extra,needle", [
    ([], "--rung supernet: give one --study (its scores are not comparable across studies; "
         "2 selected)"),
    (["--study", "two", "--objectives", "top1,params"],
     "--rung supernet: only with the default objectives"),
    (["--study", "two", "--rung", "third"], "argument --rung: invalid choice: 'third'"),
])
def test_pareto_supernet_rung_bad_input(tmp_path, capsys, extra, needle):
    store = _two_rungs(tmp_path)[0]
    TrialRecorder.for_study(store, "other", config={}, seed=0, dataset_id="d", fidelity=FID,
                            device="iphone14-ane")
    argv = ["pareto", "--db", str(tmp_path / "r.db"), "--rung", "supernet", *extra]
    try:
        code = run_search.main(argv)
    except SystemExit as e:   # argparse's own errors (choices) exit from parse_args
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_dashboard_draws_either_rung(tmp_path):
    from fastapi.testclient import TestClient

    from results.dashboard.app import create_app

    store = _two_rungs(tmp_path)[0]
    TrialRecorder.for_study(store, "plain", config={}, seed=0, dataset_id="d", fidelity=FID,
                            device="iphone14-ane")
    with TestClient(create_app(str(tmp_path / "r.db"), poll_seconds=0),
                    base_url="http://127.0.0.1") as c:
        studies = {s["name"]: s["rungs"] for s in c.get("/api/studies").json()["studies"]}
        assert studies == {"two": ["standalone", "supernet"], "plain": ["standalone"]}
        sc = c.get("/api/studies/two/scatter", params={"rung": "supernet"}).json()
        assert sc["rung"] == "supernet" and sc["y"]["label"].startswith("supernet score")
        assert sorted(p["top1"] for p in sc["points"]) == [-2.0, -0.1]   # scores, not 999 / 10
        assert [b["top1"] for b in sc["baselines"] if b["name"] == "XS"] == [-1.5]
        sa_sc = c.get("/api/studies/two/scatter").json()
        assert sorted(p["top1"] for p in sa_sc["points"]) == [40.0, 50.0]
        f = c.get("/api/studies/two/front", params={"rung": "supernet"}).json()
        assert [r["trial_key"] for r in f["rows"]] == ["sn-00000-c"] and f["metric"] == "score"
        hv = c.get("/api/studies/two/hypervolume", params={"rung": "supernet"}).json()
        assert hv["final"] == study_front(store, "two", rung=SUPERNET)["hypervolume"]
        assert hv["final"] != c.get("/api/studies/two/hypervolume").json()["final"]
        csv = c.get("/api/studies/two/front", params={"rung": "supernet", "format": "csv"})
        assert "sn-00000-c" in csv.text and "-supernet.csv" in csv.headers["content-disposition"]
        assert c.get("/api/studies/two/scatter", params={"rung": "third"}).status_code == 422


def test_an_old_database_upgrades_and_its_trials_are_stand_alone(tmp_path):
    path = tmp_path / "old.db"
    eng = old_database(path, "0100_families", dataset_id="d", device="iphone14-ane")
    cols = {c["name"] for c in sa.inspect(eng).get_columns("sfn_trials")}
    eng.dispose()
    assert "rung" not in cols  # really the schema before rungs
    store = ResultsStore(path)  # the writer upgrades
    assert store.revision() == head_revision() == "0101_trial_rungs"
    (t,) = store.trials(1)
    assert (t["rung"], t["score"], t["top1"]) == (STANDALONE, None, 55.0)
    assert store.trials(1, rung=SUPERNET) == []
    cand = study_front(store, "old")["cand"]
    assert [cand.point(i)["trial_key"] for i in range(len(cand))] == ["k"]


# -- configuration and bad settings -------------------------------------------------------------
def test_stand_alone_identity_is_unchanged_and_supernet_config_round_trips():
    cfg = SearchConfig(study="x")
    assert not set(SUPERNET_FIELDS) & set(cfg.identity())  # old studies keep their hash
    sn = SearchConfig(study="x", proxy="supernet", top_k=2, scored=50,
                      supernet=SupernetConfig(epochs=1, width_divisor=2))
    assert set(SUPERNET_FIELDS) <= set(sn.identity())
    assert SearchConfig.from_dict(sn.to_dict()) == sn


@pytest.mark.parametrize("argv, needle", [
    (["--proxy", "oracle"], "argument --proxy: invalid choice: 'oracle'"),
    (["--proxy", "supernet", "--top-k", "0"],
     "error: argument --top-k: 0: allowed integers 1..1000"),
    (["--proxy", "supernet", "--scored", "0"],
     "error: argument --scored: 0: allowed integers 1..100000"),
    (["--proxy", "supernet", "--supernet", '{"epoch": 2}'],
     "error: supernet config: unknown field(s) ['epoch']"),
    (["--proxy", "supernet", "--supernet", '{"epochs": 0}'],
     "error: supernet.epochs=0: allowed integers >= 1"),
    (["--proxy", "supernet", "--supernet", '{"width_divisor": 3}'],
     "error: supernet.width_divisor=3: does not divide width"),
    (["--proxy", "supernet", "--supernet", "[1]"], "error: --supernet: expected a JSON object"),
    (["--proxy", "supernet", "--supernet-nproc", "0"],
     "error: argument --supernet-nproc: 0: allowed integers 1..64"),
    (["--supernet-nproc", "2"], "error: --supernet-nproc 2: only with --proxy supernet"),
    (["--proxy", "supernet", "--supernet-nproc", "2", "--gpus-per-trial", "0.5"],
     "error: --supernet-nproc 2 with --gpus-per-trial 0.5: each rank takes one whole GPU"),
    (["--proxy", "supernet", "--supernet-nproc", "2", "--torch-device", "cuda:1"],
     "error: --supernet-nproc 2 with --torch-device cuda:1: use cuda or auto"),
    (["--proxy", "supernet", "--supernet-nproc", "3"],
     "error: --supernet-nproc 3: the supernet's batch_size 64 does not split evenly over 3"),
])
def test_bad_supernet_settings_fail_in_one_line_before_any_work(tmp_path, capsys, argv, needle):
    try:
        code = run_search.main(["search", *argv, "--db", str(tmp_path / "r.db"),
                                "--out", str(tmp_path / "runs")])
    except SystemExit as e:  # argparse's choice errors exit by themselves
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert needle in err, err
    assert not (tmp_path / "r.db").exists() and not (tmp_path / "runs").exists()


# -- rung helpers ---------------------------------------------------------------------------------
def test_top_k_spread_over_the_front_and_tau():
    front = [{"trial_key": str(i), "latency_ms": float(i), "top1": float(i)} for i in range(9)]
    assert [p["trial_key"] for p in spread_picks(front, 3)] == ["0", "4", "8"]
    assert [p["trial_key"] for p in spread_picks(front[::-1], 20)] == [str(i) for i in range(9)]
    assert reference_tau({"XS": 1, "S": 2, "L1": 3, "L3": 4}) == 1.0
    assert reference_tau({"XS": 4, "S": 3, "L1": 2, "L3": 1}) == -1.0
    assert reference_tau({"XS": 1, "S": 2}) is None
    assert math.isnan(reference_tau({"XS": 1, "S": 1, "L1": 1, "L3": 1}))


# -- end to end: one Ray session ------------------------------------------------------------------
ray = pytest.importorskip("ray")

RECIPE = {"width_divisor": 1, "epochs": 3, "batch_size": 8, "recal_images": 8,
            "warmup_epochs": 0.0, "num_random": 1}


@pytest.fixture(scope="module")
def ray_session():
    saved = dict(os.environ)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                             saved.get("PYTHONPATH")]))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR, object_store_memory=256 * 2 ** 20)
    try:
        yield
    finally:
        ray.shutdown()
        os.environ.clear()
        os.environ.update(saved)


def kill_after_first_checkpoint(checkpoint: str, marker: str):
    """A supernet-trainable wrapper that, on its first run only, kills its Ray worker
    (``os._exit``, as SIGKILL: nothing is cleaned up) as soon as the first epoch's checkpoint
    exists. Nested functions travel to the worker by value."""
    def wrap(fn):
        def trial(config, **kw):
            if not os.path.exists(marker):
                Path(marker).touch()

                def watch():
                    while not os.path.exists(checkpoint):
                        time.sleep(0.01)
                    os._exit(9)
                threading.Thread(target=watch, daemon=True).start()
            return fn(config, **kw)
        return trial
    return wrap


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_two_rung_search_resumes_the_killed_supernet_and_keeps_rungs_apart(tmp_path,
                                                                            ray_session):
    import torch

    from search.nas.driver import run_search
    data = make_imagefolder(tmp_path / "imgs")
    cfg = SearchConfig.from_dict({
        "study": "sn", "data": str(data), "fidelity": TINY_FIDELITY, "space": TINY_SPACE,
        "baselines": [], "extra_archs": [json.dumps(TINY_BASELINE)], "proxy": "supernet",
        "scored": 8, "top_k": 2, "supernet": RECIPE, "db": str(tmp_path / "r.db"),
        "out_root": str(tmp_path / "runs")})
    ckpt = tmp_path / "runs" / "sn" / "supernet" / CHECKPOINT_NAME
    wrap = kill_after_first_checkpoint(str(ckpt), str(tmp_path / "killed-once"))
    first = run_search(cfg, stream=open(os.devnull, "w"), wrap_supernet=wrap)
    assert first["interrupted"]
    work = Path(tempfile.gettempdir()) / work_name(str(ckpt))  # the trial's node-local copy
    assert (work / CHECKPOINT_NAME).is_file()  # left behind by the kill
    killed_at = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= killed_at < RECIPE["epochs"]
    store = ResultsStore(tmp_path / "r.db", readonly=True)
    sid = store.study_id("sn")
    (row,) = store.trials(sid, rung=SUPERNET)
    assert row["status"] == "FAILED"
    # the baselines trained beside rung 1 (they do not need the supernet); no candidate yet
    (base,) = store.trials(sid, rung=STANDALONE)
    assert (base["config"]["kind"], base["status"]) == ("baseline", "COMPLETED")

    # resumed data-parallel (an execution setting: --supernet-nproc 2, two gloo ranks in the
    # supernet's trial, which holds both CPUs): the 1-process checkpoint continues on 2 ranks
    progress = io.StringIO()
    rep = run_search(dataclasses.replace(cfg, supernet_nproc=2), resume=True,
                     stream=progress, wrap_supernet=wrap)
    assert not rep["interrupted"]
    # rank 0's epochs reached the driver as they ended, each once, before the summary
    lines = progress.getvalue().splitlines()
    epoch_lines = [ln for ln in lines if "supernet epoch " in ln]
    assert [ln.split("supernet epoch ")[1].split(":")[0] for ln in epoch_lines] == \
        [f"{e}/{RECIPE['epochs']}" for e in range(killed_at + 1, RECIPE["epochs"] + 1)]
    trained_at = next(i for i, ln in enumerate(lines) if "supernet trained" in ln)
    assert all(lines.index(ln) < trained_at for ln in epoch_lines)
    assert not work.exists()  # removed by the resumed trial
    rows = store.trials(sid, rung=SUPERNET)
    (model,) = [t for t in rows if t["config"]["kind"] == "supernet"]
    m = model["metrics"]
    assert model["status"] == "COMPLETED"
    assert (m["resumed_at_epoch"], m["epochs_done"]) == (killed_at, RECIPE["epochs"])
    assert torch.load(ckpt, weights_only=True)["world_size"] == 2 == m["world_size"]
    assert m["tau"] is None and m["cpu_seconds"] > 0 and model["config"]["supernet"]["epochs"] == 3
    epochs = [e["epoch"] for e in store.trial(model["id"])["epochs"]]
    assert epochs == [1, 2, 3]  # one row per epoch across the kill
    scored = [t for t in rows if t["config"]["kind"] == "scored"]
    assert len(scored) == 8 and all(t["score"] is not None and t["latency_ms"] for t in scored)
    assert all(t["score"] == pytest.approx(-t["val_loss"]) for t in scored)
    assert [t for t in rows if t["config"]["kind"] == "baseline"]  # scored on the supernet
    # rung 2: the picks of the supernet front, trained stand-alone, and the baseline
    sn_front = {p["arch_hash"] for p in study_front(store, "sn", rung=SUPERNET)["front"]}
    trained = [t for t in store.trials(sid, rung=STANDALONE) if t["status"] == "COMPLETED"]
    cands = [t for t in trained if t["config"]["kind"] == "candidate"]
    assert 1 <= len(cands) <= 2 and {t["arch_hash"] for t in cands} <= sn_front
    assert [t for t in trained if t["config"]["kind"] == "baseline"] == [base]  # not retrained
    # the report: both rungs, each front from its own rung's keys
    assert rep["front"] and not any(f["trial_key"].startswith("sn-") for f in rep["front"])
    sn = rep["supernet_rung"]
    assert sn["front"] and all(f["trial_key"].startswith("sn-") for f in sn["front"])
    text = (tmp_path / "runs" / "sn" / "pareto.txt").read_text()
    assert "== Rung 1: supernet ==" in text and "== Rung 2: trained stand-alone ==" in text
    assert render_rungs(build_report(store, "sn"), build_supernet_report(store, "sn")) in text
    assert "`pareto --study sn --rung supernet`" in text   # where to see rung 1 again


class _Local:
    """A DriverCheckpoint called in this process: ``actor.method.remote(...)`` runs it."""

    def __init__(self, target) -> None:
        self.target = target

    def __getattr__(self, name):
        fn = getattr(self.target, name)
        return type("M", (), {"remote": staticmethod(fn)})


def test_the_checkpoint_reaches_the_driver_in_pieces_and_a_broken_send_keeps_the_last(
        tmp_path, monkeypatch):
    """send_checkpoint / fetch_checkpoint move the file in CHUNK_BYTES pieces (several here) and
    byte for byte; a send that dies before ``commit`` leaves the driver's previous checkpoint
    whole (the pieces go to a ``.partial`` file)."""
    import search.nas.supernet_trial as st
    monkeypatch.setattr(st, "ray", type("R", (), {"get": staticmethod(lambda x: x)}))
    monkeypatch.setattr(st, "CHUNK_BYTES", 1000)
    driver = st.DriverCheckpoint(str(tmp_path / "out" / "sn" / CHECKPOINT_NAME))
    actor = _Local(driver)
    local = tmp_path / "node" / "supernet.pt"
    local.parent.mkdir()
    assert st.fetch_checkpoint(actor, str(tmp_path / "nothing.pt")) is False  # no epoch yet
    first = os.urandom(4500)
    local.write_bytes(first)
    pieces = []
    monkeypatch.setattr(driver, "write", lambda piece, w=driver.write: (pieces.append(len(piece)),
                                                                         w(piece))[1])
    assert st.send_checkpoint(actor, str(local)) == 4500
    assert Path(driver.path).read_bytes() == first and pieces == [1000] * 4 + [500]
    # a trial killed mid-send: begin and two pieces, no commit
    driver.begin()
    driver.write(b"x" * 1000)
    driver.write(b"y" * 1000)
    assert Path(driver.path).read_bytes() == first
    # the next trial resumes from the last whole checkpoint, then sends a new one over it
    back = tmp_path / "node" / "resumed.pt"
    assert st.fetch_checkpoint(actor, str(back)) and back.read_bytes() == first
    second = os.urandom(2001)
    local.write_bytes(second)
    assert st.send_checkpoint(actor, str(local)) == 2001
    assert Path(driver.path).read_bytes() == second
    assert not Path(driver.partial).exists()


@pytest.mark.parametrize("held", [2, 3])
def test_the_driver_refuses_a_summary_its_checkpoint_does_not_hold(tmp_path, held):
    """The trial says it trained 3 epochs; the driver scores on the checkpoint its actor wrote.
    Should epoch 3's checkpoint never have arrived (the lost-send race of stop 26), the row is
    FAILED naming both epochs instead of COMPLETED on epoch 2's weights."""
    import types

    import torch

    from search.nas.supernet_search import SupernetRung

    cfg = SearchConfig(proxy="supernet", study="guard", out_root=str(tmp_path / "runs"),
                       db=str(tmp_path / "r.db"))
    lines = []
    with ResultsStore(cfg.db) as store:
        sid = store.get_or_create_study("guard", config={}, seed=0, dataset_id="d",
                                        fidelity=cfg.fidelity.to_dict(), device="cpu",
                                        code_version="t")
        ctx = types.SimpleNamespace(cfg=cfg, store=store, study_id=sid,
                                    fid=cfg.fidelity.to_dict(), dataset_id="d",
                                    progress=types.SimpleNamespace(line=lines.append))
        rung = SupernetRung(ctx)
        os.makedirs(rung.checkpoint_dir)
        torch.save({"epoch": held, "model": {}, "history": []}, rung.checkpoint)
        history = [{"epoch": e, "loss_largest": 1.0} for e in (1, 2, 3)]
        rung.trained({"epochs_done": 3, "steps": 30, "history": history})
        row = rung.row()
    if held == 3:
        assert row["status"] == "COMPLETED" and rung.error is None
        assert lines[-1].startswith("supernet trained: 3 epochs")
    else:
        assert row["status"] == "FAILED"
        assert rung.error == (f"the supernet checkpoint {rung.checkpoint} holds epoch 2 but the "
                              "trial trained 3: an epoch's checkpoint never reached the driver; "
                              "--resume trains on from the epoch it holds")
