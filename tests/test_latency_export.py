"""ONNX export checked with onnxruntime; measurement backends (CPU here, CoreML refuses on Linux)."""
import os
import platform

import pytest
import torch

from latency_models.backends import (PlatformError, measure_coreml, measure_onnxruntime_cpu,
                                     measure_torch_cpu)
from latency_models.export import check_onnx, export_onnx
from search_space.spec import ArchSpec
from search_space.swiftformer import build_model

TINY = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 24, 32), mlp_ratios=(2.0, 2.0, 2.0, 2.0),
                attn_blocks=(0, 1, 0, 1), resolution=64, num_classes=10)


@pytest.mark.parametrize("opset", [17, 11])
def test_onnx_export_matches_torch(tmp_path, opset):
    path = str(tmp_path / f"m{opset}.onnx")
    info = export_onnx(TINY, path, opset=opset)
    assert info["opset"] == opset and info["rel_diff"] < 1e-4
    import onnx

    m = onnx.load(path)
    assert any(o.version == opset for o in m.opset_import if o.domain in ("", "ai.onnx"))


def test_onnx_check_catches_a_wrong_model(tmp_path):
    path = str(tmp_path / "m.onnx")
    export_onnx(TINY, path, check=False)
    other = build_model(TINY).eval()       # different random weights
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(AssertionError, match="differs"):
        check_onnx(path, other, x)


def test_export_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(TINY, str(tmp_path / "m.onnx"), opset=13)
    with pytest.raises(ValueError, match=".onnx"):
        export_onnx(TINY, str(tmp_path / "m.bin"))
    from latency_models.export import export_coreml

    with pytest.raises(ValueError, match="precision"):
        export_coreml(TINY, str(tmp_path / "m.mlpackage"), precision="int3")
    with pytest.raises(ValueError, match=".mlpackage"):
        export_coreml(TINY, str(tmp_path / "m.mlmodel"))


class _FakeMLModel:
    """Saves like coremltools' MLModel.save for an ML program: a directory, .mlpackage only."""

    def __init__(self, tag: str, fail: bool = False) -> None:
        self.tag, self.fail = tag, fail

    def save(self, path: str) -> None:
        assert path.endswith(".mlpackage"), path
        os.makedirs(os.path.join(path, "Data"))
        with open(os.path.join(path, "Manifest.json"), "w") as f:
            f.write(self.tag)
        if self.fail:
            raise RuntimeError("disk full")


def test_mlpackage_save_replaces_an_older_package_atomically(tmp_path):
    from latency_models.coreml import save_mlpackage

    path = tmp_path / "m.mlpackage"
    save_mlpackage(_FakeMLModel("one"), str(path))
    save_mlpackage(_FakeMLModel("two"), str(path))
    assert (path / "Manifest.json").read_text() == "two" and (path / "Data").is_dir()
    with pytest.raises(RuntimeError, match="disk full"):
        save_mlpackage(_FakeMLModel("three", fail=True), str(path))
    # A failed save leaves the older package whole, and no temporary survives either way.
    assert (path / "Manifest.json").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["m.mlpackage"]


def test_cpu_backends_measure(tmp_path):
    r = measure_torch_cpu(TINY, threads=1, warmup=1, runs=3)
    assert r["runs"] == 3 and 0 < r["p25_ms"] <= r["latency_ms"] <= r["p75_ms"]
    assert r["threads"] == 1 and torch.get_num_threads() == 1
    path = str(tmp_path / "m.onnx")
    export_onnx(TINY, path, check=False)
    o = measure_onnxruntime_cpu(path, threads=1, warmup=1, runs=3)
    assert o["runs"] == 3 and o["latency_ms"] > 0 and o["resolution"] == 64
    with pytest.raises(FileNotFoundError):
        measure_onnxruntime_cpu(str(tmp_path / "missing.onnx"))


@pytest.mark.skipif(platform.system() == "Darwin", reason="checks the non-macOS refusal")
def test_coreml_backend_refuses_clearly_off_macos(tmp_path):
    with pytest.raises(PlatformError, match="needs macOS") as e:
        measure_coreml(str(tmp_path / "m.mlpackage"))
    assert "Xcode" in str(e.value)
    with pytest.raises(ValueError, match="compute_unit"):
        measure_coreml(str(tmp_path / "m.mlpackage"), compute_unit="GPU_ONLY")
