"""`run_search.py latency ...`: good paths and one-line errors (exit 2) for bad input."""
import json
from pathlib import Path

import numpy as np
import pytest

import run_search

GOOD = ("model,device,latency_ms,source\nXS,phone-x,1.0,m\nS,phone-x,1.3,m\nL1,phone-x,2.0,m\n"
        "L3,phone-x,3.9,m\nmobilenetv2_100,other,1.0,m\n")


def run(capsys, *argv):
    try:
        code = run_search.main(list(argv))
    except SystemExit as e:   # argparse's own errors (number options) exit from parse_args
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_and_devices(capsys):
    code, out, _ = run(capsys, "latency", "predict", "XS", "L3", "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["latency_ms"] < rows[1]["latency_ms"] and rows[0]["std_ms"] > 0
    code, out, _ = run(capsys, "latency", "devices")
    assert code == 0 and "iphone14-ane (default)" in out


@pytest.mark.timeout(300)
def test_predict_builds_a_timm_model_at_the_asked_resolution_and_reads_paper_names(
        capsys, user_dir):
    """--resolution reaches timm (it was ignored for timm names: the default size's latency
    came back for any --resolution); a paper's spelling is read as its timm model, said."""
    argv = ("latency", "predict", "mobilenetv3_small_050", "--json", "--resolution")
    lat = {}
    for side in ("64", "128"):
        code, out, err = run(capsys, *argv, side)
        assert code == 0, err
        lat[side] = json.loads(out)[0]["latency_ms"]
    assert lat["128"] > lat["64"], lat    # 4x the pixels (a tiny model: overheads dominate)
    cache = json.loads((user_dir / "feature_cache.json").read_text())
    assert sorted(k.split("@")[1] for k in cache["models"]) == ["128", "64"]
    code, out, err = run(capsys, "latency", "predict", "MobileNetV3-Small 0.5", "--json",
                         "--resolution", "64")
    assert code == 0 and json.loads(out)[0]["latency_ms"] == lat["64"]
    assert err == ("warning: architecture: 'MobileNetV3-Small 0.5' read as the timm model "
                   "'mobilenetv3_small_050'\n")


@pytest.mark.parametrize("argv,needle", [
    (["latency", "predict", "XS", "--latency-device", "pixel-99"], "allowed"),
    (["latency", "predict", "not_a_model_anywhere"],
     "architecture: unknown model 'not_a_model_anywhere': expected a preset (XS/S/L1/L3), a "
     "spec JSON file, inline JSON or a timm model name"),
    (["latency", "predict", "ViT-S"], "architecture: model 'ViT-S' can mean any of the timm "
     "models vit_small_patch16_224, vit_small_patch32_224, vit_small_patch8_224: write the one "
     "you mean"),
    (["latency", "predict", "missing.json"], "missing.json"),
    (["latency", "measure", "XS", "--backend", "tpu"], "--backend"),
    (["latency", "measure", "XS", "--runs", "0"], "argument --runs: 0: allowed integers >= 1"),
    (["latency", "measure", "XS", "--warmup", "-1"], "argument --warmup: -1: allowed integers >= 0"),
    (["latency", "measure", "XS", "--rounds", "0"], "argument --rounds: 0: allowed integers >= 1"),
    (["latency", "measure", "XS", "--stat", "mean"], "--stat 'mean': allowed ['median', 'min']"),
    (["latency", "measure", "XS", "--threads", "two"],
     "argument --threads: 'two' is not an integer; allowed integers >= 1"),
    (["latency", "predict", "XS", "--resolution", "16"],
     "argument --resolution: 16: allowed integers >= 32"),
    (["latency", "export", "XS", "--out", "x.onnx", "--resolution", "8"], "--resolution: 8"),
    (["latency", "suggest", "--out", "d", "--n", "0"], "argument --n: 0: allowed integers >= 1"),
    (["latency", "suggest", "--out", "d", "--pool", "-5"], "argument --pool: -5: allowed"),
    (["latency", "suggest", "--out", "d", "--pool", "100001"],
     "argument --pool: 100001: allowed integers 0..100000"),
    (["latency", "measure", "m.mlpackage", "--backend", "coreml", "--compute-unit", "GPU"],
     "--compute-unit"),
    (["latency", "export", "XS", "--format", "tflite", "--out", "x.tflite"], "--format"),
    (["latency", "export", "XS", "--format", "onnx", "--out", "x.mlpackage"], ".onnx"),
    (["latency", "export", "XS", "--format", "onnx", "--out", "x.onnx", "--opset", "9"], "--opset"),
    (["latency", "calibrate", "--records", "nope.csv", "--latency-device", "d"], "nope.csv"),
])
def test_bad_input_one_line_error(capsys, argv, needle):
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_coreml_measure_off_macos_says_so(capsys, tmp_path):
    import platform

    if platform.system() == "Darwin":
        pytest.skip("checks the non-macOS refusal")
    code, _, err = run(capsys, "latency", "measure", str(tmp_path / "m.mlpackage"),
                       "--backend", "coreml")
    assert code == 2 and "needs macOS" in err


@pytest.mark.timeout(120)
def test_measure_onnx_file_records_it(capsys, tmp_path):
    from latency_models.export import export_onnx
    from latency_models.records import read_records
    from search_space.spec import ArchSpec

    tiny = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 24, 32), mlp_ratios=(2.0,) * 4,
                    attn_blocks=(0, 1, 0, 1), resolution=64, num_classes=10)
    onnx_path = str(tmp_path / "m.onnx")
    export_onnx(tiny, onnx_path, check=False)
    out = tmp_path / "r.csv"
    code, o, err = run(capsys, "latency", "measure", onnx_path, "--backend", "onnxruntime",
                       "--runs", "2", "--warmup", "0", "--out", str(out), "--record-device", "box")
    assert code == 0, err
    (rec,) = read_records(str(out))
    # A file is timed as given: no timm name, no spec; the label is the one asked for.
    assert rec.model == onnx_path and rec.timm_name == "" and rec.spec == ""
    assert rec.device == "box" and rec.resolution == 64 and rec.runtime.startswith("onnxruntime")
    code, _, err = run(capsys, "latency", "measure", str(tmp_path / "nope.onnx"), "--backend",
                       "onnxruntime")
    assert code == 2 and "nope.onnx: no such .onnx file" in err


