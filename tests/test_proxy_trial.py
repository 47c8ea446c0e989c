"""search.proxy.trial: the one train-and-record path writes the same rows for every caller."""
from __future__ import annotations

import pytest

import search.proxy.train as train_mod
from results.store import ResultsStore
from search.proxy.record import TrialRecorder
from search.proxy.trial import run_candidate, train_and_record
from test_proxy import FID, TINY, _NaNModel, toy  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def recorder(tmp_path, toy):  # noqa: F811
    store = ResultsStore(str(tmp_path / "r.db"))
    sid = store.get_or_create_study("t", config={}, seed=0, dataset_id=toy.dataset_id,
                                    fidelity=FID.replace(epochs=2).to_dict(), device="cpu",
                                    code_version="test")
    yield TrialRecorder(store, sid, FID.replace(epochs=2).to_dict())
    store.close()


def test_train_and_record_completes_at_full_budget(recorder, toy):  # noqa: F811
    fid = FID.replace(epochs=2)
    res = train_and_record(recorder, "a", TINY, fid, toy, seed=0, config={"kind": "ladder"},
                           device="cpu", latency=(1.5, 0.1))
    assert res["status"] == "COMPLETED" and res["epochs_done"] == 2
    (t,) = recorder.store.trials(recorder.study_id)
    assert t["status"] == "COMPLETED" and t["full_budget"]
    assert t["top1"] == pytest.approx(res["top1"]) and t["latency_ms"] == 1.5
    for k in ("synflow", "naswot", "grad_norm", "cpu_seconds", "wall_seconds"):
        assert t["metrics"][k] == pytest.approx(res[k])
    detail = recorder.store.trial(t["id"])
    assert [e["epoch"] for e in detail["epochs"]] == [1, 2]


def test_fewer_epochs_than_the_study_budget_is_not_full_budget(recorder, toy):  # noqa: F811
    res = run_candidate(TINY, FID.replace(epochs=1), toy, seed=0, device="cpu", zero_cost=False)
    assert "synflow" not in res
    recorder.record("b", TINY, res, config={}, seed=0)
    (t,) = recorder.store.trials(recorder.study_id)
    assert t["status"] == "COMPLETED" and not t["full_budget"]


def test_divergence_is_recorded_failed(recorder, toy, monkeypatch):  # noqa: F811
    real = train_mod.build_model
    monkeypatch.setattr(train_mod, "build_model", lambda spec: _NaNModel(real(spec)))
    res = train_and_record(recorder, "c", TINY, FID.replace(epochs=2), toy, seed=0, config={},
                           device="cpu", zero_cost=False)
    assert res["status"] == "FAILED" and "loss" in res["error"]
    (t,) = recorder.store.trials(recorder.study_id)
    assert t["status"] == "FAILED" and "training loss" in t["error"]


def test_a_trial_records_the_peak_of_its_own_run(recorder, toy):  # noqa: F811
    """``peak_rss_mib``: the process's peak from the trial's start, not since it began (a
    reused Ray worker would otherwise report its biggest trial for every later one)."""
    from search.proxy.memory import release_memory, reset_peak_rss, status_kib
    if not reset_peak_rss():
        pytest.skip("no /proc/self/clear_refs here")
    blob = b"\x01" * (400 << 20)  # this process peaks 400 MiB above where it is now
    del blob
    release_memory()
    now = status_kib()["VmRSS"] / 1024
    assert status_kib()["VmHWM"] / 1024 > now + 390
    res = train_and_record(recorder, "p", TINY, FID.replace(epochs=1), toy, seed=0,
                           config={"kind": "ladder"}, device="cpu")
    assert now * 0.9 < res["peak_rss_mib"] < now + 200
    (t,) = recorder.store.trials(recorder.study_id)
    assert t["metrics"]["peak_rss_mib"] == res["peak_rss_mib"]
