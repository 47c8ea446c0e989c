"""Predictor: the few-shot fit on the REAL shipped rows (fixed draws, thresholds that fail when
the shrinkage, the model selection, the relative-error objective or the prior is removed, or
leave-one-out leaks), computed coverage, the fast path, save/load, the shipped calibration."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import latency_models as lm
from latency_models import fewshot
from latency_models.analytic import SpecArrays, spec_features_many
from latency_models.fewshot import fit, fit_features
from latency_models.predictor import (GROUP_OF, GROUPS, TERM_NAMES, LatencyPredictor, prior_coef,
                                      terms_matrix)
from latency_models.published import published_table
from search_space.errors import NotFoundError, UsageError
from search_space.space import DEFAULT_SPACE
from search_space.spec import PRESETS

N_CAL = 10
DRAWS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def table12():
    t = published_table("iPhone 12")
    return t.features, t.latency_ms, t.families


@pytest.fixture(scope="module")
def table14():
    t = published_table("iPhone 14 (iOS 16)", "Table 2")
    return t.features, t.latency_ms, t.families


@pytest.fixture(scope="module")
def iphone12(table12):
    return table12[:2]


@pytest.fixture(scope="module")
def iphone14(table14):
    return table14[:2]


@pytest.fixture(scope="module")
def fam12(table12):
    return table12[2]


@pytest.fixture(scope="module")
def fam14(table14):
    return table14[2]


def _draw(n, seed):
    cal = np.sort(np.random.default_rng(seed).choice(n, N_CAL, replace=False))
    return cal, np.setdiff1d(np.arange(n), cal)


def _transfer(F, y, prior, families=None, **kw):
    """(held-out MAPE, held-out +-2 sigma coverage, mean relative sd, fits) over DRAWS."""
    mape, cov, rel_sd, fits = [], [], [], []
    for seed in DRAWS:
        cal, ev = _draw(len(y), seed)
        fam = None if families is None else [families[i] for i in cal]
        p = fit_features(F[cal], y[cal], "target", prior, families=fam, **kw)
        ms, sd = p.predict_features(F[ev])
        mape.append(np.mean(np.abs(ms / y[ev] - 1)))
        cov.append(np.mean(np.abs(ms - y[ev]) <= 2 * sd))
        rel_sd.append(np.mean(sd / ms))
        fits.append(p)
    return float(np.mean(mape)), float(np.mean(cov)), float(np.mean(rel_sd)), fits


@pytest.mark.timeout(300)
def test_few_shot_transfer_on_shipped_rows(iphone12, fam12):
    """iPhone 14 (shipped calibration) -> iPhone 12 rows, 10-shot, fixed draws, family folds:
    the refit wins where its family-held-out evidence is clear (draws 1, 2 and 3; draw 2 only
    since one_se = 0.5) and prior x scale is kept elsewhere, so ours beats prior x scale by 5
    points and never loses on a draw; intervals that cover without being vacuous. Without the refit candidate ours is
    prior x scale (the log-multiplier fits cannot reach the iPhone 12's cost structure); the
    full fit, forced, moves its coefficients within the bounds."""
    F, y = iphone12
    prior = lm.load_predictor()
    mape, cov, rel_sd, fits = _transfer(F, y, prior, fam12)
    scale_mape, _, _, scale = _transfer(F, y, prior, candidates=("scale",))
    assert mape <= 0.15 and mape <= scale_mape - 0.05, (mape, scale_mape)  # 0.139 vs 0.195
    assert [p.meta["candidate"] for p in fits] == ["scale", "refit", "refit", "refit"]
    for seed, p, q in zip(DRAWS, fits, scale):                       # no draw lost
        ev = _draw(len(y), seed)[1]
        err = [np.mean(np.abs(f.predict_features(F[ev])[0] / y[ev] - 1)) for f in (p, q)]
        assert err[0] <= err[1] + 1e-9, (seed, err)
    assert all(p.meta["held_out"] == "families" for p in fits)
    assert cov >= 0.85 and rel_sd <= 0.45, (cov, rel_sd)                   # 0.94 / 0.33
    no_refit, _, _, _ = _transfer(F, y, prior, fam12, candidates=("scale", "groups", "full"))
    assert no_refit == pytest.approx(scale_mape)
    full_mape, _, _, full = _transfer(F, y, prior, candidates=("full",))
    assert full_mape <= 0.20, full_mape                                    # 0.192
    cfg = fewshot.DEFAULT_CONFIG
    moves = [p.meta["max_term_move"] for p in full]
    assert all(0 < m <= cfg.group_bound + cfg.term_bound + 1e-6 for m in moves), moves


def test_refit_stays_within_its_bounds(iphone12, fam12):
    """The refit on 10 iPhone 12 rows: every coefficient within refit_bounds x prior x scale,
    lambda from the grid, sigma the leave-one-out misfit (never below MIN_REL_STD)."""
    F, y = iphone12
    cal, _ = _draw(len(y), 1)
    T, logy = terms_matrix(F[cal]), np.log(y[cal])
    theta0 = prior_coef(lm.load_predictor())
    cfg = fewshot.DEFAULT_CONFIG
    f = fewshot.fit_refit(T, logy, theta0, cfg)
    x = f.theta / (theta0 * np.exp(f.z[0]))
    lo, hi = cfg.refit_bounds
    assert np.all(x >= lo - 1e-12) and np.all(x <= hi + 1e-12)
    assert np.any(x < 0.5) and np.any(x > 2.0)          # it does move: the iPhone 12 is far
    assert f.hyper["lambda"] in cfg.refit_lambdas and f.sigma >= fewshot.MIN_REL_STD
    A, log_s = fewshot._refit_design(T, logy, theta0)
    assert f.sigma == pytest.approx(max(np.sqrt(np.mean(fewshot._refit_loo(
        A, f.hyper["lambda"], cfg) ** 2)), fewshot.MIN_REL_STD))


def test_the_prior_carries_what_few_rows_cannot(iphone12):
    """The published iPhone 12 models' real features; a reference device whose costs differ
    from the hand-set prior within every group (activation bytes 4x dearer, weight bytes 4x
    cheaper, ...), and a new device 2.5x faster than it. Five measurements with the reference
    as prior predict the other models within a few percent; the same five with the generic
    prior cannot (the prior's structure is what is used)."""
    F, _ = iphone12
    mult = {"act_mbytes": 4.0, "weight_mbytes": 0.25, "ops": 0.3, "const": 3.0,
            "pwconv_gmacs": 3.0, "dwconv_gmacs": 0.3, "lowai_mbytes": 5.0}
    theta = prior_coef(None) * np.array([mult.get(t, 1.0) for t in TERM_NAMES])
    ref = LatencyPredictor("reference", theta, rel_std=0.05)
    y = terms_matrix(F) @ theta / 2.5 * np.exp(np.random.default_rng(12).normal(0, 0.02, len(F)))
    cal, ev = np.arange(5), np.arange(5, len(y))
    err = lambda prior: np.mean(np.abs(  # noqa: E731
        fit_features(F[cal], y[cal], "t", prior).predict_features(F[ev])[0] / y[ev] - 1))
    assert err(ref) < 0.05 and err(None) > 3 * err(ref), (err(ref), err(None))


@pytest.mark.timeout(300)
def test_leave_one_out_on_all_shipped_iphone14_rows(iphone14):
    """Generic prior, the 21 iPhone 14 rows: model selection keeps the fit at least as good as
    prior x scale on its own rows; the relative-error fit reaches 33% LOO MAPE (an absolute-
    error fit: 36%; no shrinkage: 39%) with computed +-2 sigma coverage >= 85%."""
    F, y = iphone14
    p = fit_features(F, y, "iphone14", None)
    loo = p.meta["loo"]
    assert loo[p.meta["candidate"]]["mae_log"] <= loo["scale"]["mae_log"] + 1e-12
    assert p.meta["loo_mape"] <= 0.335, p.meta["loo_mape"]      # measured 0.317
    assert p.meta["loo_coverage_2sigma"] >= 0.85


def test_leave_one_out_never_sees_the_held_out_row(iphone12):
    F, y = iphone12
    T, logy = terms_matrix(F[:12]), np.log(y[:12])
    theta0 = prior_coef(None)
    zero = np.zeros((len(TERM_NAMES),) * 2)
    err, sd = fewshot.loo(T, logy, theta0, "groups", 0.3, zero)
    for i in (0, 5, 11):
        keep = np.arange(12) != i
        f = fewshot.fit_candidate(T[keep], logy[keep], theta0, "groups", 0.3)
        mu, s = fewshot.predictive(f, T[i:i + 1], zero)
        assert err[i] == pytest.approx(logy[i] - mu[0]) and sd[i] == pytest.approx(s[0])


def test_selection_picks_group_factors_when_the_device_differs_by_group():
    """Real SwiftFormer-space features; a device 3x slower at arithmetic but 2x faster at
    memory traffic than the prior: prior x scale cannot express it, the selected fit must."""
    specs = DEFAULT_SPACE.sample_many(60, seed=2)
    F = spec_features_many(specs)
    theta0 = prior_coef(None)
    group = np.array([{"compute": 3.0, "memory": 0.5, "overhead": 1.0, "ane": 1.0}[g]
                      for g in np.array(list(GROUPS))[GROUP_OF]])
    y = terms_matrix(F) @ (theta0 * group)
    y *= np.exp(np.random.default_rng(3).normal(0, 0.02, len(y)))
    p = fit_features(F[:10], y[:10], "d", None)
    s = fit_features(F[:10], y[:10], "d", None, candidates=("scale",))
    err = lambda q: np.mean(np.abs(q.predict_features(F[10:])[0] / y[10:] - 1))  # noqa: E731
    assert p.meta["candidate"] != "scale" and err(p) < 0.5 * err(s), (err(p), err(s))


def _errs(**rows):
    return {c: np.array(v, dtype=float) for c, v in rows.items()}


def test_choose_needs_a_paired_gain_beyond_two_standard_errors():
    """A richer candidate whose gain over prior x scale comes from two of ten rows (the DeiT
    pair) is not taken, however large the mean gain; the same mean gain spread over every row
    is. Signs do not matter (absolute log errors)."""
    scale = [0.3, -0.3, 0.3, 0.3, -0.3, 0.3, 0.3, -0.3, 0.8, 0.8]
    two_rows = [0.3, -0.3, 0.3, 0.3, -0.3, 0.3, 0.3, -0.3, 0.05, 0.05]   # mean gain 0.15
    everywhere = [0.15] * 10                                             # mean gain 0.25
    assert fewshot.choose(_errs(scale=scale, full=two_rows)) == "scale"
    assert fewshot.choose(_errs(scale=scale, full=everywhere)) == "full"
    st = fewshot.selection_stats(_errs(scale=scale, full=two_rows))
    d = np.abs(two_rows) - np.abs(scale)
    assert st["full"] == pytest.approx({"score": np.mean(np.abs(two_rows)), "diff": d.mean(),
                                        "se": np.std(np.abs(two_rows), ddof=1) / np.sqrt(10),
                                        "diff_se": np.std(d, ddof=1) / np.sqrt(10)})
    assert st["scale"]["diff"] == 0.0 and st["scale"]["diff_se"] == 0.0
    # the paired threshold is what decides: without it the two-row gain wins
    assert fewshot.choose(_errs(scale=scale, full=two_rows),
                          fewshot.FitConfig(paired_se=0.0, one_se=0.0)) == "full"
    # one row: no standard error, the plain comparison
    assert fewshot.choose(_errs(scale=[0.3], full=[0.1])) == "full"


def test_choose_keeps_scale_within_one_standard_error_of_the_best():
    """A richer candidate better on every row by 0.02 (paired: significant) but with a spread
    of errors whose standard error exceeds the gain: prior x scale is kept; with one_se = 0 it
    is not. Beyond one standard error the best eligible is taken ('full' over 'groups': no
    simplest-first rule between the richer ones)."""
    base = np.linspace(0.05, 0.9, 10)
    e = _errs(scale=base + 0.02, full=base)
    assert fewshot.choose(e) == "scale"
    assert fewshot.choose(e, fewshot.FitConfig(one_se=0.0)) == "full"
    rng = np.random.default_rng(0)
    scale = 0.4 + 0.05 * rng.random(10)
    groups = 0.12 + 0.1 * rng.random(10)
    assert fewshot.choose(_errs(scale=scale, groups=groups, full=groups - 0.005)) == "full"
    assert fewshot.choose(_errs(scale=scale, groups=groups, full=groups + 0.005)) == "groups"
    # with family folds the paired rule asks for family_paired_se standard errors, not two
    d = np.array([0.06, -0.06] * 5) - 0.03               # gain 0.03, paired SE 0.02
    e2 = _errs(scale=base + 0.5, refit=base + 0.5 + d)
    assert fewshot.choose(e2, fewshot.FitConfig(one_se=0.0)) == "scale"
    assert fewshot.choose(e2, fewshot.FitConfig(one_se=0.0), by_family=True) == "refit"
    # without 'scale' among the candidates the simplest given is the reference
    assert fewshot.choose(_errs(groups=scale, full=groups)) == "full"
    assert fewshot.choose(_errs(groups=base + 0.02, full=base)) == "groups"
    assert fewshot.choose(_errs(full=groups)) == "full"


@pytest.mark.timeout(300)
def test_selection_keeps_prior_times_scale_on_the_deit_pair_draw(iphone12, iphone14):
    """iPhone 12 (fitted on all its rows) -> iPhone 14, 10 rows with DeiT-T AND DeiT-S (each
    helps the other's leave-one-out fold): the richer fits look 16-21% better on the
    calibration rows, and predict ConvNeXt-T held out at 3.8x its latency (prior x scale:
    1.8x). The selection keeps prior x scale; selecting by the best leave-one-out score (no
    standard-error rules) does not."""
    F, y = iphone14
    cal = np.array([0, 1, 3, 4, 7, 8, 10, 15, 17, 18])   # MNv2, MNv3-0.75, SF-XS, MNv2-1.4,
    ev = np.setdiff1d(np.arange(len(y)), cal)           # DeiT-T, MViTv2-1.0, PF-S12/S36,
    assert y[7] == 3.8 and y[17] == 9.9                  # DeiT-S, MViTv2-2.0
    prior = fit_features(*iphone12, "iphone12", None)
    mape = lambda p: np.mean(np.abs(p.predict_features(F[ev])[0] / y[ev] - 1))  # noqa: E731
    ours = fit_features(F[cal], y[cal], "t", prior)
    scale = fit_features(F[cal], y[cal], "t", prior, candidates=("scale",))
    greedy = fit_features(F[cal], y[cal], "t", prior,
                          config=fewshot.FitConfig(paired_se=0.0, one_se=0.0))
    assert ours.meta["candidate"] == "scale" and mape(ours) == pytest.approx(mape(scale))
    assert greedy.meta["candidate"] != "scale" and mape(greedy) > mape(scale) + 0.2, (
        mape(greedy), mape(scale))                       # measured 0.585 vs 0.267
    sel = ours.meta["selection"]
    assert sel[greedy.meta["candidate"]]["diff"] < -0.04   # it did look better on its own rows


def test_shrinkage_keeps_ten_rows_from_running_away(iphone14, fam14):
    """With DeiT-T and DeiT-S (3-4x slower than any cost model says) among the 10 rows, the
    fitted terms stay within the bounds and ConvNeXt-T is not predicted at 4x its latency:
    the family folds (both DeiTs held out at once) show the refit's gain is the DeiTs' alone.
    Single-row folds (each DeiT leaning on the other) would take the refit and predict
    ConvNeXt-T at 2.5x, so without families the refit is not a candidate; the shrunk fits
    stay within bounds."""
    F, y = iphone14
    cal = np.array([0, 1, 3, 5, 7, 8, 10, 15, 17, 18])     # incl. DeiT-T (7), DeiT-S (17)
    convnext = 16
    ms = lambda p: p.predict_features(F[convnext:convnext + 1])[0][0]  # noqa: E731
    fam = [fam14[i] for i in cal]
    p = fit_features(F[cal], y[cal], "t", lm.load_predictor(), families=fam)
    assert p.meta["held_out"] == "families" and p.meta["candidate"] == "scale"
    assert ms(p) < 1.2 * y[convnext], ms(p)                              # 2.61 vs 2.5
    rows = fit_features(F[cal], y[cal], "t", lm.load_predictor())
    assert rows.meta["held_out"] == "rows" and "refit" not in rows.meta["loo"]
    assert ms(rows) < 2.0 * y[convnext], ms(rows)
    unguarded = fit_features(F[cal], y[cal], "t", lm.load_predictor(),
                             config=fewshot.FitConfig(refit_needs_families=False))
    assert unguarded.meta["candidate"] == "refit" and ms(unguarded) > 2.0 * y[convnext], (
        ms(unguarded))                                                   # 6.2
    shrunk = fit_features(F[cal], y[cal], "t", lm.load_predictor(),
                          candidates=("scale", "groups", "full"))
    assert ms(shrunk) < 2.0 * y[convnext]
    assert shrunk.meta["hyper"]["tau_term"] <= 1.0


def _synthetic(n, seed, noise=0.02):
    specs = DEFAULT_SPACE.sample_many(n, seed=seed)
    F = spec_features_many(specs)
    rng = np.random.default_rng(seed)
    theta = prior_coef(None) * 3 * np.exp(rng.uniform(-1, 1, len(TERM_NAMES)))
    y = terms_matrix(F) @ theta * np.exp(rng.normal(0, noise, n))
    return specs, F, y, theta


def test_fit_rejects_bad_input():
    _, F, y, _ = _synthetic(5, seed=5)
    with pytest.raises(UsageError, match="at least 2"):
        fit_features(F[:1], y[:1], "d")
    with pytest.raises(UsageError, match="latency_ms"):
        fit_features(F, -y, "d")


def test_fast_path_equals_features_path():
    specs, F, y, _ = _synthetic(40, seed=6)
    p = fit_features(F[:10], y[:10], "d")
    ms, sd = p.predict_features(F)
    ms2, sd2 = p.predict_many(specs)
    ms3, sd3 = p.predict_arrays(SpecArrays.from_specs(specs))
    np.testing.assert_allclose(ms2, ms, rtol=1e-10)
    np.testing.assert_allclose(sd2, sd, rtol=1e-10)
    np.testing.assert_allclose(ms3, ms, rtol=1e-10)
    np.testing.assert_allclose(sd3, sd, rtol=1e-10)
    assert p.cov_factor.shape[1] >= 1 and np.all(sd > 0.02 * ms)


def test_extrapolation_is_named():
    recs_ms = {"XS": 0.7, "S": 0.8, "L1": 1.1, "L3": 1.9}
    F = spec_features_many([PRESETS[k] for k in recs_ms])
    p = fit_features(F, np.array(list(recs_ms.values())), "sf", lm.load_predictor())
    from latency_models.featurize import featurize

    why = p.extrapolation(np.stack([featurize("XS"), featurize("mobilevitv2_100")]))
    assert why[0] == "" and "hirank_mbytes" in why[1] and "in calibration" in why[1]
    ms_mv, sd_mv = p.predict("mobilevitv2_100")
    ms_l1, sd_l1 = p.predict("L1")
    assert sd_mv / ms_mv > sd_l1 / ms_l1          # wider where the calibration did not look


def test_save_load_round_trip(tmp_path, monkeypatch):
    specs, F, y, _ = _synthetic(30, seed=6)
    p = fit_features(F[:10], y[:10], "my-phone")
    path = tmp_path / "my-phone.json"
    p.save(str(path))
    q = LatencyPredictor.load(str(path))
    assert q.device == "my-phone" and q.version == p.version and q.version.startswith("2:")
    np.testing.assert_allclose(q.predict_many(specs)[1], p.predict_many(specs)[1])
    d = json.loads(path.read_text())
    d["format_version"], d["meta"]["records_file"] = 1, "/data/phone.csv"
    path.write_text(json.dumps(d))
    with pytest.raises(UsageError) as e:
        LatencyPredictor.load(str(path))
    assert "format_version 1" in str(e.value) and \
        "latency calibrate --records /data/phone.csv" in str(e.value)
    with pytest.raises(NotFoundError, match="no such file"):
        LatencyPredictor.load(str(tmp_path / "missing.json"))
    monkeypatch.setenv("SWIFTFORMER_NAS_LATENCY_DIR", str(tmp_path / "user"))
    p.save(str(tmp_path / "user" / "my-phone.json"))
    assert "my-phone" in lm.list_devices() and lm.DEFAULT_DEVICE in lm.list_devices()
    assert lm.load_predictor("my-phone").version == p.version


def test_fit_from_records_skips_unfeaturisable():
    from latency_models.records import Record

    recs = [Record(model=n, device="d", latency_ms=ms) for n, ms in
            (("XS", 1.0), ("S", 1.3), ("L1", 2.0), ("L3", 3.9), ("mystery-net", 2.0))]
    p = fit(recs, "d", prior=lm.load_predictor())
    assert p.meta["n_records"] == 4 and "mystery-net" in p.meta["skipped"][0]
    ms = [p.predict(n)[0] for n in ("XS", "S", "L1", "L3")]
    assert ms == sorted(ms)


def test_default_predictor_orders_presets_and_vectorises():
    p = lm.load_predictor()
    assert p.device == lm.DEFAULT_DEVICE
    single = [p.predict(PRESETS[n]) for n in ("XS", "S", "L1", "L3")]
    ms = [m for m, _ in single]
    assert ms[0] < ms[1] < ms[2] < ms[3]
    many, sd = p.predict_many([PRESETS[n] for n in ("XS", "S", "L1", "L3")])
    np.testing.assert_allclose(many, ms)
    # Published iPhone 14 latencies: 0.7 / 0.8 / 1.1 / 1.9 ms; stay within 45%, and inside
    # the predictor's own +-2 sigma interval.
    for m, s, pub in zip(ms, sd, (0.7, 0.8, 1.1, 1.9)):
        assert abs(m - pub) / pub < 0.45 and abs(m - pub) <= 2 * s
    with pytest.raises(NotFoundError, match="allowed"):
        lm.load_predictor("no-such-phone")


def test_package_import_is_light():
    # The command line and the shipped data modules too: `run_search.py --help` imports them.
    code = ("import sys, latency_models, latency_models.cli, latency_models.published; "
            "latency_models.load_predictor().predict('XS'); "
            "print(any(m in sys.modules for m in ('torch', 'coremltools', 'onnxruntime')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# -- exact behaviour (issue 16: every mutant of predictor.py / fewshot.py that changes an
# observable result must fail one of these; all fast) -------------------------------------------
from latency_models.features import FEATURE_NAMES, N_FEATURES  # noqa: E402
from latency_models.predictor import FORMAT, GENERIC_PRIOR, N_TERMS  # noqa: E402

_COEF = [0.1234567890123456 + 0.01 * j for j in range(N_TERMS)]


def _small():
    """A predictor with every field set away from its default."""
    L = np.arange(2 * N_TERMS, dtype=float).reshape(N_TERMS, 2) / 100
    return LatencyPredictor("dev", _COEF, 0.25, {"records_file": "r.csv", "n": 3}, sigma=0.2,
                            cov_factor=L, kappa=1.5,
                            ranges={"latency_ms": [0.5, 1.0], "term_max": [1.0] * N_TERMS})


def _calib(**changes):
    d = _small().to_dict()
    d.update(changes)
    return d


def test_init_defaults_types_and_version():
    p = LatencyPredictor("d", [1] * N_TERMS)
    assert p.coef.dtype == np.float64 and p.rel_std == 0.1 and p.sigma == 0.1 and p.kappa == 1.0
    assert p.cov_factor.shape == (N_TERMS, 0) and p.ranges == {} and p.meta == {}
    q = LatencyPredictor("d", [1] * N_TERMS, 0.1, sigma=0.3, cov_factor=[[1]] * N_TERMS)
    assert q.sigma == 0.3 and q.cov_factor.dtype == np.float64
    assert q.cov_factor.shape == (N_TERMS, 1)
    with pytest.raises(ValueError) as e:
        LatencyPredictor("d", [1.0] * 3)
    assert str(e.value) == f"coef: expected {N_TERMS} values for terms {TERM_NAMES}"
    # The version is a content hash of device, coefficients (12 decimals), rel_std, sigma,
    # kappa and the covariance factor: stable across runs, different when any of them differs.
    p = _small()
    assert p.version == "2:1f99b56b54"
    assert repr(p) == "LatencyPredictor(device='dev', version='2:1f99b56b54')"
    other = [LatencyPredictor("dev2", _COEF, 0.25, sigma=0.2, cov_factor=p.cov_factor, kappa=1.5),
             LatencyPredictor("dev", _COEF, 0.26, sigma=0.2, cov_factor=p.cov_factor, kappa=1.5),
             LatencyPredictor("dev", _COEF, 0.25, sigma=0.21, cov_factor=p.cov_factor, kappa=1.5),
             LatencyPredictor("dev", _COEF, 0.25, sigma=0.2, cov_factor=p.cov_factor, kappa=1.6),
             LatencyPredictor("dev", _COEF, 0.25, sigma=0.2, cov_factor=p.cov_factor * 2, kappa=1.5),
             LatencyPredictor("dev", np.array(_COEF) + 1e-12, 0.25, sigma=0.2,
                              cov_factor=p.cov_factor, kappa=1.5)]
    assert len({p.version} | {o.version for o in other}) == 1 + len(other)


def test_to_dict_from_dict_round_trip_every_field():
    p = _small()
    d = p.to_dict()
    assert d == {"format": FORMAT, "format_version": 2, "device": "dev", "version": p.version,
                 "feature_names": list(FEATURE_NAMES), "terms": list(TERM_NAMES),
                 "coef": p.coef.tolist(), "rel_std": 0.25,
                 "uncertainty": {"sigma": 0.2, "kappa": 1.5, "cov_factor": p.cov_factor.tolist()},
                 "ranges": p.ranges, "meta": {"records_file": "r.csv", "n": 3}}
    q = LatencyPredictor.from_dict(json.loads(json.dumps(d)))
    assert (q.device, q.version, q.rel_std, q.sigma, q.kappa, q.ranges, q.meta) == \
        ("dev", p.version, 0.25, 0.2, 1.5, p.ranges, p.meta)
    np.testing.assert_array_equal(q.coef, p.coef)
    np.testing.assert_array_equal(q.cov_factor, p.cov_factor)
    # Optional fields fall back to a bare predictor's defaults.
    d = _calib()
    del d["rel_std"], d["uncertainty"], d["meta"], d["ranges"]
    q = LatencyPredictor.from_dict(d)
    assert (q.rel_std, q.sigma, q.kappa, q.ranges, q.meta, q.cov_factor.shape) == \
        (0.1, 0.1, 1.0, {}, {}, (N_TERMS, 0))
    d = _calib(uncertainty={"sigma": 0.2})
    assert LatencyPredictor.from_dict(d).kappa == 1.0


_BAD_COEF = "coef must be a list of 19 finite numbers >= 0"


@pytest.mark.parametrize("d, where, message", [
    ([1, 2], None, f"<calibration>: not a latency calibration file (format != {FORMAT!r})"),
    (None, "x.json", f"x.json: not a latency calibration file (format != {FORMAT!r})"),
    ({"format": "other"}, "x.json", f"x.json: not a latency calibration file (format != {FORMAT!r})"),
    (_calib(format_version=1, meta={}), "x.json",
     "x.json: format_version 1; this version reads 2 (new cost terms): recalibrate with "
     "`run_search.py latency calibrate --records <your records CSV>`"),
    (_calib(format_version="2", meta={"records_file": "/d/p.csv"}), "x.json",
     "x.json: format_version '2'; this version reads 2 (new cost terms): recalibrate with "
     "`run_search.py latency calibrate --records /d/p.csv`"),
    (_calib(terms=list(TERM_NAMES)[:-1]), "x.json",
     "x.json: cost terms/features differ from this version's; recalibrate"),
    (_calib(feature_names=list(FEATURE_NAMES)[::-1]), "x.json",
     "x.json: cost terms/features differ from this version's; recalibrate"),
    (_calib(coef=None), "x.json", f"x.json: {_BAD_COEF}"),
    (_calib(coef=tuple(_COEF)), "x.json", f"x.json: {_BAD_COEF}"),
    (_calib(coef=_COEF[:-1]), "x.json", f"x.json: {_BAD_COEF}"),
    (_calib(coef=_COEF[:-1] + [float("nan")]), "x.json", f"x.json: {_BAD_COEF}"),
    (_calib(coef=_COEF[:-1] + [float("inf")]), "x.json", f"x.json: {_BAD_COEF}"),
    (_calib(coef=_COEF[:-1] + [-1e-9]), "x.json", f"x.json: {_BAD_COEF}"),
    (_calib(coef=_COEF[:-1] + ["1"]), "x.json", f"x.json: {_BAD_COEF}"),
    ({k: v for k, v in _calib().items() if k != "device"}, "x.json",
     "x.json: device must be a non-empty name, got None"),
    (_calib(device=""), "x.json", "x.json: device must be a non-empty name, got ''"),
    (_calib(device=3), "x.json", "x.json: device must be a non-empty name, got 3"),
])
def test_from_dict_rejects_with_one_line(d, where, message):
    with pytest.raises(UsageError) as e:
        LatencyPredictor.from_dict(d) if where is None else LatencyPredictor.from_dict(d, where)
    assert str(e.value) == message


def test_from_dict_accepts_zero_coefficients():
    assert LatencyPredictor.from_dict(_calib(coef=[0] * N_TERMS)).coef.tolist() == [0.0] * N_TERMS


def test_save_and_load_files(tmp_path):
    p = _small()
    path = tmp_path / "sub" / "dev.json"
    p.save(str(path))
    text = path.read_text()
    assert text.splitlines()[1].startswith(' "coef": [')        # sorted keys, indent 1
    assert json.loads(text) == json.loads(json.dumps(p.to_dict()))
    q = LatencyPredictor.load(str(path))
    assert q.version == p.version and q.meta == p.meta and q.ranges == p.ranges
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UsageError) as e:
        LatencyPredictor.load(str(bad))
    assert str(e.value) == (f"calibration file {bad}: not valid JSON (line 1 column 2: "
                            "Expecting property name enclosed in double quotes)")
    bad.write_text('{"format": "other"}')
    with pytest.raises(UsageError) as e:
        LatencyPredictor.load(str(bad))
    assert str(e.value) == f"{bad}: not a latency calibration file (format != {FORMAT!r})"
    with pytest.raises(NotFoundError) as e:
        LatencyPredictor.load(str(tmp_path / "missing.json"))
    assert str(e.value) == f"calibration file {tmp_path / 'missing.json'}: no such file"


def test_prediction_is_the_documented_formula():
    """ms = T coef; sd(log) = kappa sqrt(||(T * coef) L||^2 / ms^2 + sigma^2); std = ms sd --
    on real preset features (sub-millisecond ones too), by every path."""
    p = lm.load_predictor()
    specs = [PRESETS[n] for n in ("XS", "S", "L1", "L3")]
    F = spec_features_many(specs)
    q = LatencyPredictor("x", p.coef * 0.3, sigma=0.1, cov_factor=p.cov_factor * 3, kappa=1.7)
    T = terms_matrix(F)
    ms = T @ q.coef
    sd = 1.7 * np.sqrt(np.sum(((T * q.coef) @ q.cov_factor) ** 2, axis=1) / ms ** 2 + 0.01)
    assert ms.min() < 1.0
    for got in (q.predict_features(F), q.predict_many(specs),
                q.predict_many(SpecArrays.from_specs(specs)), q.predict_many(["XS", "S", "L1", "L3"]),
                tuple(np.array([q.predict(s) for s in specs]).T)):
        np.testing.assert_allclose(got[0], ms, rtol=1e-9)
        np.testing.assert_allclose(got[1], ms * sd, rtol=1e-9)


def test_predict_many_input_handling():
    p = lm.load_predictor()
    ms, sd = p.predict_many([])
    assert ms.shape == (0,) and sd.shape == (0,)
    ms, sd = p.predict_many(iter([PRESETS["XS"], PRESETS["L1"]]))
    assert ms.shape == (2,) and (ms[0], sd[0]) == pytest.approx(p.predict("XS"), rel=1e-9)
    mixed = [PRESETS["XS"], "mobilevitv2_100"]
    ms, sd = p.predict_many(mixed)
    for i, s in enumerate(mixed):
        assert (ms[i], sd[i]) == pytest.approx(p.predict(s), rel=1e-12)


def _extrap_predictor():
    coef = np.zeros(N_TERMS)
    coef[TERM_NAMES.index("conv_gmacs")], coef[TERM_NAMES.index("const")] = 0.25, 0.1
    term_max = [0.0] * N_TERMS
    term_max[TERM_NAMES.index("conv_gmacs")], term_max[TERM_NAMES.index("const")] = 0.5, 1.0
    return LatencyPredictor("x", coef, ranges={"latency_ms": [0.4, 1.0], "term_max": term_max})


def _conv_rows(*gmacs):
    F = np.zeros((len(gmacs), N_FEATURES))
    F[:, FEATURE_NAMES.index("conv_gmacs")] = gmacs
    return F


def test_extrapolation_messages_and_boundaries():
    p = _extrap_predictor()          # ms = 0.25 conv_gmacs + 0.1; conv seen up to 0.5
    assert LatencyPredictor("x", p.coef).extrapolation(_conv_rows(100.0, 0.0)) == ["", ""]
    why = p.extrapolation(_conv_rows(1.0, 1.6, 0.0, 9.6, 0.4))
    # conv = 2 x its max is not beyond it (ms 0.35 in range); 1.6 is; ms 0.1 < 0.4 / 2; both;
    # ms 0.2 = 0.4 / 2 is inside.
    assert why[2] == "0.1 ms is outside the calibrated 0.4-1 ms (x2)"
    assert why[3] == ("2.5 ms is outside the calibrated 0.4-1 ms (x2); "
                      "conv_gmacs = 9.6 (96% of it; at most 0.5 in calibration)")
    assert why[0] == why[4] == ""
    assert why[1] == "conv_gmacs = 1.6 (80% of it; at most 0.5 in calibration)"
    # Latency exactly at lo / 2 and hi * 2 is inside; 0.625 (< hi * 2, > hi / 2) is inside.
    coef = p.coef.copy()
    coef[TERM_NAMES.index("const")] = 0.125
    q = LatencyPredictor("x", coef, ranges={"latency_ms": [0.25, 0.5],
                                            "term_max": [10.0] * N_TERMS})
    F = _conv_rows(0.0, 3.5, 2.0, 3.9)
    assert q.predict_features(F)[0].tolist()[:2] == [0.125, 1.0]
    assert q.extrapolation(F) == ["", "", "", "1.1 ms is outside the calibrated 0.25-0.5 ms (x2)"]


def test_extrapolation_share_floor_is_inclusive():
    coef = np.zeros(N_TERMS)
    coef[TERM_NAMES.index("conv_gmacs")], coef[TERM_NAMES.index("const")] = 1.0, 0.02
    term_max = [10.0] * N_TERMS
    term_max[TERM_NAMES.index("const")] = 0.25
    p = LatencyPredictor("x", coef, ranges={"latency_ms": [0.9, 1.0], "term_max": term_max})
    assert p.predict_features(_conv_rows(0.98))[0][0] == 1.0     # const share exactly 0.02
    assert p.extrapolation(_conv_rows(0.98)) == [
        "const = 1 (2% of it; at most 0.25 in calibration)"]


def _preset_rows():
    return spec_features_many([PRESETS[n] for n in ("XS", "S", "L1", "L3")])


def test_fit_rejects_each_bad_input_with_one_line():
    F = _preset_rows()
    y = np.array([0.7, 0.8, 1.1, 1.9])
    cases = [
        (F[:1], y[:1], "calibration needs at least 2 measured models, got 1"),
        (F[:, :-1], y, f"features: expected finite rows of length {N_FEATURES} matching the latencies"),
        (F[:3], y, f"features: expected finite rows of length {N_FEATURES} matching the latencies"),
        (np.where(np.arange(N_FEATURES) == 0, np.nan, F), y,
         f"features: expected finite rows of length {N_FEATURES} matching the latencies"),
        (F, np.array([0.7, np.nan, 1.1, 1.9]), "latency_ms: every value must be a finite number > 0"),
        (F, np.array([0.7, np.inf, 1.1, 1.9]), "latency_ms: every value must be a finite number > 0"),
        (F, np.array([0.7, 0.0, 1.1, 1.9]), "latency_ms: every value must be a finite number > 0"),
    ]
    for Fi, yi, message in cases:
        with pytest.raises(UsageError) as e:
            fit_features(Fi, yi, "d")
        assert str(e.value) == message


def test_two_rows_fit_scale_only_and_perfect_rows_keep_kappa_one():
    """Two rows are enough (prior x one speed factor); rows the prior's cost model explains
    exactly (a device 2x slower) give leave-one-out errors ~0: kappa stays 1, never below."""
    F = _preset_rows()
    y = terms_matrix(F) @ prior_coef(None) * 2.0
    p = fit_features(F[:2], y[:2], "d")
    assert list(p.meta["loo"]) == ["scale"] and p.meta["candidate"] == "scale"
    assert p.meta["n_records"] == 2 and p.meta["prior"] == "generic-ane (hand-set)"
    q = fit_features(F, y, "d", candidates=("scale",))
    assert q.meta["kappa"] == 1.0 and q.kappa == 1.0
    assert q.meta["speed_scale_vs_prior"] == pytest.approx(2.0, rel=1e-3)
    assert q.meta["loo_mape"] < 1e-3 and q.meta["max_term_move"] == pytest.approx(0.0, abs=1e-9)
    # Fewer rows than any requested candidate needs: the simplest one.
    r = fit_features(F[:3], y[:3], "d", candidates=("full",))
    assert r.meta["candidate"] == "scale" and list(r.meta["loo"]) == ["scale"]


def test_fit_features_meta_is_what_its_parts_say(iphone14):
    """Four real iPhone 14 rows, the shipped calibration as prior, a non-default config: every
    meta field, the coefficients, sigma, kappa, the covariance and the ranges are exactly what
    the documented steps give (leave-one-out per candidate, choose, refit on all rows)."""
    F, y = iphone14
    rows = [0, 1, 2, 3]
    prior = lm.load_predictor()
    cfg = fewshot.FitConfig(paired_se=0.0, one_se=0.0, kappa_max=1.1,
                            sigma_grid=(0.05, 0.1, 0.2))
    p = fit_features(F[rows], y[rows], "dev", prior, meta={"note": "n"}, config=cfg)
    T, logy = terms_matrix(F[rows]), np.log(y[rows])
    theta0, sigma0, prior_cov, name = fewshot._prior_parts(prior)
    runs = {c: fewshot.loo(T, logy, theta0, c, sigma0, prior_cov, cfg) for c in ("scale", "groups")}
    assert runs["scale"][0].tolist() != fewshot.loo(T, logy, theta0, "scale", sigma0,
                                                    prior_cov)[0].tolist()
    errors = {c: e for c, (e, _) in runs.items()}
    chosen = fewshot.choose(errors, cfg)
    assert chosen != fewshot.choose(errors)          # the config's standard-error rules decide
    err, sd = runs[chosen]
    raw = float(np.sqrt(np.mean((err / sd) ** 2)))
    assert raw > cfg.kappa_max
    f = fewshot.fit_candidate(T, logy, theta0, chosen, sigma0, cfg)
    assert f.hyper != fewshot.fit_candidate(T, logy, theta0, chosen, sigma0).hyper
    summary = fewshot._loo_summary(err, sd, cfg.kappa_max)
    assert summary["coverage_2sigma"] == 0.5
    scale = float(np.exp(f.z[0]))
    assert p.meta == {
        "note": "n", "n_records": 4, "candidate": chosen, "prior": prior.device,
        "hyper": f.hyper, "kappa": cfg.kappa_max, "speed_scale_vs_prior": scale,
        "held_out": "rows", "folds": 4,
        "max_term_move": float(np.max(np.abs(np.log(f.theta / (theta0 * scale))))),
        "loo": {c: fewshot._loo_summary(*runs[c]) for c in runs}, "loo_mape": summary["mape"],
        "selection": fewshot.selection_stats(errors),
        "loo_rel_rmse": summary["rel_rmse"], "loo_coverage_2sigma": summary["coverage_2sigma"],
        "loo_coverage_2sigma_raw": fewshot._loo_summary(err, sd)["coverage_2sigma"]}
    assert p.meta["max_term_move"] > 0.01 and p.meta["speed_scale_vs_prior"] != 1.0
    assert p.device == "dev" and p.kappa == cfg.kappa_max and p.sigma == f.sigma
    assert p.sigma != p.rel_std == max(summary["rel_rmse"], 0.03)
    np.testing.assert_array_equal(p.coef, f.theta)
    np.testing.assert_allclose(p.cov_factor @ p.cov_factor.T, f.cov_u + prior_cov,
                               atol=1e-9 * np.abs(prior_cov).max())
    assert p.ranges == fewshot._ranges(T, y[rows], f.theta)
    assert p.ranges["latency_ms"] == [float(y[rows].min()), float(y[rows].max())]


def test_kappa_widens_the_coverage(iphone14):
    """Three real rows, generic prior: raw +-2 sigma leave-one-out coverage 2/3; kappa (the
    unit-variance factor, 1.74) widens it to 3/3, and the reported coverage is the widened one."""
    F, y = iphone14
    p = fit_features(F[:3], y[:3], "d")
    assert p.meta["candidate"] == "scale" and p.meta["kappa"] == pytest.approx(1.74233, rel=1e-4)
    assert p.meta["loo_coverage_2sigma"] == 1.0 and p.meta["loo_coverage_2sigma_raw"] == 2 / 3


def test_prior_parts():
    generic = np.array([GENERIC_PRIOR[t] for t in TERM_NAMES])
    theta0, sigma0, cov, name = fewshot._prior_parts(None)
    np.testing.assert_array_equal(theta0, generic)
    assert (sigma0, name, cov.shape, np.abs(cov).max()) == (0.3, "generic-ane (hand-set)",
                                                            (N_TERMS, N_TERMS), 0.0)
    user = {t: (0.0 if t == "ops" else 2 * GENERIC_PRIOR[t]) for t in TERM_NAMES}
    theta0, sigma0, cov, name = fewshot._prior_parts(user)
    assert name == "user" and sigma0 == 0.3
    np.testing.assert_array_equal(theta0, np.where(np.array(TERM_NAMES) == "ops",
                                                   1e-4 * generic, 2 * generic))
    p = _small()
    theta0, sigma0, cov, name = fewshot._prior_parts(p)
    assert name == "dev" and sigma0 == 0.2
    np.testing.assert_array_equal(cov, p.cov_factor @ p.cov_factor.T)
    low = LatencyPredictor("low", _COEF, sigma=0.01)
    assert fewshot._prior_parts(low)[1] == 0.03


def test_choose_ties_go_to_the_simpler():
    cfg = fewshot.FitConfig(paired_se=0.0, one_se=0.0)
    same = [0.3, 0.2, 0.1]
    assert fewshot.choose(_errs(scale=same, groups=same, full=same), cfg) == "scale"
    assert fewshot.choose(_errs(scale=[0.30, 0.30], full=[0.29, 0.31])) == "scale"


def test_cov_factor_reproduces_the_covariance_and_drops_null_directions():
    A = np.random.default_rng(0).normal(size=(N_TERMS, 3))
    L = fewshot._cov_factor(A @ A.T, 1e-8)
    assert L.shape == (N_TERMS, 3)
    np.testing.assert_allclose(L @ L.T, A @ A.T, atol=1e-12)
    tiny = 1e-12 * np.diag(np.arange(1.0, N_TERMS + 1))
    np.testing.assert_allclose(fewshot._cov_factor(tiny, 1e-8) @ fewshot._cov_factor(tiny, 1e-8).T,
                               tiny, rtol=1e-9, atol=1e-30)
    assert fewshot._cov_factor(tiny, 1e-8).shape == (N_TERMS, N_TERMS)
    assert fewshot._cov_factor(np.zeros((N_TERMS, N_TERMS)), 1e-8).shape == (N_TERMS, 0)
    assert fewshot._cov_factor(np.diag([1.0] + [1e-9] * (N_TERMS - 1)), 1e-8).shape == (N_TERMS, 1)


def test_ranges_exact():
    T = np.zeros((2, N_TERMS))
    T[:, 0], T[:, CONST_J] = [1.0, 3.0], 1.0
    theta = np.zeros(N_TERMS)
    theta[0], theta[CONST_J] = 1.0, 2.0
    r = fewshot._ranges(T, np.array([3.0, 0.5]), theta)
    share = [0.0] * N_TERMS
    share[0], share[CONST_J] = 0.6, 0.6667       # 3/5 and 2/3 rounded to 4 decimals
    term_max = [0.0] * N_TERMS
    term_max[0], term_max[CONST_J] = 3.0, 1.0
    assert r == {"latency_ms": [0.5, 3.0], "term_max": term_max, "share_max": share}


def test_loo_summary_exact():
    err = np.array([-0.5, 0.2, 0.4])
    sd = np.array([0.25, 0.1, 0.1])
    s = fewshot._loo_summary(err, sd)
    rel = np.exp(-err) - 1
    assert s == {"mae_log": pytest.approx(1.1 / 3), "rmse_log": pytest.approx(np.sqrt(0.45 / 3)),
                 "mape": pytest.approx(np.mean(np.abs(rel))),
                 "rel_rmse": pytest.approx(np.sqrt(np.mean(rel ** 2))),
                 "coverage_2sigma": 2 / 3}              # |err| = 2 sd counts as covered
    assert fewshot._loo_summary(err, sd, 1.5)["coverage_2sigma"] == 2 / 3
    assert fewshot._loo_summary(err, sd, 2.0)["coverage_2sigma"] == 1.0
    assert fewshot._loo_summary(err, sd, 0.9)["coverage_2sigma"] == 0.0


CONST_J = TERM_NAMES.index("const")


def test_fit_from_records_passes_everything_through():
    from latency_models.records import Record

    recs = [Record(model=n, device="d", latency_ms=ms) for n, ms in
            (("XS", 1.0), ("mystery-net", 2.0), ("S", 1.3), ("other-net", 2.0), ("L1", 2.0),
             ("L3", 3.9))]
    prior = lm.load_predictor()
    p = fit(recs, "my-phone", prior, meta={"records_file": "r.csv"}, candidates=("scale",))
    assert p.device == "my-phone" and p.meta["prior"] == prior.device
    assert list(p.meta["loo"]) == ["scale"] and p.meta["records_file"] == "r.csv"
    assert p.meta["records"] == ["XS", "S", "L1", "L3"] and p.meta["n_records"] == 4
    assert p.meta["skipped"] == [
        "mystery-net: UsageError: record 'mystery-net': no spec, timm_name or mlpackage to featurise",
        "other-net: UsageError: record 'other-net': no spec, timm_name or mlpackage to featurise"]
    np.testing.assert_array_equal(p.coef, fit_features(spec_features_many(
        [PRESETS[n] for n in ("XS", "S", "L1", "L3")]), [1.0, 1.3, 2.0, 3.9], "x", prior,
        candidates=("scale",)).coef)
    with pytest.raises(UsageError) as e:
        fit(recs, "my-phone", prior, skip_unfeaturizable=False)
    assert str(e.value) == ("record 'mystery-net' cannot be featurised: UsageError: record "
                            "'mystery-net': no spec, timm_name or mlpackage to featurise")


def test_breakdown_is_the_prediction_per_term():
    p = lm.load_predictor()
    b = p.breakdown("L1")
    T = terms_matrix(spec_features_many([PRESETS["L1"]]))[0]
    assert list(b) == list(TERM_NAMES) and b["const"] == p.coef[CONST_J]
    np.testing.assert_allclose(list(b.values()), T * p.coef, rtol=1e-12)
    assert sum(b.values()) == pytest.approx(p.predict("L1")[0], rel=1e-12)


def test_hyper_grids():
    cfg = fewshot.FitConfig(tau_grid=(0.1, 0.5))
    assert fewshot._hyper_grid("scale", cfg) == [(0.0, 0.0)]
    assert fewshot._hyper_grid("groups", cfg) == [(0.1, 0.0), (0.5, 0.0)]
    assert fewshot._hyper_grid("full", cfg) == [(0.1, 0.1), (0.1, 0.5), (0.5, 0.1), (0.5, 0.5)]


def _evidence_argmax(T, logy, theta0, name, sigma0, cfg, w):
    """select_hyper by brute force: the Gaussian log density of the log residuals (scipy) under
    scale + group + term + per-row noise covariance, plus the log-normal hyper-priors."""
    from scipy.stats import multivariate_normal

    p0 = T @ theta0
    W0 = T * theta0 / p0[:, None]
    Kg = W0 @ np.eye(len(GROUPS))[GROUP_OF]
    r = logy - np.log(p0)
    best = None
    for s, tg, tt in [(s, tg, tt) for s in cfg.sigma_grid
                      for tg, tt in fewshot._hyper_grid(name, cfg)]:
        K = (cfg.scale_sd ** 2 + tg ** 2 * Kg @ Kg.T + tt ** 2 * W0 @ W0.T
             + s ** 2 * np.diag(1 / w))
        ev = multivariate_normal(np.zeros(len(r)), K).logpdf(r)
        hp = -0.5 * (np.log(s / sigma0) / cfg.sigma_hyper_sd) ** 2
        hp += sum(-0.5 * (np.log(t / c) / cfg.tau_hyper_sd) ** 2 for t, c in
                  ((tg, cfg.tau_group_center), (tt, cfg.tau_term_center)) if t > 0)
        if best is None or ev + hp > best[0]:
            best = (ev + hp, {"sigma": s, "tau_group": tg, "tau_term": tt, "log_evidence": ev})
    return best[1]


@pytest.mark.parametrize("name, sigma0, weighted, tau_hyper_sd, center", [
    ("scale", 0.3, False, 0.7, 0.5), ("scale", 0.03, True, 0.7, 0.5),
    ("groups", 0.3, True, 0.7, 0.5), ("groups", 1.0, False, 1.5, 0.5),
    ("groups", 0.3, False, 2.5, 2.0),       # evidence and hyper-prior nearly tied here
    ("full", 0.1, True, 0.7, 0.5), ("full", 0.5, False, 1.5, 0.5), ("full", 0.3, False, 3.0, 0.5)])
def test_select_hyper_maximises_evidence_times_hyper_prior(iphone12, name, sigma0, weighted,
                                                           tau_hyper_sd, center):
    F, y = iphone12
    rows = [0, 3, 6, 9, 12]
    T, logy = terms_matrix(F[rows]), np.log(y[rows])
    cfg = fewshot.FitConfig(sigma_grid=(0.03, 0.1, 0.3, 1.0), tau_grid=(0.05, 0.2, 0.5, 2.0),
                            scale_sd=3.0, sigma_hyper_sd=0.5, tau_group_center=center,
                            tau_term_center=0.1, tau_hyper_sd=tau_hyper_sd)
    w = np.array([1.0, 0.5, 1.0, 0.2, 0.9]) if weighted else np.ones(len(rows))
    got = fewshot.select_hyper(T, logy, prior_coef(None), name, sigma0, cfg,
                               w if weighted else None)
    want = _evidence_argmax(T, logy, prior_coef(None), name, sigma0, cfg, w)
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("iters", [0, 1, 2])
def test_fit_candidate_is_its_documented_loop(iphone14, iters):
    """Evidence -> MAP -> Student-t row weights, max(robust_iters, 1) times; the Laplace
    covariance of the last pass. Real iPhone 14 rows (DeiT-T among them: an outlier)."""
    F, y = iphone14
    rows = [0, 1, 5, 7, 8, 10]
    T, logy, theta0 = terms_matrix(F[rows]), np.log(y[rows]), prior_coef(None)
    cfg = fewshot.FitConfig(robust_iters=iters)
    got = fewshot.fit_candidate(T, logy, theta0, "groups", 0.3, cfg)
    w = np.ones(len(rows))
    for _ in range(max(iters, 1)):
        h = fewshot.select_hyper(T, logy, theta0, "groups", 0.3, cfg, w)
        z, P, sd = fewshot._map(T, logy, theta0, "groups", h, w, cfg)
        theta = theta0 * np.exp(P @ z)
        r = (logy - np.log(T @ theta)) / h["sigma"]
        w = np.minimum(1.0, (cfg.robust_nu + 1) / (cfg.robust_nu + r ** 2))
    assert got.hyper == h and got.sigma == h["sigma"] and got.name == "groups"
    np.testing.assert_array_equal(got.theta, theta)
    np.testing.assert_array_equal(got.z, z)
    Wt = T * theta / (T @ theta)[:, None]
    X = (Wt @ P) * np.sqrt(w)[:, None]
    np.testing.assert_allclose(got.cov_u, P @ np.linalg.inv(X.T @ X / h["sigma"] ** 2
                                                            + np.diag(sd ** -2.0)) @ P.T,
                               rtol=1e-9, atol=1e-15)
    if iters == 2:
        assert w.min() < 0.9                                # the outlier was down-weighted
        once = fewshot.fit_candidate(T, logy, theta0, "groups", 0.3,
                                     fewshot.FitConfig(robust_iters=1))
        assert not np.array_equal(once.theta, got.theta)


@pytest.mark.parametrize("factor", [100.0, 0.01])
def test_speed_factor_stops_at_its_bound(factor):
    """A device 100 x slower (faster) than the prior, the global factor bounded at 10 x: it
    stops exactly at the bound (and the start point is clipped into it)."""
    F = _preset_rows()
    T = terms_matrix(F)
    logy = np.log(T @ prior_coef(None) * factor)
    cfg = fewshot.FitConfig(scale_bound=np.log(10.0))
    f = fewshot.fit_candidate(T, logy, prior_coef(None), "scale", 0.3, cfg)
    assert f.z[0] == pytest.approx(np.sign(np.log(factor)) * np.log(10.0), rel=1e-8)


def test_map_is_a_minimum(iphone14):
    """The bounded MAP fit is a (local) minimum of its objective: no coordinate step lowers it."""
    F, y = iphone14
    rows = [0, 1, 5, 7, 8, 10]
    T, logy, theta0 = terms_matrix(F[rows]), np.log(y[rows]), prior_coef(None)
    cfg = fewshot.DEFAULT_CONFIG
    h = {"sigma": 0.1, "tau_group": 0.3, "tau_term": 0.1}
    w = np.ones(len(rows))
    z, P, sd = fewshot._map(T, logy, theta0, "full", h, w, cfg)
    lb, ub = fewshot._bounds("full", cfg)

    def cost(z):
        res = (logy - np.log(T @ (theta0 * np.exp(P @ z)))) / h["sigma"]
        return float(np.sum(res ** 2) + np.sum((z / sd) ** 2))

    c0 = cost(z)
    for i in range(len(z)):
        for step in (1e-4, -1e-4):
            zi = z.copy()
            zi[i] = np.clip(zi[i] + step, lb[i], ub[i])
            assert cost(zi) >= c0 - 1e-9 * c0, (i, step)


def test_version_hash_precision():
    """rel_std, sigma, kappa are hashed to 12 decimals, the covariance factor to 10."""
    p = LatencyPredictor("g", _COEF, 0.1234567890123456, sigma=0.2345678901234567,
                         kappa=1.3456789012345678,
                         cov_factor=np.full((N_TERMS, 1), 0.123456789012345))
    assert p.version == "2:48e2b196e4"


def test_predictive_adds_the_prior_covariance():
    T = terms_matrix(_preset_rows())
    theta = prior_coef(None)
    A = np.random.default_rng(1).normal(0, 0.1, (N_TERMS, N_TERMS))
    fit_ = fewshot.CandidateFit("full", theta, A @ A.T, 0.2, {}, np.zeros(1))
    B = np.random.default_rng(2).normal(0, 0.1, (N_TERMS, N_TERMS))
    mu, sd = fewshot.predictive(fit_, T, B @ B.T)
    W = T * theta / (T @ theta)[:, None]
    np.testing.assert_allclose(mu, np.log(T @ theta), rtol=1e-12)
    np.testing.assert_allclose(sd ** 2, np.diag(W @ (A @ A.T + B @ B.T) @ W.T) + 0.04, rtol=1e-10)


def test_suggest_stratified_criterion_spreads_over_latency():
    """Criterion S: the D-optimal greedy pick restricted to one row per equal-count stratum of
    the prior's predicted latency. On 300 random space members, D piles its 10 rows into the
    extremes; S has exactly one per decile, and its first pick is D's (every stratum open)."""
    from latency_models.suggest import _strata, choose_rows, design_rows

    F = spec_features_many(DEFAULT_SPACE.sample_many(300, seed=4))
    X = design_rows(F, None)
    lat = terms_matrix(F) @ prior_coef(None)
    strata = _strata(lat, 10)
    assert np.bincount(strata).tolist() == [30] * 10
    assert strata[np.argmin(lat)] == 0 and strata[np.argmax(lat)] == 9
    d = choose_rows(X, 10)
    s = choose_rows(X, 10, criterion="S", latency=lat)
    assert sorted(strata[s].tolist()) == list(range(10))
    assert len(set(strata[d].tolist())) < 10, strata[d]
    assert s[0] == d[0] and len(set(s)) == 10
    # fewer rows than picks: every row once
    assert sorted(choose_rows(X[:7], 10, criterion="S", latency=lat[:7])) == list(range(7))
    with pytest.raises(ValueError, match="criterion 'S' needs latency"):
        choose_rows(X, 3, criterion="S")
    with pytest.raises(ValueError, match="'V', 'D' or 'S'"):
        choose_rows(X, 3, criterion="A")


@pytest.mark.parametrize("kw", [{"refit_bounds": (0.0, 10.0)}, {"refit_bounds": (0.05, np.inf)},
                                {"refit_bounds": (2.0, 10.0)}, {"refit_lambdas": ()},
                                {"refit_lambdas": (0.0, 0.1)}])
def test_fit_config_refuses_refit_settings_without_a_covariance(kw):
    with pytest.raises(ValueError, match="refit_"):
        fewshot.FitConfig(**kw)


def test_the_interval_is_the_fits_log_normal_band_and_coverage_counts_it():
    """One interval everywhere: +-2 sigma of log latency, [ms e^-2s, ms e^2s] with s = std / ms
    (what the fit's leave-one-out coverage checks). The ms -+ 2 std band it replaces went below
    zero for s > 0.5 and counted a different share as covered."""
    from latency_models.predictor import latency_interval, within_interval
    from latency_models.transfer import metrics

    lo, hi = latency_interval(np.array([1.0, 4.0]), np.array([0.8, 0.4]))
    np.testing.assert_allclose(lo, [np.exp(-1.6), 4 * np.exp(-0.2)])
    np.testing.assert_allclose(hi, [np.exp(1.6), 4 * np.exp(0.2)])
    assert (lo > 0).all()
    edge = np.exp(0.2)   # ms 1.0, std 0.1: the band is [e^-0.2, e^0.2]
    y = np.array([edge * (1 - 1e-9), edge * (1 + 1e-9), 1 / edge * (1 + 1e-9),
                  1 / edge * (1 - 1e-9)])
    assert within_interval(np.ones(4), np.full(4, 0.1), y).tolist() == [True, False, True, False]
    # 0.8 ms measured for a 1.0 +- 0.1 prediction: inside ms -+ 2 std, outside the log band
    assert within_interval(1.0, 0.1, 0.8) == np.False_
    y = np.append(y, 0.81)   # inside ms -+ 2 std, outside the log band (log 0.81 = -0.211)
    assert metrics(np.ones(5), y, np.full(5, 0.1))["cov2"] == 0.4   # the old band: 0.6