@pytest.mark.parametrize("stat", ["min", "median"])
def test_measure_rounds_interleave_models_and_pool_their_runs(capsys, tmp_path, monkeypatch, stat):
    """--rounds: every model once per round (never two rounds of one model back to back), the
    runs of all rounds pooled, --stat of the --clock times recorded."""
    from latency_models import cli
    from latency_models.records import read_records

    backends = cli.backends
    backends.pool_rounds      # the lazy module loads now (loading later would undo the patches)
    calls = []

    def fake_torch(a, resolution, threads, warmup, runs):
        calls.append(a.arch_hash)
        k = len(calls)            # the k-th call's runs take 10k + j ms wall, half that CPU
        wall = [(10 * k + j) / 1e3 for j in range(runs)]
        out = backends._stats(wall, [t / 2 for t in wall])
        out.update(resolution=224, runtime="fake", compute_unit="CPU", threads=threads,
                   os="test", device="fake CPU")
        return out

    monkeypatch.setattr(backends, "measure_torch_cpu", fake_torch)
    monkeypatch.setattr(backends, "process_warmup", lambda *a, **k: None)
    out = tmp_path / "m.csv"
    code, o, err = run(capsys, "latency", "measure", "XS", "S", "L1", "--rounds", "3",
                       "--runs", "2", "--clock", "cpu", "--stat", stat, "--out", str(out))
    assert code == 0, err
    assert len(calls) == 9
    for r in range(3):                       # each round times each model once
        assert len(set(calls[3 * r: 3 * r + 3])) == 3
    recs = {r.model: r for r in read_records(str(out))}
    assert set(recs) == {"XS", "S", "L1"}
    for name, rec in recs.items():
        ks = [i + 1 for i, h in enumerate(calls) if h == _hash(rec.spec)]   # its calls
        assert len(ks) == 3, name
        cpu = sorted((10 * k + j) / 2 for k in ks for j in range(2))
        assert rec.latency_ms == pytest.approx(min(cpu) if stat == "min" else np.median(cpu))
        assert f"{stat} cpu time of 6 runs (3 interleaved round(s) of 2" in rec.source
    assert "round 3/3 done" in o and f"({stat} cpu time; IQR" in o


