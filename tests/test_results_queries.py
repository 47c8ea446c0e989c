"""Pareto front, hypervolume and baseline comparison against brute force; CLI formats/errors."""
from __future__ import annotations

import csv
import io
import itertools
import json

import numpy as np
import pytest

pytest.importorskip("sqlalchemy")

from results.pareto import (REFERENCE_RULE, Objective, baseline_comparison,  # noqa: E402
                            hypervolume, pareto_mask, reference_point)
from results.queries import (TrialFilter, compare_baselines, parse_objectives,  # noqa: E402
                             pareto_front)
from results.store import ResultsStore, fidelity_key  # noqa: E402
from search_space.errors import UsageError  # noqa: E402
from search_space.spec import PRESETS  # noqa: E402

MAXMIN = [Objective("top1", "max"), Objective("latency_ms", "min")]


def brute_front(values, objectives):
    loss = np.asarray(values, float) * np.array([o.sign for o in objectives])
    n = len(loss)
    return np.array([not any(np.all(loss[j] <= loss[i]) and np.any(loss[j] < loss[i])
                             for j in range(n) if j != i) for i in range(n)], dtype=bool)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_pareto_mask_matches_brute_force(k, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 160))
    # small integer grid -> many ties and exact duplicates; odd seeds use continuous values
    vals = rng.integers(0, 8, (n, k)).astype(float) if seed % 2 == 0 else rng.normal(size=(n, k))
    dirs = [Objective(f"o{j}", "max" if (seed >> j) & 1 else "min") for j in range(k)]
    got = pareto_mask(vals, dirs)
    np.testing.assert_array_equal(got, brute_front(vals, dirs))
    assert got.any()


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("kind", ["grid", "cloud", "anti"])
def test_pareto_mask_large_matches_optuna(k, kind):
    """Large inputs take the sampled-pruning path; check it against Optuna's implementation."""
    from optuna.study._multi_objective import _is_pareto_front
    rng = np.random.default_rng(k)
    n = 10_000 if kind == "anti" else 20_000  # both above the pruning threshold (8192)
    if kind == "grid":
        vals = rng.integers(0, 25, (n, k)).astype(float)
    elif kind == "cloud":
        vals = rng.lognormal(size=(n, k))
    else:  # a wide front: the pruning removes little
        vals = rng.normal(size=(n, k))
        vals[:, 1] = -vals[:, 0] + rng.normal(scale=0.05, size=n)
    dirs = [Objective(f"o{j}", "min") for j in range(k)]
    np.testing.assert_array_equal(pareto_mask(vals, dirs),
                                  _is_pareto_front(vals, assume_unique_lexsorted=False))


def test_pareto_mask_edge_cases():
    assert pareto_mask(np.zeros((0, 2)), MAXMIN).shape == (0,)
    dup = np.array([[1.0, 1.0], [1.0, 1.0], [0.5, 2.0]])
    np.testing.assert_array_equal(pareto_mask(dup, MAXMIN), [True, True, False])


def brute_hv_grid(values, objectives, ref):
    """Count unit cells of the integer grid dominated by the points (loss space)."""
    signs = np.array([o.sign for o in objectives])
    loss = np.asarray(values, float) * signs
    r = np.asarray(ref, float) * signs
    lo = np.minimum(loss.min(axis=0), r).astype(int)
    total = 0
    for cell in itertools.product(*[range(lo[j], int(r[j])) for j in range(len(r))]):
        c = np.array(cell, float)  # cell [c, c+1); dominated if some point <= c in every dim
        total += bool(np.any(np.all(loss <= c, axis=1)))
    return float(total)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_matches_grid_count(k, seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 25))
    dirs = [Objective(f"o{j}", "max" if (seed + j) % 2 else "min") for j in range(k)]
    vals = rng.integers(0, 9, (n, k)).astype(float)
    # reference: worse than most points but not all (points beyond it must be ignored)
    ref = [(-1.0 if d.direction == "max" else 8.0) if j else
           (2.0 if d.direction == "max" else 6.0) for j, d in enumerate(dirs)]
    assert hypervolume(vals, dirs, ref) == pytest.approx(brute_hv_grid(vals, dirs, ref))


