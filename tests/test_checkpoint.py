"""Official checkpoints (synthesized with exactly their keys and shapes) load through a pure,
idempotent converter; loading uses torch.load(weights_only=True)."""
import os

import pytest
import timm
import torch

from search_space import PRESETS, TIMM_NAMES
from search_space.swiftformer import build_model, convert_official_state_dict, load_checkpoint

KEYS_DIR = os.path.join(os.path.dirname(__file__), "data", "official_state_dict_keys")


def official_state_dict(name: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    with open(os.path.join(KEYS_DIR, f"SwiftFormer_{name}.txt")) as f:
        for line in f:
            key, shape = line.rstrip("\n").split("\t")
            shape = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
            if key.endswith("num_batches_tracked"):
                sd[key] = torch.tensor(0)
            elif key.endswith("running_var"):
                sd[key] = torch.rand(shape, generator=g) + 0.5
            else:
                sd[key] = torch.randn(shape, generator=g) * 0.2
    return sd


@pytest.mark.parametrize("name", list(PRESETS))
def test_official_layout_loads_strict_and_matches_timm_filter(name, tmp_path):
    sd = official_state_dict(name)
    conv = convert_official_state_dict(sd)
    ours = build_model(PRESETS[name]).eval()
    ours.load_state_dict(conv, strict=True)
    # independent cross-check: timm's own filter for official checkpoints on timm's model
    ref = timm.create_model(TIMM_NAMES[name]).eval()
    from timm.models.swiftformer import checkpoint_filter_fn
    ref.load_state_dict(checkpoint_filter_fn(sd, ref), strict=True)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert (a - b).abs().max() / b.abs().max() < 1e-5
    # and through a file, wrapped like the official release ({"model": state_dict})
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd}, path)
    fresh = build_model(PRESETS[name]).eval()
    load_checkpoint(fresh, str(path))
    with torch.no_grad():
        assert torch.equal(fresh(x), a)


def test_converter_is_pure_and_idempotent():
    sd = official_state_dict("XS")
    before = {k: v.clone() for k, v in sd.items()}
    once = convert_official_state_dict(sd)
    twice = convert_official_state_dict(once)
    assert list(once) == list(twice)
    assert all(torch.equal(once[k], twice[k]) for k in once)
    assert list(sd) == list(before) and all(torch.equal(sd[k], before[k]) for k in sd)
    assert "stages.0.blocks.2.attn.proj.weight" in once
    assert "stages.1.downsample.proj.weight" in once
    assert "stages.0.blocks.0.layer_scale.gamma" in once
    assert "head_dist.weight" in once and not any(k.startswith("network") for k in once)


def test_load_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)
    with pytest.raises(Exception):
        load_checkpoint(build_model(PRESETS["XS"]), str(path))
