"""Fidelity study: rank statistics and bootstrap against known values, a tiny end-to-end run."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from search.fidelity.stats import extrapolate_top1, rank_report
from search.fidelity.study import format_table


# -- the study report (the correlations and the bootstrap: tests/test_stats.py) -----------------
def test_report_not_significant_when_interval_spans_zero():
    target = [75.7, 78.5, 80.9, 83.0]
    s = np.array([[50.0, 51.0, 52.0, 53.0], [53.5, 52.5, 51.5, 49.0]])
    rep = rank_report(s, target, n_boot=500)
    assert rep["tau_lo"] < 0 < rep["tau_hi"]
    assert rep["significant"] is False and rep["verdict"].startswith("not significant")
    assert rep["tau_per_seed"] == pytest.approx([1.0, -1.0]) and rep["seeds_tau1"] == 1
    good = rank_report(np.array([[50, 51, 52, 53], [49, 51.5, 52, 54.0]]), target, n_boot=500)
    assert good["significant"] is True and good["verdict"] == "significant"
    assert good["tau_lo"] == pytest.approx(1.0)
    one = rank_report(np.array([[50, 51, 52, 53.0]]), target)
    assert one["significant"] is False and "fewer than 2 seeds" in one["verdict"]
    row = {"setting": "x", "ranking": "proxy top-1", "images_per_class": 1, "epochs": 1,
           "resolution": 32, "cost_cpu_s": 1.0, "per_training_cpu_s": 1.0,
           "max_training_cpu_s": 1.0, **rep}
    assert "not significant" in format_table([row])


def test_learning_curve_extrapolation_recovers_power_law():
    t = np.array([1, 2, 3])
    top1 = 100 - 50 * t ** -0.5
    assert extrapolate_top1(t, top1, 16) == pytest.approx(100 - 50 / 4)
    with pytest.raises(ValueError, match="at least two epochs of history"):
        extrapolate_top1([1], [10.0], 5)


# -- end to end ------------------------------------------------------------------------------------
def _image_folder(root, classes=3, n_train=12, n_val=6):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            d = os.path.join(root, split, f"c{c}")
            os.makedirs(d)
            for i in range(n):
                # class-dependent colour + noise: learnable, so accuracies are not all equal
                a = np.clip(rng.normal(60 + 70 * c, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(os.path.join(d, f"{i:03d}.jpg"))
    return str(root)


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_end_to_end_cli_store_and_resume(tmp_path, capsys):
    import run_search
    from results.store import ResultsStore

    data = _image_folder(tmp_path / "imgs")
    out, db = str(tmp_path / "fid"), str(tmp_path / "r.db")
    fid = json.dumps({"classes": 3, "images_per_class": 12, "val_per_class": 6, "epochs": 2,
                      "batch_size": 8, "eval_batch_size": 18, "warmup_epochs": 0.0})
    argv = ["fidelity", "--fidelity", fid, "--name", "tiny", "--data", data, "--seeds", "0,1",
            "--refs", "XS,S,L1", "--threads", "1", "--out", out, "--db", db,
            "--cache-dir", str(tmp_path / "cache"), "--boot", "200", "--format", "json"]
    assert run_search.main(argv) == 0
    table = json.loads(capsys.readouterr().out)
    top = table[0]
    assert top["setting"] == "tiny" and top["ranking"] == "proxy top-1" and top["seeds"] == 2
    assert -1 <= top["tau_lo"] <= top["tau"] <= top["tau_hi"] <= 1
    assert top["cost_cpu_s"] > 0 and len(top["mean"]) == 3
    rankings = {r["ranking"] for r in table}
    assert {"zero-cost synflow", "zero-cost naswot", "zero-cost grad_norm"} <= rankings
    assert any(r.startswith("learning curve") for r in rankings)
    assert "proxy -val loss" in rankings
    ctrl = next(r for r in table if r["ranking"] == "params (control)")
    assert ctrl["tau"] == pytest.approx(1.0)  # XS < S < L1 by size and by published top-1
    for f in ("report.md", "report.json", "fidelity_curve.png"):
        assert os.path.getsize(os.path.join(out, f)) > 0

    with ResultsStore(db, readonly=True) as st:
        study = next(s for s in st.studies() if s["name"] == "fidelity-tiny")
        assert study["completed"] + study["failed"] == 6
        trials = st.trials(study["id"])
        assert {t["trial_key"] for t in trials} == {f"{r}-seed{s}" for r in ("XS", "S", "L1")
                                                   for s in (0, 1)}
        t = st.trial(trials[0]["id"])
        assert len(t["epochs"]) == 2 and t["metrics"]["cpu_seconds"] > 0
        assert t["synflow"] is not None

    # resume: everything cached, nothing retrained; report-only gives the same tau
    assert run_search.main(argv) == 0
    assert ", 0 to train" in capsys.readouterr().err
    assert run_search.main(argv[:-2] + ["--report-only", "--format", "json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again[0]["tau"] == pytest.approx(top["tau"])


@pytest.mark.parametrize("extra, msg", [
    (["--seeds", "0,x"], "--seeds"),
    (["--refs", "XS,M9"], "--refs"),
    (["--refs", "XS"], "--refs"),
    (["--settings", "nope"], "--settings"),
    (["--fidelity", '{"epochs": 0}'], "fidelity.epochs"),
])
def test_cli_bad_input_one_line(tmp_path, capsys, extra, msg):
    import run_search

    rc = run_search.main(["fidelity", "--out", str(tmp_path), "--no-db"] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0]


def test_store_conflict_warns_and_the_sweep_goes_on(tmp_path):
    """A results-store conflict must not abort the sweep (it once lost every training still
    running); an edited free-text note is not a conflict at all."""
    from results.store import ResultsStore
    from search.proxy.fidelity import Fidelity
    from search.fidelity.study import Setting, run_study

    data = _image_folder(tmp_path / "imgs")
    fid = Fidelity(classes=3, images_per_class=12, val_per_class=6, epochs=1, batch_size=8,
                   eval_batch_size=18, warmup_epochs=0.0)
    kw = dict(refs=("XS", "S"), out_dir=str(tmp_path / "fid"), cache_dir=str(tmp_path / "c"),
              workers=1, threads=1, zero_cost=False)
    logs: list[str] = []
    with ResultsStore(str(tmp_path / "r.db")) as store:
        run_study([Setting("tiny", fid, source=data, note="first wording")], [0], store=store,
                  log=logs.append, **kw)
        run_study([Setting("tiny", fid, source=data, note="edited wording")], [0, 1],
                  store=store, log=logs.append, **kw)
        assert not [m for m in logs if "warning" in m]  # the note is not the study's identity
        store.get_or_create_study("fidelity-other", config={"something": "else"}, seed=0,
                                  dataset_id="x", fidelity={"epochs": 1}, device="cpu",
                                  code_version="t")
        res = run_study([Setting("other", fid, source=data)], [0], store=store,
                        log=logs.append, **kw)
        assert len(res) == 2 and all(r["status"] == "COMPLETED" for r in res)
        warns = [m for m in logs if "warning" in m]
        assert len(warns) == 2 and all("not written to the results store" in w for w in warns)
        assert len(store.trials(store.study_id("fidelity-tiny"))) == 4
    files = list((tmp_path / "fid" / "cache").rglob("*.json"))
    assert len(files) == 6  # every training kept in the cache the report reads


def test_full_cifar10_settings_take_their_directory_from_the_command_line(tmp_path, capsys):
    """No machine path in code: the sweep's full-CIFAR-10 settings read the directory given
    with --cifar10; without it, naming one is refused with one line and 'all' skips them."""
    import run_search
    from search.proxy.fidelity import DEFAULT_FIDELITY
    from search.fidelity.settings import SWEEP, default_setting, select_settings

    needing = [s.name for s in SWEEP if s.needs_cifar10]
    assert needing == ["i1000-e1", "i2000-e1", "i5000-e1"]
    assert all(s.source is None for s in SWEEP)  # no directory baked into the sweep
    for extra, msg in ((["--settings", "i2000-e1"], "give --cifar10 DIR"),
                       (["--settings", "i1000-e1", "--cifar10", str(tmp_path / "nope")],
                        "no such directory")):
        rc = run_search.main(["fidelity", "--out", str(tmp_path / "o"), "--no-db"] + extra)
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not (tmp_path / "o").exists()  # refused before anything was written

    default = default_setting(DEFAULT_FIDELITY, name=None, source=None, from_option=False)
    logs: list[str] = []
    got = select_settings(["all"], default=default, log=logs.append)
    assert [s.name for s in got] == [s.name for s in SWEEP if not s.needs_cifar10]
    assert len(logs) == 1 and all(n in logs[0] for n in needing)
    got = select_settings(["i1000-e1", "default", "i1000-e1"], default=default,
                          cifar10=str(tmp_path))
    assert [(s.name, s.source) for s in got] == [("i1000-e1", str(tmp_path)),
                                                 (default.name, None)]
    # a report of cached results trains nothing: no directory needed
    got = select_settings(["i5000-e1"], default=default, need_data=False)
    assert [s.name for s in got] == ["i5000-e1"]
