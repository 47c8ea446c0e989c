"""SwiftFormer family generator: any ``ArchSpec`` as a timm-style model.

The building blocks (conv encoder, SwiftFormer encoder with efficient additive attention,
patch-embedding downsample) are timm's own classes from ``timm.models.swiftformer``, so the
numerics are timm's and a timm ``swiftformer_*`` state_dict loads into the matching preset with
``strict=True`` (and back). What this file adds is the parametric part timm hard-codes: per-stage
MLP ratio, which blocks use attention, and an optional distillation head.

Paper: SwiftFormer (Shaker et al., ICCV'23) https://arxiv.org/abs/2303.15446
Official code: https://github.com/Amshaker/SwiftFormer
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn as nn
from timm.layers import trunc_normal_
from timm.models import register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import checkpoint_seq
from timm.models.swiftformer import Block, ConvEncoder, Embedding

from .spec import PRESETS, ArchSpec, SpecError, load_spec

__all__ = ["SwiftFormerNAS", "build_model", "convert_official_state_dict"]


class Stage(nn.Module):
    """Optional downsample, then ``depth`` blocks; the last ``attn_blocks`` are SwiftFormer encoders."""

    def __init__(self, spec: ArchSpec, index: int, downsample: nn.Module) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.downsample = downsample
        dim, hidden = spec.widths[index], spec.hidden_dim(index)
        first = sum(spec.depths[:index])
        denom = max(spec.num_blocks - 1, 1)
        blocks: list[nn.Module] = []
        for j, kind in enumerate(spec.block_kinds(index)):
            # Stochastic depth grows linearly over all blocks of the network, as in the paper.
            dpr = spec.drop_path_rate * (first + j) / denom
            if kind == "attn":
                blocks.append(Block(dim, mlp_ratio=spec.mlp_ratios[index], drop_path=dpr,
                                    layer_scale_init_value=spec.layer_scale_init))
            else:
                blocks.append(ConvEncoder(dim=dim, hidden_dim=hidden, kernel_size=3, drop_path=dpr))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class SwiftFormerNAS(nn.Module):
    """A SwiftFormer-family network built from an ``ArchSpec``.

    Module names follow timm's ``SwiftFormer`` exactly (stem, stages.i.downsample,
    stages.i.blocks.j, norm, head, head_dist) so state dicts are interchangeable.
    """

    def __init__(self, spec: ArchSpec, in_chans: int = 3, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        self.num_classes = spec.num_classes
        self.in_chans = in_chans
        self.global_pool = "avg"
        self.distilled_training = False  # True: return (head, head_dist) logits when training
        w = spec.widths
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, w[0] // 2, 3, 2, 1), nn.BatchNorm2d(w[0] // 2), nn.ReLU(),
            nn.Conv2d(w[0] // 2, w[0], 3, 2, 1), nn.BatchNorm2d(w[0]), nn.ReLU(),
        )
        stages = []
        self.feature_info: list[dict[str, Any]] = []
        for i in range(len(spec.depths)):
            down = Embedding(in_chans=w[i - 1], embed_dim=w[i], patch_size=3, stride=2, padding=1) \
                if i > 0 else nn.Identity()
            stages.append(Stage(spec, i, down))
            self.feature_info.append(dict(num_chs=w[i], reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = w[-1]
        self.norm = nn.BatchNorm2d(w[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head: nn.Module = nn.Identity()
        self.head_dist: nn.Module | None = None
        self._make_heads(spec.num_classes)
        self._init_weights()

    def _make_heads(self, num_classes: int) -> None:
        make = (lambda: nn.Linear(self.num_features, num_classes)) if num_classes > 0 else nn.Identity
        self.head = make()
        self.head_dist = make() if self.spec.distillation else None

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- timm model interface -----------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else [
            (r"^stages\.(\d+).downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None),
            (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def set_distilled_training(self, enable: bool = True) -> None:
        if enable and self.head_dist is None:
            raise ValueError("distilled training needs a spec with distillation=True")
        self.distilled_training = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module | tuple[nn.Module, nn.Module]:
        return (self.head, self.head_dist) if self.head_dist is not None else self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("", "avg"):
                raise ValueError(f"global_pool={global_pool!r}: allowed '' or 'avg'")
            self.global_pool = global_pool
        ref = next(self.parameters())
        self.num_classes = num_classes
        self._make_heads(num_classes)
        for m in (self.head, self.head_dist):
            if m is not None:
                m.to(device=ref.device, dtype=ref.dtype).train(self.training)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: int | list[int] | None = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Features of the chosen stages (last n if int, all if None), as in timm."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: allowed 'NCHW'")
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_idx = len(self.stages) - 1
        x = self.stem(x)
        stages = self.stages if torch.jit.is_scripting() or not stop_early \
            else self.stages[:max_index + 1]
        feat_idx = 0
        for feat_idx, stage in enumerate(stages):
            x = stage(x)
            if feat_idx in take_indices:
                intermediates.append(self.norm(x) if norm and feat_idx == last_idx else x)
        if intermediates_only:
            return intermediates
        if feat_idx == last_idx:
            x = self.norm(x)
        return x, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False):
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        if pre_logits:
            return x
        if self.head_dist is None:
            return self.head(x)
        x, x_dist = self.head(x), self.head_dist(x)
        if self.distilled_training and self.training and not torch.jit.is_scripting():
            return x, x_dist
        return (x + x_dist) / 2

    def forward(self, x: torch.Tensor):
        return self.forward_head(self.forward_features(x))


class FeatureNet(nn.Module):
    """features_only wrapper: returns the chosen stages' feature maps (for dense tasks)."""

    def __init__(self, model: SwiftFormerNAS, out_indices: tuple[int, ...] = (0, 1, 2, 3)) -> None:
        super().__init__()
        model.reset_classifier(0, "")
        self.model = model
        self.out_indices = tuple(out_indices)
        self.feature_info = [model.feature_info[i] for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, list(self.out_indices), stop_early=True,
                                                intermediates_only=True)