def _hash(spec_json: str) -> str:
    from search_space.spec import ArchSpec

    return ArchSpec.from_dict(json.loads(spec_json)).arch_hash


def test_calibrate_evaluate_round_trip(capsys, tmp_path):
    rec = tmp_path / "r.csv"
    rec.write_text(GOOD)
    out = tmp_path / "phone-x.json"
    code, o, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--latency-device", "phone-x",
                       "--match", "phone-x", "--out", str(out))
    assert code == 0, err
    assert out.exists() and "calibrated phone-x on 4 records" in o
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--latency-device", str(out),
                       "--match", "phone-x")
    assert code == 0, err and "MAPE" in o
    mape = float(o.split("MAPE ")[1].split("%")[0])
    assert mape < 25.0
    # Bad inputs of calibrate: device name, match, malformed row.
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                       "--latency-device", "a b/c")
    assert code == 2 and "--latency-device 'a b/c'" in err
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--latency-device",
                       "d", "--match", "ipad")
    assert code == 2 and "--match" in err
    rec.write_text(GOOD + "L3,phone-x,fast,m\n")
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--latency-device",
                       "d", "--match", "phone-x")
    assert code == 2 and "row 7, column 'latency_ms'" in err


def test_a_calibration_is_for_one_device(capsys, tmp_path, user_dir):
    """A file naming several devices is refused unless --match picks one; the rows of the
    other devices are not read further (a model this tool cannot featurise there is fine);
    ``--device`` is the ``latency`` commands' alias of --latency-device."""
    rec = tmp_path / "r.csv"
    rec.write_text(GOOD + "RepViT-M0.6,other,0.6,m\n")    # no timm model: unknown here
    code, o, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--device", "px")
    assert code == 2 and not o and err == (
        f"error: {rec}: column 'device' names 2 devices ('other', 'phone-x'): a calibration is "
        "for one device; choose its rows with --match TEXT\n")
    assert not (user_dir / "px.json").exists()
    code, o, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--device", "px",
                       "--match", "PHONE")
    assert code == 0, err
    assert "calibrated px on 4 records" in o and (user_dir / "px.json").exists()
    code, o, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--device", "py",
                       "--match", "other")
    assert code == 2 and "row 7, column 'model': unknown model 'RepViT-M0.6'" in err
    assert not (user_dir / "py.json").exists()
    # --skip-unknown: that row is left out with a warning naming it; the rest calibrates
    one = tmp_path / "one-device.csv"
    one.write_text(GOOD.replace(",other,", ",phone-x,").replace("mobilenetv2_100", "NoSuchNet"))
    code, o, err = run(capsys, "latency", "calibrate", "--records", str(one), "--device", "pz",
                       "--skip-unknown")
    assert code == 0, err
    assert err == (f"warning: {one}: row 6 ('NoSuchNet'): not a preset, spec JSON, .mlpackage, "
                   "published name or timm model: skipped\n")
    assert "calibrated pz on 4 records" in o and (user_dir / "pz.json").exists()
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "px",
                       "--match", "phone-x")
    assert code == 0 and "MAPE" in o, err


# -- calibrate from what users have (issue 14) and bad input (issue 18) ---------------------
@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    d = tmp_path / "user"
    monkeypatch.setenv("SWIFTFORMER_NAS_LATENCY_DIR", str(d))
    return d


def _written(d):
    return sorted(p.name for p in d.rglob("*")) if d.exists() else []


def _calibrate(capsys, rec, text, device):
    """Write ``text`` as the records file ``rec``; calibrate ``device`` from it (must succeed)."""
    rec.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                         "--latency-device", device)
    assert code == 0, err
    return out, err


