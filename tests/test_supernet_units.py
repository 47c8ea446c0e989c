"""Unit tests of the weight-sharing supernet that pin what mutation testing found unpinned
(bench/mutation.py supernet_model / supernet_train; notes/testing.md "supernet survivors").

The extraction tests of tests/test_supernet.py compare logits of a freshly initialised store,
where every bias is 0, the attention/MLP layer scales are 1e-5 and the head's weights have
std 0.02: the logits are ~1e-3, so a wrong attention, a dropped bias or a wrong hidden width
moved them by less than the tolerance. Here every weight, bias, layer scale and BatchNorm
statistic is random and O(1) before the supernet's forward is compared with timm's."""
from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import random
import re
import time

import numpy as np
import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy

from search.distributed import DistContext
from search.proxy.fidelity import Fidelity
from search.proxy.supernet import scoring, training
from search.proxy.supernet.config import SupernetConfig, proxy_space, to_proxy
from search.proxy.supernet.model import Supernet, _subnet_sizes, position_kinds
from search.proxy.supernet.scoring import reference_specs, reference_tau, score_subnets
from search.proxy.supernet.training import CHECKPOINT_NAME, load_supernet, train_supernet
from search.proxy.train import (NonFiniteLoss, augment_batch, evaluate, normalize,
                                recalibrate_bn)
from search_space.errors import UsageError
from search_space.space import DEFAULT_SPACE, SearchSpace
from search_space.spec import PRESETS
from search_space.swiftformer import build_model
from test_search_data import prepared_imagefolder

pytestmark = pytest.mark.timeout(60)

# Every kind of elasticity (depth, width incl. the stem, MLP ratio, all four attention
# placements), no distillation head and a non-default attention layer scale: a head_dist or a
# layer scale the store makes up would show.
SPACE = SearchSpace(depths=((1, 2),) * 4, widths=((8, 12), (8, 16), (16, 24), (16, 32)),
                    mlp_ratios=(2.0, 3.0), resolutions=(32,), num_classes=5, distillation=False,
                    fixed={"layer_scale_init": 0.5})


def _specs(space: SearchSpace, n: int, seed: int = 3) -> list:
    s = space.sample_many(n, seed=seed)
    return [*s, Supernet(space).max_spec, Supernet(space).min_spec]


