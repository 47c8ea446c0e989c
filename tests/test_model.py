"""The generator is faithful to the published models: params, GMACs, timm weights and logits."""
import pytest
import timm
import torch

from search_space import PRESETS, TIMM_NAMES, ArchSpec
from search_space.costs import analytic_gmacs
from search_space.fvcore_count import count_params, fvcore_gmacs
from search_space.swiftformer import SwiftFormerNAS, build_model

PUBLISHED_PARAMS = {"XS": 3_475_360, "S": 6_092_128, "L1": 12_057_920, "L3": 28_494_736}
PUBLISHED_GMACS = {"XS": 0.605, "S": 0.988, "L1": 1.600, "L3": 4.015}


def random_state(model: torch.nn.Module, seed: int = 0) -> dict:
    """A state dict for ``model`` with every parameter and BN statistic random (layer scales
    too: at 1e-5 attention is invisible). Weights are scaled by 1/sqrt(fan_in) so activations
    stay O(1) through the whole network. ``model`` may live on the meta device."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            out[name] = torch.zeros(t.shape, dtype=t.dtype)
            continue
        r = torch.randn(t.shape, generator=g)
        if name.endswith("running_var"):
            r = 1.0 + torch.rand(t.shape, generator=g)
        elif name.endswith("gamma"):
            r = 0.5 + 0.5 * torch.rand(t.shape, generator=g)
        elif t.dim() >= 2:
            r = r / max(t[0].numel(), 1) ** 0.5
        else:
            r = 0.1 * r + (1.0 if name.endswith("norm.weight") or name.endswith("norm1.weight") else 0.0)
        out[name] = r
    return out


def _on_meta(make):
    """A model without weight init (its weights come from load_state_dict(assign=True))."""
    with torch.device("meta"):
        return make().eval()


@pytest.mark.parametrize("name", list(PRESETS))
def test_params_and_gmacs_match_published(name):
    spec = PRESETS[name]
    model = build_model(spec)
    assert count_params(model) == PUBLISHED_PARAMS[name]
    g = fvcore_gmacs(model, 224)
    assert abs(g - PUBLISHED_GMACS[name]) / PUBLISHED_GMACS[name] < 0.005
    assert abs(analytic_gmacs(spec) - g) / g < 1e-9


@pytest.mark.parametrize("name", list(PRESETS))
def test_timm_weights_load_both_ways_with_identical_logits(name):
    ours = _on_meta(lambda: build_model(PRESETS[name]))
    ref = _on_meta(lambda: timm.create_model(TIMM_NAMES[name]))
    ref.load_state_dict(random_state(ref, seed=1), strict=True, assign=True)
    ours.load_state_dict({k: v.clone() for k, v in ref.state_dict().items()}, strict=True,
                         assign=True)
    x = torch.randn(2, 3, 64, 64)  # no positional embedding: any multiple of 32 uses every weight
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    # and the reverse: ours randomized -> timm
    ours.load_state_dict(random_state(ours, seed=2), strict=True, assign=True)
    ref.load_state_dict({k: v.clone() for k, v in ours.state_dict().items()}, strict=True,
                        assign=True)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    rel = (a - b).abs().max() / b.abs().max()
    assert rel < 1e-5
    # a randomized attention branch really changes the output (the comparison can fail)
    with torch.no_grad():
        ours.stages[3].blocks[-1].layer_scale_1.gamma.zero_()
        assert (ours(x) - b).abs().max() / b.abs().max() > 1e-3


def test_timm_create_model_builds_presets_and_any_spec():
    m = timm.create_model("swiftformer_nas_l1")
    assert count_params(m) == PUBLISHED_PARAMS["L1"]
    spec = ArchSpec(depths=(2, 2, 4, 3), widths=(32, 64, 128, 192), mlp_ratios=(3, 3, 4, 2),
                    attn_blocks=(0, 1, 2, 3), num_classes=10, distillation=False)
    m = timm.create_model("swiftformer_nas", spec=spec)
    assert isinstance(m, SwiftFormerNAS) and m.spec == spec
    m2 = timm.create_model("swiftformer_nas", spec=spec.to_dict(), num_classes=7)
    assert m2.num_classes == 7 and m2(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="never downloaded"):
        timm.create_model("swiftformer_nas_xs", pretrained=True)


def test_attention_placement_builds_the_right_blocks():
    from timm.models.swiftformer import Block, ConvEncoder
    spec = PRESETS["XS"].replace(attn_blocks=(0, 3, 2, 4))
    m = build_model(spec)
    kinds = [["attn" if isinstance(b, Block) else "conv" for b in s.blocks] for s in m.stages]
    assert kinds == [list(spec.block_kinds(i)) for i in range(4)]
    assert kinds[0] == ["conv"] * 3 and kinds[1] == ["attn"] * 3
    assert all(isinstance(b, (Block, ConvEncoder)) for s in m.stages for b in s.blocks)


def test_mlp_ratio_per_stage_and_no_distillation():
    spec = PRESETS["XS"].replace(mlp_ratios=(2, 3, 4, 2.5), distillation=False)
    m = build_model(spec)
    assert m.stages[0].blocks[0].pwconv1.out_channels == 96
    assert m.stages[3].blocks[-1].linear.fc1.out_channels == int(220 * 2.5)
    assert m.head_dist is None and "head_dist.weight" not in m.state_dict()
    assert count_params(m) == count_params(build_model(spec.replace(distillation=True))) - 221_000


def test_model_interface():
    m = build_model(PRESETS["XS"].replace(num_classes=10)).eval()
    x = torch.randn(2, 3, 96, 96)
    feats = m.forward_features(x)
    assert feats.shape == (2, 220, 3, 3)
    assert m.forward_head(feats, pre_logits=True).shape == (2, 220)
    final, inter = m.forward_intermediates(x)
    assert [t.shape[1] for t in inter] == [48, 56, 112, 220]
    assert [96 // t.shape[-1] for t in inter] == [fi["reduction"] for fi in m.feature_info]
    assert torch.allclose(final, feats)
    m.reset_classifier(5)
    assert m(x).shape == (2, 5)
    m.reset_classifier(0)
    assert m(x).shape == (2, 220)
    fo = timm.create_model("swiftformer_nas_xs", features_only=True, out_indices=(1, 3))
    outs = fo(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [56, 220]
    m.train().set_distilled_training(True)
    m.reset_classifier(3)
    out = m(x)
    assert isinstance(out, tuple) and len(out) == 2


def test_drop_path_linear_schedule():
    m = build_model(PRESETS["XS"].replace(drop_path_rate=0.1))
    probs = [getattr(b.drop_path, "drop_prob", 0.0) for s in m.stages for b in s.blocks]
    assert probs[0] == 0.0 and abs(probs[-1] - 0.1) < 1e-9
    assert all(a <= b for a, b in zip(probs, probs[1:]))


def test_training_step_runs_backward():
    spec = ArchSpec(depths=(1, 1, 1, 1), widths=(16, 16, 32, 32), mlp_ratios=(2, 2, 2, 2),
                    attn_blocks=(1, 1, 1, 1), num_classes=4, resolution=64)
    m = build_model(spec)
    loss = m(torch.randn(4, 3, 64, 64)).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
