"""Unit tests of the weight-sharing supernet that pin what mutation testing found unpinned
(bench/mutation.py supernet_model / supernet_train; notes/testing.md "supernet survivors").

The extraction tests of tests/test_supernet.py compare logits of a freshly initialised store,
where every bias is 0, the attention/MLP layer scales are 1e-5 and the head's weights have
std 0.02: the logits are ~1e-3, so a wrong attention, a dropped bias or a wrong hidden width
moved them by less than the tolerance. Here every weight, bias, layer scale and BatchNorm
statistic is random and O(1) before the supernet's forward is compared with timm's."""
from __future__ import annotations

import math
import re

import pytest
import torch

from search.proxy.supernet.config import SupernetConfig, proxy_space, to_proxy
from search.proxy.supernet.model import Supernet, _subnet_sizes, position_kinds
from search_space.errors import UsageError
from search_space.space import DEFAULT_SPACE, SearchSpace
from search_space.swiftformer import build_model

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
