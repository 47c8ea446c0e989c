"""train_proxy: per-epoch reports, learns a learnable toy task, deterministic, NaN -> NonFiniteLoss."""
from __future__ import annotations

import math

import pytest
import torch

import search.proxy.train as proxy
from search.proxy.data import prepare_data
from search.proxy.fidelity import Fidelity
from search.proxy.train import NonFiniteLoss, augment_batch, train_proxy
from search_space.spec import ArchSpec
from test_search_data import make_imagefolder

TINY = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32), mlp_ratios=(2.0,) * 4,
                attn_blocks=(0, 0, 0, 1))
FID = Fidelity(classes=4, images_per_class=24, val_per_class=8, resolution=32, epochs=4,
               batch_size=16, lr=3e-3, warmup_epochs=0.0, eval_batch_size=64)
KEYS = {"epoch", "top1", "val_loss", "train_loss", "img_per_s", "seconds"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    src = make_imagefolder(root / "src", n_classes=4, n_train=24, n_val=8)
    return prepare_data(src, FID, cache_dir=str(root / "cache"))


def test_learns_toy_task_and_reports_every_epoch(toy):
    reports = []
    r = train_proxy(TINY, FID, toy, seed=0, device="cpu", report=reports.append, threads=1)
    assert [m["epoch"] for m in reports] == [1, 2, 3, 4]
    for m in reports:
        assert KEYS <= set(m) and all(math.isfinite(m[k]) for k in KEYS)
    assert reports[-1]["seconds"] >= reports[0]["seconds"] > 0
    assert r["epochs_done"] == 4 and r["top1"] == reports[-1]["top1"]
    assert r["train_seconds"] > 0 and r["dataset_id"] == toy.dataset_id
    # Colour classes are easy: well above chance (25%), and the loss went down.
    assert r["top1"] >= 60.0, reports
    assert reports[-1]["train_loss"] < reports[0]["train_loss"]


def test_deterministic_for_a_seed(toy):
    f = FID.replace(epochs=1)
    a = train_proxy(TINY, f, toy, seed=3, device="cpu", threads=1)
    b = train_proxy(TINY, f, toy, seed=3, device="cpu", threads=1)
    c = train_proxy(TINY, f, toy, seed=4, device="cpu", threads=1)
    assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    assert c["train_loss"] != a["train_loss"]


class _NaNModel(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * float("nan")


def test_nan_loss_raises(toy, monkeypatch):
    real = proxy.build_model
    monkeypatch.setattr(proxy, "build_model", lambda spec: _NaNModel(real(spec)))
    seen = []
    with pytest.raises(NonFiniteLoss, match="epoch 1, step 1/"):
        train_proxy(TINY, FID.replace(epochs=1), toy, seed=0, device="cpu", report=seen.append)
    assert seen == []


def test_resolution_mismatch_is_an_error(toy):
    with pytest.raises(ValueError, match="resolution"):
        train_proxy(TINY, FID.replace(resolution=64), toy, seed=0, device="cpu")


def test_augment_crop_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 4 * 4 * 3, dtype=torch.uint8).reshape(2, 4, 4, 3)
    # No padding: only flips; each output is the input or its mirror.
    y = augment_batch(x, g, padding=0, hflip=True)
    for i in range(2):
        assert torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(1))
    # Padding: each output is a shifted window of the zero-padded input (maybe mirrored).
    y = augment_batch(x, g, padding=1, hflip=True)
    xp = torch.nn.functional.pad(x, (0, 0, 1, 1, 1, 1))
    for i in range(2):
        windows = [xp[i, a:a + 4, b:b + 4] for a in range(3) for b in range(3)]
        assert any(torch.equal(y[i], w) or torch.equal(y[i], w.flip(1)) for w in windows)