@torch.no_grad()
def _randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and BatchNorm statistic random and O(1)."""
    g = torch.Generator().manual_seed(seed)

    def rnd(t):
        return torch.randn(t.shape, generator=g)

    for name, p in net.named_parameters():
        if name.endswith(".bias"):
            p.copy_(0.2 * rnd(p))
        elif p.dim() == 1:  # layer scales (gamma), BatchNorm weights
            p.copy_(1 + 0.3 * rnd(p))
        else:
            p.copy_(rnd(p) / math.sqrt(p[0].numel()))
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.3 * rnd(m.running_mean))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return net


def _built(net: Supernet, spec) -> torch.nn.Module:
    model = build_model(spec)
    model.load_state_dict(net.extract(spec), strict=True)
    return model


# -- the functional forward == timm's blocks ------------------------------------------------------
def test_forward_equals_timm_with_random_weights_biases_and_layer_scales():
    net = _randomize(Supernet(SPACE)).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for spec in _specs(SPACE, 8):
        model = _built(net, spec).eval()
        net.set_active(spec)
        with torch.no_grad():
            want = model(x)
            got = net(x)
        assert want.abs().max() > 0.5  # the comparison sees every block, not ~1e-3 logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("momentum", [0.1, None])  # None: recalibrate_bn's cumulative average
def test_batchnorm_trains_and_counts_like_nn_batchnorm_on_the_active_channels(momentum):
    net = _randomize(Supernet(SPACE))
    spec = _specs(SPACE, 1, seed=7)[0]
    model = _built(net, spec)
    for m in [*net.modules(), *model.modules()]:
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = momentum
    net.set_active(spec)
    g = torch.Generator().manual_seed(2)
    net.train(), model.train()
    for _ in range(3):  # train mode: batch statistics, running statistics updated
        x = torch.randn(4, 3, 32, 32, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-4)
    net.eval(), model.eval()
    with torch.no_grad():  # eval mode: running statistics used, nothing counted
        x = torch.randn(4, 3, 32, 32, generator=g)
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-4)
    got, want = net.extract(spec), model.state_dict()
    for k, v in want.items():
        if k.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(got[k], v, rtol=1e-4, atol=1e-5, msg=k)
        elif k.endswith("num_batches_tracked"):
            assert int(got[k]) == int(v) == 3, k


# -- the store: the largest network, no more --------------------------------------------------------
def test_store_is_the_union_of_the_members_at_the_largest_sizes():
    net = Supernet(SPACE)
    store = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    big = net.max_spec
    union: dict[str, tuple] = {}
    # the entries of a stage depend only on its depth and attention placement
    for d in (1, 2):
        for a in range(d + 1):
            spec = big.replace(depths=(d,) * 4, attn_blocks=(a,) * 4)
            union.update({k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()})
    assert store == union
    assert net.head_dist is None


def test_positions_hold_no_encoder_beyond_the_depths_that_reach_them():
    conv_only = SearchSpace(depths=((1, 2),) * 4, widths=SPACE.widths, mlp_ratios=(2.0,),
                            attn_modes=("none",), resolutions=(32,), num_classes=5)
    assert position_kinds(conv_only, 0, 0) == {"conv"}
    assert position_kinds(conv_only, 0, 1) == {"conv"}
    assert position_kinds(conv_only, 0, 2) == set()
    assert "stages.0.blocks.1.attn.w_g" not in Supernet(conv_only).state_dict()


def test_initial_weights_follow_swiftformer_and_the_layer_scale_settings():
    net = Supernet(SPACE, conv_layer_scale_init=0.25)
    conv_ls, attn_ls = [], []
    for m in net.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            assert torch.count_nonzero(m.bias) == 0
    for stage in net.stages:
        for blk in stage.blocks:
            if "conv" in blk.kinds:
                conv_ls.append(blk.layer_scale.gamma)
            if "attn" in blk.kinds:
                attn_ls += [blk.layer_scale_1.gamma, blk.layer_scale_2.gamma]
    assert conv_ls and attn_ls
    assert all(torch.all(g == 0.25) for g in conv_ls)
    assert all(torch.all(g == 0.5) for g in attn_ls)  # SPACE.fixed layer_scale_init
    default = Supernet(SPACE)  # timm's conv-encoder layer scale
    assert all(torch.all(b.layer_scale.gamma == 1.0)
               for s in default.stages for b in s.blocks if "conv" in b.kinds)


def test_a_head_needs_a_class():
    one = SearchSpace(depths=SPACE.depths, widths=SPACE.widths, resolutions=(32,), num_classes=1)
    assert Supernet(one).head.out_features == 1
    none = SearchSpace(depths=SPACE.depths, widths=SPACE.widths, resolutions=(32,), num_classes=0)
    with pytest.raises(UsageError) as e:
        Supernet(none)
    assert str(e.value) == ("supernet: space.num_classes=0: allowed >= 1 (the supernet is "
                            "trained with a classifier head)")


def test_state_dict_entries_without_a_rule_are_refused():
    spec = Supernet(SPACE).max_spec
    with pytest.raises(KeyError, match=r"^'supernet state dict: unexpected entry stem\.0\.scale'$"):
        _subnet_sizes("stem.0.scale", 1, spec)
    with pytest.raises(KeyError, match=r"^'supernet state dict: no slicing rule for extra\.weight'$"):
        _subnet_sizes("extra.weight", 2, spec)


@torch.no_grad()
def test_reorder_without_an_optimizer_keeps_the_largest_subnet():
    net = _randomize(Supernet(SPACE)).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    before = net(x)
    net.reorder_hidden_units()
    torch.testing.assert_close(net(x), before, rtol=1e-4, atol=1e-4)
    fc2 = net.stages[3].blocks[1].linear.fc2.weight
    importance = fc2.abs().sum(dim=(0, 2, 3))
    assert torch.all(importance[:-1] >= importance[1:])


# -- the proxy space and specs ---------------------------------------------------------------------
def test_proxy_space_keeps_every_choice_but_widths_resolution_and_classes():
    space = SearchSpace(depths=((2, 3),) * 4, widths=((32, 48), (32, 64), (64, 96), (96, 128)),
                        mlp_ratios=(3.0, 4.0), attn_modes=("last1", "all"),
                        resolutions=(160, 224), num_classes=1000, distillation=False,
                        fixed={"layer_scale_init": 0.5})
    assert proxy_space(space, num_classes=10, resolution=32, width_divisor=4) == SearchSpace(
        depths=((2, 3),) * 4, widths=((8, 12), (8, 16), (16, 24), (24, 32)), mlp_ratios=(3.0, 4.0),
        attn_modes=("last1", "all"), resolutions=(32,), num_classes=10, distillation=False,
        fixed={"layer_scale_init": 0.5})


def test_width_divisor_errors_name_the_width_and_the_stage():
    allowed = "; allowed: common divisors of all widths (1 always works)"
    with pytest.raises(UsageError) as e:  # 40 / 8 = 5: the stem's first conv needs half of it
        proxy_space(DEFAULT_SPACE, 10, 32, width_divisor=8)
    assert str(e.value) == ("supernet.width_divisor=8: does not divide width 40 of stage 0 of the "
                            "space into an even width" + allowed)
    with pytest.raises(UsageError) as e:
        proxy_space(DEFAULT_SPACE, 10, 32, width_divisor=3)
    assert str(e.value) == ("supernet.width_divisor=3: does not divide width 32 of stage 0 of the "
                            "space" + allowed)
    later = SearchSpace(depths=SPACE.depths, widths=((16,), (16, 20), (16,), (16,)),
                        resolutions=(32,))
    with pytest.raises(UsageError) as e:
        proxy_space(later, 10, 32, width_divisor=8)
    assert str(e.value) == ("supernet.width_divisor=8: does not divide width 20 of stage 1 of the "
                            "space" + allowed)


def test_to_proxy_divides_by_one_unless_told_and_names_a_bad_divisor():
    spec = Supernet(SPACE).max_spec.replace(widths=(16, 18, 24, 32))
    assert to_proxy(spec, 3, 64).widths == (16, 18, 24, 32)
    assert to_proxy(spec, 3, 64, 2) == spec.replace(widths=(8, 9, 12, 16), num_classes=3,
                                                     resolution=64)
    with pytest.raises(UsageError) as e:
        to_proxy(spec, 3, 64, 4)
    assert str(e.value) == (f"supernet.width_divisor=4: does not divide the widths "
                            f"[16, 18, 24, 32] of spec {spec.arch_hash}")


# -- the config's bounds --------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, allowed", [
    ("kd_temperature", 0.0, "numbers > 0"), ("label_smoothing", 1.0, "numbers in [0, 1)"),
    ("batch_size", 1, "integers >= 2 (BatchNorm needs a batch)"),
    ("kd_weight", 1.01, "numbers in [0, 1]"), ("recal_images", -1, "integers >= 0"),
])
def test_config_bounds_are_exact(field, value, allowed):
    with pytest.raises(UsageError) as e:
        SupernetConfig(**{field: value})
    assert str(e.value) == f"supernet.{field}={value!r}: allowed {allowed}"


def test_config_accepts_the_edges_of_each_range():
    cfg = SupernetConfig(num_random=0, recal_images=0, batch_size=2, kd_weight=1.0,
                         label_smoothing=0.99, kd_temperature=1e-3)
    assert (cfg.num_random, cfg.recal_images, cfg.batch_size) == (0, 0, 2)


def test_config_input_errors_name_the_supernet_config():
    with pytest.raises(UsageError, match=r"^supernet config: unknown field\(s\) \['epoch'\]"):
        SupernetConfig.from_dict({"epoch": 3})
    with pytest.raises(UsageError, match=r"^supernet config: not valid JSON \("):
        SupernetConfig.from_json("{")
    with pytest.raises(UsageError, match=r"^supernet config: unknown field\(s\) \['epoch'\]"):
        SupernetConfig.from_json('{"epoch": 3}')


# == training and scoring (bench/mutation.py supernet_train) =====================================
# (non-default attention modes, distillation and fixed fields: a checkpoint's space must
# come back with all of them)
TINY = SearchSpace(depths=((1, 2),) * 4, widths=((8, 12), (8, 16), (16, 24), (16, 32)),
                   mlp_ratios=(2.0, 3.0), attn_modes=("none", "last1", "all"), resolutions=(32,),
                   num_classes=4, distillation=False, fixed={"layer_scale_init": 0.5})
FID = Fidelity(classes=4, images_per_class=12, val_per_class=4, resolution=32,
               eval_batch_size=64, bn_recal_images=16)
# 48 train images, batch 20: 2 steps per epoch, the ragged 8 images dropped
CFG = SupernetConfig(epochs=2, batch_size=20, num_random=2, warmup_epochs=0.5, recal_images=16,
                     width_divisor=1, kd_weight=0.25, kd_temperature=2.0)
CPU = torch.device("cpu")
SUMMARY_KEYS = {"epochs_done", "resumed_at_epoch", "steps", "cpu_seconds", "train_seconds",
                "loss_largest", "loss_subnets", "params", "device", "threads", "channels_last",
                "world_size", "history", "config", "config_key", "fidelity_key", "dataset_id",
                "seed", "space", "space_key"}
EPOCH_KEYS = {"epoch", "loss_largest", "loss_subnets", "step_losses", "lr", "seconds",
              "cpu_seconds", "img_per_s", "subnet_img_per_s"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return prepared_imagefolder(tmp_path_factory.mktemp("toy"), FID, n_classes=4, n_train=12,
                                n_val=4)


def _run(toy, cfg=CFG, ctx=None, seed=0):
    return training._Run(cfg, FID, toy, TINY, seed, CPU, False, ctx)


def test_kd_loss_is_the_soft_cross_entropy_to_the_teacher_scaled_by_t_squared():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[0.5, 1.5, -1.0], [2.0, 0.0, 1.0]]

    def softmax(row, temp):
        e = [math.exp(v / temp) for v in row]
        return [v / sum(e) for v in e]

    def want(temp):
        rows = [-sum(p * math.log(q) for p, q in zip(softmax(tr, temp), softmax(sr, temp)))
                for sr, tr in zip(s, t)]
        return temp ** 2 * sum(rows) / len(rows)

    student, teacher = torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64)
    assert training.kd_loss(student, teacher, 2.0).item() == pytest.approx(want(2.0), rel=1e-12)
    assert training.kd_loss(student, teacher).item() == pytest.approx(want(1.0), rel=1e-12)


def test_the_run_is_set_up_from_the_config(toy):
    run = _run(toy)
    assert (run.bs, run.rank_bs, run.steps_per_epoch, run.rank, run.world) == (20, 20, 2, 0, 1)
    s = run.sched
    assert (s.t_initial, s.warmup_t, s.lr_min, s.warmup_lr_init) == (4, 1, 1e-5, 1e-5)
    assert run.opt.param_groups[0]["lr"] == 1e-5  # warmup starts at warmup_lr
    assert {g["weight_decay"] for g in run.opt.param_groups} == {0.0, 0.05}
    assert type(run.opt).__name__ == "AdamW" and run.opt.defaults["lr"] == 2e-3
    assert run.ce.smoothing == 0.1
    assert type(_run(toy, CFG.replace(label_smoothing=0.0)).ce) is torch.nn.CrossEntropyLoss
    assert _run(toy, CFG.replace(warmup_epochs=10.0)).sched.warmup_t == 3  # at most total - 1
    assert _run(toy, CFG.replace(batch_size=64)).bs == 48  # at most the train images
    assert _run(toy, CFG.replace(batch_size=48, epochs=1, warmup_epochs=5.0)).sched.warmup_t == 0
    wide = dataclasses.replace(TINY, widths=tuple(tuple(2 * w for w in ws) for ws in TINY.widths))
    halved = training._Run(CFG.replace(width_divisor=2), FID, toy, wide, 0, CPU, False)
    assert halved.pspace == proxy_space(TINY, 4, 32) == proxy_space(wide, 4, 32, 2)
    scaled = _run(toy, CFG.replace(conv_layer_scale_init=0.25)).net
    assert all(torch.all(b.layer_scale.gamma == 0.25)
               for st in scaled.stages for b in st.blocks if "conv" in b.kinds)
    # the same seed gives the same store, another seed another one
    for k, v in _run(toy).net.state_dict().items():
        assert torch.equal(v, run.net.state_dict()[k]), k
    assert not torch.equal(_run(toy, seed=1).net.stem[0].weight, run.net.stem[0].weight)
    cl = training._Run(CFG, FID, toy, TINY, 0, CPU, True)
    assert cl.net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not run.net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_a_global_batch_is_split_over_the_ranks(toy):
    with pytest.raises(UsageError) as e:
        _run(toy, ctx=DistContext(0, 3, 0, CPU))
    assert str(e.value) == ("supernet batch_size 20 (at most the 48 train images) is not divisible "
                            "by the 3 processes: the global batch is split evenly over the ranks")
    run = _run(toy, ctx=DistContext(1, 2, 1, CPU))
    assert (run.rank, run.world, run.bs, run.rank_bs) == (1, 2, 20, 10)


def _expected_batches(run, toy, n_steps, share=slice(None)):
    """The batches and sandwiches of the run's next epoch, drawn from copies of its RNGs."""
    gen = torch.Generator()
    gen.set_state(run.gen.get_state())
    rng = random.Random()
    rng.setstate(run.arch_rng.getstate())
    perm = torch.randperm(len(toy.train_y), generator=gen).numpy()
    out = []
    for b in range(n_steps):
        idx = np.sort(perm[b * run.bs:(b + 1) * run.bs])
        x = augment_batch(torch.from_numpy(np.ascontiguousarray(toy.train_x[idx])), gen,
                          FID.crop_padding, FID.hflip)
        y = torch.from_numpy(np.asarray(toy.train_y, dtype=np.int64)[idx])
        out.append((normalize(x[share], False), y[share],
                    [run.net.min_spec] + [run.pspace.sample(rng) for _ in range(2)]))
    return out


