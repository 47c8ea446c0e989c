"""The weight-sharing supernet: extraction == subnet forward, the sandwich step trains shared
weights, resume after SIGKILL is exact, channel reordering, bad settings fail in one line."""
from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from search.proxy.fidelity import Fidelity
from search.proxy.supernet import training
from search.proxy.supernet.config import (SupernetConfig, largest, proxy_space, smallest,
                                          to_proxy)
from search.proxy.supernet.model import Supernet, position_kinds
from search.proxy.supernet.scoring import score_subnets
from search.proxy.supernet.training import CHECKPOINT_NAME, load_supernet, train_supernet
from search_space.errors import NotFoundError, UsageError
from search_space.space import DEFAULT_SPACE, SearchSpace
from search_space.spec import PRESETS
from search_space.swiftformer import build_model
from test_search_data import prepared_imagefolder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny space with every kind of elasticity: depth, width (incl. the stem), MLP ratio and all
# four attention placements.
TINY = SearchSpace(depths=((1, 2),) * 4, widths=((8, 12), (8, 16), (16, 24), (16, 32)),
                   mlp_ratios=(2.0, 3.0), resolutions=(32,), num_classes=4)
FID = Fidelity(classes=4, images_per_class=12, val_per_class=4, resolution=32,
               eval_batch_size=64, bn_recal_images=16)
CFG = SupernetConfig(epochs=2, batch_size=16, num_random=1, warmup_epochs=0.0, recal_images=16,
                     width_divisor=1)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return prepared_imagefolder(tmp_path_factory.mktemp("toy"), FID, n_classes=4, n_train=12, n_val=4)


def _specs(space: SearchSpace, n: int = 6) -> list:
    rng = random.Random(1)
    return [largest(space), smallest(space)] + [space.sample(rng) for _ in range(n)]


# -- extraction ----------------------------------------------------------------------------------
def test_extracted_subnet_gives_the_supernet_logits():
    torch.manual_seed(0)
    net = Supernet(TINY)
    net.train()
    for spec in _specs(TINY):  # give the BatchNorm buffers distinct, non-trivial statistics
        net.set_active(spec)
        net(torch.randn(8, 3, 32, 32))
    net.eval()
    x = torch.randn(3, 3, 32, 32)
    for spec in _specs(TINY, 10):
        model = build_model(spec)
        model.load_state_dict(net.extract(spec), strict=True)
        model.eval()
        net.set_active(spec)
        with torch.no_grad():
            torch.testing.assert_close(net(x), model(x), atol=1e-5, rtol=0)


def test_presets_extract_at_proxy_size_from_the_default_space():
    space = proxy_space(DEFAULT_SPACE, num_classes=10, resolution=32, width_divisor=4)
    net = Supernet(space).eval()
    x = torch.randn(2, 3, 32, 32)
    for name in ("XS", "L3"):
        spec = to_proxy(PRESETS[name], 10, 32, 4)
        assert spec.widths == tuple(w // 4 for w in PRESETS[name].widths)
        model = build_model(spec).eval()
        model.load_state_dict(net.extract(spec), strict=True)
        net.set_active(spec)
        with torch.no_grad():
            torch.testing.assert_close(net(x), model(x), atol=1e-5, rtol=0)


def test_positions_hold_only_the_encoders_some_member_uses():
    space = SearchSpace(depths=TINY.depths, widths=TINY.widths, mlp_ratios=TINY.mlp_ratios,
                        attn_modes=("last1",), resolutions=(32,), num_classes=4)
    # depth 1 or 2 with one trailing attention block: position 0 is attention (depth 1) or
    # conv (depth 2), position 1 only ever attention
    assert position_kinds(space, 0, 0) == {"conv", "attn"}
    assert position_kinds(space, 0, 1) == {"attn"}
    keys = Supernet(space).state_dict().keys()
    assert "stages.0.blocks.1.attn.w_g" in keys and "stages.0.blocks.1.dwconv.weight" not in keys


# -- the sandwich step -----------------------------------------------------------------------------
def _run(toy, cfg=CFG):
    return training._Run(cfg, FID, toy, TINY, seed=0, dev=torch.device("cpu"), channels_last=False)


def _grads(run, x, y, subnets):
    run.opt.step = lambda *a, **k: None  # keep the weights: compare the accumulated gradients
    training._sandwich_step(run, x, y, subnets)
    return {n: p.grad.clone() if p.grad is not None else None for n, p in run.net.named_parameters()}


def test_sandwich_step_trains_shared_weights_from_every_subnet(toy):
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
    alone = _grads(_run(toy), x, y, [])
    both = _grads(_run(toy), x, y, [smallest(_run(toy).pspace)])
    w = "stages.2.downsample.proj.weight"  # (24, 16, 3, 3) in the supernet; (16, 8) smallest
    shared, only_largest = (slice(0, 16), slice(0, 8)), (slice(16, 24), slice(8, 16))
    # the smallest subnet adds its gradient to the channels it shares with the largest ...
    assert not torch.allclose(both[w][shared], alone[w][shared])
    # ... and nothing to the channels only the largest uses
    torch.testing.assert_close(both[w][only_largest], alone[w][only_largest], rtol=0, atol=0)
    # the largest alone never touches conv encoders at positions where it uses attention
    assert alone["stages.0.blocks.0.pwconv1.weight"] is None
    assert both["stages.0.blocks.0.pwconv1.weight"] is not None


def test_a_step_moves_the_weights_the_smallest_and_largest_share(toy):
    run = _run(toy)
    key = "stem.0.weight"
    before = run.net.state_dict()[key].clone()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 4, (16,))
    loss_max, loss_others = training._sandwich_step(run, x, y, [run.net.min_spec])
    after = run.net.state_dict()[key]
    half = run.net.min_spec.widths[0] // 2
    assert torch.isfinite(loss_max) and torch.isfinite(loss_others)
    assert not torch.equal(after[:half], before[:half])