def test_default_reference_is_outside_all_points():
    rng = np.random.default_rng(1)
    vals = rng.normal(size=(50, 2))
    ref = reference_point(vals, MAXMIN)
    assert ref[0] < vals[:, 0].min() and ref[1] > vals[:, 1].max()
    assert hypervolume(vals, MAXMIN, ref) > 0


@pytest.mark.parametrize("seed", range(5))
def test_baseline_comparison_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 80
    acc, cost = rng.integers(0, 10, n).astype(float), rng.integers(0, 10, n).astype(float)
    b_acc, b_cost = float(rng.integers(0, 10)), float(rng.integers(0, 10))
    got = baseline_comparison(acc, cost, b_acc, b_cost)
    under = [i for i in range(n) if cost[i] <= b_cost]
    above = [i for i in range(n) if acc[i] >= b_acc]
    if under:
        assert acc[got["best_acc_idx"]] == max(acc[i] for i in under)
        assert cost[got["best_acc_idx"]] <= b_cost
    else:
        assert got["best_acc_idx"] is None
    if above:
        assert cost[got["lowest_cost_idx"]] == min(cost[i] for i in above)
        assert acc[got["lowest_cost_idx"]] >= b_acc
    else:
        assert got["lowest_cost_idx"] is None
    dom = {i for i in range(n) if acc[i] >= b_acc and cost[i] <= b_cost
           and (acc[i] > b_acc or cost[i] < b_cost)}
    assert set(got["dominating_idx"]) == dom
    assert baseline_comparison(acc, cost, None, b_cost)["dominating_idx"] is None


def test_parse_objectives_errors():
    assert parse_objectives("top1,latency_ms") == MAXMIN
    assert parse_objectives(["top1:min", "params"])[0].direction == "min"
    for bad, why in (("top1", "give 2 or 3"), ("top1,accuracy", "'accuracy': allowed top1"),
                     ("top1,latency_ms:up", "direction must be min or max"),
                     ("top1,top1", "each objective at most once"),
                     ("a,b,c,d", "'a': allowed top1"),
                     ("top1,latency_ms,params,gmacs", "give 2 or 3")):
        with pytest.raises(UsageError, match=why):
            parse_objectives(bad)