def test_calibrate_from_model_and_latency_only(capsys, tmp_path, user_dir):
    rec = tmp_path / "mine.csv"
    out, err = _calibrate(capsys, rec, "model;latency_ms\nXS;0,95 ms\nSwiftFormer-S;1,2\nL1;\n"
                          "L3;2,9\nMobileNet-v2x1.0;1,1\n", "my-phone")
    assert f"warning: {rec}: row 4 ('L1'): blank latency_ms (not measured): skipped" in err
    assert "calibrated my-phone on 4 records" in out and "coverage" in out
    assert _written(user_dir) == ["my-phone.json"]
    d = json.loads((user_dir / "my-phone.json").read_text())
    assert d["meta"]["records"] == ["XS", "SwiftFormer-S", "L3", "MobileNet-v2x1.0"]
    code, out, _ = run(capsys, "latency", "devices")
    assert code == 0 and f"my-phone: user {user_dir / 'my-phone.json'}" in out


@pytest.mark.parametrize("body,needle", [
    ("model,latency_ms\nXS,0.9\nmy-net,1.0\n", "row 3, column 'model': unknown model 'my-net'"),
    ("model,latency_ms\nXS,0.9\nS,fast\n", "row 3, column 'latency_ms': 'fast' is not a number"),
    ("model,latency_ms\nXS,0.9\nS,1e300\n", "is not a plausible latency: must be a finite number "
                                            "of milliseconds in 0.01..100000"),
    ("model,latency_ms\nXS,0.9\nXS,5.0\n", "rows 2, 3, column 'latency_ms': 'XS' measured 2 "
                                           "times on 'my-phone' disagrees"),
    ("model,latency_ms\nXS,0.9\nXS,0.9\n", "needs at least 2 distinct measured models, found 1"),
    ("latency_ms\n0.9\n", "header lacks required column(s) ['model']"),
    # a header without data rows is still checked (it used to pass and say "found 0")
    ("modell,latency\n", "header lacks required column(s) ['model'] (it has "
                         "['modell', 'latency_ms']); the records columns are ['model', "),
    ("model,latency_ms,model\nXS,0.9,S\nS,1.1,XS\n",
     "header: column(s) ['model'] appear more than once"),
    # row numbers are the file's lines: a blank line (skipped) still counts
    ("model,latency_ms\nXS,0.9\n\nS,fast\n", "row 4, column 'latency_ms': 'fast' is not"),
    # an unclosed quote used to swallow the rest of the file into one field ("found 0")
    ('model,latency_ms\nXS,0.9\n"S,1.1\nL1,1.2\n', "row 3: not valid CSV (unexpected end "
                                                     "of data): a field holding the separator"),
    ('model,latency_ms\nXS,0.9\n"S"x,1.1\n', "row 3: not valid CSV (',' expected after '\"')"),
])
def test_calibrate_bad_input_one_line_nothing_written(capsys, tmp_path, user_dir, body, needle):
    rec = tmp_path / "bad.csv"
    rec.write_text(body)
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                       "--latency-device", "my-phone")
    lines = err.strip().splitlines()
    assert code == 2 and lines[-1].startswith("error: ") and needle in lines[-1], err
    assert _written(user_dir) == []


def test_a_user_directory_that_cannot_hold_the_calibration_names_what_set_it(capsys, tmp_path,
                                                                            monkeypatch):
    """The default calibration path is not an option the user gave: the error named '--out'."""
    rec = tmp_path / "r.csv"
    rec.write_text("model,latency_ms\nXS,0.9\nS,1.1\n")
    f = tmp_path / "afile"
    f.write_text("x")
    monkeypatch.setenv("SWIFTFORMER_NAS_LATENCY_DIR", str(f))
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--device", "p")
    assert code == 2 and err.strip().splitlines() == [
        f"error: $SWIFTFORMER_NAS_LATENCY_DIR {f}/p.json: not a directory"]
    assert f.read_text() == "x"