# -- training, checkpoint, resume ------------------------------------------------------------------
def test_training_is_deterministic_and_scores_subnets(toy, tmp_path):
    net, a = train_supernet(CFG.replace(epochs=1), FID, toy, seed=0, space=TINY, device="cpu",
                            channels_last=False)
    _, b = train_supernet(CFG.replace(epochs=1), FID, toy, seed=0, space=TINY, device="cpu",
                          channels_last=False)
    _, c = train_supernet(CFG.replace(epochs=1), FID, toy, seed=1, space=TINY, device="cpu",
                          channels_last=False)
    assert a["history"][0]["step_losses"] == b["history"][0]["step_losses"]
    assert a["history"][0]["step_losses"] != c["history"][0]["step_losses"]
    pspace = proxy_space(TINY, toy.num_classes, 32)
    scores = score_subnets(net, [largest(pspace), smallest(pspace)], toy, FID, recal_images=16)
    assert [s["arch_hash"] for s in scores] == [largest(pspace).arch_hash, smallest(pspace).arch_hash]
    assert all(0 <= s["top1"] <= 100 and s["cpu_seconds"] > 0 for s in scores)


_KILLED_RUN = textwrap.dedent("""
    import os, pickle, signal, sys
    from search.proxy.supernet.training import train_supernet
    cfg, fid, data, space, ckdir = pickle.load(open(sys.argv[1], "rb"))
    def die(m):
        if m["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGKILL)
    train_supernet(cfg, fid, data, seed=5, space=space, device="cpu", threads=1,
                   channels_last=False, checkpoint_dir=ckdir, report=die)
""")


def _optimizer_state(path):
    return torch.load(path, weights_only=True)["optimizer"]


def _assert_same_state(a, b):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        for name, v in a["state"][k].items():
            torch.testing.assert_close(v, b["state"][k][name], rtol=0, atol=0)


@pytest.mark.timeout(120)
def test_resume_after_sigkill_continues_exactly(toy, tmp_path):
    killed, full = tmp_path / "killed", tmp_path / "full"
    args = tmp_path / "args.pkl"
    args.write_bytes(pickle.dumps((CFG, FID, toy, TINY, str(killed))))
    r = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(args)], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
                       timeout=100)
    assert r.returncode == -signal.SIGKILL, r.stderr
    ck_after_kill = killed / CHECKPOINT_NAME
    assert torch.load(ck_after_kill, weights_only=True)["epoch"] == 1

    epoch1 = {}

    def keep_epoch1(m):
        if m["epoch"] == 1:
            epoch1["opt"] = _optimizer_state(full / CHECKPOINT_NAME)

    net_full, info_full = train_supernet(CFG, FID, toy, seed=5, space=TINY, device="cpu", threads=1,
                                         channels_last=False, checkpoint_dir=str(full),
                                         report=keep_epoch1)
    _assert_same_state(_optimizer_state(ck_after_kill), epoch1["opt"])
    net_res, info_res = train_supernet(CFG, FID, toy, seed=5, space=TINY, device="cpu", threads=1,
                                       channels_last=False, checkpoint_dir=str(killed))
    assert info_res["resumed_at_epoch"] == 1 and info_res["epochs_done"] == 2
    assert info_res["history"][1]["step_losses"] == info_full["history"][1]["step_losses"]
    _assert_same_state(_optimizer_state(killed / CHECKPOINT_NAME),
                       _optimizer_state(full / CHECKPOINT_NAME))
    for k, v in net_full.state_dict().items():
        torch.testing.assert_close(net_res.state_dict()[k], v, rtol=0, atol=0)
    # a finished run only loads; load_supernet gives the same weights
    _, again = train_supernet(CFG, FID, toy, seed=5, space=TINY, device="cpu",
                              channels_last=False, checkpoint_dir=str(killed))
    assert again["resumed_at_epoch"] == 2 and again["cpu_seconds"] == info_res["cpu_seconds"]
    loaded, meta = load_supernet(str(killed / CHECKPOINT_NAME))
    assert meta["epoch"] == 2 and meta["seed"] == 5
    for k, v in net_full.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)


