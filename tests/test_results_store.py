"""Results database: schema round trip, idempotency, migrations, foreign files, concurrency."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap

import pytest

sa = pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from results.schema import COMPLETED, FAILED, PRUNED, REJECTED, RUNNING, Base  # noqa: E402
from results.store import (ResultsStore, fidelity_key, head_revision,  # noqa: E402
                           reached_full_budget)
from search_space.errors import NotFoundError, UsageError  # noqa: E402
from search_space.spec import PRESETS, PUBLISHED  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FID = {"epochs": 4, "resolution": 64, "subset": "10pct"}


def _study(store, name="s1", **kw):
    args = dict(config={"sampler": "nsga2", "pop": 8}, seed=0, dataset_id="cifar10@abc",
                fidelity=FID, device="iphone14", code_version="deadbeef")
    args.update(kw)
    return store.get_or_create_study(name, **args)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_round_trip_and_idempotency(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    sid = _study(store)
    assert _study(store, code_version="newer") == sid  # resume: code version may move on
    with pytest.raises(UsageError, match="different seed"):
        _study(store, seed=1)
    with pytest.raises(UsageError, match="different config"):
        _study(store, config={"sampler": "random"})

    spec = PRESETS["S"].replace(num_classes=10, resolution=64)
    h = store.upsert_architecture(spec)
    assert h == spec.arch_hash and store.upsert_architecture(spec) == h
    assert store.spec(h) == spec
    from search_space.costs import analytic_gmacs, analytic_params
    arch = store.architecture(h)
    assert arch["params"] == analytic_params(spec)
    assert arch["gmacs"] == pytest.approx(analytic_gmacs(spec))

    t1 = store.start_trial(sid, "gen0-3", h, config={"lr": 1e-3}, seed=7)
    assert store.start_trial(sid, "gen0-3", h, config={"lr": 1e-3}, seed=7) == t1
    other = store.upsert_architecture(PRESETS["XS"])
    with pytest.raises(ValueError, match="already exists"):
        store.start_trial(sid, "gen0-3", other, config={}, seed=7)
    with pytest.raises(ValueError, match="unknown"):
        store.start_trial(sid, "x", "0" * 16, config={}, seed=0)

    store.log_epoch(t1, 0, {"top1": 10.0, "val_loss": 2.5})
    store.log_epoch(t1, 1, {"top1": 20.0, "val_loss": 2.0})
    store.log_epoch(t1, 1, {"top1": 21.0, "val_loss": 1.9, "lr": 0.1})  # resume re-logs epoch 1
    assert store.trials(sid, status=RUNNING)[0]["id"] == t1

    metrics = {"top1": 42.5, "top5": 80.0, "val_loss": 1.7, "latency_ms": 0.81,
               "latency_std_ms": 0.02, "synflow": 1e5, "naswot": 2000.5, "grad_norm": 3.0,
               "train_seconds": 12.5, "custom": [1, 2]}
    store.finish_trial(t1, COMPLETED, metrics=metrics, fidelity_reached=dict(FID),
                       timings={"train": 12.5, "eval": 1.0})
    d = store.trial(t1)
    assert d["status"] == COMPLETED and d["full_budget"] is True and d["epochs_reached"] == 4
    for k, v in metrics.items():
        if k != "custom":
            assert d[k] == pytest.approx(v), k
    assert d["metrics"] == metrics and d["timings"] == {"train": 12.5, "eval": 1.0}
    assert d["params"] == arch["params"]  # filled from the architecture
    assert d["config"] == {"lr": 1e-3} and d["seed"] == 7 and d["study"] == "s1"
    assert [e["epoch"] for e in d["epochs"]] == [0, 1]
    assert d["epochs"][1] == {"epoch": 1, "top1": 21.0, "val_loss": 1.9, "lr": 0.1}

    # other final states; a budget not reached is not "full"
    t2 = store.start_trial(sid, "pruned", h, config={}, seed=0)
    store.finish_trial(t2, PRUNED, metrics={"top1": 5.0}, fidelity_reached={"epochs": 1})
    t3 = store.start_trial(sid, "failed", h, config={}, seed=0)
    store.finish_trial(t3, FAILED, metrics={}, fidelity_reached={}, error="CUDA OOM\ntrace")
    t4 = store.start_trial(sid, "rejected", other, config={}, seed=0)
    store.finish_trial(t4, REJECTED, metrics={"latency_ms": 9.0}, fidelity_reached={})
    t5 = store.start_trial(sid, "short", h, config={}, seed=0)
    store.finish_trial(t5, COMPLETED, metrics={"top1": 30.0},
                       fidelity_reached={"epochs": 3, "resolution": 64, "subset": "10pct"})
    with pytest.raises(ValueError, match="allowed"):
        store.finish_trial(t5, "DONE", metrics={}, fidelity_reached={})
    rows = {t["trial_key"]: t for t in store.trials(sid)}
    assert rows["pruned"]["status"] == PRUNED and not rows["pruned"]["full_budget"]
    assert rows["failed"]["error"] == "CUDA OOM\ntrace"
    assert rows["rejected"]["status"] == REJECTED and rows["rejected"]["latency_ms"] == 9.0
    assert not rows["short"]["full_budget"]
    assert [t["trial_key"] for t in store.trials(sid, status=COMPLETED)] == ["gen0-3", "short"]
    st = store.studies()[0]
    assert (st["trials"], st["completed"], st["full_budget"], st["failed"]) == (5, 2, 1, 1)

    # latency: prediction upsert, measurements, baselines
    store.add_latency_prediction(h, "iphone14", "gbm-1", 0.9, 0.05)
    store.add_latency_prediction(h, "iphone14", "gbm-1", 0.85, None)
    assert store.latency_prediction(h, "iphone14") == {"latency_ms": 0.85, "std_ms": None,
                                                       "predictor_version": "gbm-1"}
    store.add_latency_measurement(arch_hash=h, device="cpu", backend="onnxruntime",
                                  latency_ms=3.2, spread_ms=0.1, source="bench", resolution=64)
    store.add_latency_measurement(model_name="mobilenetv3", device="cpu", backend="ort",
                                  latency_ms=2.0, spread_ms=None, source="x", resolution=224)
    with pytest.raises(ValueError, match="give arch_hash or model_name"):
        store.add_latency_measurement(device="cpu", backend="ort", latency_ms=1.0,
                                      spread_ms=None, source="x", resolution=None)
    d = store.trial(t1)
    assert d["latency_predictions"][0]["latency_ms"] == 0.85
    assert d["latency_measurements"][0]["backend"] == "onnxruntime"
    store.ensure_baselines()
    store.ensure_baselines()
    bl = {b["name"]: b for b in store.baselines()}
    assert set(bl) == set(PRESETS)
    for n, b in bl.items():
        assert b["arch_hash"] == PRESETS[n].arch_hash
        assert (b["published_top1"], b["published_latency_ms"]) == (
            PUBLISHED[n]["top1"], PUBLISHED[n]["latency_ms"])

    # proxy results reused across studies with identical dataset + budget only
    sid2 = _study(store, "s2", seed=5)
    assert store.find_proxy_result(h, "cifar10@abc", fidelity_key(FID))["id"] == t1
    assert store.find_proxy_result(h, "cifar10@abc", fidelity_key({"epochs": 4})) is None
    assert store.find_proxy_result(h, "imagenet", fidelity_key(FID)) is None
    assert store.find_proxy_result(other, "cifar10@abc", fidelity_key(FID)) is None
    assert sid2 != sid

    # full-scale training runs
    run = store.start_training_run(h, dataset_id="imagenet", epochs=300, config={"bs": 1024},
                                   study_id=sid)
    store.finish_training_run(run, COMPLETED, top1=77.1, top5=93.0, checkpoint_path="/ck.pth")
    (r,) = store.training_runs(h)
    assert (r["status"], r["top1"], r["epochs"], r["checkpoint_path"]) == (
        COMPLETED, 77.1, 300, "/ck.pth")
    store.close()

    # readers cannot write
    ro = ResultsStore(tmp_path / "r.db", readonly=True)
    assert len(ro.trials(sid)) == 5
    with pytest.raises(PermissionError, match="read-only"):
        ro.log_epoch(t1, 5, {})


def test_numpy_and_torch_values_are_stored_as_json(tmp_path):
    np = pytest.importorskip("numpy")
    store = ResultsStore(tmp_path / "j.db")
    sid = _study(store, config={"widths": (48, 56), "lr": np.float32(0.5)})
    assert _study(store, config={"widths": [48, 56], "lr": 0.5}) == sid  # same identity
    h = store.upsert_architecture(PRESETS["XS"])
    tid = store.start_trial(sid, "k", h, config={"arr": np.arange(3)}, seed=np.int64(3))
    store.log_epoch(tid, np.int64(0), {"top1": np.float32(12.5), "val_loss": float("nan")})
    metrics = {"top1": np.float64(40.25), "val_loss": np.float32(1.5), "latency_ms": np.nan,
               "extra": {"hist": np.array([1.0, 2.0])}}
    try:
        import torch
        metrics["grad_norm"] = torch.tensor(2.0)
    except ImportError:  # pragma: no cover
        pass
    store.finish_trial(tid, COMPLETED, metrics=metrics, fidelity_reached={"epochs": np.int64(4)},
                       timings={"train": np.float32(3.0)})
    d = store.trial(tid)
    assert d["top1"] == 40.25 and d["val_loss"] == 1.5 and d["latency_ms"] is None
    assert d["metrics"]["extra"] == {"hist": [1.0, 2.0]} and d["metrics"]["latency_ms"] is None
    assert d["config"] == {"arr": [0, 1, 2]} and d["timings"] == {"train": 3.0}
    assert d["epochs"] == [{"epoch": 0, "top1": 12.5, "val_loss": None}]
    assert d["full_budget"] is False  # budget {"epochs": 4, ...} needs resolution/subset too
    if "grad_norm" in metrics:
        assert d["grad_norm"] == 2.0


def test_reached_full_budget():
    assert reached_full_budget({"epochs": 4, "res": 64}, {"epochs": 4, "res": 64, "x": 1})
    assert reached_full_budget({"epochs": 4}, {"epochs": 5})
    assert not reached_full_budget({"epochs": 4}, {"epochs": 3.5})
    assert not reached_full_budget({"epochs": 4, "subset": "a"}, {"epochs": 4, "subset": "b"})
    assert not reached_full_budget({"epochs": 4}, {})
    assert not reached_full_budget({"epochs": 4}, None)


def test_any_sqlalchemy_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'u.db'}"
    s = ResultsStore(url)
    sid = _study(s)
    s.close()
    assert ResultsStore(url, readonly=True).studies()[0]["id"] == sid
    mem = ResultsStore("sqlite://")  # in-memory: migrations run, API works
    assert mem.revision() == head_revision()
    assert _study(mem) == 1


def _schema_diff(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name == "sfn_alembic_version")]


def old_database(path, revision: str, dataset_id: str = "cifar10", device: str = "cpu"):
    """A SQLite file at schema ``revision`` (Alembic) holding study 'old' with one COMPLETED
    trial 'k' (top-1 55.0, 1.5 ms) of architecture 'abc'; returns its (open) engine."""
    from alembic import command

    from results.store import _alembic_config
    eng = sa.create_engine(f"sqlite:///{path}")
    with eng.begin() as conn:
        command.upgrade(_alembic_config(conn), revision)
        conn.exec_driver_sql(
            "INSERT INTO sfn_studies (name, config, config_hash, seed, code_version, dataset_id,"
            " fidelity, fidelity_key, device, created_at) VALUES ('old', '{}', 'h', 0, 'v0',"
            " ?, '{\"epochs\": 1}', '{\"epochs\":1}', ?, '2026-01-01 00:00:00')",
            (dataset_id, device))
        conn.exec_driver_sql(
            "INSERT INTO sfn_architectures VALUES ('abc', '{}', 10, 0.1, '2026-01-01 00:00:00')")
        conn.exec_driver_sql(
            "INSERT INTO sfn_trials (study_id, trial_key, arch_hash, status, config, seed,"
            " full_budget, top1, latency_ms, started_at) VALUES (1, 'k', 'abc', 'COMPLETED',"
            " '{}', 0, 1, 55.0, 1.5, '2026-01-01 00:00:00')")
    return eng


def test_migration_from_first_revision(tmp_path):
    path = tmp_path / "old.db"
    old_database(path, "0001").dispose()
    tables = set(sa.inspect(sa.create_engine(f"sqlite:///{path}")).get_table_names())
    assert "sfn_training_runs" not in tables  # really the old schema

    # a reader cannot upgrade: it says exactly what to run and leaves the file alone
    before = _digest(path)
    with pytest.raises(UsageError, match="results-upgrade --db"):
        ResultsStore(path, readonly=True)
    assert _digest(path) == before

    store = ResultsStore(path)  # the writer upgrades
    assert store.revision() == head_revision() != "0001"
    assert _schema_diff(store) == []  # migrated schema == the ORM models
    (t,) = store.trials(1)
    assert (t["trial_key"], t["top1"], t["latency_ms"]) == ("k", 55.0, 1.5)
    rid = store.start_training_run("abc", dataset_id="imagenet", epochs=1)
    assert store.training_runs("abc")[0]["id"] == rid


def test_fresh_schema_matches_models(tmp_path):
    store = ResultsStore(tmp_path / "n.db")
    assert _schema_diff(store) == []
    assert store.revision() == head_revision()


def _make_foreign(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 10)
    rnd = tmp_path / "random.db"
    rnd.write_bytes(os.urandom(4096))
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO customers (name) VALUES ('ada')")
    con.commit()
    con.close()
    fake_head = tmp_path / "fakeheader.db"  # SQLite magic but garbage after it
    fake_head.write_bytes(b"SQLite format 3\x00" + os.urandom(2000))
    return [text, rnd, other, fake_head]


@pytest.mark.parametrize("readonly", [False, True])
def test_foreign_file_refused_and_untouched(tmp_path, readonly):
    for path in _make_foreign(tmp_path):
        before = _digest(path)
        listing = sorted(os.listdir(tmp_path))
        with pytest.raises(UsageError, match="refusing to touch it|not a"):
            ResultsStore(path, readonly=readonly)
        assert _digest(path) == before, path.name
        assert sorted(os.listdir(tmp_path)) == listing  # no -wal/-shm/journal left behind


def test_missing_db_readonly(tmp_path):
    with pytest.raises(NotFoundError, match="no such results database"):
        ResultsStore(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()
    # opened for writing without create (results-upgrade): refused too, nothing created
    with pytest.raises(NotFoundError, match="no such results database"):
        ResultsStore(tmp_path / "sub" / "none.db", create=False)
    assert not (tmp_path / "sub").exists()


def test_fidelity_key_text_is_stable():
    """Studies store fidelity_key and proxy results are reused by equality of that text: the
    same budget must give byte-identical keys across versions (this is the text written by
    every earlier version: sorted keys, compact separators, floats in repr form)."""
    budget = {"resolution": 64, "epochs": 4, "subset": "10pct", "lr": 0.1, "mixup": False,
              "aug": None, "schedule": [1, 2.5], "extra": {"b": 1, "a": 1e-05}}
    assert fidelity_key(budget) == (
        '{"aug":null,"epochs":4,"extra":{"a":1e-05,"b":1},"lr":0.1,"mixup":false,'
        '"resolution":64,"schedule":[1,2.5],"subset":"10pct"}')
    # what a study row holds is the key of its stored (JSON-safe) budget
    np = pytest.importorskip("numpy")
    assert fidelity_key({"epochs": np.int64(4), "lr": np.float64(0.1)}) == '{"epochs":4,"lr":0.1}'


def test_optuna_storage_in_same_file(tmp_path):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="nas", storage=url, directions=["maximize", "minimize"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=3)
    store = ResultsStore(path)  # an Optuna-only file is accepted; our tables go beside
    sid = _study(store, "nas")
    store.ensure_baselines()
    store.close()
    storage = optuna.storages.RDBStorage(url)  # Optuna still opens it (version check passes)
    loaded = optuna.load_study(study_name="nas", storage=storage)
    assert len(loaded.trials) == 3 and len(loaded.best_trials) >= 1
    loaded.optimize(lambda t: (t.suggest_float("x", 0, 1), 0.5), n_trials=1)
    assert ResultsStore(path, readonly=True).studies()[0]["id"] == sid
    storage.engine.dispose() if hasattr(storage, "engine") else None


_WRITER = textwrap.dedent("""
    import sys, time
    from results.store import ResultsStore
    from search_space.spec import PRESETS
    s = ResultsStore({db!r})
    sid = s.get_or_create_study("conc", config={{}}, seed=0, dataset_id="d", fidelity={{"epochs": 2}},
                                device="cpu", code_version="t")
    h = s.upsert_architecture(PRESETS["XS"])
    open({ready!r}, "w").close()
    while not __import__("os").path.exists({go!r}):
        time.sleep(0.01)
    for i in range({n}):
        t = s.start_trial(sid, f"t{{i}}", h, config={{"i": i}}, seed=i)
        s.log_epoch(t, 0, {{"top1": 1.0}})
        s.log_epoch(t, 1, {{"top1": 2.0}})
        s.finish_trial(t, "COMPLETED", metrics={{"top1": float(i % 37), "latency_ms": 1.0 + (i * 7919 % 101) / 10}},
                       fidelity_reached={{"epochs": 2}})
    open({done!r}, "w").close()
