"""search.proxy.record: TrialRecorder, the one writer of trial rows, over a real SQLite store.

No training here (results are dicts shaped like ``run_candidate``'s): what each method writes
-- status, metric columns, epoch rows, timings, fidelity reached, full budget -- and what it
leaves out.
"""
from __future__ import annotations

import math
import subprocess

import pytest

import search.proxy.record as record_mod
from results.store import ResultsStore
from search.proxy.record import (EPOCH_KEYS, FINAL_KEYS, TIMING_KEYS, TrialRecorder, code_version,
                                 fidelity_reached)
from search_space.errors import UsageError
from search_space.spec import ArchSpec

FID = {"epochs": 2, "resolution": 32, "classes": 3}
SPEC = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32), mlp_ratios=(2.0,) * 4,
                attn_blocks=(0, 0, 0, 1), resolution=32, num_classes=3)
OTHER = SPEC.replace(widths=(16, 24, 32, 32))
STUDY = dict(config={"kind": "test"}, seed=7, dataset_id="d1", fidelity=FID, device="cpu")


@pytest.fixture()
def rec(tmp_path):
    store = ResultsStore(str(tmp_path / "r.db"))
    yield TrialRecorder.for_study(store, "s", **STUDY)
    store.close()


def _row(rec, key):
    (t,) = [t for t in rec.store.trials(rec.study_id) if t["trial_key"] == key]
    return rec.store.trial(t["id"])


def test_code_version_is_git_describe_or_unknown(monkeypatch, tmp_path):
    want = subprocess.run(["git", "-C", str(record_mod.PROJECT_ROOT), "describe", "--always",
                           "--dirty"], capture_output=True, text=True).stdout.strip()
    assert want and code_version() == want
    monkeypatch.setattr(record_mod, "PROJECT_ROOT", tmp_path)  # not a git checkout
    assert code_version() == "unknown"

    def failing_git(*a, **k):  # an error exit, even with something on stdout
        return subprocess.CompletedProcess(a, 128, stdout="fatal-ish\n", stderr="")
    monkeypatch.setattr(record_mod.subprocess, "run", failing_git)
    assert code_version() == "unknown"

    def silent_git(*a, **k):
        return subprocess.CompletedProcess(a, 0, stdout="  \n", stderr="")
    monkeypatch.setattr(record_mod.subprocess, "run", silent_git)
    assert code_version() == "unknown"

    def no_git(*a, **k):
        raise FileNotFoundError("git")
    monkeypatch.setattr(record_mod.subprocess, "run", no_git)
    assert code_version() == "unknown"

    def hung_git(*a, **k):
        raise subprocess.TimeoutExpired(a, 10)
    monkeypatch.setattr(record_mod.subprocess, "run", hung_git)
    assert code_version() == "unknown"


def test_fidelity_reached_is_the_budget_with_the_epochs_done():
    fid = dict(FID)
    assert fidelity_reached(fid, 1.5) == {"epochs": 1.5, "resolution": 32, "classes": 3}
    assert fidelity_reached(fid, None) == {"epochs": 0, "resolution": 32, "classes": 3}
    assert fidelity_reached(fid, 0) == {"epochs": 0, "resolution": 32, "classes": 3}
    assert fid == FID  # the budget itself is not changed


def test_for_study_creates_reopens_and_refuses_another_identity(tmp_path, monkeypatch):
    monkeypatch.setattr(record_mod, "code_version", lambda: "v-test")
    with ResultsStore(str(tmp_path / "r.db")) as store:
        a = TrialRecorder.for_study(store, "s", **STUDY)
        b = TrialRecorder.for_study(store, "s", **STUDY)
        assert a.study_id == b.study_id and a.fidelity == FID and a.store is store
        (st,) = store.studies()
        assert (st["name"], st["seed"], st["dataset_id"], st["device"], st["code_version"]) == \
            ("s", 7, "d1", "cpu", "v-test")
        with pytest.raises(UsageError, match="study 's'"):
            TrialRecorder.for_study(store, "s", **{**STUDY, "seed": 8})
        with pytest.raises(UsageError, match="study 's'"):
            TrialRecorder.for_study(store, "s", **{**STUDY, "config": {"kind": "other"}})
        with pytest.raises(UsageError, match="study 's'"):
            TrialRecorder.for_study(store, "s", **{**STUDY, "fidelity": {**FID, "epochs": 3}})
        other = TrialRecorder.for_study(store, "t", **STUDY)
        assert other.study_id != a.study_id


def test_start_is_idempotent_and_adopt_writes_nothing(rec):
    tid = rec.start("k", SPEC, config={"index": 3}, seed=5)
    assert rec.start("k", SPEC, config={"index": 99}, seed=6) == tid  # a resumed trial
    (t,) = rec.store.trials(rec.study_id)
    assert (t["id"], t["status"], t["arch_hash"], t["config"], t["seed"]) == \
        (tid, "RUNNING", SPEC.arch_hash, {"index": 3}, 5)
    assert rec.store.trial(tid)["spec"] == SPEC.to_dict()  # the architecture is stored
    fresh = TrialRecorder(rec.store, rec.study_id, FID)  # a resumed driver's recorder
    fresh.adopt("k", tid)
    assert fresh.trial_ids == {"k": tid} and len(rec.store.trials(rec.study_id)) == 1
    fresh.epoch("k", {"epoch": 1, "top1": 5.0})
    assert rec.store.trial(tid)["epochs"] == [{"epoch": 1, "top1": 5.0}]


