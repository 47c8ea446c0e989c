"""Predictor: fit/predict/save/load, few-shot recovery on synthetic data, shipped calibration."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import kendalltau

import latency_models as lm
from latency_models.analytic import spec_features_many
from latency_models.predictor import (TERM_NAMES, LatencyPredictor, fit, fit_features,
                                      terms_matrix)
from search_space.errors import NotFoundError, UsageError
from search_space.space import DEFAULT_SPACE
from search_space.spec import PRESETS

TRUE = dict(conv_gmacs=3.0, pwconv_gmacs=3.5, dwconv_gmacs=12.0, linear_gmacs=4.0, actmm_gmacs=0.0, act_mbytes=0.08,
            pwconv_mbytes=0.05, dwconv_mbytes=0.0, transcendental_mbytes=0.1, weight_mbytes=0.1,
            norm_mbytes=0.05, layout_mbytes=0.02, ops=0.012, const=0.4)


def _synthetic(n, seed, noise=0.02):
    specs = DEFAULT_SPACE.sample_many(n, seed=seed)
    F = spec_features_many(specs)
    theta = np.array([TRUE[t] for t in TERM_NAMES])
    rng = np.random.default_rng(seed)
    y = terms_matrix(F) @ theta * np.exp(rng.normal(0, noise, n))
    return specs, F, y, theta


def test_few_shot_recovers_a_known_device():
    _, F, y, theta = _synthetic(300, seed=3)
    # A reference device that is 4x faster with per-term cost ratios off by up to 12x.
    rng = np.random.default_rng(2)
    prior = LatencyPredictor("ref", theta / 4 * np.exp(rng.uniform(-2.5, 2.5, len(theta))))
    p = fit_features(F[:10], y[:10], "new", prior=prior)
    pred, sd = p.predict_features(F[10:])
    rel = np.abs(pred - y[10:]) / y[10:]
    assert kendalltau(pred, y[10:]).statistic > 0.93
    assert np.mean(rel) < 0.05 and np.mean(rel <= 0.10) > 0.9
    assert np.all(sd > 0)
    # The uncalibrated (merely rescaled) prior is clearly worse: the fit did the work.
    base = terms_matrix(F[10:]) @ prior.coef
    base *= np.median(y[:10] / (terms_matrix(F[:10]) @ prior.coef))
    assert np.mean(np.abs(base - y[10:]) / y[10:]) > np.mean(rel) * 2


def test_many_records_fit_the_true_costs():
    _, F, y, theta = _synthetic(200, seed=4, noise=0.0)
    p = fit_features(F[:150], y[:150], "d", prior=None, lambdas=(0.0,))
    pred = p.predict_features(F[150:])[0]
    np.testing.assert_allclose(pred, y[150:], rtol=0.02)


def test_fit_rejects_bad_input():
    _, F, y, _ = _synthetic(5, seed=5)
    with pytest.raises(UsageError, match="at least 2"):
        fit_features(F[:1], y[:1], "d")
    with pytest.raises(UsageError, match="latency_ms"):
        fit_features(F, -y, "d")


def test_save_load_round_trip(tmp_path):
    specs, F, y, _ = _synthetic(30, seed=6)
    p = fit_features(F, y, "my-phone")
    path = tmp_path / "my-phone.json"
    p.save(str(path))
    q = LatencyPredictor.load(str(path))
    assert q.device == "my-phone" and q.version == p.version and q.version.startswith("1:")
    np.testing.assert_allclose(q.predict_many(specs)[0], p.predict_many(specs)[0])
    d = json.loads(path.read_text())
    d["format_version"] = 99
    path.write_text(json.dumps(d))
    with pytest.raises(UsageError, match="format_version"):
        LatencyPredictor.load(str(path))
    with pytest.raises(NotFoundError, match="no such file"):
        LatencyPredictor.load(str(tmp_path / "missing.json"))
    # A user-dir calibration is listed and loadable by name.
    os.environ["SWIFTFORMER_NAS_LATENCY_DIR"] = str(tmp_path / "user")
    try:
        p.save(str(tmp_path / "user" / "my-phone.json"))
        assert "my-phone" in lm.list_devices() and lm.DEFAULT_DEVICE in lm.list_devices()
        assert lm.load_predictor("my-phone").version == p.version
    finally:
        del os.environ["SWIFTFORMER_NAS_LATENCY_DIR"]


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
    # Published iPhone 14 latencies: 0.7 / 0.8 / 1.1 / 1.9 ms; stay within 40%.
    for m, pub in zip(ms, (0.7, 0.8, 1.1, 1.9)):
        assert abs(m - pub) / pub < 0.4
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