FID = {"epochs": 3}
truth_pixel: dict[str, dict[str, float]] = {}  # filled by the db fixture: version -> arch -> ms


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Two studies (iphone14, cpu) with random trials, some short of the budget, + baselines."""
    path = tmp_path_factory.mktemp("q") / "q.db"
    store = ResultsStore(path)
    store.ensure_baselines()
    rng = np.random.default_rng(7)
    specs = [PRESETS["XS"].replace(num_classes=10, widths=(48, 56, 112, w))
             for w in range(64, 64 + 40 * 8, 8)]
    hashes = [store.upsert_architecture(s) for s in specs]
    truth = []
    for name, device in (("a", "iphone14-ane"), ("b", "cpu")):
        sid = store.get_or_create_study(name, config={}, seed=0, dataset_id="c10", fidelity=FID,
                                        device=device, code_version="t")
        for i in range(60):
            status = ["COMPLETED"] * 8 + ["PRUNED", "FAILED"]
            st = status[int(rng.integers(0, len(status)))]
            tid = store.start_trial(sid, f"k{i}", hashes[i % len(hashes)], config={}, seed=i)
            top1, lat = float(rng.integers(20, 40)), float(rng.integers(1, 20)) / 10
            reached = {"epochs": 3 if rng.random() < 0.8 else 2}
            store.finish_trial(tid, st, metrics={"top1": top1, "latency_ms": lat,
                                                 "synflow": float(rng.normal())},
                               fidelity_reached=reached)
            truth.append(dict(id=tid, study=name, device=device, status=st, top1=top1,
                              arch=hashes[i % len(hashes)],
                              latency_ms=lat, full=st == "COMPLETED" and reached["epochs"] == 3,
                              params=store.architecture(hashes[i % len(hashes)])["params"]))
        # the XS/S baselines trained at the same proxy budget in study a only
        if name == "a":
            for bname, (t1, lat) in {"XS": (30.0, 0.7), "S": (33.0, 0.8)}.items():
                tid = store.start_trial(sid, f"baseline-{bname}", PRESETS[bname].arch_hash,
                                        config={}, seed=0)
                store.finish_trial(tid, "COMPLETED", metrics={"top1": t1, "latency_ms": lat},
                                   fidelity_reached=FID)
                truth.append(dict(id=tid, study=name, device=device, status="COMPLETED",
                                  top1=t1, latency_ms=lat, full=True, baseline=True,
                                  arch=PRESETS[bname].arch_hash,
                                  params=store.architecture(PRESETS[bname].arch_hash)["params"]))
    store.add_latency_prediction(PRESETS["L1"].arch_hash, "iphone14-ane", "p1", 1.3, 0.1)
    # predictions for a second device: v1 for every other arch, then (newer) v2 for every third
    pixel = {"v1": {}, "v2": {}}
    for j, h in enumerate(hashes):
        if j % 2 == 0:
            pixel["v1"][h] = float(rng.integers(5, 40)) / 10
            store.add_latency_prediction(h, "pixel7", "v1", pixel["v1"][h], None)
    for j, h in enumerate(hashes + [PRESETS["XS"].arch_hash, PRESETS["L3"].arch_hash]):
        if j % 3 == 0 or h in (PRESETS["XS"].arch_hash, PRESETS["L3"].arch_hash):
            pixel["v2"][h] = float(rng.integers(5, 40)) / 10
            store.add_latency_prediction(h, "pixel7", "v2", pixel["v2"][h], None)
    store.close()
    truth_pixel.update(pixel)
    return str(path), truth


def _expected_front(truth, objs, keep):
    rows = [t for t in truth if keep(t)]
    vals = np.array([[t[o.name] for o in objs] for t in rows])
    mask = brute_front(vals, objs)
    return {r["id"] for r, m in zip(rows, mask) if m}, len(rows)


@pytest.mark.parametrize("flt,keep", [
    (TrialFilter(), lambda t: t["full"]),
    (TrialFilter(fidelity="any"), lambda t: t["status"] == "COMPLETED"),
    (TrialFilter(studies=("a",)), lambda t: t["full"] and t["study"] == "a"),
    (TrialFilter(study_latency_device="cpu"), lambda t: t["full"] and t["device"] == "cpu"),
    (TrialFilter(fidelity=fidelity_key(FID), studies=("b",)), lambda t: t["full"] and t["study"] == "b"),
])
@pytest.mark.parametrize("objs", ["top1,latency_ms", "top1,latency_ms,params"])
@pytest.mark.parametrize("sql_prune", [False, True])
def test_pareto_front_from_db(db, flt, keep, objs, sql_prune, monkeypatch):
    import results.queries as rq
    monkeypatch.setattr(rq, "SQL_PRUNE", sql_prune)
    if sql_prune:  # force the large-table path (sampled pruners inside SQLite) on small data
        monkeypatch.setattr(rq, "SQL_PRUNE_MIN_ROWS", 0)
        monkeypatch.setattr(rq, "_SQL_SAMPLE", 16)
    path, truth = db
    store = ResultsStore(path, readonly=True)
    res = pareto_front(store, objs, flt)
    o = parse_objectives(objs)
    # the front is made of the searched trials only; baselines are compared against it
    want, n = _expected_front(truth, o, lambda t: keep(t) and not t.get("baseline"))
    assert {r["trial_id"] for r in res["front"]} == want
    assert res["n_considered"] == n
    # the front rows carry consistent values and sorted by the first objective (best first)
    firsts = [r[o[0].name] for r in res["front"]]
    assert firsts == sorted(firsts, reverse=o[0].direction == "max")
    assert len(res["reference_point"]) == len(o)
    front_vals = np.array([[r[x.name] for x in o] for r in res["front"]], dtype=float)
    assert res["hypervolume"] == pytest.approx(hypervolume(front_vals, o, res["reference_point"]))
    assert res["hypervolume"] > 0
    # the reference rule runs over the searched points and the baseline points
    vals = np.array([[t[x.name] for x in o] for t in truth if keep(t)])
    assert res["reference_point"] == pytest.approx(reference_point(vals, o))
    assert res["reference_rule"] == REFERENCE_RULE


@pytest.mark.parametrize("objs", ["top1,latency_ms", "top1,latency_ms,params"])
@pytest.mark.parametrize("sql_prune", [False, True])
def test_pareto_front_baselines_are_never_members(db, objs, sql_prune, monkeypatch):
    """Study a has XS and S trials at full budget: they are listed as baselines with whether
    the searched front dominates them, never on the front, and the hypervolume is the searched
    front's (checked with a user-given reference against brute force)."""
    import results.queries as rq
    monkeypatch.setattr(rq, "SQL_PRUNE", sql_prune)
    if sql_prune:
        monkeypatch.setattr(rq, "SQL_PRUNE_MIN_ROWS", 0)
        monkeypatch.setattr(rq, "_SQL_SAMPLE", 8)
    path, truth = db
    store = ResultsStore(path, readonly=True)
    o = parse_objectives(objs)
    ref = [0.0, 10.0, 1e9][:len(o)]
    res = pareto_front(store, objs, TrialFilter(studies=("a",)), reference=ref)
    rows = [t for t in truth if t["full"] and t["study"] == "a" and not t.get("baseline")]
    base = [t for t in truth if t["full"] and t["study"] == "a" and t.get("baseline")]
    assert len(base) == 2
    vals = np.array([[t[x.name] for x in o] for t in rows])
    mask = brute_front(vals, o)
    assert {r["trial_id"] for r in res["front"]} == {t["id"] for t, m in zip(rows, mask) if m}
    assert not {r["trial_id"] for r in res["front"]} & {t["id"] for t in base}
    front_vals = vals[mask]
    by_trial = {b["trial_id"]: b for b in res["baselines"]}
    for t in base:
        b = by_trial[t["id"]]
        assert b["baseline"] in ("XS", "S")
        loss_b = np.array([t[x.name] * x.sign for x in o])
        loss_f = front_vals * np.array([x.sign for x in o])
        want = bool(np.any(np.all(loss_f <= loss_b, axis=1) & np.any(loss_f < loss_b, axis=1)))
        assert b["dominated_by_front"] is want
    assert res["reference_point"] == ref and res["reference_rule"] == "user-given"
    assert res["hypervolume"] == pytest.approx(hypervolume(vals, o, ref))