def test_shipped_calibration_is_never_shadowed_silently(capsys, tmp_path, user_dir):
    rec = tmp_path / "r.csv"
    rec.write_text("model,latency_ms\nXS,0.9\nS,1.1\nL1,1.5\nL3,2.8\n")
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                       "--latency-device", "iphone14-ane")
    assert code == 2 and "is a shipped calibration" in err and "--shadow-shipped" in err
    assert _written(user_dir) == []
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                       "--latency-device", "iphone14-ane", "--shadow-shipped")
    assert code == 0 and "SHADOWS the shipped calibration" in err
    code, out, _ = run(capsys, "latency", "devices")
    assert "iphone14-ane (default): user" in out and "SHADOWS the shipped" in out
    from latency_models import devices

    devices._WARNED.clear()
    code, _, err = run(capsys, "latency", "predict", "XS")
    assert code == 0 and "shadows the shipped" in err


@pytest.mark.timeout(300)
def test_user_conversions_are_cached(capsys, tmp_path, user_dir, monkeypatch):
    """A timm model outside the shipped cache converts once; the second run converts nothing."""
    rec = tmp_path / "r.csv"
    rec.write_text("model,latency_ms,resolution\nXS,0.9,\nS,1.1,\nmobilenetv3_small_050,0.4,64\n")
    argv = ("latency", "calibrate", "--records", str(rec), "--latency-device", "p", "--out")
    code, _, err = run(capsys, *argv, str(tmp_path / "a.json"))
    assert code == 0, err
    # one line says what is converted; coremltools' progress bars do not reach the user
    assert ("converting the timm model mobilenetv3_small_050 at 64 px to Core ML to read its "
            "ops (once: the user cache keeps them)\n") in err
    assert "MIL" not in err and "%|" not in err, err
    cache = json.loads((user_dir / "feature_cache.json").read_text())
    assert [k.split("@")[:2] for k in cache["models"]] == [["mobilenetv3_small_050", "64"]]
    import latency_models.featurize as fz

    def no_conversion(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(fz, "coreml_ops", no_conversion)
    code, _, err = run(capsys, *argv, str(tmp_path / "b.json"))
    assert code == 0, err
    assert "converting" not in err
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["coef"] == b["coef"] and b["meta"]["skipped"] == []


def test_a_timm_model_that_does_not_convert_is_skipped_and_remembered(capsys, tmp_path,
                                                                      user_dir, monkeypatch):
    """A conversion failure is this tool's limit (swin_tiny with coremltools 9), not the user's
    error: the row is skipped with its reason and the rest calibrates; the failure is
    remembered, so the next run does not spend a minute failing again."""
    import latency_models.featurize as fz
    calls = []

    def fails(name, resolution=None, **kw):
        calls.append(name)
        raise RuntimeError(f"CoreML conversion of {name} failed: export: NotImplementedError")

    monkeypatch.setattr(fz, "coreml_ops", fails)
    rec = tmp_path / "r.csv"
    rec.write_text("model,latency_ms,resolution\nXS,0.9,\nmobilenetv3_small_050,0.4,64\n"
                   "S,1.1,\n")
    for i in (1, 2):
        code, out, err = run(capsys, "latency", "calibrate", "--records", str(rec), "--device",
                             f"p{i}")
        assert code == 0, err
        *before, line = err.strip().splitlines()
        assert before == (["converting the timm model mobilenetv3_small_050 at 64 px to Core ML "
                           "to read its ops (once: the user cache keeps them)"] if i == 1 else [])
        assert line.startswith(f"warning: {rec}: row 3 ('mobilenetv3_small_050'): cannot be "
                               "featurised (") and line.endswith("): skipped")
        assert "CoreML conversion of mobilenetv3_small_050 failed: export: NotImplementedError" \
            in line
        assert f"calibrated p{i} on 2 records" in out
    assert calls == ["mobilenetv3_small_050"]           # the second run did not retry
    assert "remembered from" in line


@pytest.mark.timeout(300)
def test_mlpackage_rows_are_featurised_from_the_package(capsys, tmp_path, user_dir):
    from latency_models.analytic import spec_features
    from latency_models.export import export_coreml
    from latency_models.featurize import featurize
    from search_space.spec import ArchSpec

    tiny = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 24, 32), mlp_ratios=(2.0,) * 4,
                    attn_blocks=(0, 1, 0, 1), resolution=64, num_classes=10)
    export_coreml(tiny, str(tmp_path / "tiny.mlpackage"))
    np.testing.assert_allclose(featurize(str(tmp_path / "tiny.mlpackage")), spec_features(tiny),
                               rtol=1e-9)
    rec = tmp_path / "r.csv"
    rec.write_text("model,latency_ms\ntiny.mlpackage,0.3\nXS,0.9\nS,1.1\n")
    code, out, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                         "--latency-device", "p")
    assert code == 0, err
    assert "calibrated p on 3 records" in out
    # the mlpackage column `latency suggest` fills names the package beside the template: it
    # is found from any working directory (it was looked up in the working directory only, so
    # the documented suggest -> measure -> calibrate run stopped at its first package)
    assert Path.cwd() != tmp_path
    rec.write_text("model,latency_ms,mlpackage\nmy-net,0.3,tiny.mlpackage\nXS,0.9,\nS,1.1,\n")
    code, out, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                         "--latency-device", "p2")
    assert code == 0, err
    assert "calibrated p2 on 3 records" in out
    rec.write_text("model,latency_ms,mlpackage\nmy-net,0.3,gone.mlpackage\nXS,0.9,\n")
    code, out, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                         "--latency-device", "p3")
    assert code == 2 and err == (f"error: {rec}: row 2, column 'mlpackage': 'gone.mlpackage': "
                                 "no such .mlpackage\n")


