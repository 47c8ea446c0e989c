"""train_proxy: per-epoch reports, learns a learnable toy task, deterministic, NaN -> NonFiniteLoss."""
from __future__ import annotations

import math

import pytest
import torch

import search.proxy.train as proxy
from search.proxy.fidelity import Fidelity
from search.proxy.train import NonFiniteLoss, augment_batch, train_proxy
from search_space.spec import ArchSpec
from test_search_data import prepared_imagefolder

TINY = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32), mlp_ratios=(2.0,) * 4,
                attn_blocks=(0, 0, 0, 1))
FID = Fidelity(classes=4, images_per_class=24, val_per_class=8, resolution=32, epochs=4,
               batch_size=16, lr=3e-3, warmup_epochs=0.0, eval_batch_size=64)
KEYS = {"epoch", "top1", "val_loss", "train_loss", "img_per_s", "seconds"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return prepared_imagefolder(tmp_path_factory.mktemp("toy"), FID, n_classes=4, n_train=24, n_val=8)


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


# -- fidelity presets and --fidelity ------------------------------------------------------------
def test_presets_by_name():
    from search.options import parse_fidelity
    from search.proxy.fidelity import DEFAULT_FIDELITY, FIDELITY_PRESETS

    assert set(FIDELITY_PRESETS) == {"cpu-cifar", "imagenet-gpu"}
    # cpu-cifar IS today's default: same record, same key (stored trials stay comparable).
    assert parse_fidelity("cpu-cifar") == DEFAULT_FIDELITY == parse_fidelity(None)
    assert DEFAULT_FIDELITY.key == "37c02187f412d64b"
    gpu = parse_fidelity(" imagenet-gpu ")
    assert (gpu.classes, gpu.resolution, gpu.images_per_class) == (100, 128, 300)
    assert gpu.key != DEFAULT_FIDELITY.key


def test_unknown_preset_lists_the_presets(tmp_path, monkeypatch):
    from search.options import parse_fidelity
    from search_space.errors import UsageError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"^--fidelity 'imagenet': no such preset; presets: "
                                         r"cpu-cifar, imagenet-gpu \(or a JSON"):
        parse_fidelity("imagenet")
    with pytest.raises(UsageError, match=r"\"preset\": 'cifar' is no preset; presets: cpu-cifar, "):
        parse_fidelity('{"preset": "cifar"}')
    # A path-like word is a file, not a preset name.
    with pytest.raises(FileNotFoundError, match="fid.json: no such file"):
        parse_fidelity("fid.json")
    # A file named like a bare word is still read as a file.
    (tmp_path / "mine").write_text('{"epochs": 3}')
    assert parse_fidelity("mine").epochs == 3
    # Inline JSON that is no object is named as such (not looked up as a file "[]").
    with pytest.raises(UsageError, match=r"^--fidelity: expected a JSON object of Fidelity "
                                         r"fields, got list$"):
        parse_fidelity("[]")


def test_json_overrides_on_top_of_a_preset(tmp_path):
    from search.options import parse_fidelity
    from search.proxy.fidelity import DEFAULT_FIDELITY, FIDELITY_PRESETS
    from search_space.errors import UsageError

    f = parse_fidelity('{"preset": "imagenet-gpu", "epochs": 5}')
    assert f == FIDELITY_PRESETS["imagenet-gpu"].replace(epochs=5)
    # Without "preset" the overrides apply to the default (cpu-cifar), as before.
    assert parse_fidelity('{"epochs": 5}') == DEFAULT_FIDELITY.replace(epochs=5)
    path = tmp_path / "f.json"
    path.write_text('{"preset": "imagenet-gpu", "classes": 50}')
    assert parse_fidelity(str(path)).classes == 50
    assert parse_fidelity(str(path)).resolution == 128
    with pytest.raises(UsageError, match=r"fidelity.crop_padding=100: allowed integers 0..resolution/2=64"):
        parse_fidelity('{"preset": "imagenet-gpu", "crop_padding": 100}')


