#!/usr/bin/env python
"""GPU check of full-scale retraining (search/retrain/): the CUDA paths the CPU tests cannot run.

On one CUDA device, on a generated 4-class ImageFolder at 64 px (so the RandomResizedCrop
path runs) with a tiny spec:
  1. retrain 2 epochs: --torch-device cuda (device per local rank, cudnn.benchmark), AMP
     (float16 autocast + timm NativeScaler with AGC clipping), RandAugment + mixup/cutmix,
     hard distillation from a timm test_resnet teacher, EMA, pin_memory + 2 loader workers;
  2. the same run split (stop after 1 epoch, then --resume): is the GPU run bit-identical?
     (reported, not required: cudnn.benchmark / atomics make GPU kernels non-deterministic);
  3. evaluate final.pth on cuda with AMP and on cpu in float32: same top-1?
Prints figures (epoch seconds, images/s) and exits 1 if a required check fails.

    python bench/bench_retrain_gpu.py [--out DIR]

Without SQLAlchemy on the machine (a bare GPU image) the results store is replaced by a stub:
the runs here never record (--no-record) and never export (--no-export).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
try:
    import sqlalchemy  # noqa: F401
except ImportError:  # bare GPU image: nothing here records, so a stub of the store suffices
    stub = types.ModuleType("results.options")
    stub.DEFAULT_DB = "runs/results.db"
    stub.open_store = None
    stub.add_db_option = lambda parser, purpose="": parser.add_argument("--db", default="x")
    sys.modules["results.options"] = stub

import timm  # noqa: E402

from search.retrain.cli import evaluate_config, parse_retrain  # noqa: E402
from search.retrain.cli import add_evaluate_arguments  # noqa: E402
from search.retrain.evaluate import evaluate_worker  # noqa: E402
from search.retrain.loop import retrain_worker  # noqa: E402
from search_space.spec import ArchSpec  # noqa: E402

TINY = ArchSpec(depths=(1, 1, 2, 1), widths=(16, 32, 48, 64), mlp_ratios=(2.0,) * 4,
                attn_blocks=(0, 0, 1, 1), resolution=64, num_classes=4)


def make_data(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("val", 8)):
        for c in range(4):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                a = (rng.random((64, 64, 3)) * 60 + c * 50).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.jpg")
    return root


def same_state(a, b) -> tuple[bool, float]:
    """(bit-identical, max |a - b|) over every tensor of two nested states."""
    if isinstance(a, torch.Tensor):
        if a.is_floating_point():
            d = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
        else:
            d = float((a != b).any())
        return torch.equal(a, b), d
    if isinstance(a, dict):
        res = [same_state(a[k], b[k]) for k in a]
    elif isinstance(a, (list, tuple)):
        res = [same_state(x, y) for x, y in zip(a, b)]
    else:
        return a == b, 0.0 if a == b else float("inf")
    return all(r[0] for r in res), max([r[1] for r in res] or [0.0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--torch-device", default="cuda", help="cpu: a dry run of this script")
    a = p.parse_args()
    if a.torch_device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 0
    name = torch.cuda.get_device_name(0) if a.torch_device == "cuda" else "cpu"
    print(f"torch {torch.__version__}, timm {timm.__version__}, {name}")
    work = Path(a.out or tempfile.mkdtemp(prefix="retrain-gpu-"))
    data = make_data(work / "data")
    spec = work / "tiny.json"
    spec.write_text(TINY.to_json())
    teacher = timm.create_model("test_resnet", num_classes=4)
    tfile = work / "teacher.pth"
    torch.save({"model": teacher.state_dict()}, tfile)
    common = ["--arch", str(spec), "--data", str(data), "--epochs", "2", "--torch-device", a.torch_device,
              "--workers", "2", "--batch-size", "8", "--no-record", "--no-export",
              "--warmup-epochs", "0", "--aa", "rand-m9-mstd0.5-inc1", "--mixup", "0.8",
              "--cutmix", "1.0", "--teacher-model", "test_resnet", "--teacher-checkpoint",
              str(tfile)]
    failures = []

    t0 = time.time()
    epochs: list[dict] = []
    res = retrain_worker(parse_retrain(common + ["--output", str(work / "straight")]),
                         on_epoch_end=epochs.append)
    wall = time.time() - t0
    ck = torch.load(work / "straight" / "checkpoint.pth", map_location="cpu", weights_only=True)
    print(f"1. cuda+amp retrain: {wall:.1f} s wall, epochs "
          + ", ".join(f"{m['epoch_seconds']:.2f} s ({m['train_images'] / m['epoch_seconds']:.0f} img/s)"
                      for m in epochs)
          + f"; loss {[round(m['train_loss'], 4) for m in epochs]}, top1 {res.get('top1')}, "
            f"top1_ema {res.get('top1_ema')}, distillation {res.get('distillation')}")
    if not (res.get("distillation") == "hard" and all(np.isfinite(m["train_loss"]) for m in epochs)):
        failures.append("cuda retrain: no hard distillation or a non-finite loss")
    if a.torch_device == "cuda" and not ck.get("scaler"):
        failures.append("cuda retrain: AMP grad-scaler state missing from the checkpoint")
    print(f"   scaler state {ck.get('scaler')}, global_step {ck['global_step']}")

    split = ["--output", str(work / "split")]
    retrain_worker(parse_retrain(common + split + ["--stop-after-epochs", "1"]))
    retrain_worker(parse_retrain(common + split + ["--resume"]))
    ck2 = torch.load(work / "split" / "checkpoint.pth", map_location="cpu", weights_only=True)
    for key in ("model", "optimizer", "model_ema", "lr_scheduler"):
        same, diff = same_state(ck[key], ck2[key])
        print(f"2. resume on cuda: {key} bit-identical {same} (max |diff| {diff:.3g})")
    print(f"   train_loss straight {ck['history'][-1]['train_loss']!r} "
          f"split {ck2['history'][-1]['train_loss']!r}")

    ev = argparse.ArgumentParser()
    add_evaluate_arguments(ev)
    got = {}
    for dev in (a.torch_device, "cpu"):
        cfg = evaluate_config(ev.parse_args(
            ["--arch", str(spec), "--checkpoint", str(work / "straight" / "final.pth"),
             "--data", str(data), "--torch-device", dev, "--workers", "2", "--batch-size", "5"]))
        got[dev] = evaluate_worker(cfg)
    keys = ("top1", "top5", "val_loss")
    dev, cpu = got[a.torch_device], got["cpu"]
    print(f"3. evaluate {a.torch_device}(amp) {json.dumps({k: dev[k] for k in keys})}"
          f" vs cpu {json.dumps({k: cpu[k] for k in keys})}")
    if dev["top1"] != cpu["top1"] or \
            abs(dev["val_loss"] - cpu["val_loss"]) > 1e-2 * max(1.0, cpu["val_loss"]):
        failures.append("evaluate: cuda (amp) and cpu disagree")
    print("FAILED: " + "; ".join(failures) if failures else "all required checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
