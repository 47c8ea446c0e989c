"""The training objective: label loss (mixup / smoothing) plus DeiT-style distillation.

Official ``util/losses.py`` and ``main.py``: hard distillation from a RegNetY-160 teacher on the
model's distillation head; mixup/cutmix targets with ``SoftTargetCrossEntropy``, otherwise label
smoothing. The teacher's weights are a user-supplied file (``weights_only``; never downloaded).
"""
from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from search_space.checkpoint import read_file, state_dict_of
from search_space.errors import UsageError

from .config import Recipe, RetrainConfig


class DistillationLoss(nn.Module):
    """DeiT-style distillation on the distillation head.

    hard: ``(1 - alpha) * base(head, labels) + alpha * CE(head_dist, teacher(x).argmax(1))``;
    soft: KL(head_dist / tau || teacher / tau) * tau^2 in place of the hard term;
    none: ``base`` on the model's output (averaged heads).
    """

    def __init__(self, base: nn.Module, teacher: nn.Module | None, kind: str = "hard",
                 alpha: float = 0.5, tau: float = 1.0) -> None:
        super().__init__()
        if kind not in ("hard", "soft", "none"):
            raise ValueError(f"distillation type {kind!r}: allowed hard, soft, none")
        if kind != "none" and teacher is None:
            raise ValueError("distillation needs a teacher model")
        self.base, self.teacher, self.kind, self.alpha, self.tau = base, teacher, kind, alpha, tau

    def forward(self, inputs: torch.Tensor, outputs, labels: torch.Tensor) -> torch.Tensor:
        out_kd = None
        if isinstance(outputs, (tuple, list)):
            outputs, out_kd = outputs
        base = self.base(outputs, labels)
        if self.kind == "none":
            return base
        if out_kd is None:
            raise ValueError("distillation needs (head, head_dist) outputs: call "
                             "model.set_distilled_training(True)")
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        if self.kind == "hard":
            kd = F.cross_entropy(out_kd, teacher_logits.argmax(dim=1))
        else:
            t = self.tau
            kd = F.kl_div(F.log_softmax(out_kd / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                          reduction="sum", log_target=True) * (t * t) / out_kd.numel()
        return (1.0 - self.alpha) * base + self.alpha * kd


def check_teacher_name(name: str) -> None:
    if not timm.is_model(name):
        raise UsageError(f"--teacher-model {name}: not a timm model name")


def load_teacher(name: str, path: str, num_classes: int, device: torch.device) -> nn.Module:
    """A timm model with user-supplied weights (weights_only; never downloaded), frozen."""
    teacher = timm.create_model(name, pretrained=False, num_classes=num_classes)
    sd = state_dict_of(read_file(path, "--teacher-checkpoint"), f"--teacher-checkpoint {path}")
    try:
        teacher.load_state_dict(sd)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UsageError(f"--teacher-checkpoint {path}: does not fit {name} with {num_classes} "
                         f"classes ({first})") from None
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def label_loss(cfg: RetrainConfig, recipe: Recipe, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    """The batch mixer (None when mixup and cutmix are off) and the loss on the labels."""
    if recipe.mixup > 0 or recipe.cutmix > 0:
        mixup = Mixup(mixup_alpha=recipe.mixup, cutmix_alpha=recipe.cutmix, prob=cfg.mixup_prob,
                      switch_prob=cfg.mixup_switch_prob, mode=cfg.mixup_mode,
                      label_smoothing=cfg.smoothing, num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()  # smoothing is inside the mixed targets
    if cfg.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=cfg.smoothing)
    return None, nn.CrossEntropyLoss()