# -- how the engine runs on a device --------------------------------------------------------------
def test_engine_choice_per_device():
    from search.proxy.train import choose_engine

    h200 = choose_engine("cuda", (9, 0))
    assert h200.autocast_dtype == torch.bfloat16 and not h200.grad_scaler
    assert h200.channels_last and h200.pin_memory and h200.fused_adamw and h200.check_every > 1
    a100 = choose_engine("cuda", (8, 0))
    assert a100.autocast_dtype == torch.bfloat16 and not a100.grad_scaler
    for old_gpu in ((7, 0), (7, 5)):  # V100, T4: no native bf16 -> fp16 + loss scaling
        e = choose_engine("cuda", old_gpu)
        assert e.autocast_dtype == torch.float16 and e.grad_scaler
    cpu = choose_engine("cpu")
    assert cpu.autocast_dtype is None and not cpu.grad_scaler and not cpu.pin_memory
    assert cpu.channels_last and cpu.conv_matmul and cpu.fused_adamw and cpu.check_every == 1
    assert cpu.step_in_backward and not h200.step_in_backward and not e.step_in_backward
    mps = choose_engine("mps")
    assert mps.autocast_dtype is None and not mps.pin_memory and not mps.fused_adamw
    with pytest.raises(ValueError, match="compute capability"):
        choose_engine("cuda")


