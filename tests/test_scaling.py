"""Compound scaling, scaling-law fits, families in the store, and the scale/ladder/fit CLI."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from search.scaling import (Coefficients, check_targets, coefficient_grid, family_comparison,
                            fit_proxy_to_full, fit_scaling_law, scale_family, scale_spec,
                            search_coefficients, smallest_spec)
from search_space.spec import PRESETS, ArchSpec, SpecError

FIXED = Coefficients(1.2, 1.1, 1.15)  # Tan & Le's B0 values: skips the search where not tested


@pytest.fixture(scope="module")
def predictor():
    """The analytic latency model with the hand-set generic phone-ANE coefficients."""
    from latency_models.predictor import LatencyPredictor, prior_coef

    return LatencyPredictor("generic-analytic", prior_coef(None))


@pytest.fixture(scope="module")
def device_file(tmp_path_factory, predictor):
    path = tmp_path_factory.mktemp("dev") / "generic.json"
    predictor.save(str(path))
    return str(path)


def _xs_ms(predictor) -> float:
    return predictor.predict(PRESETS["XS"])[0]


# -- compound scaling -------------------------------------------------------------------------
def test_targets_hit_within_tolerance(predictor):
    base_ms = _xs_ms(predictor)
    targets = [base_ms * f for f in (0.7, 1.0, 1.55, 2.6)]
    fam = scale_family(PRESETS["XS"], targets, predictor, coefficients=FIXED)
    assert [m.target_latency_ms for m in fam.members] == sorted(targets)
    for m in fam.members:
        again, _ = predictor.predict(m.spec)  # independent re-prediction of the stored spec
        assert abs(again / m.target_latency_ms - 1) <= 0.03, (m.target_latency_ms, again)
        assert math.isclose(again, m.latency_ms, rel_tol=1e-9)
        s = ArchSpec.from_dict(m.spec.to_dict())  # validates
        assert all(w % 8 == 0 for w in s.widths) and s.widths[0] % 2 == 0
        assert s.resolution % 32 == 0 and all(isinstance(d, int) for d in s.depths)
        assert m.spec.mlp_ratios == PRESETS["XS"].mlp_ratios
    lat = [m.latency_ms for m in fam.members]
    gm = [m.gmacs for m in fam.members]
    assert lat == sorted(lat) and gm[-1] > 2 * gm[0]


def test_tighter_tolerance_is_respected(predictor):
    t = _xs_ms(predictor) * 1.8
    fam = scale_family(PRESETS["L1"], [t], predictor, coefficients=FIXED, tolerance=0.01)
    assert abs(fam.members[0].rel_error) <= 0.01


def test_scale_spec_rounding_and_monotone():
    base = PRESETS["XS"]
    assert scale_spec(base, FIXED, 0.0).widths == (48, 56, 112, 224)  # 220 -> 27.5 x 8, half-even
    big = scale_spec(base, FIXED, 2.0)
    assert big.resolution == 32 * round(224 * 1.15 ** 2 / 32)
    assert big.depths == tuple(round(d * 1.2 ** 2) for d in base.depths)
    assert scale_spec(base, FIXED, -60.0) == smallest_spec(base)  # every dimension at its floor
    assert smallest_spec(base).widths == (8, 8, 8, 8) and smallest_spec(base).resolution == 32


def test_coefficient_search_respects_constraint(predictor):
    grid = coefficient_grid()
    assert all(abs(c.flops_factor / 2 - 1) <= 0.05 and min(c.depth, c.width, c.resolution) >= 1
               and max(c.shares()) <= 0.5 + 1e-9 for c in grid)
    assert len(grid) >= 5
    t = _xs_ms(predictor)
    ranked = search_coefficients(PRESETS["XS"], predictor, [t * 0.8, t * 1.6], grid=grid[:6])
    scores = [round(r["score"], 3) for r in ranked]
    assert scores == sorted(scores, reverse=True)
    # the searched triple is the one used, and it still hits the targets
    fam = scale_family(PRESETS["XS"], [t * 0.8, t * 1.6], predictor, grid=grid[:6])
    assert fam.coefficients == ranked[0]["coefficients"]
    assert all(abs(m.rel_error) <= 0.03 for m in fam.members)


def test_impossible_target_one_line_error(predictor):
    floor = predictor.predict(smallest_spec(PRESETS["XS"]))[0]
    with pytest.raises(ValueError) as e:
        scale_family(PRESETS["XS"], [floor * 0.5, 1.0], predictor, coefficients=FIXED)
    msg = str(e.value)
    assert "below the smallest member" in msg and "\n" not in msg
    assert f"{floor * 0.97:.3f}" in msg
    check_targets([floor * 0.99], PRESETS["XS"], predictor)  # just inside the tolerance: fine


# -- scaling-law fits -------------------------------------------------------------------------
def test_power_law_fit_recovers_coefficients():
    rng = np.random.default_rng(1)
    a, b, c = 80.0, 30.0, 0.6
    x = np.geomspace(0.1, 10, 30)
    y = a - b * x ** (-c) + rng.normal(0, 0.3, x.size)
    ft = fit_scaling_law(x, y, x_name="gmacs", form="power", x0=1.0, n_boot=60)
    for k, true, tol in (("a", a, 1.0), ("b", b, 1.0), ("c", c, 0.06)):
        assert abs(ft.params[k] - true) < tol, (k, ft.params)
        lo, hi = ft.params_ci_cov[k]
        assert lo <= true <= hi
        blo, bhi = ft.params_ci_boot[k]
        assert blo < ft.params[k] < bhi
    assert 0.2 < ft.residual_sd < 0.45 and ft.loo_rmse is not None and ft.loo_rmse < 0.6
    # auto picks the power law for power-law data (LOO error), not the log-linear form
    assert fit_scaling_law(x, y, form="auto", x0=1.0, n_boot=0).form == "power"


def test_loglinear_fit_and_extrapolation_guards():
    rng = np.random.default_rng(2)
    x = np.geomspace(1e6, 3e7, 12)
    y = 40 + 5 * np.log(x / 5e6) + rng.normal(0, 0.2, x.size)
    ft = fit_scaling_law(x, y, x_name="params", form="loglinear", x0=5e6, n_boot=60)
    assert abs(ft.params["a"] - 40) < 0.4 and abs(ft.params["b"] - 5) < 0.3
    inside = ft.extrapolate(4e7)
    assert inside["supported"] and inside["lo"] < 40 + 5 * math.log(8) < inside["hi"]
    far = ft.extrapolate(1e9)
    assert not far["supported"] and "outside the fitted range" in far["reason"]
    few = fit_scaling_law(x[:3], y[:3], form="loglinear", n_boot=0)
    assert not few.extrapolate(x[1])["supported"] and "too few" in few.extrapolate(x[1])["reason"]
    wide = ft.extrapolate(5e7, max_ci=0.01)
    assert not wide["supported"] and "interval" in wide["reason"]
    with pytest.raises(ValueError, match="need at least 3"):
        fit_scaling_law([1, 1, 2], [1, 2, 3])


def test_proxy_to_full():
    p = np.array([30, 35, 40, 45, 50.0])
    rel = fit_proxy_to_full(p, 20 + 1.2 * p + np.array([0.1, -0.1, 0.05, 0, -0.05]))
    assert rel["supported"] and abs(rel["b"] - 1.2) < 0.05
    assert rel["b_ci95"][0] < 1.2 < rel["b_ci95"][1]
    assert not fit_proxy_to_full([30, 40], [60, 70])["supported"]


# -- comparison ------------------------------------------------------------------------------
def test_family_comparison_pure_data(predictor):
    ms = {n: predictor.predict(s)[0] for n, s in PRESETS.items()}
    fam = scale_family(PRESETS["XS"], [ms["XS"], ms["L1"]], predictor, coefficients=FIXED)
    rows = family_comparison([m.to_dict() for m in fam.members], predictor)
    assert [r["baseline"] for r in rows] == ["XS", "S", "L1", "L3"]
    by = {r["baseline"]: r for r in rows}
    assert by["XS"]["member_position"] == 0 and by["L1"]["member_position"] == 1
    assert by["L3"]["family_gmacs_at_latency"] is None  # outside the family's latency range
    s = by["S"]  # interpolated between the two members
    assert fam.members[0].gmacs < s["family_gmacs_at_latency"] < fam.members[1].gmacs
    assert math.isclose(by["L1"]["gmacs_ratio"], fam.members[1].gmacs / by["L1"]["baseline_gmacs"])
    json.dumps(rows)  # plain data


# -- store ------------------------------------------------------------------------------------
def _save(store, fam, name="fam"):
    from results.families import save_family

    return save_family(store, name, base_spec=fam.base, base_source="XS", device=fam.device,
                       predictor_version=fam.predictor_version,
                       coefficients=fam.coefficients.to_dict(), config=fam.config(),
                       members=[{**m.to_dict(), "spec": m.spec} for m in fam.members])


def test_family_round_trip_from_empty_db(tmp_path, predictor):
    from results.families import get_family, list_families
    from results.store import ResultsStore, head_revision

    path = tmp_path / "empty.db"
    path.write_bytes(b"")  # an empty file: migrated from nothing
    t = _xs_ms(predictor)
    fam = scale_family(PRESETS["XS"], [t, t * 1.5], predictor, coefficients=FIXED)
    with ResultsStore(path) as store:
        assert store.revision() == head_revision()
        fid = _save(store, fam)
        with pytest.raises(ValueError, match="already exists"):
            _save(store, fam)
    with ResultsStore(path, readonly=True) as store:
        (row,) = list_families(store)
        assert row["id"] == fid and row["name"] == "fam"
        got = get_family(store, "fam")
        assert get_family(store, str(fid))["name"] == "fam"
        with pytest.raises(ValueError, match="not in this database"):
            get_family(store, "nope")
    assert got["coefficients"] == FIXED.to_dict()
    assert ArchSpec.from_dict(got["base_spec"]) == PRESETS["XS"]
    for m, g in zip(fam.members, got["members"]):
        assert ArchSpec.from_dict(g["spec"]) == m.spec
        assert (g["target_latency_ms"], g["latency_ms"], g["params"], g["gmacs"]) == \
            (m.target_latency_ms, m.latency_ms, m.params, m.gmacs)


def test_migration_from_0002_adds_families(tmp_path):
    import sqlalchemy as sa
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from results.schema import Base
    from results.store import ResultsStore, _alembic_config

    path = tmp_path / "old.db"
    eng = sa.create_engine(f"sqlite:///{path}")
    with eng.begin() as conn:
        command.upgrade(_alembic_config(conn), "0002")
    eng.dispose()
    assert "sfn_families" not in sa.inspect(sa.create_engine(f"sqlite:///{path}")).get_table_names()
    store = ResultsStore(path)
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"sfn_families", "sfn_family_members"} <= tables
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name == "sfn_alembic_version")]
    assert diff == []
    with store.engine.begin() as conn:  # downgrade of our revision works and is reversible
        command.downgrade(_alembic_config(conn), "0002")
        assert "sfn_families" not in sa.inspect(conn).get_table_names()
        command.upgrade(_alembic_config(conn), "head")
    store.close()


# -- CLI --------------------------------------------------------------------------------------
def _run(argv, capsys):
    from run_search import main

    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_scale_end_to_end(tmp_path, capsys, predictor, device_file):
    db = str(tmp_path / "r.db")
    t = _xs_ms(predictor)
    targets = f"{t * 0.8:.4f},{t * 1.3:.4f}"
    rc, out, err = _run(["scale", "--base", "XS", "--targets", targets, "--latency-device",
                         device_file, "--coefficients", "1.2,1.1,1.15", "--db", db, "--name", "xs-fam",
                         "--out", str(tmp_path / "out")], capsys)
    assert rc == 0, err
    assert "saved family xs-fam" in out and "L3" in out
    assert (tmp_path / "out" / "comparison.png").stat().st_size > 1000
    data = json.loads((tmp_path / "out" / "family.json").read_text())
    assert all(abs(m["rel_error"]) <= 0.03 for m in data["members"])
    from results.families import get_family
    from results.store import ResultsStore

    with ResultsStore(db, readonly=True) as store:
        assert len(get_family(store, "xs-fam")["members"]) == 2


@pytest.mark.parametrize("base,needle", [
    ("nonexistent_arch.json", "--base 'nonexistent_arch.json': not a preset"),
    ("XL", "--base 'XL': not a preset"),
    ('{"depths": [1, 1, 1]}', "--base"),
    ("trial:7", "no such results database"),
    ("trial:x", "trial:<id>"),
])
def test_cli_bad_base(tmp_path, capsys, device_file, base, needle):
    rc, out, err = _run(["scale", "--base", base, "--targets", "3", "--latency-device", device_file,
                         "--db", str(tmp_path / "missing.db")], capsys)
    assert rc == 2 and needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "missing.db").exists()


def test_cli_bad_targets_and_impossible(tmp_path, capsys, device_file):
    db = str(tmp_path / "r.db")
    rc, _, err = _run(["scale", "--base", "XS", "--targets", "0.7,abc", "--latency-device",
                       device_file, "--db", db], capsys)
    assert rc == 2 and "'abc' is not a number" in err
    rc, _, err = _run(["scale", "--base", "XS", "--targets", "0.001", "--latency-device",
                       device_file, "--db", db, "--coefficients", "1.2,1.1,1.15"], capsys)
    assert rc == 2 and "below the smallest member" in err and err.count("\n") == 1


def test_cli_trial_base(tmp_path, capsys, device_file):
    from results.store import ResultsStore

    db = str(tmp_path / "r.db")
    with ResultsStore(db) as store:
        sid = store.get_or_create_study("s", config={}, seed=0, dataset_id="d",
                                        fidelity={"epochs": 1}, device="x", code_version="t")
        h = store.upsert_architecture(PRESETS["S"])
        tid = store.start_trial(sid, "k", h, config={}, seed=0)
    rc, out, err = _run(["scale", "--base", f"trial:{tid}", "--targets", "4", "--latency-device",
                         device_file, "--db", db, "--coefficients", "1.2,1.1,1.15", "--no-save",
                         "--out", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    assert f"trial:{tid}" in out
    rc, _, err = _run(["scale", "--base", "trial:999", "--targets", "4", "--latency-device",
                       device_file, "--db", db], capsys)
    assert rc == 2 and "999" in err


# -- ladder + fit (tiny proxy budget) -----------------------------------------------------------
@pytest.fixture
def _restore_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # the ladder sets threads=1 for this process


def test_ladder_writes_trials_and_fit_reads_them(tmp_path, capsys, _restore_torch_threads):
    from results.families import get_family, save_family
    from results.store import ResultsStore
    from search.proxy.data import prepare_data
    from search.proxy.fidelity import Fidelity
    from search.scaling.fit import collect_points
    from search.scaling.ladder import run_ladder

    fid = Fidelity(classes=2, images_per_class=8, val_per_class=4, epochs=1, batch_size=8,
                   eval_batch_size=16)
    data = prepare_data(None, fid, cache_dir=str(tmp_path / "cache"))
    base = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 24, 32), mlp_ratios=(2.0,) * 4,
                    attn_blocks=(0, 0, 0, 1), resolution=64, num_classes=10)
    specs = [base, scale_spec(base, FIXED, 1.0), scale_spec(base, FIXED, 2.0)]
    db = str(tmp_path / "r.db")
    with ResultsStore(db) as store:
        from search_space.costs import analytic_gmacs, analytic_params

        save_family(store, "tiny", base_spec=base, base_source="test", device="d",
                    predictor_version="v", coefficients=FIXED.to_dict(), config={},
                    members=[{"spec": s, "target_latency_ms": 1.0 + i, "latency_ms": 1.0 + i,
                              "phi": float(i), "params": analytic_params(s),
                              "gmacs": analytic_gmacs(s)} for i, s in enumerate(specs)])
        fam = get_family(store, "tiny")
        res = run_ladder(store, fam, fidelity=fid, data=data, seed=0, log=lambda s: None,
                         threads=1, torch_device="cpu")
        assert len(res["trials"]) == 3
        trials = store.trials(res["study_id"])
        assert [t["status"] for t in trials] == ["COMPLETED"] * 3
        # the whole proxy budget was run, so the front/compare/family view count them
        assert [t["full_budget"] for t in trials] == [True] * 3
        assert all(0 <= t["top1"] <= 100 and t["latency_ms"] == 1.0 + i
                   for i, t in enumerate(trials))
        assert store.trial(trials[0]["id"])["epochs"]  # per-epoch metrics logged
        again = run_ladder(store, fam, fidelity=fid, data=data, seed=0, log=lambda s: None,
                           threads=1, torch_device="cpu")
        assert len(store.trials(res["study_id"])) == 3 and len(again["trials"]) == 3  # resumed
        pts = collect_points(store, None)
        assert sorted(r["gmacs"] for r in pts["rows"]) == sorted(
            analytic_gmacs(s) for s in specs)
    rc, out, err = _run(["fit", "--db", db, "--x", "gmacs", "--form", "loglinear",
                         "--bootstrap", "20", "--out", str(tmp_path / "fit")], capsys)
    assert rc == 0, err
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["n"] == 3 and "gmacs" in fit["fits"]
    assert not fit["proxy_to_full"]["supported"]


def test_flat_data_is_flagged_and_not_extrapolated():
    rng = np.random.default_rng(3)
    x = np.geomspace(0.2, 2, 8)
    y = 30 + rng.normal(0, 1.0, x.size)  # no trend: a proxy budget too small to rank sizes
    ft = fit_scaling_law(x, y, x_name="gmacs", n_boot=40)
    assert ft.form == "loglinear" and not ft.growth_significant
    assert any("does not grow significantly" in w for w in ft.warnings)
    inside = ft.extrapolate(1.0, max_ci=100)
    assert inside["supported"]  # inside the data a flat prediction is fine
    out = ft.extrapolate(3.0, max_ratio=2.0, max_ci=100)  # outside, but within 2x
    assert not out["supported"] and "no trend" in out["reason"]


def test_cli_existing_name_refused_before_search(tmp_path, capsys, predictor, device_file):
    db = str(tmp_path / "r.db")
    t = _xs_ms(predictor)
    argv = ["scale", "--base", "XS", "--targets", f"{t:.4f}", "--latency-device", device_file,
            "--coefficients", "1.2,1.1,1.15", "--db", db, "--name", "taken"]
    rc, _, err = _run(argv + ["--out", str(tmp_path / "first")], capsys)
    assert rc == 0, err
    rc, out, err = _run(argv + ["--out", str(tmp_path / "second")], capsys)
    assert rc == 2 and "--name taken" in err and "already exists" in err
    assert err.count("\n") == 1 and "family" not in out  # refused before the search
    assert not (tmp_path / "second").exists()


def test_cli_ladder_scales_then_trains(tmp_path, capsys, predictor, device_file,
                                       _restore_torch_threads):
    """`ladder --base` scales through the same library call as `scale`, then trains every
    member through search.proxy.trial on the torch device asked for."""
    from results.store import ResultsStore

    db = str(tmp_path / "r.db")
    t = _xs_ms(predictor)
    fid = json.dumps({"classes": 2, "images_per_class": 8, "val_per_class": 4, "epochs": 1,
                      "batch_size": 8, "eval_batch_size": 16})
    rc, out, err = _run(["ladder", "--base", "XS", "--targets", f"{t * 0.8:.4f},{t:.4f}",
                         "--latency-device", device_file, "--coefficients", "1.2,1.1,1.15",
                         "--name", "lad", "--out", str(tmp_path / "fam"), "--db", db,
                         "--fidelity", fid, "--torch-device", "cpu", "--threads", "1"], capsys)
    assert rc == 0, err
    assert "saved family lad" in out and "ladder study ladder-lad" in out
    fam = json.loads((tmp_path / "fam" / "family.json").read_text())
    with ResultsStore(db, readonly=True) as store:
        study = next(s for s in store.studies() if s["name"] == "ladder-lad")
        trials = store.trials(study["id"])
    assert study["code_version"] and study["fidelity"]["images_per_class"] == 8
    assert [t["trial_key"] for t in trials] == ["member0:seed0", "member1:seed0"]
    assert [t["latency_ms"] for t in trials] == [m["latency_ms"] for m in fam["members"]]
    assert all(t["status"] == "COMPLETED" and t["metrics"]["device"] == "cpu" for t in trials)
    rc, _, err = _run(["ladder", "--db", db], capsys)
    assert rc == 2 and "--family NAME" in err
