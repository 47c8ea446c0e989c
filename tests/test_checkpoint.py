"""Official checkpoints (synthesized with exactly their keys and shapes) load through a pure,
idempotent converter; loading uses torch.load(weights_only=True).

Models that only receive a full state dict are built on the meta device and take the tensors
with ``load_state_dict(assign=True)`` (no weight init: seconds per preset on a loaded machine),
and logits are compared at 64 px (SwiftFormer has no positional embedding: the resolution does
not change which weights are used).
"""
import functools
import os
import pickle

import pytest
import timm
import torch

from search_space import PRESETS, TIMM_NAMES
from search_space.checkpoint import CheckpointError, infer_spec, load_checkpoint
from search_space.errors import NotFoundError, UsageError
from search_space.swiftformer import build_model, convert_official_state_dict

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


@functools.lru_cache(maxsize=None)
def official(name: str) -> dict:
    """``official_state_dict(name)``, synthesized once per module (tests must not modify it)."""
    return official_state_dict(name)


def _on_meta(make):
    with torch.device("meta"):
        return make().eval()


@pytest.mark.parametrize("name", list(PRESETS))
def test_official_layout_loads_strict_and_matches_timm_filter(name):
    sd = official(name)
    ours = _on_meta(lambda: build_model(PRESETS[name]))
    ours.load_state_dict(convert_official_state_dict(sd), strict=True, assign=True)
    # independent cross-check: timm's own filter for official checkpoints on timm's model
    from timm.models.swiftformer import checkpoint_filter_fn
    ref = _on_meta(lambda: timm.create_model(TIMM_NAMES[name]))
    ref.load_state_dict(checkpoint_filter_fn(sd, ref), strict=True, assign=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert (a - b).abs().max() / b.abs().max() < 1e-5


def test_official_file_loads_through_load_checkpoint(tmp_path):
    """Through a file, wrapped like the official release ({"model": state_dict}), into a real
    (initialised) model: the same logits as the converted state dict gives."""
    sd = official("XS")
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd}, path)
    model = build_model(PRESETS["XS"]).eval()
    load_checkpoint(model, str(path))
    ref = _on_meta(lambda: build_model(PRESETS["XS"]))
    ref.load_state_dict(convert_official_state_dict(sd), strict=True, assign=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))


def test_converter_is_pure_and_idempotent():
    sd = official("XS")
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


