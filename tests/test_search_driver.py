"""Search driver: fail-fast input checks, an end-to-end tiny search (budget rejections, injected
failures, DB rows), and resume after the driver is killed with SIGKILL.

The end-to-end tests run ``run_search.py search`` as a subprocess on a generated ImageFolder
(2 classes, 32 px JPEGs) with a tiny fidelity and a tiny search space, so they exercise the
real Ray Tune + Optuna + proxy-training path in well under a minute each on 2 cores.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run_search  # noqa: E402

TINY_FIDELITY = {"classes": 2, "images_per_class": 8, "val_per_class": 4, "epochs": 1,
                 "batch_size": 8, "eval_batch_size": 8, "warmup_epochs": 0.0}
TINY_SPACE = {"depths": [[1], [1], [1, 2], [1, 2]], "widths": [[16], [16, 24], [32, 48], [32, 48]],
              "mlp_ratios": [2.0], "attn_modes": ["none", "last1"], "resolutions": [224]}
TINY_BASELINE = {"depths": [1, 1, 1, 1], "widths": [16, 16, 32, 32],
                 "mlp_ratios": [2.0, 2.0, 2.0, 2.0], "attn_blocks": [0, 0, 0, 1]}


def make_imagefolder(root: Path, classes: int = 2, train: int = 10, val: int = 6) -> Path:
    """Random-ish JPEGs, one colour bias per class so there is something to learn."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                img[..., c % 3] = np.clip(img[..., c % 3].astype(int) + 80, 0, 255)
                Image.fromarray(img).save(d / f"{i:03d}.jpg", quality=90)
    return root


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
    (["search", "--data", "{tmp}"], "no train or val/ directory"),
    (["search", "--device", "nokia-3310"], "--device 'nokia-3310': allowed"),
    (["search", "--latency-budget-ms", "0.001"], "no architecture of the space meets it"),
    (["search", "--extra-arch", '{"depths": [1, 2]}'], "missing required field"),
    (["search", "--extra-arch", '{"depths": [1,1,1,1], "widths": [16,16,32,32], '
      '"mlp_ratios": [2,2,2,2], "attn_blocks": [0,0,0,5]}'], "attn_blocks[3]=5"),
    (["search", "--strategy", "annealing"], "invalid choice"),
    (["search", "--fidelity", '{"epoch": 2}'], "unknown field"),
])
def test_bad_input_fails_fast_with_one_line(tmp_path, capsys, argv, needle):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    argv += ["--db", str(tmp_path / "r.db"), "--out", str(tmp_path / "runs")]
    t0 = time.monotonic()
    try:
        code = run_search.main(argv)
    except SystemExit as e:  # argparse choice errors exit by themselves
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err, err
    if "invalid choice" not in needle:
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    import ray
    assert not ray.is_initialized()
    assert not (tmp_path / "r.db").exists()  # nothing written before validation passed
    assert time.monotonic() - t0 < 30


# -- end to end -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return make_imagefolder(tmp_path_factory.mktemp("imgs"))


def _budget_for_space(q: float) -> float:
    """A latency budget at quantile q of the tiny space's predicted latencies."""
    from latency_models import load_predictor
    from search.driver import build_space

    space = build_space(TINY_SPACE)
    p = load_predictor()
    lats = sorted(p.predict(s)[0] for s in space.sample_many(200, seed=1))
    return float(lats[int(q * (len(lats) - 1))])