def build_model(spec: ArchSpec | Mapping[str, Any] | str, features_only: bool = False,
                out_indices: tuple[int, ...] = (0, 1, 2, 3), **kwargs: Any) -> nn.Module:
    """Build the network for a spec (an ArchSpec, its dict, JSON text or a preset name)."""
    if isinstance(spec, str):
        spec = load_spec(spec)
    elif isinstance(spec, Mapping):
        spec = ArchSpec.from_dict(spec)
    elif not isinstance(spec, ArchSpec):
        raise SpecError(f"spec: expected ArchSpec, dict, JSON or preset name, got {type(spec).__name__}")
    model = SwiftFormerNAS(spec, **kwargs)
    return FeatureNet(model, out_indices) if features_only else model


# -- checkpoints ------------------------------------------------------------------------------
def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official SwiftFormer checkpoint keys -> ours (== timm's). Pure and idempotent.

    Official layout: patch_embed.{0,1,3,4} (stem), network.{2i}.{j} (stage i blocks),
    network.{2i+1} (downsample into stage i+1), attn.Proj, layer_scale tensors, dist_head.
    """
    if "model" in state_dict and isinstance(state_dict["model"], Mapping):
        state_dict = state_dict["model"]
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        k = re.sub(r"^patch_embed\.", "stem.", k)
        k = re.sub(r"^dist_head\.", "head_dist.", k)
        k = k.replace("attn.Proj.", "attn.proj.")
        # layer_scale / layer_scale_1 / layer_scale_2 are bare tensors officially, LayerScale2d here.
        k = re.sub(r"\.(layer_scale(?:_1|_2)?)$", r".\1.gamma", k)
        m = re.match(r"^network\.(\d+)\.(.*)$", k)
        if m:
            n, rest = int(m.group(1)), m.group(2)
            k = f"stages.{n // 2}.blocks.{rest}" if n % 2 == 0 else f"stages.{n // 2 + 1}.downsample.{rest}"
        out[k] = v
    return out


# -- timm registry ----------------------------------------------------------------------------
def _create(spec: ArchSpec, pretrained: bool, **kwargs: Any) -> nn.Module:
    if pretrained:
        raise ValueError("pretrained weights are never downloaded: build the model, then "
                         "search_space.checkpoint.load_checkpoint(model, path) with a file you have")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    changes = {k: kwargs.pop(k) for k in ("num_classes", "drop_path_rate", "resolution")
               if k in kwargs}
    if "img_size" in kwargs:
        changes["resolution"] = kwargs.pop("img_size")
    features_only = kwargs.pop("features_only", False)
    out_indices = tuple(kwargs.pop("out_indices", (0, 1, 2, 3)))
    return build_model(spec.replace(**changes) if changes else spec,
                       features_only=features_only, out_indices=out_indices, **kwargs)


@register_model
def swiftformer_nas(pretrained: bool = False, spec: ArchSpec | Mapping | str = "XS",
                    **kwargs: Any) -> nn.Module:
    """Any spec: ``timm.create_model('swiftformer_nas', spec=ArchSpec(...) | dict | json | 'L1')``."""
    if isinstance(spec, str):
        spec = load_spec(spec)
    elif isinstance(spec, Mapping):
        spec = ArchSpec.from_dict(spec)
    return _create(spec, pretrained, **kwargs)


@register_model
def swiftformer_nas_xs(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _create(PRESETS["XS"], pretrained, **kwargs)


@register_model
def swiftformer_nas_s(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _create(PRESETS["S"], pretrained, **kwargs)


@register_model
def swiftformer_nas_l1(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _create(PRESETS["L1"], pretrained, **kwargs)


@register_model
def swiftformer_nas_l3(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    return _create(PRESETS["L3"], pretrained, **kwargs)