def test_a_model_that_cannot_be_featurised_stops_like_an_unknown_one(capsys, tmp_path,
                                                                     user_dir):
    """A broken .mlpackage in the records was skipped with a warning and the calibration saved
    on the other rows: now one line naming file, row and column, nothing written; with
    --skip-unknown the row is skipped and listed with its reason, the rest calibrates."""
    broken = tmp_path / "broken.mlpackage"
    broken.mkdir()
    (broken / "Manifest.json").write_text("not json")
    rec = tmp_path / "r.csv"
    rec.write_text("model,latency_ms\nXS,0.9\nbroken.mlpackage,0.5\nS,1.1\nL1,1.4\n")
    for cmd in (("calibrate", "--latency-device", "p"),
                ("evaluate", "--latency-device", "iphone14-ane")):
        code, out, err = run(capsys, "latency", cmd[0], "--records", str(rec), *cmd[1:])
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith(f"error: {rec}: row 3, column 'model': 'broken.mlpackage' "
                                   "cannot be featurised (")
        assert lines[0].endswith("); fix or remove the row, or pass --skip-unknown")
        assert _written(user_dir) == []
    code, out, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                         "--latency-device", "p", "--skip-unknown")
    assert code == 0, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"warning: {rec}: row 3 ('broken.mlpackage'): cannot be featurised (")
    assert line.endswith("): skipped") and "calibrated p on 3 records" in out
    assert json.loads((user_dir / "p.json").read_text())["meta"]["records"] == ["XS", "S", "L1"]


def test_suggest_refuses_more_models_than_candidates_before_exporting(capsys, tmp_path):
    """--n above the pool (it once exported all 1051 candidates for --n 100000, minutes of
    CoreML conversions) is one line naming the pool, and nothing is created."""
    out_dir = tmp_path / "new" / "suggest"
    code, _, err = run(capsys, "latency", "suggest", "--n", "52", "--pool", "0",
                       "--out", str(out_dir))
    assert code == 2 and err.strip().splitlines() == [
        "error: --n 52: allowed 1..51, the candidates (the 4 presets, 0 space members of "
        "--pool 0, 47 timm models)"]
    assert not (tmp_path / "new").exists()