def _record_steps(monkeypatch, real=True):
    calls = []
    step = training._sandwich_step

    def record(run, x, y, subnets):
        out = step(run, x, y, subnets) if real else (torch.tensor(1.5), torch.tensor(2.5))
        calls.append((x.clone(), y.clone(), list(subnets), [float(v) for v in out]))
        return out

    monkeypatch.setattr(training, "_sandwich_step", record)
    return calls


def test_an_epoch_trains_the_sandwich_on_every_batch_and_reports_it(toy, monkeypatch):
    run = _run(toy)
    calls = _record_steps(monkeypatch)
    expected = _expected_batches(run, toy, 2)
    c0 = time.process_time()
    m = training._train_epoch(run)
    assert m["cpu_seconds"] <= time.process_time() - c0
    assert len(calls) == 2
    for (x, y, subnets, _), (ex, ey, esub) in zip(calls, expected):
        torch.testing.assert_close(x, ex, rtol=0, atol=0)
        assert torch.equal(y, ey) and subnets == esub
    assert set(m) == EPOCH_KEYS
    assert m["step_losses"] == [c[3] for c in calls]
    assert m["loss_largest"] == pytest.approx((calls[0][3][0] + calls[1][3][0]) / 2, rel=1e-12)
    assert m["loss_subnets"] == pytest.approx((calls[0][3][1] + calls[1][3][1]) / 2, rel=1e-12)
    assert (m["epoch"], run.epoch, run.step) == (1, 1, 2)
    assert m["lr"] == pytest.approx(1e-5 + 0.5 * (2e-3 - 1e-5))  # cosine at step 2 of 4
    assert 0 < m["seconds"] < 600 and 0 < m["cpu_seconds"] < 600
    assert run.cpu_seconds == m["cpu_seconds"]
    assert m["img_per_s"] == pytest.approx(40 / m["seconds"])  # 2 steps x 20 images
    assert m["subnet_img_per_s"] == pytest.approx(40 * 4 / m["seconds"])  # 4 subnets a step
    m2 = training._train_epoch(run)
    assert (m2["epoch"], run.epoch, run.step) == (2, 2, 4)
    assert run.cpu_seconds == pytest.approx(m["cpu_seconds"] + m2["cpu_seconds"])


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_trains_its_share_and_takes_part_in_every_collective(toy, monkeypatch, rank):
    ctx = DistContext(rank, 2, rank, CPU)
    run = _run(toy, ctx=ctx)
    calls = _record_steps(monkeypatch, real=False)
    seen = []
    monkeypatch.setattr(training, "_check_in_step", lambda r: seen.append(("check", r)))
    monkeypatch.setattr(training, "distribute_bn",
                        lambda net, world, reduce: seen.append(("bn", net, world, reduce)))
    monkeypatch.setattr(training, "all_reduce_sum",
                        lambda values, c: seen.append(("cpu", len(values), c)) or [123.0])
    expected = _expected_batches(run, toy, 2, share=slice(10 * rank, 10 * rank + 10))
    m = training._train_epoch(run)
    for (x, y, subnets, _), (ex, ey, esub) in zip(calls, expected):
        torch.testing.assert_close(x, ex, rtol=0, atol=0)
        assert torch.equal(y, ey) and subnets == esub
    assert seen == [("check", run), ("bn", run.net, 2, True), ("cpu", 1, ctx)]
    assert m["cpu_seconds"] == run.cpu_seconds == 123.0