@pytest.mark.parametrize("version", [None, "v1"])
@pytest.mark.parametrize("sql_prune", [False, True])
def test_pareto_front_latency_device(db, version, sql_prune, monkeypatch):
    """latency_ms from the stored predictions for another device (newest version by default)."""
    import results.queries as rq
    monkeypatch.setattr(rq, "SQL_PRUNE", sql_prune)
    if sql_prune:
        monkeypatch.setattr(rq, "SQL_PRUNE_MIN_ROWS", 0)
        monkeypatch.setattr(rq, "_SQL_SAMPLE", 16)
    path, truth = db
    store = ResultsStore(path, readonly=True)
    pred = truth_pixel[version or "v2"]
    flt = TrialFilter(studies=("a",), latency_device="pixel7", predictor_version=version)
    res = pareto_front(store, "top1,latency_ms", flt)
    rows = [dict(t, latency_ms=pred[t["arch"]]) for t in truth
            if t["full"] and t["study"] == "a" and t["arch"] in pred]
    want, n = _expected_front(rows, MAXMIN, lambda t: not t.get("baseline"))
    assert res["n_considered"] == n > 0
    assert {r["trial_id"] for r in res["front"]} == want
    for r in res["front"]:
        assert r["latency_ms"] == pred[r["arch_hash"]]
    # compare on that device: searched and baseline latencies both from the same predictions
    cmp = compare_baselines(store, flt)
    assert cmp["device"] == "pixel7" and cmp["predictor_version"] == (version or "v2")
    xs = next(b for b in cmp["baselines"] if b["baseline"] == "XS")
    assert xs["baseline_latency_ms"] == pred.get(PRESETS["XS"].arch_hash)
    searched = [t for t in rows if not t.get("baseline")]
    assert cmp["n_considered"] == len(searched)
    if xs["baseline_latency_ms"] is not None:
        under = [t["top1"] for t in searched if t["latency_ms"] <= xs["baseline_latency_ms"]]
        assert xs["best_top1_at_le_latency_ms"] == (max(under) if under else None)
    with pytest.raises(ValueError, match="no latency predictions"):
        pareto_front(store, "top1,latency_ms", TrialFilter(latency_device="tpu"))
    with pytest.raises(ValueError, match="no latency predictions"):
        pareto_front(store, "top1,latency_ms",
                     TrialFilter(latency_device="pixel7", predictor_version="v9"))