def test_suggest_writes_a_template_that_calibrates(capsys, tmp_path, user_dir):
    out_dir = tmp_path / "sug"
    code, out, err = run(capsys, "latency", "suggest", "--n", "6", "--out", str(out_dir),
                         "--pool", "50", "--no-export")
    assert code == 0, err
    import csv as csv_mod

    rows = list(csv_mod.DictReader((out_dir / "measure.csv").open()))
    assert len(rows) == 6 and all(r["latency_ms"] == "" for r in rows)
    for r in rows:
        assert r["model"].endswith(".json") == (out_dir / r["model"]).exists()
    from latency_models import load_predictor
    from latency_models.featurize import featurize, timm_features
    from latency_models.userrecords import load_user_records

    recs = load_user_records(str(out_dir / "measure.csv"), device="d")
    assert recs.records == [] and len(recs.skipped) == 6          # nothing measured yet
    p = load_predictor()
    for r in rows:            # "measure" (a phone exactly 2x slower than the prior), calibrate
        f = featurize(str(out_dir / r["model"])) if r["model"].endswith(".json") else \
            timm_features(r["model"], int(r["resolution"]))
        r["latency_ms"] = f"{2.0 * p.predict_features(f[None])[0][0]:.4f}"
    with (out_dir / "measure.csv").open("w", newline="") as f:
        w = csv_mod.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    code, out, err = run(capsys, "latency", "calibrate", "--records",
                         str(out_dir / "measure.csv"), "--latency-device", "new-phone")
    assert code == 0, err
    q = load_predictor("new-phone")
    assert q.predict("XS")[0] == pytest.approx(2.0 * p.predict("XS")[0], rel=0.05)


def test_predict_shows_interval_and_extrapolation(capsys, tmp_path, user_dir):
    rec = tmp_path / "r.csv"
    rec.write_text("model,latency_ms\nXS,0.7\nS,0.8\nL1,1.1\nL3,1.9\n")
    code, _, err = run(capsys, "latency", "calibrate", "--records", str(rec),
                       "--latency-device", "sf-only")
    assert code == 0, err
    code, out, err = run(capsys, "latency", "predict", "L1", "mobilevitv2_100",
                         "--latency-device", "sf-only")
    assert code == 0, err
    l1, mv = out.split("\n")[0], out.split("mobilevitv2_100:")[1]
    assert "2-sigma" in l1 and "warning" not in out.split("mobilevitv2_100:")[0]
    assert "warning: extrapolates beyond the calibration set" in mv and "hirank_mbytes" in mv


def _phone_table(path, factor: float = 1.0, noise: float = 0.0) -> int:
    """The featurisable published iPhone 12 models as a ``model,resolution,latency_ms`` CSV
    whose latencies are ``factor`` x the shipped iPhone 14 prediction (x a fixed +-``noise``
    pattern); returns the row count."""
    from latency_models import load_predictor
    from latency_models.featurize import featurize_records
    from latency_models.published import published_records
    recs = published_records(device_prefix="iPhone 12", source_contains="")
    F, errs = featurize_records(recs)
    ok = [i for i, e in enumerate(errs) if e is None]
    ms, _ = load_predictor("iphone14-ane").predict_features(F[ok])
    lines, seen = ["model,resolution,latency_ms"], set()
    for j, i in enumerate(ok):
        if recs[i].identity() in seen:
            continue
        seen.add(recs[i].identity())
        wobble = 1 + noise * (1 if j % 2 else -1)
        lines.append(f"{recs[i].timm_name},{recs[i].resolution or ''},"
                     f"{factor * ms[j] * wobble:.6f}")
    path.write_text("\n".join(lines) + "\n")
    return len(lines) - 1


def test_evaluate_few_shot_reports_the_transfer_protocol(capsys, tmp_path):
    """``latency evaluate --few-shot N``: on a phone exactly 2x the prior, ours and prior x
    scale are exact on every draw (so is the single-factor bound) while the GMACs line is not;
    the table names the rows, draws and prior."""
    rec = tmp_path / "twice.csv"
    n = _phone_table(rec, factor=2.0)
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p2",
                       "--few-shot", "8", "--draws", "3")
    assert code == 0, err
    lines = o.splitlines()
    assert lines[0].startswith(f"few-shot calibration: 8 of {n} rows calibrate (prior "
                               f"iphone14-ane), the other {n - 8} are predicted; 3 random draws")
    cols = {ln.split()[0]: ln.split() for ln in lines[2:5]}
    assert cols["ours"][1:3] == ["0.0%", "0.0%"] and cols["scale"][1:3] == ["0.0%", "0.0%"]
    assert float(cols["gmacs"][1].rstrip("%")) > 5.0
    assert "MAPE median 0.0%" in lines[5]
    assert lines[6].startswith("ours worse than scale in 0 of 3 random draws")