@pytest.mark.parametrize("losses, message", [
    ((float("nan"), 1.5), "supernet: training loss nan (largest) / 1.5 (others) at epoch 1, step 2"),
    ((1.5, float("inf")), "supernet: training loss 1.5 (largest) / inf (others) at epoch 1, step 2"),
])
def test_a_non_finite_loss_stops_training_naming_epoch_and_step(toy, monkeypatch, losses, message):
    steps = iter([(torch.tensor(1.0), torch.tensor(1.0)), tuple(map(torch.tensor, losses))])
    monkeypatch.setattr(training, "_sandwich_step", lambda *a: next(steps))
    with pytest.raises(NonFiniteLoss) as e:
        training._train_epoch(_run(toy))
    assert str(e.value) == message


@pytest.mark.parametrize("reorder, calls", [("l1", 1), ("none", 0)])
def test_hidden_units_are_reordered_at_epoch_end_with_the_optimizer(toy, monkeypatch, reorder,
                                                                   calls):
    run = _run(toy, CFG.replace(reorder=reorder))
    _record_steps(monkeypatch, real=False)
    seen = []
    monkeypatch.setattr(run.net, "reorder_hidden_units", seen.append)
    training._train_epoch(run)
    assert seen == [run.opt] * calls


def _losses_by_hand(run, x, y, subnets):
    """The sandwich's losses and summed gradients, computed on a copy of the store."""
    net = copy.deepcopy(run.net)
    cfg = run.config
    ce = LabelSmoothingCrossEntropy(cfg.label_smoothing)
    net.set_active(net.max_spec)
    out = net(x)
    total = ce(out, y)
    loss_max = total.item()
    others = []
    for spec in subnets:
        net.set_active(spec)
        o = net(x)
        kd = training.kd_loss(o, out.detach(), cfg.kd_temperature)
        loss = cfg.kd_weight * kd + (1 - cfg.kd_weight) * ce(o, y)
        others.append(loss.item())
        total = total + loss
    total.backward()
    return loss_max, sum(others) / len(others), {n: p.grad for n, p in net.named_parameters()}