def test_epoch_keeps_only_epoch_keys(rec):
    rec.start("k", SPEC, config={}, seed=0)
    m = {k: float(i) for i, k in enumerate(EPOCH_KEYS)}
    rec.epoch("k", {**m, "epoch": 2, "final": False, "trial_key": "k", "history": [1]})
    rec.epoch("k", {"top1": 1.0})  # no epoch number: epoch 0
    epochs = _row(rec, "k")["epochs"]
    assert epochs == [{"epoch": 0, "top1": 1.0}, {**m, "epoch": 2}]


def test_complete_records_final_keys_latency_and_full_budget(rec):
    rec.start("k", SPEC, config={}, seed=0)
    result = {k: float(i + 1) for i, k in enumerate(FINAL_KEYS)}
    result.update(epochs_done=2, device="cpu", history=[{"epoch": 1}], params=123,
                  spec=SPEC.to_dict(), extra_thing=5)
    rec.complete("k", result, latency=(1.25, 0.5))
    t = _row(rec, "k")
    assert t["status"] == "COMPLETED" and t["full_budget"] and t["error"] is None
    want = {k: result[k] for k in FINAL_KEYS}
    want.update(latency_ms=1.25, latency_std_ms=0.5)
    assert t["metrics"] == want  # FINAL_KEYS only: no history, params, spec or extras
    assert (t["top1"], t["latency_ms"], t["latency_std_ms"]) == (result["top1"], 1.25, 0.5)
    assert t["timings"] == {k: result[k] for k in TIMING_KEYS}
    assert t["fidelity_reached"] == {**FID, "epochs": 2} and t["epochs_reached"] == 2


def test_complete_without_latency_keeps_the_results_own(rec):
    rec.start("k", SPEC, config={}, seed=0)
    rec.complete("k", {"top1": 40.0, "epochs_done": 1, "latency_ms": 3.0})
    t = _row(rec, "k")
    assert t["latency_ms"] == 3.0 and t["latency_std_ms"] is None
    assert t["status"] == "COMPLETED" and not t["full_budget"]  # 1 of 2 epochs
    assert t["timings"] is None  # no timing given: none stored


def test_finish_drops_history_and_params_and_keeps_extras(rec):
    rec.start("k", SPEC, config={}, seed=0)
    rec.finish("k", "PRUNED", {"top1": 3.0, "history": [1], "params": 9, "reused_from_trial": 4,
                               "wall_seconds": 2.5, "cpu_seconds": None},
               epochs_done=1, error="stopped early")
    t = _row(rec, "k")
    assert t["metrics"] == {"top1": 3.0, "reused_from_trial": 4, "wall_seconds": 2.5,
                            "cpu_seconds": None}
    assert t["timings"] == {"wall_seconds": 2.5}  # None timings are not timings
    assert (t["status"], t["error"], t["full_budget"]) == ("PRUNED", "stopped early", False)
    assert t["fidelity_reached"] == {**FID, "epochs": 1}
    rec.start("r", OTHER, config={}, seed=0)
    rec.finish("r", "COMPLETED", {"top1": 50.0}, reached={**FID, "epochs": 2.0})
    assert _row(rec, "r")["full_budget"]  # reached given: used as is (a reused result)


def test_fail_records_the_error_and_the_epochs_done(rec):
    rec.start("a", SPEC, config={}, seed=0)
    rec.fail("a", "RuntimeError: boom")
    t = _row(rec, "a")
    assert (t["status"], t["error"], t["epochs_reached"], t["metrics"]) == \
        ("FAILED", "RuntimeError: boom", 0, {})
    rec.start("b", OTHER, config={}, seed=0)
    rec.fail("b", "NonFiniteLoss: nan", epochs_done=2, metrics={"wall_seconds": 1.0, "top1": 9.0})
    t = _row(rec, "b")
    assert t["epochs_reached"] == 2 and not t["full_budget"] and t["top1"] == 9.0
    assert t["timings"] == {"wall_seconds": 1.0}


def test_record_writes_a_pool_result_start_epochs_and_final(rec):
    history = [{"epoch": 1, "top1": 10.0, "lr": 0.1}, {"epoch": 2, "top1": 20.0, "lr": 0.05}]
    tid = rec.record("ok", SPEC, {"top1": 20.0, "epochs_done": 2, "history": history,
                                  "wall_seconds": 3.0}, config={"kind": "ladder"}, seed=3,
                     latency=(2.0, None))
    t = rec.store.trial(tid)
    assert t["trial_key"] == "ok" and t["status"] == "COMPLETED" and t["full_budget"]
    assert (t["config"], t["seed"], t["latency_ms"], t["top1"]) == ({"kind": "ladder"}, 3, 2.0,
                                                                    20.0)
    assert t["epochs"] == history
    tid2 = rec.record("bad", OTHER, {"status": "FAILED", "error": "OOM", "epochs_done": 1,
                                     "history": history[:1], "wall_seconds": 1.5, "top1": 10.0},
                      config={}, seed=4)
    t2 = rec.store.trial(tid2)
    assert (t2["status"], t2["error"], t2["epochs_reached"]) == ("FAILED", "OOM", 1)
    assert t2["metrics"] == {"wall_seconds": 1.5}  # timings only: a failure has no top-1
    assert t2["epochs"] == history[:1]
    tid3 = rec.record("bad2", SPEC.replace(num_classes=4), {"status": "FAILED"}, config={},
                      seed=5)
    t3 = rec.store.trial(tid3)
    assert (t3["error"], t3["epochs_reached"]) == ("failed", 0)


def test_non_finite_metrics_are_stored_as_null(rec):
    rec.start("k", SPEC, config={}, seed=0)
    rec.epoch("k", {"epoch": 1, "train_loss": math.nan})
    rec.finish("k", "FAILED", {"val_loss": math.inf}, epochs_done=1, error="x")
    t = _row(rec, "k")
    assert t["epochs"] == [{"epoch": 1, "train_loss": None}] and t["val_loss"] is None