""")

_READER = textwrap.dedent("""
    import json, os, sys, time
    from results.store import ResultsStore
    from results.queries import TrialFilter, pareto_front
    while not os.path.exists({ready!r}):
        time.sleep(0.01)
    r = ResultsStore({db!r}, readonly=True)
    open({go!r}, "w").close()
    counts, errors, reads_during = [], [], 0
    deadline = time.time() + 60
    while time.time() < deadline:
        finished = os.path.exists({done!r})
        try:
            n = sum(st["completed"] for st in r.studies())
            pf = pareto_front(r, "top1,latency_ms", TrialFilter())
            assert pf["n_considered"] <= n + 1000
            counts.append(n)
            reads_during += not finished
        except Exception as e:  # any "database is locked" lands here
            errors.append(repr(e))
        if finished:
            break
    print(json.dumps({{"counts": counts, "errors": errors, "reads_during": reads_during}}))
""")


@pytest.mark.e2e
def test_one_writer_many_readers_two_processes(tmp_path):
    db, ready, go, done = (str(tmp_path / n) for n in ("c.db", "ready", "go", "done"))
    n = 80
    kw = dict(db=db, ready=ready, go=go, done=done, n=n)
    env = dict(os.environ, PYTHONPATH=ROOT)
    writer = subprocess.Popen([sys.executable, "-c", _WRITER.format(**kw)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = subprocess.Popen([sys.executable, "-c", _READER.format(**kw)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    w_out, w_err = writer.communicate(timeout=120)
    r_out, r_err = reader.communicate(timeout=120)
    assert writer.returncode == 0, w_err
    assert reader.returncode == 0, r_err
    res = json.loads(r_out.strip().splitlines()[-1])
    assert res["errors"] == []
    assert res["reads_during"] >= 3  # really overlapped with the writer
    assert res["counts"] == sorted(res["counts"])  # snapshots only move forward
    assert res["counts"][-1] == n
    store = ResultsStore(db, readonly=True)
    trials = store.trials(1)
    assert len(trials) == n and all(t["status"] == COMPLETED and t["full_budget"] for t in trials)
    assert all(len(store.trial(t["id"])["epochs"]) == 2 for t in trials[::10])
    assert sorted(t["trial_key"] for t in trials) == sorted(f"t{i}" for i in range(n))


def test_optuna_dashboard_reads_shared_file(tmp_path):
    """optuna-dashboard (optional; not a project dependency) serves an Optuna study kept in the
    same SQLite file as our tables."""
    optuna = pytest.importorskip("optuna")
    od = pytest.importorskip("optuna_dashboard")
    import io
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    store = ResultsStore(path)
    _study(store, "nas")
    store.ensure_baselines()
    store.close()
    st = optuna.create_study(study_name="nas", storage=url, directions=["maximize", "minimize"])
    st.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=4)
    app = od.wsgi(optuna.storages.RDBStorage(url))

    def get(p):
        status = {}
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": p, "QUERY_STRING": "", "SERVER_NAME": "x",
               "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.errors": io.StringIO()}
        body = b"".join(app(env, lambda s, h, e=None: status.setdefault("s", s)))
        return status["s"], body

    code, body = get("/api/studies")
    assert code.startswith("200")
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["nas"]
    code, body = get("/api/studies/1")
    assert code.startswith("200") and len(json.loads(body)["trials"]) == 4