@pytest.mark.parametrize("cfg, n", [(CFG, 2), (CFG.replace(kd_weight=1.0), 2), (CFG, 1)])
def test_the_sandwich_step_sums_the_largest_label_loss_and_the_others_distillation(toy, cfg, n):
    run = _run(toy, cfg)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 4, (6,), generator=g)
    subnets = [run.net.min_spec, TINY.sample(random.Random(2))][:n]
    loss_max, loss_others, grads = _losses_by_hand(run, x, y, subnets)
    run.opt.step = lambda *a, **k: None  # keep the weights and gradients to compare
    lm, lo = training._sandwich_step(run, x, y, subnets)
    assert lm.item() == pytest.approx(loss_max, rel=1e-5)
    assert lo.item() == pytest.approx(loss_others, rel=1e-5)
    for n, p in run.net.named_parameters():
        if grads[n] is None:
            assert p.grad is None, n
        else:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert run.net.active == run.net.max_spec


def test_the_sandwich_step_clips_the_summed_gradient(toy):
    run = _run(toy, CFG.replace(grad_clip=1e-3))
    run.opt.step = lambda *a, **k: None
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 4, (6,), generator=g)
    training._sandwich_step(run, x, y, [run.net.min_spec])
    norm = torch.linalg.vector_norm(torch.stack(
        [torch.linalg.vector_norm(p.grad) for p in run.net.parameters() if p.grad is not None]))
    assert norm.item() == pytest.approx(1e-3, rel=1e-4)


