"""The supernet setting of the fidelity study: one supernet per seed, the references scored as
its subnets.

A :class:`SupernetTask` is one seed of a supernet setting (``Setting.supernet`` set): train the
supernet (``search.proxy.supernet.training.train_supernet``, checkpointed every epoch under
``<out>/supernet/<setting>-<key>/seed<k>/`` so a rerun resumes, a finished one just loads) and
score every reference (``score_subnets``: BatchNorm recalibration, val loss and top-1). Each
reference's result is one row of the study's cache, like a stand-alone training's, so the
study's summary ranks both kinds the same way:

* ``top1`` / ``val_loss``: the subnet's, on the setting's val split;
* ``cpu_seconds``: the reference's share of the supernet's training (training / number of
  references) plus its own scoring, so a setting's "CPU-s all refs" is the whole cost: the
  supernet's training (every epoch, also those of an interrupted earlier run: the checkpoint
  carries them) plus scoring every reference;
* ``supernet_train_cpu_seconds`` and ``score_cpu_seconds`` apart.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from search.proxy.data import ProxyData
from search.proxy.supernet.config import to_proxy
from search.proxy.supernet.scoring import score_subnets
from search.proxy.supernet.training import train_supernet
from search.proxy.train import NonFiniteLoss
from search_space.costs import analytic_params
from search_space.spec import ArchSpec

from .settings import Setting, setting_key

__all__ = ["SupernetTask", "checkpoint_dir", "run_task", "row_fidelity"]


@dataclass(frozen=True)
class SupernetTask:
    """One seed of a supernet setting: module-level and plain, so a spawned worker unpickles it."""

    setting: Setting
    refs: tuple[str, ...]
    specs: tuple[ArchSpec, ...]
    data: ProxyData
    seed: int
    threads: int
    checkpoint_dir: str
    paths: tuple[str, ...]  # the cache file of each reference's row


def checkpoint_dir(out_dir: str, setting: Setting, data_id: str, seed: int) -> str:
    return os.path.join(out_dir, "supernet", f"{setting.name}-{setting_key(setting, data_id)}",
                        f"seed{seed}")


def row_fidelity(setting: Setting) -> dict[str, Any]:
    """The ``fidelity`` of a supernet row: the data's Fidelity with the supernet's epochs and
    batch size (what the report's columns show), the recipe beside it."""
    cfg = setting.supernet
    return {**setting.fidelity.to_dict(), "epochs": cfg.epochs, "batch_size": cfg.batch_size,
            "proxy": "supernet", "supernet": cfg.to_dict()}


def _failed_rows(task: SupernetTask, error: str, cpu: float, wall: float) -> list[dict]:
    n = len(task.refs)
    return [{"status": "FAILED", "error": error, "top1": 100.0 / task.data.num_classes,
             "val_loss": None, "history": [], "epochs_done": 0, "cpu_seconds": cpu / n,
             "wall_seconds": wall / n, "supernet_train_cpu_seconds": cpu} for _ in task.refs]


def _scored_rows(task: SupernetTask, info: dict, scores: list[dict]) -> list[dict]:
    n = len(task.refs)
    train_cpu = float(info["cpu_seconds"])
    train_wall = float(sum(h["seconds"] for h in info["history"]))
    return [{"status": "COMPLETED", "top1": s["top1"], "val_loss": s["val_loss"],
             "score": s["score"], "score_metric": task.setting.supernet.score,
             "cpu_seconds": train_cpu / n + s["cpu_seconds"],
             "wall_seconds": train_wall / n + s["seconds"],
             "score_cpu_seconds": s["cpu_seconds"], "supernet_train_cpu_seconds": train_cpu,
             "supernet_train_seconds": train_wall, "supernet_params": info["params"],
             "resumed_at_epoch": info["resumed_at_epoch"], "epochs_done": info["epochs_done"],
             "params": analytic_params(spec), "history": [], "threads": info["threads"],
             "device": info["device"]} for s, spec in zip(scores, task.specs)]


def run_task(task: SupernetTask) -> list[tuple[str, ArchSpec, dict[str, Any]]]:
    """Worker body: train (or resume, or load) the seed's supernet, score the references.
    Returns (cache path, reference spec, row) per reference; a diverged training gives FAILED
    rows at chance top-1 (a result, not a crash), as a diverged stand-alone training does."""
    st, cfg, fid = task.setting, task.setting.supernet, task.setting.fidelity
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        net, info = train_supernet(cfg, fid, task.data, seed=task.seed, device="cpu",
                                   threads=task.threads, channels_last=False,
                                   checkpoint_dir=task.checkpoint_dir)
    except NonFiniteLoss as e:
        rows = _failed_rows(task, str(e), time.process_time() - c0, time.perf_counter() - w0)
    else:
        pspecs = [to_proxy(s, task.data.num_classes, fid.resolution, cfg.width_divisor)
                  for s in task.specs]
        scores = score_subnets(net, pspecs, task.data, fid, recal_images=cfg.recal_images,
                               device="cpu", channels_last=False, score=cfg.score)
        rows = _scored_rows(task, info, scores)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for ref, r in zip(task.refs, rows):
        r.update(setting=st.name, ref=ref, seed=task.seed, fidelity=row_fidelity(st),
                 dataset_id=task.data.dataset_id, finished_at=stamp)
    return list(zip(task.paths, task.specs, rows))