def test_compare_baselines_from_db(db):
    path, truth = db
    store = ResultsStore(path, readonly=True)
    res = compare_baselines(store, TrialFilter(studies=("a",)))
    assert res["device"] == "iphone14-ane" and res["dataset_id"] == "c10"
    rows = {r["baseline"]: r for r in res["baselines"]}
    searched = [t for t in truth if t["full"] and t["study"] == "a" and not t.get("baseline")]
    assert res["n_considered"] == len(searched)  # baseline archs are excluded
    for name, (b_acc, b_lat, src) in {"XS": (30.0, 0.7, "trial"), "S": (33.0, 0.8, "trial"),
                                      "L1": (None, 1.3, "prediction"),
                                      "L3": (None, 1.9, "published")}.items():
        r = rows[name]
        assert r["baseline_top1"] == b_acc and r["baseline_latency_ms"] == b_lat
        assert r["latency_ms_source"].startswith(src)
        under = [t["top1"] for t in searched if t["latency_ms"] <= b_lat]
        assert r["best_top1_at_le_latency_ms"] == (max(under) if under else None)
        if b_acc is None:
            assert r["n_dominating"] is None and r["lowest_latency_ms_at_ge_top1"] is None
            continue
        above = [t["latency_ms"] for t in searched if t["top1"] >= b_acc]
        assert r["lowest_latency_ms_at_ge_top1"] == (min(above) if above else None)
        dom = {t["id"] for t in searched if t["top1"] >= b_acc and t["latency_ms"] <= b_lat
               and (t["top1"] > b_acc or t["latency_ms"] < b_lat)}
        assert set(r["dominating_trial_ids"]) == dom and r["n_dominating"] == len(dom)
    assert any("L1" in n for n in res["notes"])
    with pytest.raises(ValueError, match="devices"):
        compare_baselines(store, TrialFilter())  # iphone14 + cpu studies mixed
    with pytest.raises(ValueError, match="not in this database"):
        compare_baselines(store, TrialFilter(studies=("nope",)))