class _Stop(Exception):
    pass


def _stop_after_first_epoch(m):
    if m["epoch"] == 1:
        raise _Stop


def _train(toy, **kw):
    return train_supernet(CFG, FID, toy, seed=5, space=TINY, device="cpu", channels_last=False,
                          **kw)


@pytest.mark.timeout(120)
def test_a_run_stopped_after_an_epoch_resumes_exactly_and_loads(toy, tmp_path):
    stopped, full = tmp_path / "stopped", tmp_path / "full"
    with pytest.raises(_Stop):
        _train(toy, checkpoint_dir=str(stopped), report=_stop_after_first_epoch)
    first = torch.load(stopped / CHECKPOINT_NAME, weights_only=True)
    assert set(first) == {"format", "meta", "model", "optimizer", "scheduler", "scaler",
                          "generator", "arch_rng", "epoch", "step", "cpu_seconds", "history",
                          "world_size"}
    assert (first["format"], first["epoch"], first["step"], first["world_size"]) == (1, 1, 2, 1)
    assert first["scaler"] is None and first["cpu_seconds"] == first["history"][0]["cpu_seconds"]
    reported = []
    net_full, info_full = _train(toy, checkpoint_dir=str(full), report=reported.append)
    assert info_full["channels_last"] is False
    assert reported == info_full["history"] and [m["epoch"] for m in reported] == [1, 2]
    net_res, info_res = _train(toy, checkpoint_dir=str(stopped))
    assert (info_res["resumed_at_epoch"], info_res["epochs_done"], info_res["steps"]) == (1, 2, 4)
    assert info_full["resumed_at_epoch"] == 0
    assert [h["step_losses"] for h in info_res["history"]] == \
        [h["step_losses"] for h in info_full["history"]]
    assert info_res["cpu_seconds"] == pytest.approx(sum(h["cpu_seconds"] for h in info_res["history"]))
    a, b = (torch.load(d / CHECKPOINT_NAME, weights_only=True) for d in (stopped, full))
    assert a["scheduler"] == b["scheduler"] and a["arch_rng"] == b["arch_rng"]
    assert torch.equal(a["generator"], b["generator"])
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for k, state in b["optimizer"]["state"].items():
        for name, v in state.items():
            torch.testing.assert_close(a["optimizer"]["state"][k][name], v, rtol=0, atol=0)
    for k, v in net_full.state_dict().items():
        torch.testing.assert_close(net_res.state_dict()[k], v, rtol=0, atol=0, msg=k)
    # load_supernet: the same store (space with its fixed fields, conv layer scale) and meta
    loaded, meta = load_supernet(str(stopped / CHECKPOINT_NAME))
    assert loaded.space == proxy_space(TINY, 4, 32) and meta["epoch"] == 2
    assert meta["history"] == info_res["history"]
    assert {k: meta[k] for k in ("config", "config_key", "seed", "space_key")} == \
        {k: info_res[k] for k in ("config", "config_key", "seed", "space_key")}
    for k, v in net_full.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_a_checkpoint_missing_entries_is_refused_on_resume_and_on_load(toy, tmp_path):
    cfg = CFG.replace(epochs=1, batch_size=48)
    train_supernet(cfg, FID, toy, seed=0, space=TINY, device="cpu", channels_last=False,
                   checkpoint_dir=str(tmp_path / "run"))
    ck = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    del ck["model"]["stages.0.blocks.0.pwconv1.weight"]
    (tmp_path / "partial").mkdir()
    torch.save(ck, tmp_path / "partial" / CHECKPOINT_NAME)
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "stages\.0\.blocks\.0'
                                           r'\.pwconv1\.weight"'):
        load_supernet(str(tmp_path / "partial" / CHECKPOINT_NAME))
    with pytest.raises(RuntimeError, match=r'Missing key\(s\) in state_dict: "stages\.0\.blocks\.0'
                                           r'\.pwconv1\.weight"'):
        train_supernet(cfg, FID, toy, seed=0, space=TINY, device="cpu", channels_last=False,
                       checkpoint_dir=str(tmp_path / "partial"))
    loaded, _ = load_supernet(str(tmp_path / "run" / CHECKPOINT_NAME))
    assert loaded.stem[0].weight.device == CPU
    moved, _ = load_supernet(str(tmp_path / "run" / CHECKPOINT_NAME), device="meta")
    assert moved.stem[0].weight.device.type == "meta"