def test_amp_follows_the_engine_choice(monkeypatch):
    import search.proxy.train as T

    ac, scaler = T._amp(torch.device("cpu"))
    assert scaler is None and isinstance(ac(), type(__import__("contextlib").nullcontext()))
    monkeypatch.setattr(T.torch.cuda, "get_device_capability", lambda d=None: (7, 0))
    assert T.engine_for(torch.device("cuda")).autocast_dtype == torch.float16
    monkeypatch.setattr(T.torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    assert T.engine_for(torch.device("cuda")).autocast_dtype == torch.bfloat16


@pytest.mark.parametrize("cin,cout,k,stride,pad,groups,hw", [
    (16, 32, 1, 1, 0, 1, 5),   # pointwise
    (16, 32, 1, 1, 0, 1, 1),
    (16, 24, 3, 2, 1, 1, 2),   # one output pixel (2x2 -> 1x1 downsample)
    (16, 24, 3, 2, 1, 1, 1),
    (16, 16, 3, 1, 1, 16, 1),  # depthwise on tiny inputs
    (16, 16, 3, 1, 1, 16, 2),
    (16, 16, 5, 1, 2, 16, 2),
    (16, 16, 3, 1, 1, 16, 4),  # falls back to the convolution
    (16, 24, 3, 2, 1, 1, 4),
])
def test_matmul_conv_is_the_same_convolution(cin, cout, k, stride, pad, groups, hw):
    from search.proxy.train import MatmulConv2d

    torch.manual_seed(0)
    ref = torch.nn.Conv2d(cin, cout, k, stride, pad, groups=groups).to(memory_format=torch.channels_last)
    fast = torch.nn.Conv2d(cin, cout, k, stride, pad, groups=groups).to(memory_format=torch.channels_last)
    fast.load_state_dict(ref.state_dict())
    fast.__class__ = MatmulConv2d
    x = torch.randn(3, cin, hw, hw).contiguous(memory_format=torch.channels_last)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yf = ref(xr), fast(xf)
    assert yf.shape == yr.shape and yf.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(yf, yr, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(yr)
    yr.backward(g)
    yf.backward(g)
    torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_prepare_model_swaps_convs_on_cpu_only_and_keeps_the_state_dict():
    from search.proxy.train import MatmulConv2d, choose_engine, prepare_model
    from search_space.swiftformer import build_model

    spec = TINY.replace(num_classes=4, resolution=32)
    torch.manual_seed(0)
    plain = build_model(spec)
    torch.manual_seed(0)
    fast = prepare_model(build_model(spec), torch.device("cpu"), choose_engine("cpu"))
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(type(m) is MatmulConv2d for m in convs)
    assert list(fast.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    plain.eval(), fast.eval()
    torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), plain(x),
                               rtol=1e-4, atol=1e-5)
    nchw = prepare_model(build_model(spec), torch.device("cpu"), choose_engine("cpu"), channels_last=False)
    assert not any(type(m) is MatmulConv2d for m in nchw.modules())


def test_deferred_nan_check_names_the_step_window(toy, monkeypatch):
    """On CUDA the loss is checked every check_every steps (no host sync per step); the error
    names the window. Simulated on CPU by patching the engine choice."""
    import dataclasses

    real_engine, real_build = proxy.engine_for, proxy.build_model
    monkeypatch.setattr(proxy, "engine_for", lambda d: dataclasses.replace(real_engine(d), check_every=3))
    monkeypatch.setattr(proxy, "build_model", lambda spec: _NaNModel(real_build(spec)))
    with pytest.raises(NonFiniteLoss, match=r"epoch 1, steps 1-3/6 "):
        train_proxy(TINY, FID.replace(epochs=1), toy, seed=0, device="cpu")


def test_gradients_are_freed_right_after_each_step(toy, monkeypatch):
    """Issue 19 (memory): no parameter-sized gradient set stays alive through the next forward
    or the epoch's BN recalibration + eval -- every forward of train_proxy sees no gradients.
    Checked with the step after backward (the CUDA engine's way; on CPU the step in backward
    frees them too, see the next test)."""
    import dataclasses

    grads_alive: list[bool] = []
    real, real_engine = proxy.build_model, proxy.engine_for
    monkeypatch.setattr(proxy, "engine_for",
                        lambda d: dataclasses.replace(real_engine(d), step_in_backward=False))

    def build(spec):
        model = real(spec)
        model.register_forward_pre_hook(
            lambda m, args: grads_alive.append(any(p.grad is not None for p in m.parameters())))
        return model

    monkeypatch.setattr(proxy, "build_model", build)
    train_proxy(TINY, FID.replace(epochs=2), toy, seed=0, device="cpu", threads=1)
    steps = 2 * (len(toy.train_y) // FID.batch_size)
    assert len(grads_alive) > steps  # training steps + recalibration + eval batches
    assert not any(grads_alive), grads_alive


def test_optimizer_step_in_backward_is_bit_identical_and_frees_gradients(toy, monkeypatch):
    """Issue 19 (memory): on CPU the AdamW step runs during backward, chunk by chunk, so the
    whole gradient set is never alive; the numbers are those of one step after backward."""
    import dataclasses

    alive: list[int] = []
    real_build, real_engine = proxy.build_model, proxy.engine_for

    def build(spec):
        model = real_build(spec)
        params = list(model.parameters())
        for p in params:  # registered before the engine's hooks: sees the state before a step
            p.register_post_accumulate_grad_hook(
                lambda _: alive.append(sum(q.grad is not None for q in params)))
        return model

    monkeypatch.setattr(proxy, "build_model", build)
    # TINY is small: chunks of >= 2**11 elements so that it is cut into several chunks.
    monkeypatch.setattr(proxy._StepInBackward.__init__, "__defaults__", (16, 2 ** 11))
    f = FID.replace(epochs=2)
    a = train_proxy(TINY, f, toy, seed=0, device="cpu", threads=1)
    n_params = len(list(real_build(TINY).parameters()))
    assert alive and max(alive) <= n_params // 2, (max(alive), n_params)
    assert proxy.choose_engine("cpu").step_in_backward

    monkeypatch.setattr(proxy, "engine_for",
                        lambda d: dataclasses.replace(real_engine(d), step_in_backward=False))
    alive.clear()
    b = train_proxy(TINY, f, toy, seed=0, device="cpu", threads=1)
    assert max(alive) == n_params  # one step after backward: every gradient alive at its end
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert (a["top1"], a["val_loss"]) == (b["top1"], b["val_loss"])


def test_a_finished_or_diverged_run_leaves_no_model_alive(toy, monkeypatch):
    """Issue 19 (memory): a reused worker must not keep the last trial's model, gradients or
    AdamW moments (the step-in-backward hooks on the parameters point back at them)."""
    import gc
    import weakref

    weights: list[weakref.ref] = []
    real = proxy.build_model

    def build(spec):
        model = real(spec)
        weights.extend(weakref.ref(p) for p in model.parameters())
        return model

    monkeypatch.setattr(proxy, "build_model", build)
    train_proxy(TINY, FID.replace(epochs=1), toy, seed=0, device="cpu", threads=1)
    monkeypatch.setattr(proxy, "build_model", lambda spec: _NaNModel(build(spec)))
    with pytest.raises(NonFiniteLoss):
        train_proxy(TINY, FID.replace(epochs=1), toy, seed=0, device="cpu", threads=1)
    gc.collect()
    n = len(list(real(TINY).parameters()))
    assert len(weights) == 2 * n and [w for w in weights if w() is not None] == []
