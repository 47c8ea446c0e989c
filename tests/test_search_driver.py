"""Search driver (search.nas): fail-fast input checks, the CLI derived from SearchConfig, an
end-to-end tiny search (budget rejections, injected failures, DB rows, the report's front and
hypervolume = results.study_front's), and resume after the driver is killed with SIGKILL.

The end-to-end tests run ``run_search.py search`` as a subprocess on a generated ImageFolder
(2 classes, 32 px JPEGs) with a tiny fidelity and a tiny search space, so they exercise the
real Ray Tune + Optuna + proxy-training path in well under a minute each on 2 cores. Failures
are injected by ``tests/nas_failures.py``, a trainable wrapper handed to run_search (no hook
in production code).
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


def _with_failures(plan: str, argv: list[str]) -> list[str]:
    """The command running ``argv`` with failures injected (see tests/nas_failures.py)."""
    return [sys.executable, str(ROOT / "tests" / "nas_failures.py"), plan, *argv]


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
    (["search", "--data", "{tmp}"], "missing train/"),
    (["search", "--latency-device", "nokia-3310"], "--latency-device 'nokia-3310': allowed"),
    (["search", "--latency-device", "nowhere/phone.json"], "no such calibration file"),
    (["search", "--latency-budget-ms", "0.001"], "no architecture of the space meets it"),
    (["search", "--extra-arch", '{"depths": [1, 2]}'], "missing required field"),
    (["search", "--extra-arch", '{"depths": [1,1,1,1], "widths": [16,16,32,32], '
      '"mlp_ratios": [2,2,2,2], "attn_blocks": [0,0,0,5]}'], "attn_blocks[3]=5"),
    (["search", "--strategy", "annealing"], "invalid choice"),
    (["search", "--fidelity", '{"epoch": 2}'], "unknown field"),
    (["search", "--fidelity", '{"epochs": 0}'], "fidelity.epochs=0"),
    (["search", "--space", '{"depth": [[1]]}'], "--space: unknown field"),
    (["search", "--trials", "0"], "--trials 0: allowed 1..100,000"),
    (["search", "--cpus-per-trial", "0"], "--cpus-per-trial 0.0: need a positive number"),
    (["search", "--study", "a/b"], "--study 'a/b'"),
    (["search", "--resume"], "--resume: give the --study NAME"),
    (["search", "--study", "nothing-here", "--resume"], "nothing to resume"),
    (["search", "--torch-device", "tpu"], "argument --torch-device: 'tpu': allowed auto"),
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
    if "invalid" not in needle and "argument" not in needle:  # argparse's own: with usage
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
    from search.nas.config import parse_space

    space = parse_space(TINY_SPACE)
    p = load_predictor()
    lats = sorted(p.predict(s)[0] for s in space.sample_many(200, seed=1))
    return float(lats[int(q * (len(lats) - 1))])


def test_search_end_to_end_budget_failures_and_rows(tmp_path, tiny_data):
    budget = _budget_for_space(0.5)
    study = "e2e"
    argv = _args(tmp_path, tiny_data, study, trials=4,
                 extra=["--latency-budget-ms", f"{budget:.6f}", "--seed", "3"])
    proc = subprocess.run(_with_failures("1:raise,2:nan", argv), cwd=tmp_path, env=_env(),
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
    from search.nas.config import parse_space
    space = parse_space(TINY_SPACE)
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
    # report files: the front holds only full-budget completed trials, and front and
    # hypervolume are results.study_front's (what `pareto --study` and the dashboard show)
    out = tmp_path / "runs" / study
    rep = json.loads((out / "pareto.json").read_text())
    full_keys = {r["trial_key"] for r in rows if r["status"] == "COMPLETED" and r["full_budget"]}
    assert rep["front"] and {f["trial_key"] for f in rep["front"]} <= full_keys
    from results.store import ResultsStore
    from results.study_front import study_front
    with ResultsStore(str(tmp_path / "runs" / "results.db"), readonly=True) as store:
        view = study_front(store, study)
    # (one row per architecture: a reused duplicate is the same point under a second key)
    assert {f["trial_key"] for f in rep["front"]} <= {f["trial_key"] for f in view["front"]}
    assert {f["arch_hash"] for f in rep["front"]} == {f["arch_hash"] for f in view["front"]}
    assert rep["hypervolume"]["value"] == view["hypervolume"] > 0
    assert [rep["hypervolume"]["reference"]["top1"],
            rep["hypervolume"]["reference"]["latency_ms"]] == view["reference_point"]
    assert f"hypervolume {view['hypervolume']:.3f}" in proc.stdout
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
    proc = subprocess.run(_with_failures("1:weak", argv), cwd=tmp_path, env=_env(),
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


def _context(tmp_path, study: str, budget=None, n_trials=3, db="r.db"):
    """A SearchContext over a real store with a fake predictor and data (no Ray, no torch)."""
    import io

    from results.store import ResultsStore
    from search.nas.config import ResolvedSearch, SearchConfig, parse_fidelity_fields, parse_space
    from search.nas.context import SearchContext
    from search.nas.progress import Progress
    from search.proxy.record import TrialRecorder

    cfg = SearchConfig(study=study, n_trials=n_trials, latency_budget_ms=budget,
                       fidelity=parse_fidelity_fields(TINY_FIDELITY), space=parse_space(TINY_SPACE),
                       baselines=(), db=str(tmp_path / db), out_root=str(tmp_path))
    store = ResultsStore(cfg.db)
    recorder = TrialRecorder.for_study(store, study, config=cfg.identity(), seed=0,
                                       dataset_id="fake-data", fidelity=cfg.fidelity.to_dict(),
                                       device="fake")
    resolved = ResolvedSearch(config=cfg, baselines=(), latency_device="fake",
                              predictor=_FakePredictor())
    return SearchContext(resolved, recorder, _FakeData(), Progress(n_trials, io.StringIO()))


def test_baseline_result_reused_across_studies_same_data_and_fidelity(tmp_path):
    from search_space.spec import ArchSpec

    spec = ArchSpec.from_dict(TINY_BASELINE)
    a = _context(tmp_path, "first")
    cfg = a.baseline_config("tiny", spec.canonical_json())
    assert cfg is not None  # nothing to reuse yet: it must be trained
    a.start(cfg["trial_key"], spec, cfg, cfg["seed"])
    a.finish(cfg["trial_key"], "COMPLETED", {"top1": 61.0, "latency_ms": cfg["latency_ms"]},
             epochs_done=TINY_FIDELITY["epochs"])
    b = _context(tmp_path, "second")
    assert b.baseline_config("tiny", spec.canonical_json()) is None  # reused, not retrained
    rows = b.store.trials(b.study_id)
    assert len(rows) == 1 and rows[0]["status"] == "COMPLETED" and rows[0]["top1"] == 61.0
    assert rows[0]["full_budget"] and rows[0]["config"]["reused_from_trial"] is not None
    # a different fidelity is a different proxy: no reuse
    c = _context(tmp_path, "third")
    c.fidelity_key = "other"
    assert c.baseline_config("tiny", spec.canonical_json()) is not None


def _budget_searcher(tmp_path, n_trials=3):
    from search.nas.searcher import ArchSearcher

    ctx0 = _context(tmp_path, "probe", db="probe.db")
    lats = sorted(_FakePredictor().predict(s)[0] for s in ctx0.space.sample_many(100, seed=0))
    budget = lats[len(lats) // 3]
    ctx = _context(tmp_path, "s", budget=budget, n_trials=n_trials)
    return ctx, budget, ArchSearcher(ctx, ctx.space, "nsga2", 0, n_trials, [])


def test_searcher_rejects_over_budget_without_trials_and_checkpoints(tmp_path):
    from ray.tune.search import Searcher

    from search.nas.searcher import ArchSearcher

    ctx, budget, searcher = _budget_searcher(tmp_path)
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
    # checkpoint round trip (what a resume does): counters and the Optuna study survive
    path = tmp_path / "searcher.pkl"
    searcher.save(str(path))
    fresh = ArchSearcher(ctx, ctx.space, "nsga2", 0, 3, [])
    fresh.restore(str(path))
    assert fresh.n_candidates == 3 and len(fresh.inner._ot_study.trials) == len(study.trials)
    assert fresh.suggest("t9") == Searcher.FINISHED


def test_resumed_searcher_reruns_live_trials_and_tells_finished_ones_from_the_store(tmp_path):
    """A resume restores the searcher's last checkpoint into a fresh searcher (fresh context):
    trials live at the checkpoint run again with the same config, unless the store has their
    final row (they finished after the checkpoint): then Optuna learns the stored result."""
    import pickle

    from ray.tune.search import Searcher
    from search_space.spec import ArchSpec

    from search.nas.context import SearchContext
    from search.nas.searcher import ArchSearcher

    ctx, _, searcher = _budget_searcher(tmp_path)
    first = [searcher.suggest(f"t{i}") for i in range(2)]
    for c in first:  # what the callback does when Tune starts them
        ctx.start(c["trial_key"], ArchSpec.from_json(c["spec"]), c, c["seed"])
    searcher.save_to_dir(str(tmp_path), session_str="2000-01-01_00-00-00")
    # after the checkpoint, the first trial completed; then the driver was killed
    ctx.finish(first[0]["trial_key"], "COMPLETED", {"top1": 42.0,
               "latency_ms": first[0]["latency_ms"]}, epochs_done=TINY_FIDELITY["epochs"])
    pickle.dumps(searcher)  # Tune pickles it into tuner.pkl: the context must stay out
    fresh_ctx = SearchContext(ctx.resolved, type(ctx.recorder)(ctx.store, ctx.study_id, ctx.fid),
                              ctx.data, ctx.progress)
    fresh = ArchSearcher(fresh_ctx, ctx.space, "nsga2", 0, 3, [])
    fresh.restore_from_dir(str(tmp_path))
    again = fresh.suggest("n0")
    assert again == first[1]  # same key, same seed, same spec
    completed = [t for t in fresh.inner._ot_study.trials
                 if t.state.name == "COMPLETE" and t.values[0] == 42.0]
    assert len(completed) == 1  # Optuna learnt the stored result, nothing was retrained
    third = fresh.suggest("n1")
    assert third["index"] == 2 and fresh.suggest("n2") == Searcher.FINISHED
    keys = [t["trial_key"] for t in ctx.store.trials(ctx.study_id)]
    assert len(keys) == len(set(keys))


# -- the command line is derived from SearchConfig ---------------------------------------------
def _search_parser():
    import argparse

    from search.nas.cli import add_search_arguments

    p = argparse.ArgumentParser()
    add_search_arguments(p)
    return p


def test_every_config_field_is_an_option_and_the_dataclass_holds_the_defaults():
    import dataclasses

    from search.nas.cli import config_from_args
    from search.nas.config import SearchConfig

    p = _search_parser()
    dests = {a.dest for a in p._actions}
    assert {f.name for f in dataclasses.fields(SearchConfig)} <= dests
    for f in dataclasses.fields(SearchConfig):
        default = p.get_default(f.name)
        if "shared" in f.metadata["cli"]:  # declared once elsewhere: the same value
            assert default is None or default == f.default, f.name
        else:  # no default restated in argparse
            assert default == "==SUPPRESS==", f.name
    cfg = config_from_args(p.parse_args([]))
    assert dataclasses.replace(cfg, study="x") == SearchConfig(study="x")
    assert cfg.study.startswith("search-")
    cfg = config_from_args(p.parse_args([
        "--study", "s1", "--latency-device", "iphone12-ane", "--torch-device", "cpu",
        "--trials", "3", "--baselines", "XS, S", "--extra-arch", "L1", "--fidelity",
        '{"epochs": 1}', "--space", '{"resolutions": [224]}', "--out", "o", "--db", "o/r.db"]))
    assert (cfg.study, cfg.latency_device, cfg.torch_device, cfg.n_trials) == \
        ("s1", "iphone12-ane", "cpu", 3)
    assert cfg.baselines == ("XS", "S") and cfg.extra_archs == ("L1",)
    assert cfg.fidelity.epochs == 1 and cfg.space.resolutions == (224,)
    assert (cfg.out_root, cfg.db) == ("o", "o/r.db")
    assert SearchConfig.from_dict(cfg.to_dict()) == cfg  # search_config.json round trip
    for old in ("--device", "--train-device"):  # the phone and the torch device, renamed
        with pytest.raises(SystemExit):
            p.parse_args([old, "cpu"])


@pytest.mark.parametrize("argv", [
    [],  # building the parser (`run_search.py --help`)
    ["search", "--data", "/nonexistent", "--db", "/nonexistent/r.db"],  # failing validation
    ["search", "--trials", "0"],
])
def test_help_and_bad_input_stay_light(argv):
    """The command line and its validation import no torch, ray, optuna or matplotlib."""
    code = ("import sys, run_search\n"
            "rc = run_search.main(sys.argv[1:]) if len(sys.argv) > 1 else "
            "(run_search.build_parser(), 0)[1]\n"
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'matplotlib') "
            "if m in sys.modules))\n"
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    if argv:  # one line naming the input, exit 2
        assert r.returncode == 2 and r.stderr.startswith("error: ") \
            and r.stderr.count("\n") == 1, r.stderr
