"""`run_search.py latency ...`: good paths and one-line errors (exit 2) for bad input."""
import json

import pytest

import run_search

GOOD = ("model,device,latency_ms,source\nXS,phone-x,1.0,m\nS,phone-x,1.3,m\nL1,phone-x,2.0,m\n"
        "L3,phone-x,3.9,m\nmobilenetv2_100,other,1.0,m\n")


def run(capsys, *argv):
    code = run_search.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_and_devices(capsys):
    code, out, _ = run(capsys, "latency", "predict", "XS", "L3", "--json")
    assert code == 0
    rows = json.loads(out)
    assert rows[0]["latency_ms"] < rows[1]["latency_ms"] and rows[0]["std_ms"] > 0
    code, out, _ = run(capsys, "latency", "devices")
    assert code == 0 and "iphone14-ane (default)" in out


@pytest.mark.parametrize("argv,needle", [
    (["latency", "predict", "XS", "--latency-device", "pixel-99"], "allowed"),
    (["latency", "predict", "not_a_model_anywhere"], "not a preset"),
    (["latency", "predict", "missing.json"], "missing.json"),
    (["latency", "measure", "XS", "--backend", "tpu"], "--backend"),
    (["latency", "measure", "XS", "--runs", "0"], "--runs"),
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
                       "d")
    assert code == 2 and "row 7, column 'latency_ms'" in err