def test_evaluate_few_shot_learning_curve(capsys, tmp_path):
    """Several N: one table each (ascending, duplicates once), then one line per N of how the
    error falls with the rows measured."""
    rec = tmp_path / "twice.csv"
    n = _phone_table(rec, factor=2.0)
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p2",
                       "--few-shot", "8", "6", "8", "--draws", "2")
    assert code == 0, err
    heads = [ln for ln in o.splitlines() if ln.startswith("few-shot calibration:")]
    assert [h.split()[2] for h in heads] == ["6", "8"]
    curve = o.split("how the error falls with the rows measured")[1].splitlines()[2:]
    assert [ln.split()[:2] for ln in curve] == [["6", "0.0%"], ["8", "0.0%"]]
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p",
                       "--few-shot", "5", str(n - 1))
    assert code == 2 and not o and f"need {n + 1} for --few-shot {n - 1} " in err


def test_evaluate_few_shot_bad_input(capsys, tmp_path):
    rec = tmp_path / "t.csv"
    n = _phone_table(rec, noise=0.1)
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p",
                       "--few-shot", str(n - 1))
    assert code == 2 and not o and err == (
        f"error: {rec}: too few featurisable records ({n}; need {n + 1} for --few-shot {n - 1} "
        "(N + 2: some rows must be left to predict))\n")
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p",
                       "--few-shot", "5", "--loo")
    assert code == 2 and err == "error: --loo and --few-shot: choose one\n"
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p",
                       "--few-shot", "0")
    assert code == 2 and "--few-shot" in err and len(err.strip().splitlines()) == 1
    code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p",
                       "--draws", "5")
    assert code == 2 and not o and err == "error: --draws / --seed: only with --few-shot N\n"
    for extra, message in ((("--seed", "-1"), "argument --seed: -1: allowed integers "
                                               "0..4294967295"),
                           (("--draws", "100000"), "argument --draws: 100000: allowed integers "
                                                   "1..10000"),
                           (("--match", " "), "argument --match: ' ': allowed a non-empty part "
                                              "of a device name")):
        code, o, err = run(capsys, "latency", "evaluate", "--records", str(rec), "--device", "p",
                           "--few-shot", "5", *extra)
        assert code == 2 and not o and err.startswith(f"error: {message} (see: "), err


def test_calibrate_holds_out_whole_families(capsys, tmp_path, user_dir):
    """Rows from several timm families: the held-out evidence leaves a family out at a time
    (both DeiTs, both MobileNetV2s together) and the output and the file say so; SwiftFormer-
    space members are families of their own, so a SwiftFormer-only file is leave-one-out."""
    rec = tmp_path / "mixed.csv"
    out, _ = _calibrate(capsys, rec, "model,latency_ms\nMobileNet-v2x1.0,0.8\nMobileNet-v2x1.4,"
                        "0.9\nDeiT-T,3.8\nDeiT-S,9.9\nResNet-50,1.9\nConvNeXt-T,2.5\n", "mixed")
    assert "calibrated mixed on 6 records" in out and "leave-one-family-out MAPE" in out
    meta = json.loads((user_dir / "mixed.json").read_text())["meta"]
    assert meta["held_out"] == "families" and meta["folds"] == 4
    out, _ = _calibrate(capsys, rec, "model,latency_ms\nXS,0.7\nS,0.8\nL1,1.1\nL3,1.9\n", "sf")
    assert " leave-one-out MAPE" in out
    assert json.loads((user_dir / "sf.json").read_text())["meta"]["held_out"] == "rows"
