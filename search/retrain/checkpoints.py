"""Checkpoints of a retrain run: saved atomically every epoch, resumed bit-identically.

``checkpoint.pth`` holds everything a resumed run needs to take exactly the steps an
uninterrupted one takes (model, optimizer, scheduler, EMA, scaler, epoch, step, history, run
id); ``final.pth`` only the weights and the spec (loadable with
``search_space.checkpoint.load_checkpoint``) and, beside it, the deployment exports (ONNX and
CoreML through ``latency_models.export``). Written through ``search_space.io`` (never a torn
file) and read with ``torch.load(weights_only=True)`` (never pickled code).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from latency_models.export import export_coreml, export_onnx
from search_space.checkpoint import read_file
from search_space.errors import UsageError
from search_space.io import save_torch_atomic
from search_space.spec import ArchSpec

from ..distributed import log

CHECKPOINT_NAME = "checkpoint.pth"
FINAL_NAME = "final.pth"
CHECKPOINT_FORMAT = "swiftformer-nas-retrain/1"


@dataclass
class Progress:
    """Where a run stands: the next epoch to train, optimizer steps so far, per-epoch metrics,
    and the results-database row it reports to."""

    start_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    run_id: int | None = None


@dataclass
class TrainState:
    """The objects a checkpoint saves and restores (scheduler, EMA, scaler may be absent)."""

    model: nn.Module  # unwrapped (no DDP)
    optimizer: torch.optim.Optimizer
    scheduler: Any | None
    ema: nn.Module | None  # timm ModelEmaV3
    scaler: Any | None  # timm NativeScaler

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "model_ema": self.ema.module.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck.get("lr_scheduler") is not None:
            self.scheduler.load_state_dict(ck["lr_scheduler"])
        if self.ema is not None and ck.get("model_ema") is not None:
            self.ema.module.load_state_dict(ck["model_ema"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])


def resume_path(resume: str | None, out: Path, rank: int) -> str | None:
    """The checkpoint to resume from: ``resume`` itself, or for "auto" <out>/checkpoint.pth if
    it exists (else None: start from scratch)."""
    if resume != "auto":
        return resume
    ckpt = out / CHECKPOINT_NAME
    if ckpt.is_file():
        return str(ckpt)
    log(f"--resume: no {ckpt} yet, starting from scratch", rank)
    return None


def read_resumable(path: str, spec_json: str) -> dict[str, Any]:
    """A retrain checkpoint of this architecture (weights-only read); one line naming the file
    otherwise (truncated, empty, another format, another architecture)."""
    ck = read_file(path, "--resume")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise UsageError(f"--resume {path}: not a retrain checkpoint (format {found!r})")
    if ck.get("spec") != spec_json:
        raise UsageError(f"--resume {path}: checkpoint is of another architecture")
    return ck


def restore(path: str, spec_json: str, state: TrainState) -> Progress:
    """Load a retrain checkpoint of this architecture into ``state``; return its progress."""
    ck = read_resumable(path, spec_json)
    state.load_state_dict(ck)
    return Progress(start_epoch=ck["epoch"] + 1, global_step=ck["global_step"],
                    history=list(ck.get("history", [])), run_id=ck.get("run_id"))


def save_checkpoint(path: Path, state: TrainState, progress: Progress, epoch: int, *,
                    spec_json: str, arch_hash: str, job: dict[str, Any]) -> None:
    """The end-of-epoch checkpoint (``epoch`` done; ``job`` = the settings, JSON-safe)."""
    save_torch_atomic({"format": CHECKPOINT_FORMAT, "epoch": epoch,
                       "global_step": progress.global_step, **state.state_dict(),
                       "spec": spec_json, "arch_hash": arch_hash, "args": job,
                       "history": progress.history, "run_id": progress.run_id}, path)


def save_final(path: Path, state: TrainState, *, spec_json: str, arch_hash: str) -> None:
    """The trained weights (and EMA) with the spec: what evaluate and deployment load."""
    save_torch_atomic({"format": CHECKPOINT_FORMAT, "model": state.model.state_dict(),
                       "model_ema": state.ema.module.state_dict() if state.ema is not None else None,
                       "spec": spec_json, "arch_hash": arch_hash}, path)


def export_final(model: nn.Module, spec: ArchSpec, out: Path) -> dict[str, Any]:
    """ONNX (checked against torch with onnxruntime) and CoreML of the trained model.

    A failed export is reported, never fatal: the trained weights are already saved.
    """
    done: dict[str, Any] = {}
    model = model.to("cpu").eval()
    for kind, export, suffix in (("onnx", export_onnx, ".onnx"),
                                 ("coreml", export_coreml, ".mlpackage")):
        path = out / f"model{suffix}"
        try:
            info = export(model, str(path), resolution=spec.resolution)
        except Exception as e:  # e.g. a converter missing an op: keep the trained weights
            log(f"{kind} export failed: {type(e).__name__}: {e}")
            done[kind] = {"error": f"{type(e).__name__}: {e}"}
            continue
        done[kind] = {k: v for k, v in (info or {}).items()
                      if isinstance(v, (str, int, float, bool))} | {"path": str(path)}
        log(f"exported {kind}: {path}")
    return done