def test_search_end_to_end_budget_failures_and_rows(tmp_path, tiny_data):
    budget = _budget_for_space(0.5)
    study = "e2e"
    argv = _args(tmp_path, tiny_data, study, trials=4,
                 extra=["--latency-budget-ms", f"{budget:.6f}", "--seed", "3"])
    proc = subprocess.run([sys.executable, str(ROOT / "run_search.py"), *argv], cwd=tmp_path,
                          env=_env(SWIFTFORMER_NAS_INJECT_FAILURE="1:raise,2:nan"),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _rows(tmp_path / "runs" / "results.db", study)
    by = {}
    for r in rows:
        by.setdefault(r["status"], []).append(r)
    assert not by.get("RUNNING")
    cands = [r for r in rows if r["config"].get("kind") == "candidate"
             and r["config"].get("index") is not None]
    assert sorted(r["config"]["index"] for r in cands) == [0, 1, 2, 3]
    st = {r["config"]["index"]: r for r in cands}
    # injected failures: recorded FAILED with their cause, the search went on
    assert st[1]["status"] == "FAILED" and "RuntimeError" in st[1]["error"] \
        and "injected failure" in st[1]["error"]
    assert st[2]["status"] == "FAILED" and "NonFiniteLoss" in st[2]["error"]
    assert st[2]["n_epochs"] == 1  # its epoch-1 metrics were logged before it failed
    from search.driver import build_space
    space = build_space(TINY_SPACE)
    for i in (0, 3):
        r = st[i]
        assert r["status"] == "COMPLETED" and r["full_budget"] == 1
        assert r["n_epochs"] == TINY_FIDELITY["epochs"]
        assert r["latency_ms"] <= budget + 1e-9
        assert 0.0 <= r["top1"] <= 100.0
        # re-evaluable: the recorded params rebuild the recorded architecture, seed recorded
        assert space.from_params(r["config"]["params"]).arch_hash == r["arch_hash"]
        assert r["seed"] == r["config"]["seed"] and r["seed"] is not None
        for zc in ("synflow", "naswot", "grad_norm"):
            assert r[zc] is not None
    # budget: rejected before training, never trained, recorded with the reason
    rejected = by.get("REJECTED", [])
    assert rejected, "a median budget should reject some suggestions"
    for r in rejected:
        assert r["latency_ms"] > budget and r["n_epochs"] == 0 and "budget" in r["error"]
    # the baseline trained with the same proxy
    base = [r for r in rows if r["config"].get("kind") == "baseline"]
    assert len(base) == 1 and base[0]["status"] == "COMPLETED" and base[0]["full_budget"] == 1
    # report files
    out = tmp_path / "runs" / study
    rep = json.loads((out / "pareto.json").read_text())
    full_keys = {r["trial_key"] for r in cands if r["status"] == "COMPLETED"}
    assert rep["front"] and {f["trial_key"] for f in rep["front"]} <= full_keys
    assert (out / "pareto.png").stat().st_size > 1000
    assert "Pareto front" in proc.stdout and "database:" in proc.stdout


def test_asha_stops_a_weak_trial_and_records_it_pruned(tmp_path, tiny_data):
    """--asha: candidate #1 reports top-1 0 after epoch 1 (test hook), below every earlier
    trial at ASHA's first rung, so ASHA stops it. It must be stored PRUNED with the epochs it
    ran and the reason, count as not full budget, and stay off the front; the others complete."""
    study = "asha"
    fid = {**TINY_FIDELITY, "epochs": 2}
    argv = _args(tmp_path, tiny_data, study, trials=3, extra=["--asha", "--seed", "0"])
    argv[argv.index("--fidelity") + 1] = json.dumps(fid)
    proc = subprocess.run([sys.executable, str(ROOT / "run_search.py"), *argv], cwd=tmp_path,
                          env=_env(SWIFTFORMER_NAS_INJECT_FAILURE="1:weak"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = _rows(tmp_path / "runs" / "results.db", study)
    cands = {r["config"]["index"]: r for r in rows if r["config"].get("kind") == "candidate"
             and r["config"].get("index") is not None}
    assert sorted(cands) == [0, 1, 2]
    weak = cands[1]
    assert weak["status"] == "PRUNED" and "ASHA" in weak["error"], weak
    assert weak["full_budget"] == 0 and 1 <= weak["n_epochs"] < fid["epochs"]
    for i in (0, 2):
        assert cands[i]["status"] == "COMPLETED" and cands[i]["full_budget"] == 1
        assert cands[i]["n_epochs"] == fid["epochs"]
    rep = json.loads((tmp_path / "runs" / study / "pareto.json").read_text())
    assert weak["trial_key"] not in {f["trial_key"] for f in rep["front"]}


def test_resume_after_sigkill_no_rerun_no_duplicates(tmp_path, tiny_data):
    study = "resume"
    db = tmp_path / "runs" / "results.db"
    argv = _args(tmp_path, tiny_data, study, trials=6, extra=["--seed", "5"])
    cmd = [sys.executable, str(ROOT / "run_search.py"), *argv]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # own process group: Ray's processes too
    before = None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if not db.exists():
                continue
            try:
                rows = _rows(db, study)
            except sqlite3.Error:
                continue
            done = [r for r in rows if r["status"] == "COMPLETED"
                    and r["config"].get("kind") == "candidate"]
            if len(done) >= 1:  # kill as soon as something completed: most is still to do
                before = rows
                break
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert before is not None, (tmp_path / "first.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL, "the driver should have been killed mid-run"
    before = _rows(db, study)  # the state the killed driver left
    done_before = {r["trial_key"]: r for r in before if r["status"] == "COMPLETED"}
    assert len([r for r in done_before.values() if r["config"].get("kind") == "candidate"]) < 6

    res = subprocess.run([sys.executable, str(ROOT / "run_search.py"), "search", "--study",
                          study, "--resume", "--db", str(db), "--out", str(tmp_path / "runs")],
                         cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = _rows(db, study)
    keys = [r["trial_key"] for r in after]
    assert len(keys) == len(set(keys))  # (study, trial_key) unique: no duplicated rows
    assert not [r for r in after if r["status"] == "RUNNING"]
    cands = [r for r in after if r["config"].get("kind") == "candidate"
             and r["config"].get("index") is not None and r["status"] == "COMPLETED"]
    # exactly the budget of 6 candidates, one per index, none twice
    assert sorted(r["config"]["index"] for r in cands) == [0, 1, 2, 3, 4, 5], \
        [(r["trial_key"], r["status"]) for r in after]
    for key, r0 in done_before.items():
        r1 = next(r for r in after if r["trial_key"] == key)
        # not re-run: same final row, same finish time, same epoch rows
        assert (r1["status"], r1["finished_at"], r1["top1"], r1["n_epochs"]) == \
            (r0["status"], r0["finished_at"], r0["top1"], r0["n_epochs"])
    assert (tmp_path / "runs" / study / "pareto.png").exists()


# -- driver-side logic without Ray trials (fast) ----------------------------------------------
class _FakePredictor:
    version = "fake-1"

    def predict(self, spec):
        from search_space.costs import analytic_gmacs
        return 10.0 * analytic_gmacs(spec), 0.1


class _FakeData:
    dataset_id = "fake-data"
    num_classes = 2


def _context(tmp_path, study: str, budget=None, n_trials=3):
    from results.store import ResultsStore
    from search.driver import Progress, SearchConfig, SearchContext, build_fidelity, build_space

    cfg = SearchConfig(study=study, n_trials=n_trials, latency_budget_ms=budget,
                       fidelity=TINY_FIDELITY, space=TINY_SPACE, baselines=[],
                       db=str(tmp_path / "r.db"), out_root=str(tmp_path))
    fid = build_fidelity(cfg.fidelity)
    store = ResultsStore(cfg.db)
    sid = store.get_or_create_study(study, config=cfg.identity(), seed=0,
                                    dataset_id="fake-data", fidelity=fid.to_dict(),
                                    device="fake", code_version="test")
    resolved = {"space": build_space(TINY_SPACE), "fidelity": fid, "device": "fake",
                "predictor": _FakePredictor(), "inject": {}}
    import io
    return SearchContext(cfg, resolved, store, sid, _FakeData(), Progress(n_trials, io.StringIO()))


def test_baseline_result_reused_across_studies_same_data_and_fidelity(tmp_path):
    from search_space.spec import ArchSpec

    spec = ArchSpec.from_dict(TINY_BASELINE)
    a = _context(tmp_path, "first")
    cfg = a.baseline_config("tiny", spec.canonical_json())
    assert cfg is not None  # nothing to reuse yet: it must be trained
    a.start(cfg["trial_key"], spec, cfg, cfg["seed"])
    a.finish(cfg["trial_key"], "COMPLETED", {"top1": 61.0, "latency_ms": cfg["latency_ms"]},
             a.reached(TINY_FIDELITY["epochs"]))
    b = _context(tmp_path, "second")
    assert b.baseline_config("tiny", spec.canonical_json()) is None  # reused, not retrained
    rows = b.store.trials(b.study_id)
    assert len(rows) == 1 and rows[0]["status"] == "COMPLETED" and rows[0]["top1"] == 61.0
    assert rows[0]["full_budget"] and rows[0]["config"]["reused_from_trial"] is not None
    # a different fidelity is a different proxy: no reuse
    c = _context(tmp_path, "third")
    c.fidelity_key = "other"
    assert c.baseline_config("tiny", spec.canonical_json()) is not None


def test_searcher_rejects_over_budget_without_trials_and_checkpoints(tmp_path):
    from ray.tune.search import Searcher

    from search.tune_searcher import ArchSearcher
    from search.driver import build_space

    space = build_space(TINY_SPACE)
    lats = sorted(_FakePredictor().predict(s)[0] for s in space.sample_many(100, seed=0))
    budget = lats[len(lats) // 3]
    ctx = _context(tmp_path, "s", budget=budget, n_trials=3)
    searcher = ArchSearcher("s", space, "nsga2", 0, 3, [], context_fn=lambda _: ctx)
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
    # checkpoint round trip (what Tuner.restore does): counters and the Optuna study survive
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    fresh = ArchSearcher("s", space, "nsga2", 0, 3, [], context_fn=lambda _: ctx)
    fresh.restore(str(path))
    assert fresh.n_candidates == 3 and len(fresh.inner._ot_study.trials) == len(study.trials)
    assert fresh.suggest("t9") == Searcher.FINISHED