class _Evil:
    """Unpickling this runs code: it would create the sentinel file."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_load_checkpoint_refuses_pickled_code_and_never_runs_it(tmp_path):
    sentinel = tmp_path / "payload-ran"
    path = tmp_path / "evil.pth"
    torch.save({"model": _Evil(sentinel)}, path)
    assert not sentinel.exists()
    with pytest.raises(CheckpointError, match=r"evil\.pth: refused: it holds pickled Python"):
        load_checkpoint(build_model(PRESETS["XS"]), str(path))
    assert not sentinel.exists(), "the pickled payload ran: loading is not weights-only"


@pytest.fixture(scope="module")
def xs_model():
    return build_model(PRESETS["XS"])


def test_wrong_architecture_names_first_key_both_shapes_and_what_would_load(tmp_path, xs_model):
    path = tmp_path / "s.pth"
    torch.save(build_model(PRESETS["S"]).state_dict(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(xs_model, str(path))
    msg = str(e.value)
    assert f"checkpoint {path} does not fit this model" in msg
    assert "key stages.1.downsample.proj.weight: file (64, 48, 3, 3) vs model (56, 48, 3, 3)" in msg
    assert "(= preset S)" in msg and "\n" not in msg


def test_other_head_size_says_which_num_classes(tmp_path, xs_model):
    path = tmp_path / "xs3.pth"
    torch.save({"model": build_model(PRESETS["XS"].replace(num_classes=3)).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"head.weight: file \(3, 220\) vs model "
                       r"\(1000, 220\).*= preset XS with num_classes=3"):
        load_checkpoint(xs_model, str(path))


@pytest.mark.parametrize("content, message", [
    (b"", "empty file (0 bytes)"),
    (b"just some text\n", "not a readable PyTorch weights file"),
    (b"x", "not a PyTorch weights file the weights-only loader can read (Unsupported operand "
           "120)"),   # not "holds pickled Python objects": there are none
    (pickle.dumps({"a": {1, 2}}, protocol=4), "weights-only loader can read (Unsupported "
                                               "operand 149)"),
    (None, "not a readable PyTorch weights file"),  # a real checkpoint cut in half
])
def test_unreadable_files_are_one_line_errors(tmp_path, xs_model, content, message):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save(xs_model.state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(xs_model, str(path))
    assert str(e.value).startswith(f"checkpoint {path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_is_not_found(tmp_path, xs_model):
    with pytest.raises(NotFoundError, match="no such file"):
        load_checkpoint(xs_model, str(tmp_path / "none.pth"))


@pytest.mark.parametrize("name", list(PRESETS))
def test_infer_spec_reads_the_architecture_back(name):
    spec = PRESETS[name].replace(num_classes=7)
    assert infer_spec(convert_official_state_dict(_on_meta(lambda: build_model(spec))
                                                  .state_dict())) == spec
    assert infer_spec(convert_official_state_dict(official(name))) == PRESETS[name]


# -- every branch of reading and fitting, with its exact message ---------------------------------
def test_state_dict_of_unwraps_and_refuses():
    from search_space.checkpoint import state_dict_of

    t = {"a": torch.zeros(1)}
    assert state_dict_of(t, "f") == t
    for key in ("model", "state_dict", "model_ema"):
        assert state_dict_of({key: t, "epoch": 3}, "f") == t
    # the first wrapper key present wins (official / timm / ours)
    assert state_dict_of({"model_ema": {"b": torch.ones(1)}, "model": t}, "f") == t
    assert state_dict_of({"model": "not a dict", "state_dict": t}, "f") == t
    for bad in ([1, 2], {}, {"a": 1}, {"model": {"a": torch.zeros(1), "b": "x"}}):
        with pytest.raises(CheckpointError) as e:
            state_dict_of(bad, "checkpoint f.pth")
        assert str(e.value) == ("checkpoint f.pth: holds no state dict of tensors (expected one "
                                "at the top level or under model, state_dict, model_ema)")


def test_other_unpickling_errors_name_the_file(tmp_path, monkeypatch):
    import pickle

    from search_space import checkpoint as ck

    path = tmp_path / "x.pth"
    path.write_bytes(b"PK not really")

    def raises(err):
        def load(*a, **k):
            raise err
        return load

    monkeypatch.setattr(ck.torch, "load", raises(pickle.UnpicklingError("bad opcode\nmore")))
    with pytest.raises(CheckpointError) as e:
        ck.read_file(path, "--teacher")
    assert str(e.value) == (f"--teacher {path}: not a PyTorch weights file the weights-only "
                            "loader can read (bad opcode)")
    monkeypatch.setattr(ck.torch, "load", raises(pickle.UnpicklingError("")))
    with pytest.raises(CheckpointError, match=r"loader can read \(UnpicklingError\)"):
        ck.read_file(path)
    monkeypatch.setattr(ck.torch, "load", raises(pickle.UnpicklingError(
        "Weights only load failed. ... Unsupported global: GLOBAL os.system")))
    with pytest.raises(CheckpointError, match="refused: it holds pickled Python objects"):
        ck.read_file(path)
    monkeypatch.setattr(ck.torch, "load", raises(pickle.UnpicklingError("unsupported GLOBAL x")))
    with pytest.raises(CheckpointError, match="refused: it holds pickled Python objects"):
        ck.read_file(path)
    monkeypatch.setattr(ck.torch, "load", raises(EOFError()))
    with pytest.raises(CheckpointError) as e:
        ck.read_file(path)
    assert str(e.value) == (f"checkpoint {path}: not a readable PyTorch weights file (truncated "
                            "or another format: EOFError)")
    monkeypatch.setattr(ck.torch, "load", raises(RuntimeError("x" * 300 + "\nsecond")))
    with pytest.raises(CheckpointError) as e:
        ck.read_file(path)
    assert str(e.value).endswith("another format: " + "x" * 160 + ")")


def test_read_file_is_weights_only_and_on_cpu(tmp_path):
    from search_space.checkpoint import read_file

    path = tmp_path / "ok.pth"
    torch.save({"model": {"w": torch.arange(3.0)}, "epoch": 2}, path)
    got = read_file(path)
    assert got["epoch"] == 2 and torch.equal(got["model"]["w"], torch.arange(3.0))
    assert got["model"]["w"].device.type == "cpu"
    with pytest.raises(UsageError) as e:
        read_file(tmp_path, "--checkpoint")  # a directory is not a file, and is not missing
    assert str(e.value) == f"--checkpoint {tmp_path}: is a directory; expected a file"


def test_first_mismatch_phrases():
    from search_space.checkpoint import first_mismatch

    a, b = torch.zeros(2, 3), torch.zeros(4)
    assert first_mismatch({"x": a, "y": b}, {"x": a, "y": b}) is None
    assert first_mismatch({"x": a, "y": b}, {"y": b}) == \
        "key x (shape (2, 3)) is missing from the file"
    assert first_mismatch({"x": a}, {"x": b}) == "key x: file (4,) vs model (2, 3)"
    assert first_mismatch({"x": a}, {"x": a, "z": b, "w": b}) == \
        "the file has key z the model lacks"


def test_non_strict_loads_a_headless_file_but_not_other_shapes(tmp_path, xs_model):
    from search_space.checkpoint import load_state_dict_checked

    sd = {k: v for k, v in xs_model.state_dict().items() if not k.startswith("head")}
    model = build_model(PRESETS["XS"])
    load_state_dict_checked(model, sd, "f", strict=False)  # missing head: fine when not strict
    assert torch.equal(model.stem[0].weight, xs_model.stem[0].weight)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_checked(model, sd, "f")  # strict: the head is missing
    assert str(e.value) == ("f does not fit this model: key head.weight (shape (1000, 220)) is "
                            "missing from the file; the file holds depths [3, 3, 6, 4], widths "
                            "[48, 56, 112, 220], MLP ratios [4.0, 4.0, 4.0, 4.0], attention "
                            "blocks [1, 1, 1, 1], 0 classes (= preset XS with num_classes=0)")
    wrong = dict(xs_model.state_dict())
    wrong["head.weight"] = torch.zeros(3, 220)
    with pytest.raises(CheckpointError, match=r"head.weight: file \(3, 220\) vs model"):
        load_state_dict_checked(model, wrong, "f", strict=False)  # shapes: never silently
    junk = {"stages.0.blocks.0.x": torch.zeros(1)}
    with pytest.raises(CheckpointError) as e:
        load_state_dict_checked(model, junk, "g")
    assert str(e.value) == ("g does not fit this model: key stem.0.weight (shape (24, 3, 3, 3)) "
                            "is missing from the file")  # nothing inferable: no hint


def test_infer_spec_none_and_describe_without_a_preset():
    from search_space.checkpoint import describe_spec

    assert infer_spec({}) is None
    assert infer_spec({f"stages.{i}.blocks.0.x": torch.zeros(1) for i in range(3)}) is None
    assert infer_spec({f"stages.{i}.blocks.0.x": torch.zeros(1) for i in range(4)}) is None
    spec = PRESETS["XS"].replace(mlp_ratios=(2.0, 3.0, 4.0, 1.0), attn_blocks=(0, 2, 0, 4),
                                 distillation=False, num_classes=10)
    sd = convert_official_state_dict(_on_meta(lambda: build_model(spec)).state_dict())
    assert infer_spec(sd) == spec
    assert describe_spec(spec) == ("depths [3, 3, 6, 4], widths [48, 56, 112, 220], MLP ratios "
                                   "[2.0, 3.0, 4.0, 1.0], attention blocks [0, 2, 0, 4], "
                                   "10 classes")
    assert describe_spec(PRESETS["S"]).endswith("1000 classes, distilled head (= preset S)")
    assert describe_spec(PRESETS["L1"].replace(distillation=False)).endswith(
        "1000 classes (= preset L1)")
    odd = PRESETS["XS"].replace(mlp_ratios=(4.0, 4.0, 4.0, 2 / 3))
    assert "MLP ratios [4.0, 4.0, 4.0, 0.667], " in describe_spec(odd)