# ---------------------------------------------------------------------------------------- CLI
def _run(argv, capsys):
    import run_search
    code = run_search.main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_formats(db, capsys):
    path, truth = db
    code, out, _ = _run(["pareto", "--db", path, "--study", "a", "--format", "json"], capsys)
    assert code == 0
    payload = json.loads(out)
    store = ResultsStore(path, readonly=True)
    direct = pareto_front(store, "top1,latency_ms", TrialFilter(studies=("a",)))
    assert payload["hypervolume"] == pytest.approx(direct["hypervolume"])
    assert [r["trial_id"] for r in payload["front"]] == [r["trial_id"] for r in direct["front"]]

    code, out, _ = _run(["pareto", "--db", path, "--study", "a", "--format", "csv",
                         "--objectives", "top1,latency_ms,params"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    direct3 = pareto_front(store, "top1,latency_ms,params", TrialFilter(studies=("a",)))
    assert code == 0 and len(rows) == direct3["n_front"] > 0
    assert {"trial_id", "top1", "latency_ms", "params"} <= set(rows[0])
    assert float(rows[0]["top1"]) == direct3["front"][0]["top1"]

    code, out, _ = _run(["pareto", "--db", path, "--study", "a", "--latency-device", "pixel7",
                         "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["filter"]["latency_device"] == "pixel7"
    code, out, _ = _run(["pareto", "--db", path, "--study-latency-device", "cpu"], capsys)
    assert code == 0 and "hypervolume" in out and "trial_id" in out.splitlines()[1]
    with pytest.raises(SystemExit):  # no bare --device: the phone is a --latency-device
        _run(["pareto", "--db", path, "--device", "cpu"], capsys)
    assert "unrecognized arguments: --device" in capsys.readouterr().err

    code, out, _ = _run(["studies", "--db", path, "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["name"] for r in rows] == ["a", "b"]
    assert int(rows[0]["trials"]) == 62

    code, out, _ = _run(["compare", "--db", path, "--study", "a", "--format", "json"], capsys)
    assert code == 0 and len(json.loads(out)["baselines"]) == 4
    code, out, _ = _run(["compare", "--db", path, "--study", "a"], capsys)
    assert code == 0 and "XS" in out and "note:" in out
    code, out, _ = _run(["compare", "--db", path, "--study", "a", "--format", "csv"], capsys)
    assert [r["baseline"] for r in csv.DictReader(io.StringIO(out))] == ["XS", "S", "L1", "L3"]

    tid = truth[0]["id"]
    code, out, _ = _run(["show", str(tid), "--db", path, "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["top1"] == truth[0]["top1"]
    code, out, _ = _run(["show", "a:k0", "--db", path], capsys)
    assert code == 0 and out.startswith(f"trial {tid} (a:k0)")


@pytest.mark.parametrize("argv,msg", [
    (["pareto", "--db", "{missing}"], "no such results database"),
    (["studies", "--db", "{missing}"], "no such results database"),
    (["show", "1", "--db", "{missing}"], "no such results database"),
    (["pareto", "--db", "{db}", "--objectives", "top1,speed"], "objective 'speed'"),
    (["pareto", "--db", "{db}", "--ref", "1,x"], "--ref"),
    (["pareto", "--db", "{db}", "--ref", "1,2,3"], "need 2 numbers"),
    (["pareto", "--db", "{db}", "--study", "zzz"], "study 'zzz'"),
    (["show", "99999", "--db", "{db}"], "trial 99999"),
    (["show", "a:nokey", "--db", "{db}"], "no such STUDY:TRIAL_KEY"),
    # past SQLite's 64-bit integers (OverflowError) and a digit int() refuses (ValueError)
    (["show", "99999999999999999999", "--db", "{db}"], "trial 99999999999999999999: not in "
                                                         "this database"),
    (["show", "\u00b2", "--db", "{db}"], "trial '\u00b2': expected a trial id (integer)"),
    (["pareto", "--db", "{db}", "--ref", "0,nan"], "--ref '0,nan': allowed finite numbers"),
    (["compare", "--db", "{db}"], "devices"),
    (["pareto", "--db", "{db}", "--predictor-version", "v1"], "needs --latency-device"),
    (["pareto", "--db", "{db}", "--latency-device", "tpu"], "no latency predictions"),
    (["pareto", "--db", "{foreign}"], "not a SQLite database"),
    (["results-upgrade", "--db", "{missing}"], "no such results database"),
])
def test_cli_errors_one_line(db, capsys, tmp_path, argv, msg):
    foreign = tmp_path / "x.txt"
    foreign.write_text("hello")
    argv = [a.format(missing=str(tmp_path / "none.db"), db=db[0], foreign=str(foreign))
            for a in argv]
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and msg in err
    assert foreign.read_text() == "hello"
