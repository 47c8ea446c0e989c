"""Reading weight files: weights only, and every failure one line that names the file.

:func:`read_file` is the one ``torch.load`` of the tool (``weights_only=True``: a file that
carries pickled code is refused, never executed). :func:`load_checkpoint` loads an official,
timm or our own checkpoint into a model and, when the shapes do not fit, says which key differs
first (with both shapes) and what the file *would* load into: the architecture read back from
its shapes (:func:`infer_spec`), e.g. "depths [3, 3, 9, 6] ... (= preset S)" or "a 3-class
head: build with num_classes=3".
"""
from __future__ import annotations

import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch

from .errors import UsageError
from .io import check_input_file
from .spec import NUM_STAGES, PRESETS, ArchSpec, SpecError
from .swiftformer import convert_official_state_dict

WRAPPER_KEYS = ("model", "state_dict", "model_ema")  # official / timm / ours
_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")
# What torch.load raises on a file that is not a (whole) torch file: a zip cut short, the legacy
# unpickler reading text (KeyError / IndexError from its memo), struct sizes that do not add up.
_UNREADABLE = (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError,
               IndexError, struct.error)


class CheckpointError(UsageError):
    """A weight file that cannot be read or does not fit the model (one line, file named)."""


def read_file(path: str | Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with one-line errors naming ``path``."""
    p = check_input_file(path, what)
    if p.stat().st_size == 0:
        raise CheckpointError(f"{what} {p}: empty file (0 bytes)")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "unsupported global" in text.lower():   # a class or function pickled by reference
            raise CheckpointError(f"{what} {p}: refused: it holds pickled Python objects, not "
                                  "only tensors (loading is weights-only)") from None
        # else the byte stream itself is no weights pickle ("Unsupported operand 120": a text
        # file, a plain pickle of sets and such): say what the weights-only reader said
        lines = [ln.strip() for ln in text.split("WeightsUnpickler error:")[-1].splitlines()
                 if ln.strip()]
        reason = lines[0] if lines else type(e).__name__
        raise CheckpointError(f"{what} {p}: not a PyTorch weights file the weights-only loader "
                              f"can read ({reason[:160]})") from None
    except _UNREADABLE as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{what} {p}: not a readable PyTorch weights file (truncated or "
                              f"another format: {first[:160]})") from None


def state_dict_of(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file (bare, or under model / state_dict / model_ema)."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: holds no state dict of tensors (expected one at the "
                              f"top level or under {', '.join(WRAPPER_KEYS)})")
    return dict(obj)


def infer_spec(sd: Mapping[str, torch.Tensor]) -> ArchSpec | None:
    """The architecture a (converted) state dict belongs to, read from its shapes, or None.

    Resolution is not in the weights (SwiftFormer has no positional embedding): 224 is assumed.
    """
    blocks: dict[int, set[int]] = {}
    for k in sd:
        m = _BLOCK.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != list(range(NUM_STAGES)):
        return None
    try:
        return ArchSpec(
            depths=tuple(len(blocks[i]) for i in range(NUM_STAGES)),
            widths=tuple(_width(sd, i) for i in range(NUM_STAGES)),
            mlp_ratios=tuple(_hidden(sd, i) / _width(sd, i) for i in range(NUM_STAGES)),
            attn_blocks=tuple(sum(f"stages.{i}.blocks.{j}.attn.w_g" in sd for j in blocks[i])
                              for i in range(NUM_STAGES)),
            num_classes=int(sd["head.weight"].shape[0]) if "head.weight" in sd else 0,
            distillation="head_dist.weight" in sd)
    except (KeyError, SpecError, ZeroDivisionError):
        return None


def _width(sd: Mapping[str, torch.Tensor], stage: int) -> int:
    for name in ("dwconv.weight", "local_representation.dwconv.weight"):
        key = f"stages.{stage}.blocks.0.{name}"
        if key in sd:
            return int(sd[key].shape[0])
    raise KeyError(f"stages.{stage}.blocks.0")


def _hidden(sd: Mapping[str, torch.Tensor], stage: int) -> int:
    for name in ("pwconv1.weight", "linear.fc1.weight"):
        key = f"stages.{stage}.blocks.0.{name}"
        if key in sd:
            return int(sd[key].shape[0])
    raise KeyError(f"stages.{stage}.blocks.0")


def describe_spec(spec: ArchSpec) -> str:
    """One phrase for an inferred architecture, naming the preset it equals (any head)."""
    text = (f"depths {list(spec.depths)}, widths {list(spec.widths)}, MLP ratios "
            f"{[round(r, 3) for r in spec.mlp_ratios]}, attention blocks {list(spec.attn_blocks)}, "
            f"{spec.num_classes} classes{', distilled head' if spec.distillation else ''}")
    for name, p in PRESETS.items():
        if p.replace(num_classes=spec.num_classes, distillation=spec.distillation) == spec:
            return f"{text} (= preset {name}" + (
                ")" if spec.num_classes == p.num_classes else
                f" with num_classes={spec.num_classes})")
    return text


def first_mismatch(want: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]) -> str | None:
    """The first difference between the model's keys/shapes and the file's, as one phrase."""
    for k, v in want.items():
        if k not in got:
            return f"key {k} (shape {tuple(v.shape)}) is missing from the file"
        if tuple(got[k].shape) != tuple(v.shape):
            return f"key {k}: file {tuple(got[k].shape)} vs model {tuple(v.shape)}"
    extra = [k for k in got if k not in want]
    return f"the file has key {extra[0]} the model lacks" if extra else None


def load_state_dict_checked(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str,
                            strict: bool = True) -> None:
    """``model.load_state_dict(sd)``; a mismatch is a CheckpointError naming the first differing
    key with both shapes and what the file holds. Not ``strict``: missing and extra keys are
    allowed, a key present in both with other shapes is not."""
    sd = convert_official_state_dict(dict(sd))
    want = model.state_dict()
    if not strict:
        want = {k: v for k, v in want.items() if k in sd}
    problem = first_mismatch(want, sd if strict else {k: sd[k] for k in want})
    if problem is not None:
        held = infer_spec(sd)
        hint = f"; the file holds {describe_spec(held)}" if held is not None else ""
        raise CheckpointError(f"{source} does not fit this model: {problem}{hint}")
    model.load_state_dict(sd, strict=strict)


def load_checkpoint(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load an official, timm or our own checkpoint file into ``model`` (weights only)."""
    sd = state_dict_of(read_file(path), f"checkpoint {path}")
    load_state_dict_checked(model, sd, f"checkpoint {path}", strict=strict)