def test_resume_refuses_a_checkpoint_of_another_setting(toy, tmp_path):
    cfg = CFG.replace(epochs=1)
    train_supernet(cfg, FID, toy, seed=0, space=TINY, device="cpu", channels_last=False,
                   checkpoint_dir=str(tmp_path))
    with pytest.raises(UsageError, match=r"was trained with a different seed \(0 != 1\)"):
        train_supernet(cfg, FID, toy, seed=1, space=TINY, device="cpu",
                       channels_last=False, checkpoint_dir=str(tmp_path))
    with pytest.raises(UsageError, match=r"was trained with a different config"):
        train_supernet(cfg.replace(kd_weight=0.25), FID, toy, seed=0, space=TINY, device="cpu",
                       channels_last=False, checkpoint_dir=str(tmp_path))


# -- channel order ---------------------------------------------------------------------------------
def test_reorder_hidden_units_preserves_the_largest_and_sorts_by_importance():
    torch.manual_seed(0)
    net = Supernet(TINY).eval()
    opt = torch.optim.AdamW(net.parameters())
    x = torch.randn(2, 3, 32, 32)
    net(x).sum().backward()
    opt.step()
    fc1, fc2 = net.stages[3].blocks[1].linear.fc1.weight, net.stages[3].blocks[1].linear.fc2.weight
    idx = fc2.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
    assert not torch.equal(idx, torch.arange(len(idx)))
    w1, w2, m1, m2 = (t.detach().clone() for t in (fc1, fc2, opt.state[fc1]["exp_avg"],
                                                  opt.state[fc2]["exp_avg_sq"]))
    with torch.no_grad():
        before = net(x)
    net.reorder_hidden_units(opt)
    with torch.no_grad():
        torch.testing.assert_close(net(x), before, atol=1e-5, rtol=0)
    importance = fc2.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])
    # producer rows and consumer columns moved together, and Adam's moments with them
    torch.testing.assert_close(fc1.detach(), w1[idx], rtol=0, atol=0)
    torch.testing.assert_close(fc2.detach(), w2[:, idx], rtol=0, atol=0)
    torch.testing.assert_close(opt.state[fc1]["exp_avg"], m1[idx], rtol=0, atol=0)
    torch.testing.assert_close(opt.state[fc2]["exp_avg_sq"], m2[:, idx], rtol=0, atol=0)


# -- bad settings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, allowed", [
    ("epochs", 0, "integers >= 1"), ("num_random", -1, "integers >= 0"),
    ("kd_weight", 1.5, r"numbers in \[0, 1\]"), ("batch_size", 1, "integers >= 2"),
    ("reorder", "random", "one of"), ("lr", 0.0, "numbers > 0"),
    ("width_divisor", 2.0, "integers >= 1"), ("kd_temperature", float("nan"), "finite numbers"),
    ("score", "accuracy", "one of"),
])
def test_bad_supernet_settings_are_one_line_usage_errors(field, value, allowed):
    with pytest.raises(UsageError, match=rf"^supernet\.{field}=.*: allowed {allowed}") as e:
        SupernetConfig(**{field: value})
    assert "\n" not in str(e.value)


def test_bad_inputs_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError, match=r"unknown field\(s\) \['epoch'\]"):
        SupernetConfig.from_json('{"epoch": 3}')
    with pytest.raises(UsageError, match=r"width_divisor=8: does not divide width 40 of stage 0"):
        proxy_space(DEFAULT_SPACE, 10, 32, width_divisor=8)
    net = Supernet(TINY)
    outside = largest(TINY).replace(widths=(8, 16, 16, 64))
    with pytest.raises(UsageError, match=r"is not a subnet of this supernet: widths\[3\]=64"):
        net.extract(outside)
    with pytest.raises(UsageError, match=r"is not a subnet"):
        net.set_active(outside)
    with pytest.raises(NotFoundError, match=r"no such file"):
        load_supernet(str(tmp_path / "missing.pt"))
    assert SupernetConfig.from_json(SupernetConfig(epochs=3).to_json()) == SupernetConfig(epochs=3)
    assert SupernetConfig(lr=1).key == SupernetConfig(lr=1.0).key


# -- the prepared GPU script -------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_gpu_script_smoke_runs_on_cpu_and_writes_its_json(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_supernet.py"), "--smoke",
                        "--seeds", "0", "--candidates", "2", "--cache-dir", str(tmp_path / "cache")],
                       cwd=ROOT, env={**os.environ, "OUT": str(out), "CUDA_VISIBLE_DEVICES": ""},
                       capture_output=True, text=True, timeout=170)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "seed 0: tau" in r.stdout and "img/s" in r.stdout
    doc = json.loads((out / "gpu_supernet.json").read_text())
    assert doc["device"] == "cpu" and len(doc["seeds"]) == 1
    assert set(doc["seeds"][0]["top1"]) == {"XS", "S", "L1", "L3"}