def test_load_supernet_loads_weights_only(tmp_path):
    torch.save({"meta": {}, "payload": _Stop()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_supernet(str(tmp_path / "evil.pt"))


@pytest.mark.parametrize("change, what", [
    ("seed", "seed (5 != 6)"), ("config", "config"), ("fidelity", "fidelity"), ("space", "space"),
])
def test_resume_refuses_a_checkpoint_of_another_run_in_one_line(toy, tmp_path, change, what):
    cfg = CFG.replace(epochs=1, batch_size=48)
    train_supernet(cfg, FID, toy, seed=5, space=TINY, device="cpu", channels_last=False,
                   checkpoint_dir=str(tmp_path))
    kw = dict(config=cfg, fidelity=FID, seed=5, space=TINY)
    kw.update({"seed": {"seed": 6}, "config": {"config": cfg.replace(lr=1e-3)},
               "fidelity": {"fidelity": dataclasses.replace(FID, eval_batch_size=32)},
               "space": {"space": dataclasses.replace(TINY, mlp_ratios=(2.0,))}}[change])
    with pytest.raises(UsageError) as e:
        train_supernet(kw["config"], kw["fidelity"], toy, seed=kw["seed"], space=kw["space"],
                       device="cpu", channels_last=False, checkpoint_dir=str(tmp_path))
    msg = str(e.value)
    prefix = f"supernet checkpoint {tmp_path / CHECKPOINT_NAME}: was trained with a different "
    assert msg.startswith(prefix + what + (" (" if change != "seed" else "")) and "\n" not in msg
    assert msg.endswith("; remove it or use another directory")
    assert re.fullmatch(r".*different \w+ \(\S+ != \S+\); remove it.*", msg)


def test_space_key_is_16_hex_digits_of_the_whole_space():
    k = training.space_key(TINY)
    assert re.fullmatch(r"[0-9a-f]{16}", k)
    assert training.space_key(dataclasses.replace(TINY, fixed={})) != k


def test_train_supernet_summary_defaults_and_threads(toy, tmp_path):
    threads = torch.get_num_threads()
    try:
        net, info = train_supernet(CFG.replace(epochs=1), FID, toy, seed=0, space=TINY, threads=1,
                                   checkpoint_dir=str(tmp_path))  # device auto, channels_last None
    finally:
        torch.set_num_threads(threads)
    assert set(info) == SUMMARY_KEYS
    assert info["threads"] == 1 and info["channels_last"] is True and info["world_size"] == 1
    assert info["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert net.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert (info["epochs_done"], info["steps"], info["resumed_at_epoch"]) == (1, 2, 0)
    assert info["params"] == sum(p.numel() for p in net.parameters())
    last = info["history"][-1]
    assert (info["loss_largest"], info["loss_subnets"]) == (last["loss_largest"], last["loss_subnets"])
    assert 0 < info["train_seconds"] < 600 and info["cpu_seconds"] == last["cpu_seconds"]
    assert info["space"] == training.json_space(proxy_space(TINY, 4, 32))
    assert info["space"]["fixed"] == {"layer_scale_init": 0.5}
    assert set(info["space"]) == {f.name for f in dataclasses.fields(SearchSpace)}
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    with pytest.raises(UsageError) as e:
        train_supernet(CFG, dataclasses.replace(FID, resolution=64), toy, seed=0, space=TINY)
    assert str(e.value) == ("data resolution 32 != fidelity.resolution 64: prepare_data with this "
                            "fidelity")


# -- scoring --------------------------------------------------------------------------------------
def _trained_store(seed=0):
    net = _randomize(Supernet(proxy_space(TINY, 4, 32)), seed)
    return net


def test_score_subnets_recalibrates_and_evaluates_each_subnet_as_if_built_alone(toy):
    net = _trained_store()
    specs = [net.max_spec, net.min_spec, TINY.sample(random.Random(9))]
    t0, c0 = time.perf_counter(), time.process_time()
    scores = score_subnets(net, specs, toy, FID, recal_images=16, channels_last=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert sum(s["seconds"] for s in scores) <= wall
    assert sum(s["cpu_seconds"] for s in scores) <= cpu
    assert [s["arch_hash"] for s in scores] == [s.arch_hash for s in specs]
    assert net.active == net.max_spec
    for spec, s in zip(specs, scores):
        assert set(s) == {"arch_hash", "top1", "val_loss", "score", "seconds", "cpu_seconds"}
        assert s["score"] == -s["val_loss"]
        assert 0 < s["seconds"] < 600 and 0 < s["cpu_seconds"] < 600
        model = _built(_trained_store(), spec)  # the store before any recalibration
        recalibrate_bn(model, toy, 16, FID.eval_batch_size, CPU)
        top1, val_loss = evaluate(model, toy, FID, CPU)
        assert s["top1"] == pytest.approx(top1, abs=1e-9)
        assert s["val_loss"] == pytest.approx(val_loss, rel=1e-4)
    top = score_subnets(net, specs[:1], toy, FID, recal_images=16, score="top1")
    assert top[0]["score"] == top[0]["top1"] == scores[0]["top1"]


def test_score_subnets_refuses_bad_input_before_any_work(toy):
    net = _trained_store()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(UsageError) as e:
        score_subnets(net, [net.min_spec], toy, FID, recal_images=16, score="loss")
    assert str(e.value) == "score='loss': allowed one of ('val_loss', 'top1')"
    outside = net.max_spec.replace(widths=(8, 16, 24, 64))
    with pytest.raises(UsageError, match="is not a subnet of this supernet"):
        score_subnets(net, [net.min_spec, outside], toy, FID, recal_images=16)
    for k, v in net.state_dict().items():  # the first spec was not recalibrated
        assert torch.equal(v, before[k]), k


def test_reference_tau_ranks_xs_s_l1_l3_against_imagenet():
    assert reference_tau({"XS": 1.0, "S": 2.0, "L1": 3.0, "L3": 4.0}) == 1.0
    assert reference_tau({"XS": 4.0, "S": 3.0, "L1": 2.0, "L3": 1.0}) == -1.0
    assert reference_tau({"XS": 1.0, "S": 2.0, "L1": 4.0, "L3": 3.0}) == pytest.approx(2 / 3)
    assert reference_tau({"XS": 1.0, "S": 2.0, "L1": 3.0}) is None


def test_reference_ranking_scores_the_presets_at_proxy_size(toy, monkeypatch):
    cfg = SupernetConfig(width_divisor=4, recal_images=16, score="top1")
    net = Supernet(proxy_space(DEFAULT_SPACE, 4, 32, 4))
    specs = reference_specs(cfg, toy, FID)
    assert list(specs) == ["XS", "S", "L1", "L3"]
    assert specs["L3"] == to_proxy(PRESETS["L3"], 4, 32, 4)
    fake = {spec.arch_hash: (10.0 * i, 2.0 - i / 10) for i, spec in enumerate(specs.values())}
    calls = []

    def scores(n, sp, data, fid, *, recal_images, device, channels_last, score):
        calls.append((n, data, fid, recal_images, device, channels_last, score))
        return [{"arch_hash": s.arch_hash, "top1": fake[s.arch_hash][0],
                 "val_loss": fake[s.arch_hash][1], "score": -fake[s.arch_hash][0],
                 "seconds": 0.5, "cpu_seconds": 0.25} for s in sp]

    monkeypatch.setattr(scoring, "score_subnets", scores)
    r = scoring.reference_ranking(net, cfg, toy, FID, device="cpu", channels_last=False)
    assert calls == [(net, toy, FID, 16, "cpu", False, "top1")]
    assert r["top1"] == {"XS": 0.0, "S": 10.0, "L1": 20.0, "L3": 30.0}
    assert r["val_loss"] == {"XS": 2.0, "S": 1.9, "L1": 1.8, "L3": 1.7}
    assert r["score"] == {"XS": -0.0, "S": -10.0, "L1": -20.0, "L3": -30.0}
    assert (r["score_metric"], r["tau"], r["tau_top1"], r["tau_val_loss"]) == ("top1", -1.0, 1.0, 1.0)
    assert (r["score_cpu_seconds"], r["score_seconds"]) == (1.0, 2.0)
    scoring.reference_ranking(net, cfg, toy, FID)  # on the CPU, channels_last by default
    assert calls[1][4:6] == ("cpu", True)


def test_gradient_buckets_are_runs_of_one_dtype_up_to_the_cap():
    def f32(n):
        return torch.zeros(n, dtype=torch.float32)

    a, f, b, c = f32(10), f32(15), f32(10), f32(30)  # 40, 60, 40, 120 bytes
    d, e = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    got = training._buckets([a, f, b, c, d, e], 100)
    # a + f fill the cap exactly; c alone exceeds it; a new dtype starts a new bucket
    assert [[id(t) for t in bucket] for bucket in got] == \
        [[id(a), id(f)], [id(b)], [id(c)], [id(d), id(e)]]
    assert training._buckets([], 100) == []


def test_weights_no_pass_of_a_step_used_get_no_gradient(toy):
    run = _run(toy)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 4, (6,), generator=g)
    conv = run.net.stages[0].blocks[0].pwconv1.weight  # the largest has attention there
    training._sandwich_step(run, x, y, [run.net.min_spec])  # the smallest: a conv encoder
    assert conv.grad is not None
    training._sandwich_step(run, x, y, [])
    assert conv.grad is None  # so AdamW leaves it alone


def test_a_rank_averages_the_gradients_and_losses_once_per_step(toy, monkeypatch):
    run = _run(toy, ctx=DistContext(0, 2, 0, CPU))
    seen = []

    def average(net, losses, world):
        seen.append((net, losses.tolist(), world))
        return torch.tensor([7.0, 8.0])

    monkeypatch.setattr(training, "average_gradients", average)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 4, (6,), generator=g)
    lm, lo = training._sandwich_step(run, x, y, [run.net.min_spec])
    assert (lm.item(), lo.item()) == (7.0, 8.0)
    assert len(seen) == 1 and seen[0][0] is run.net and seen[0][2] == 2
    assert all(math.isfinite(v) and v > 0 for v in seen[0][1])
