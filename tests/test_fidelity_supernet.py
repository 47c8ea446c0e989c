"""The fidelity study's supernet setting: it runs, tau comes from the subnets' scores, the cost
includes the supernet's training, checkpoints resume, bad supernet input fails in one line."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import run_search
from results.store import ResultsStore
from search.fidelity.settings import (SUPERNET, Setting, check_supernet_setting,
                                      default_setting, published_top1, select_settings)
from search_space.stats import kendall_tau
from search.fidelity.study import run_study, summarize
from search.fidelity.supernet import checkpoint_dir
from search.proxy.data import prepare_data
from search.proxy.fidelity import DEFAULT_FIDELITY, Fidelity
from search.proxy.supernet.config import DEFAULT_SUPERNET, SupernetConfig, to_proxy
from search.proxy.supernet.scoring import score_subnets
from search.proxy.supernet.training import CHECKPOINT_NAME, load_supernet
from search_space.errors import UsageError
from search_space.spec import PRESETS
from test_search_data import make_imagefolder

pytestmark = pytest.mark.timeout(300)  # a loaded 2-core machine; ~40 s in all when idle

REFS = ("XS", "S", "L1")
# Tiny data and recipe (as tests/test_supernet.py): 3 classes x 12 images; the supernet covers
# the default space at widths / 4, trained 1 epoch of batch 12 (3 steps).
FID = Fidelity(classes=3, images_per_class=12, val_per_class=4, resolution=32,
               eval_batch_size=64, bn_recal_images=12, batch_size=12)
CFG = SupernetConfig(epochs=1, batch_size=12, num_random=1, warmup_epochs=0.0, recal_images=12)


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("img") / "src", n_classes=3, n_train=12,
                            n_val=4)


def _setting(src, cfg=CFG) -> Setting:
    return Setting("sn-tiny", FID, source=src, supernet=cfg, note="test")


def _run(setting, tmp_path, seeds=(0, 1), store=None, logs=None):
    return run_study([setting], list(seeds), refs=REFS, out_dir=str(tmp_path / "fid"),
                     cache_dir=str(tmp_path / "cache"), workers=1, threads=1, store=store,
                     zero_cost=True, log=(logs.append if logs is not None else lambda m: None))


def test_supernet_setting_ranks_by_subnet_scores_and_costs_its_training(src, tmp_path):
    setting = _setting(src)
    logs: list[str] = []
    with ResultsStore(str(tmp_path / "r.db")) as store:
        rows = _run(setting, tmp_path, store=store, logs=logs)
        trials = store.trials(store.study_id("fidelity-sn-tiny"))
    assert len(trials) == 6 and "2 to train" in logs[0]  # one task (one supernet) per seed
    assert sorted((r["ref"], r["seed"]) for r in rows) == sorted(
        (n, s) for n in REFS for s in (0, 1))
    for r in rows:  # the ref's share of the supernet's training + its own scoring
        assert r["status"] == "COMPLETED" and r["supernet_train_cpu_seconds"] > 0
        assert r["cpu_seconds"] == pytest.approx(
            r["supernet_train_cpu_seconds"] / len(REFS) + r["score_cpu_seconds"])
        assert r["fidelity"]["epochs"] == CFG.epochs and r["fidelity"]["proxy"] == "supernet"
        assert "zero_cost" not in r  # zero-cost rows belong to the stand-alone settings
    table = summarize(rows, REFS, [setting], n_boot=200)
    by = {t["ranking"]: t for t in table if t["setting"] == "sn-tiny"}
    assert set(by) == {"proxy top-1", "proxy -val loss"}
    target = published_top1(REFS)
    for ranking, key in (("proxy -val loss", lambda r: -r["val_loss"]),
                         ("proxy top-1", lambda r: r["top1"])):
        per_seed = [[key(next(r for r in rows if r["ref"] == n and r["seed"] == s))
                     for n in REFS] for s in (0, 1)]
        want = kendall_tau(np.mean(per_seed, axis=0), target)
        assert by[ranking]["tau"] == pytest.approx(0.0 if np.isnan(want) else want)
        assert by[ranking]["seeds"] == 2 and by[ranking]["tau_lo"] <= by[ranking]["tau_hi"]
    train = {s: next(r for r in rows if r["seed"] == s)["supernet_train_cpu_seconds"]
             for s in (0, 1)}
    score = {s: sum(r["score_cpu_seconds"] for r in rows if r["seed"] == s) for s in (0, 1)}
    assert by["proxy -val loss"]["cost_cpu_s"] == pytest.approx(
        np.mean([train[s] + score[s] for s in (0, 1)]))
    assert by["proxy -val loss"]["cost_cpu_s"] > np.mean(list(train.values()))


def test_supernet_checkpoints_live_under_the_output_and_a_rerun_resumes(src, tmp_path):
    setting = _setting(src)
    first = _run(setting, tmp_path, seeds=(0,))
    data_id = first[0]["dataset_id"]
    ck = os.path.join(checkpoint_dir(str(tmp_path / "fid"), setting, data_id, 0), CHECKPOINT_NAME)
    assert ck.startswith(str(tmp_path / "fid")) and os.path.isfile(ck)
    # the rows are the checkpointed supernet's scores of the references' subnets
    net, _ = load_supernet(ck)
    data = prepare_data(src, FID, cache_dir=str(tmp_path / "cache"))
    specs = [to_proxy(PRESETS[n], 3, 32, CFG.width_divisor) for n in REFS]
    want = score_subnets(net, specs, data, FID, recal_images=CFG.recal_images,
                         channels_last=False)
    got = {r["ref"]: r for r in first}
    for n, w in zip(REFS, want):
        assert got[n]["val_loss"] == pytest.approx(w["val_loss"], abs=1e-5)
        assert got[n]["top1"] == pytest.approx(w["top1"])
    logs: list[str] = []
    again = _run(setting, tmp_path, seeds=(0,), logs=logs)
    assert "3 cached, 0 to train" in logs[0]
    assert sorted(r["top1"] for r in again) == sorted(r["top1"] for r in first)
    # a lost cache row: the seed's supernet is loaded from its checkpoint, not trained again,
    # and the rows (cost included) come out the same
    cache = [p for p in (tmp_path / "fid" / "cache").rglob("S-seed0.json")]
    os.remove(cache[0])
    mtime = os.path.getmtime(ck)
    redo = _run(setting, tmp_path, seeds=(0,))
    assert os.path.getmtime(ck) == mtime
    key = lambda r: r["ref"]  # noqa: E731
    for a, b in zip(sorted(first, key=key), sorted(redo, key=key)):
        assert b["resumed_at_epoch"] == CFG.epochs and a["val_loss"] == pytest.approx(b["val_loss"])
        assert b["supernet_train_cpu_seconds"] == pytest.approx(a["supernet_train_cpu_seconds"])


def test_supernet_setting_selection_and_its_recipe():
    default = default_setting(DEFAULT_FIDELITY, name=None, source=None, from_option=False)
    assert [s.name for s in select_settings(["supernet"], default=default)] == ["supernet"]
    assert "supernet" not in [s.name for s in select_settings(["all"], default=default,
                                                              log=lambda m: None)]
    other = DEFAULT_SUPERNET.replace(epochs=8)
    got = select_settings(["supernet", "default"], default=default, supernet=other)
    assert got[0].name == f"supernet-{other.key[:8]}" and got[0].supernet == other
    assert got[1] == default
    same = select_settings(["supernet"], default=default, supernet=DEFAULT_SUPERNET)
    assert same == [SUPERNET]
    # the stand-alone settings' identity (their cache keys) does not carry a supernet field
    assert "supernet" not in default.to_dict() and SUPERNET.to_dict()["supernet"]["epochs"] == 4
    with pytest.raises(UsageError, match="epoch_rule='equal_compute' allowed only 'fixed'"):
        Setting("x", FID, supernet=CFG, epoch_rule="equal_compute")
    with pytest.raises(UsageError, match="--supernet: applies only to a supernet setting"):
        select_settings(["default"], default=default, supernet=other)
    with pytest.raises(UsageError, match="width_divisor=3: does not divide"):
        check_supernet_setting(Setting("x", FID, supernet=CFG.replace(width_divisor=3)), REFS)


@pytest.mark.parametrize("extra, msg", [
    (["--settings", "supernet", "--supernet", '{"epochs": 0}'], "supernet.epochs=0"),
    (["--settings", "supernet", "--supernet", '{"epoch": 2}'], "unknown field(s) ['epoch']"),
    (["--settings", "supernet", "--supernet", "{"], "supernet config: not valid JSON"),
    (["--settings", "supernet", "--supernet", '{"width_divisor": 3}'], "width_divisor=3"),
    (["--settings", "supernet", "--supernet", '{"score": "acc"}'], "supernet.score='acc'"),
    (["--settings", "default", "--supernet", "{}"], "--supernet: applies only"),
    (["--settings", "supernet,nope"], "--settings 'nope'"),
])
def test_cli_bad_supernet_input_one_line_nothing_written(tmp_path, capsys, extra, msg):
    out = tmp_path / "o"
    rc = run_search.main(["fidelity", "--out", str(out), "--no-db"] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and msg in err[0], err
    assert not out.exists()


def test_list_shows_the_supernet_setting(capsys):
    assert run_search.main(["fidelity", "--list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.split()[0] == "supernet")
    assert "epochs 4" in line and "supernet" in line.split("bs 64")[1]


def test_data_key_matches_the_bench_checkpoints():
    """The supernet setting's data are DEFAULT_FIDELITY's (pinned): bench/bench_supernet.py's
    seed checkpoints (same config, data, seed) are valid resumes for the study."""
    assert SUPERNET.fidelity.key == DEFAULT_FIDELITY.key
    assert SUPERNET.supernet == DEFAULT_SUPERNET
    assert json.loads(DEFAULT_SUPERNET.to_json())["score"] == "val_loss"


def test_supernet_and_stand_alone_settings_share_one_table(src, tmp_path):
    alone = Setting("alone-tiny", FID.replace(epochs=1), source=src)
    rows = run_study([alone, _setting(src)], [0, 1], refs=REFS[:2],
                     out_dir=str(tmp_path / "fid"), cache_dir=str(tmp_path / "cache"),
                     workers=1, threads=1, store=None, zero_cost=False, log=lambda m: None)
    assert {r["setting"] for r in rows} == {"alone-tiny", "sn-tiny"} and len(rows) == 8
    table = summarize(rows, REFS[:2], [alone, _setting(src)], n_boot=100)
    assert [(t["setting"], t["ranking"]) for t in table] == [
        ("alone-tiny", "proxy top-1"), ("alone-tiny", "proxy -val loss"),
        ("sn-tiny", "proxy top-1"), ("sn-tiny", "proxy -val loss"), ("-", "params (control)")]
    sn = next(t for t in table if t["setting"] == "sn-tiny")
    assert sn["epochs"] == CFG.epochs and sn["batch_size"] == CFG.batch_size
