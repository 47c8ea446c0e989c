"""The SwiftFormer supernet: one parameter store that holds every member of a SearchSpace.

Layout. The store is the largest network of the space with, at every block position, the
*union* of timm's two encoders: the conv encoder's modules (``dwconv, norm, pwconv1, pwconv2,
layer_scale``) and the SwiftFormer encoder's (``local_representation, attn, linear,
layer_scale_1, layer_scale_2``). Their names do not collide, so the store's state-dict keys
are exactly the union of the keys of ``build_model(spec)`` over the space, and a subnet is
a *prefix slice* of it:

* elastic depth: a stage of depth d uses its first d block positions (OFA, BigNAS);
* elastic width: a stage of width c uses the first c channels of its residual stream, of
  every block's inner channels and of the attention token dimension (which equals the width
  in SwiftFormer); the channel order is the one training gives the first channels, which every
  subnet shares (slimmable networks / BigNAS); ``reorder_hidden_units`` additionally sorts the
  MLP hidden units by importance as OFA does;
* elastic MLP ratio: the first int(c * ratio) hidden units of the block's MLP;
* attention placement: the last k positions of a stage use their attention-encoder weights,
  the others their conv-encoder weights; each variant is trained when sampled (a position
  holds only the variants some member of the space uses there).

``Supernet.forward`` runs the active subnet with functional ops on sliced weights (an
independent implementation of timm's blocks); :meth:`Supernet.extract` returns the sliced
state dict, which loads with ``strict=True`` into ``build_model(spec)`` and gives the same
logits (tests/test_supernet.py). BatchNorm layers behave exactly like ``nn.BatchNorm2d`` on
their first c channels, so ``search.proxy.train.recalibrate_bn`` and ``evaluate`` work on the
supernet unchanged.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.swiftformer import Block, ConvEncoder, Embedding, LayerScale2d

from search_space.errors import UsageError
from search_space.space import SearchSpace, attn_count
from search_space.spec import ArchSpec

from .config import largest, smallest

__all__ = ["Supernet", "position_kinds"]

CONV_PARTS = ("dwconv", "norm", "pwconv1", "pwconv2", "layer_scale")
ATTN_PARTS = ("local_representation", "attn", "linear", "layer_scale_1", "layer_scale_2")

# Channel groups of every module's (output, input) axes, for extraction. c = the stage's
# width, p = the previous stage's width, s = the stem's first conv (widths[0] // 2),
# h = the block's MLP hidden units, "-" = not elastic (kept whole).
_BLOCK_AXES = {
    "dwconv": ("c", "-"), "norm": ("c",), "pwconv1": ("h", "c"), "pwconv2": ("c", "h"),
    "layer_scale": ("c",),
    "local_representation.dwconv": ("c", "-"), "local_representation.norm": ("c",),
    "local_representation.pwconv1": ("c", "c"), "local_representation.pwconv2": ("c", "c"),
    "local_representation.layer_scale": ("c",),
    "attn": ("c", "-"),  # w_g: (token_dim, 1)
    "attn.to_query": ("c", "c"), "attn.to_key": ("c", "c"), "attn.proj": ("c", "c"),
    "attn.final": ("c", "c"),
    "linear.norm1": ("c",), "linear.fc1": ("h", "c"), "linear.fc2": ("c", "h"),
    "layer_scale_1": ("c",), "layer_scale_2": ("c",),
}
_TOP_AXES = {"stem.0": (0, ("s", "-")), "stem.1": (0, ("s",)), "stem.3": (0, ("c", "s")),
             "stem.4": (0, ("c",)), "norm": (-1, ("c",)), "head": (-1, ("-", "c")),
             "head_dist": (-1, ("-", "c"))}
_PARAM_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked", "gamma",
                "w_g")
_BLOCK_KEY = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$")
_DOWN_KEY = re.compile(r"^stages\.(\d+)\.downsample\.(proj|norm)$")


def position_kinds(space: SearchSpace, stage: int, position: int) -> set[str]:
    """Which encoders ('conv', 'attn') some member of ``space`` uses at a block position."""
    kinds = set()
    for d in space.depths[stage]:
        if position < d:
            for m in space.attn_modes:
                kinds.add("attn" if position >= d - attn_count(m, d) else "conv")
    return kinds


class DualBlock(nn.Module):
    """Both encoders' modules at one block position, at the space's largest width and ratio.

    Holds storage only (no forward): the supernet runs the active variant functionally."""

    def __init__(self, dim: int, mlp_ratio: float, kinds: set[str], layer_scale_init: float) -> None:
        super().__init__()
        self.kinds = frozenset(kinds)
        parts: list[nn.Module] = []
        if "conv" in kinds:
            parts.append(ConvEncoder(dim=dim, hidden_dim=int(dim * mlp_ratio), kernel_size=3))
        if "attn" in kinds:
            parts.append(Block(dim, mlp_ratio=mlp_ratio, layer_scale_init_value=layer_scale_init))
        for part in parts:
            for name, child in part.named_children():
                if name != "drop_path" and name != "act":
                    self.add_module(name, child)


class SuperStage(nn.Module):
    def __init__(self, downsample: nn.Module, blocks: list[DualBlock]) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)


class Supernet(nn.Module):
    """Weight-sharing supernet over ``space`` (which fixes num_classes and distillation).

    ``set_active(spec)`` selects the subnet ``forward`` runs; ``extract(spec)`` returns its
    weights as a ``build_model(spec)`` state dict. Drop path is not applied (the proxy uses
    none).
    """

    def __init__(self, space: SearchSpace, conv_layer_scale_init: float = 1.0,
                 in_chans: int = 3) -> None:
        super().__init__()
        if space.num_classes < 1:
            raise UsageError(f"supernet: space.num_classes={space.num_classes}: allowed >= 1 "
                             "(the supernet is trained with a classifier head)")
        self.space = space
        self.max_spec, self.min_spec = largest(space), smallest(space)
        self.active = self.max_spec
        w, big = self.max_spec.widths, self.max_spec
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, w[0] // 2, 3, 2, 1), nn.BatchNorm2d(w[0] // 2), nn.ReLU(),
            nn.Conv2d(w[0] // 2, w[0], 3, 2, 1), nn.BatchNorm2d(w[0]), nn.ReLU())
        stages = []
        for i in range(len(w)):
            down = Embedding(in_chans=w[i - 1], embed_dim=w[i], patch_size=3, stride=2, padding=1) \
                if i > 0 else nn.Identity()
            blocks = [DualBlock(w[i], big.mlp_ratios[i], position_kinds(space, i, j),
                                big.layer_scale_init) for j in range(big.depths[i])]
            stages.append(SuperStage(down, blocks))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.BatchNorm2d(w[-1])
        self.head = nn.Linear(w[-1], space.num_classes)
        self.head_dist = nn.Linear(w[-1], space.num_classes) if space.distillation else None
        self._init_weights(conv_layer_scale_init)

    def _init_weights(self, conv_layer_scale_init: float) -> None:
        # As SwiftFormerNAS._init_weights (trunc normal 0.02, zero biases); timm's own init of
        # w_g (randn) and the attention layer scales (layer_scale_init) is kept.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            for stage in self.stages:
                for blk in stage.blocks:
                    if "conv" in blk.kinds:
                        blk.layer_scale.gamma.fill_(conv_layer_scale_init)

    # -- subnets ------------------------------------------------------------------------------
    def check(self, spec: ArchSpec) -> ArchSpec:
        """The spec if it is a member of the supernet's space, else a UsageError saying why."""
        why = self.space.why_not(spec)
        if why is not None:
            raise UsageError(f"spec {spec.arch_hash} is not a subnet of this supernet: {why}")
        return spec

    def set_active(self, spec: ArchSpec) -> None:
        self.active = self.check(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.active
        x = _stem(self.stem, x, s.widths[0])
        for i, stage in enumerate(self.stages):
            c, h = s.widths[i], s.hidden_dim(i)
            if i > 0:
                x = _conv(x, stage.downsample.proj, c, s.widths[i - 1])
                x = _bn(x, stage.downsample.norm, c)
            for j, kind in enumerate(s.block_kinds(i)):
                blk = stage.blocks[j]
                x = _conv_encoder(x, blk, c, h) if kind == "conv" else _attn_encoder(x, blk, c, h)
        c = s.widths[-1]
        x = _bn(x, self.norm, c).mean(dim=(2, 3))
        out = _linear(x, self.head, None, c)
        if self.head_dist is None:
            return out
        return (out + _linear(x, self.head_dist, None, c)) / 2

    # -- extraction ---------------------------------------------------------------------------
    def extract(self, spec: ArchSpec) -> dict[str, torch.Tensor]:
        """The subnet's weights and BatchNorm buffers as a state dict of ``build_model(spec)``
        (contiguous copies on the supernet's device)."""
        self.check(spec)
        out = {}
        for name, t in self.state_dict().items():
            sizes = _subnet_sizes(name, t.dim(), spec)
            if sizes is not None:
                index = tuple(slice(0, n) if n is not None else slice(None) for n in sizes)
                out[name] = t[index].contiguous().clone()
        return out

    # -- channel order ------------------------------------------------------------------------
    @torch.no_grad()
    def reorder_hidden_units(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """OFA's re_organize_middle_weights for every block's MLP: sort the hidden units by the
        L1 norm of their outgoing weights, most important first, so that a smaller MLP ratio
        keeps the most important units. The optimizer's per-parameter state (Adam moments)
        is permuted with the weights."""
        for stage in self.stages:
            for blk in stage.blocks:
                pairs = []
                if "conv" in blk.kinds:
                    pairs.append((blk.pwconv1, blk.pwconv2))
                if "attn" in blk.kinds:
                    pairs.append((blk.linear.fc1, blk.linear.fc2))
                for fc1, fc2 in pairs:
                    idx = fc2.weight.abs().sum(dim=(0, 2, 3)).argsort(descending=True)
                    for p, dim in ((fc1.weight, 0), (fc1.bias, 0), (fc2.weight, 1)):
                        _permute(p, idx, dim, optimizer)


def _permute(p: torch.Tensor, idx: torch.Tensor, dim: int,
             optimizer: torch.optim.Optimizer | None) -> None:
    p.copy_(p.index_select(dim, idx))
    state = optimizer.state.get(p, {}) if optimizer is not None else {}
    for v in state.values():
        if isinstance(v, torch.Tensor) and v.shape == p.shape:
            v.copy_(v.index_select(dim, idx))


def _subnet_sizes(name: str, ndim: int, spec: ArchSpec) -> list[int | None] | None:
    """Per-axis sizes of state-dict entry ``name`` in ``build_model(spec)`` (None = whole
    axis), or None if the subnet does not have the entry."""
    module, _, _param = name.rpartition(".")
    if _param not in _PARAM_NAMES:
        raise KeyError(f"supernet state dict: unexpected entry {name}")
    stage, axes = 0, None
    if module in _TOP_AXES:
        stage, axes = _TOP_AXES[module]
        stage = stage % len(spec.widths)
    elif (m := _DOWN_KEY.match(module)) is not None:
        stage, axes = int(m.group(1)), (("c", "p") if m.group(2) == "proj" else ("c",))
    elif (m := _BLOCK_KEY.match(name)) is not None:
        stage, pos = int(m.group(1)), int(m.group(2))
        rest = m.group(3).rpartition(".")[0]
        if pos >= spec.depths[stage]:
            return None
        parts = CONV_PARTS if spec.block_kinds(stage)[pos] == "conv" else ATTN_PARTS
        if rest.split(".")[0] not in parts:
            return None
        axes = _BLOCK_AXES[rest]
    if axes is None:
        raise KeyError(f"supernet state dict: no slicing rule for {name}")
    size = {"c": spec.widths[stage], "p": spec.widths[stage - 1] if stage else None,
            "s": spec.widths[0] // 2, "h": spec.hidden_dim(stage), "-": None}
    return [size[a] for a in axes[:ndim]] + [None] * max(ndim - len(axes), 0)


# -- the subnet's forward, functionally on sliced weights ----------------------------------------
def _conv(x: torch.Tensor, m: nn.Conv2d, cout: int, cin: int) -> torch.Tensor:
    return F.conv2d(x, m.weight[:cout, :cin], m.bias[:cout], m.stride, m.padding, m.dilation)


def _dwconv(x: torch.Tensor, m: nn.Conv2d, c: int) -> torch.Tensor:
    return F.conv2d(x, m.weight[:c], m.bias[:c], m.stride, m.padding, m.dilation, c)


def _linear(x: torch.Tensor, m: nn.Linear, cout: int | None, cin: int) -> torch.Tensor:
    return F.linear(x, m.weight[:cout, :cin], m.bias[:cout])


def _scale(x: torch.Tensor, ls: LayerScale2d, c: int) -> torch.Tensor:
    return x * ls.gamma[:c]


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, c: int) -> torch.Tensor:
    """nn.BatchNorm2d.forward on the first c channels (running stats updated in place)."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean[:c] if track else None,
                        bn.running_var[:c] if track else None, bn.weight[:c], bn.bias[:c],
                        use_batch, factor, bn.eps)


def _stem(stem: nn.Sequential, x: torch.Tensor, c: int) -> torch.Tensor:
    x = F.relu(_bn(_conv(x, stem[0], c // 2, stem[0].in_channels), stem[1], c // 2))
    return F.relu(_bn(_conv(x, stem[3], c, c // 2), stem[4], c))


def _conv_encoder(x: torch.Tensor, b: DualBlock, c: int, h: int) -> torch.Tensor:
    y = _bn(_dwconv(x, b.dwconv, c), b.norm, c)
    y = _conv(F.gelu(_conv(y, b.pwconv1, h, c)), b.pwconv2, c, h)
    return x + _scale(y, b.layer_scale, c)


def _attention(x: torch.Tensor, a: nn.Module, c: int) -> torch.Tensor:
    bsz, _, hgt, wid = x.shape
    t = x.flatten(2).permute(0, 2, 1)
    q = F.normalize(_linear(t, a.to_query, c, c), dim=-1)
    k = F.normalize(_linear(t, a.to_key, c, c), dim=-1)
    g = F.normalize(q @ a.w_g[:c] * c ** -0.5, dim=1)  # token_dim = width in SwiftFormer
    g = torch.sum(g * q, dim=1, keepdim=True)
    out = _linear(g * k, a.proj, c, c) + q
    return _linear(out, a.final, c, c).permute(0, 2, 1).reshape(bsz, -1, hgt, wid)


def _attn_encoder(x: torch.Tensor, b: DualBlock, c: int, h: int) -> torch.Tensor:
    lr = b.local_representation
    y = _bn(_dwconv(x, lr.dwconv, c), lr.norm, c)
    y = _conv(F.gelu(_conv(y, lr.pwconv1, c, c)), lr.pwconv2, c, c)
    x = x + _scale(y, lr.layer_scale, c)
    x = x + _scale(_attention(x, b.attn, c), b.layer_scale_1, c)
    mlp = b.linear
    y = _bn(x, mlp.norm1, c)
    y = _conv(F.gelu(_conv(y, mlp.fc1, h, c)), mlp.fc2, c, h)
    return x + _scale(y, b.layer_scale_2, c)
