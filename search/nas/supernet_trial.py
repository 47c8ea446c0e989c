"""The supernet's Ray Tune trial (rung 1 of ``search --proxy supernet``): what runs on a node.

Kept apart from the driver's rung code (``supernet_search``: Optuna, the results store) so a
trial worker imports only the training stack, as ``trainable`` does for stand-alone trials.

The trial may run on any node, which need not see the driver's ``--out`` (docs/search.md,
"What each node must reach"): it trains in a node-local directory and sends the checkpoint
after every epoch to a :class:`DriverCheckpoint` actor on the driver's node, which writes
``<out>/<study>/supernet/supernet.pt``; a resumed trial starts from the bytes that actor
reads back.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from typing import Any, Callable, Mapping

from search_space.io import json_safe
from search_space.lazy import lazy_import

from ..proxy.memory import peak_rss_mib, reset_peak_rss
from ..proxy.node_cache import localize
from ..proxy.supernet.training import (CHECKPOINT_NAME, EpochLog, load_supernet,
                                       read_epoch_log, train_supernet, train_supernet_ranks)
from .trainable import allocated_threads

ray = lazy_import("ray")
tune = lazy_import("ray.tune")
strategies = lazy_import("ray.util.scheduling_strategies")

# What the supernet trial's final result carries into its row (``params`` would be dropped by
# the recorder: it is the candidates' parameter count there).
SUMMARY_KEYS = ("epochs_done", "resumed_at_epoch", "steps", "cpu_seconds", "train_seconds",
                "loss_largest", "loss_subnets", "device", "threads", "channels_last",
                "config_key", "fidelity_key", "dataset_id", "space_key", "node_id", "world_size",
                "peak_rss_mib")

# The checkpoint travels in pieces, one call at a time: whatever a call carries stays in the
# sending worker's memory for a while (Ray's buffers, the object store's shared pages), so
# small sequential pieces keep the trial's peak low. bench/bench_checkpoint_send.py, 95 MB
# checkpoint: whole +190 MiB peak RSS in 0.3 s; 16 MB pieces +128 MiB; 1 MB +57 MiB in 0.3 s;
# 256 KB +28 MiB in 0.9 s (chosen: ~2 % of a default-run epoch); 128 KB +18 MiB in 1.5 s.
CHUNK_BYTES = 256 * 2**10


class DriverCheckpoint:
    """The supernet checkpoint on the driver's node (a Ray actor pinned there, zero CPUs).

    The trial sends the checkpoint after every epoch (:func:`send_checkpoint`: ``begin``,
    ``write`` per piece, ``commit``) and reads it back when it starts (:func:`fetch_checkpoint`:
    ``size``, ``read`` per piece; a resumed run's last epoch), so the node the trial runs on
    needs neither the driver's ``--out`` nor a shared filesystem. In pieces of
    :data:`CHUNK_BYTES`, so the trial never holds the whole checkpoint in memory (a widths/1
    supernet's is hundreds of MB). Written to ``.<name>.partial`` and renamed over the
    checkpoint on ``commit``: a kill mid-send leaves the previous epoch's whole."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.partial = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
        self._file = None

    def size(self) -> int | None:
        return os.path.getsize(self.path) if os.path.isfile(self.path) else None

    def read(self, offset: int, n: int) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return f.read(n)

    def begin(self) -> None:
        if self._file is not None:  # a send that never committed (its trial died)
            self._file.close()
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self.partial, "wb")

    def write(self, piece: bytes) -> None:
        self._file.write(piece)

    def commit(self) -> int:
        self._file.close()
        self._file = None
        os.replace(self.partial, self.path)
        return os.path.getsize(self.path)


def send_checkpoint(actor, path: str) -> int:
    """The file at ``path`` to the driver's checkpoint through ``actor``, piece by piece."""
    ray.get(actor.begin.remote())
    with open(path, "rb") as f:
        while piece := f.read(CHUNK_BYTES):
            ray.get(actor.write.remote(piece))
    return ray.get(actor.commit.remote())


def fetch_checkpoint(actor, path: str) -> bool:
    """The driver's checkpoint (if there is one) into ``path``, piece by piece."""
    size = ray.get(actor.size.remote())
    if size is None:
        return False
    with open(path, "wb") as f:
        for offset in range(0, size, CHUNK_BYTES):
            f.write(ray.get(actor.read.remote(offset, CHUNK_BYTES)))
    return True


def driver_checkpoint(path: str):
    """A :class:`DriverCheckpoint` actor for ``path``, on this (the driver's) node."""
    here = ray.get_runtime_context().get_node_id()
    strategy = strategies.NodeAffinitySchedulingStrategy(here, soft=False)
    return ray.remote(num_cpus=0)(DriverCheckpoint).options(
        scheduling_strategy=strategy).remote(path)


def work_name(checkpoint: str) -> str:
    """The supernet trial's node-local directory name (under the system temp directory): one
    per driver checkpoint path, so a resumed trial on the same node finds and removes the
    directory of a killed one, and two studies never share one."""
    return "sfn-supernet-" + hashlib.sha256(checkpoint.encode()).hexdigest()[:16]


def supernet_trial(config: dict, *, data, fidelity, supernet, space, checkpoint, work_dir: str,
                   threads: int = 1, device: str = "auto", nproc: int = 1) -> None:
    """The Tune trial of rung 1: train (or resume) the supernet in a node-local directory, a
    report per epoch (after ``checkpoint``, a :class:`DriverCheckpoint` handle, has that
    epoch's checkpoint), then the final summary. ``nproc`` > 1: data-parallel on that many
    local processes (:func:`train_on_ranks`; rank 0's epochs and checkpoints reach the driver
    as the epochs end). ``work_dir``: the node-local directory's name under the system temp
    directory (:func:`work_name`; a killed trial's is removed by the next run there).
    ``peak_rss_mib`` of the summary is this process's (the ranks are processes of their own)."""
    reset_peak_rss()
    threads = allocated_threads(threads)
    data = localize(data, fidelity, workers=threads)
    node = ray.get_runtime_context().get_node_id()
    work = os.path.join(tempfile.gettempdir(), work_dir)
    shutil.rmtree(work, ignore_errors=True)  # a killed run's: the driver has its checkpoint
    os.makedirs(work)
    path = os.path.join(work, CHECKPOINT_NAME)
    try:
        fetch_checkpoint(checkpoint, path)  # a resumed run continues from the driver's epoch

        def on_epoch(m: dict) -> None:
            send_checkpoint(checkpoint, path)
            tune.report({**json_safe(epoch_row(m)), "node_id": node, "final": False})

        kw = dict(seed=int(config["seed"]), space=space, device=device, checkpoint_dir=work)
        if nproc > 1:
            info = train_on_ranks(nproc, supernet, fidelity, data, threads=threads,
                                  on_epoch=on_epoch, **kw)
        else:
            _, info = train_supernet(supernet, fidelity, data, threads=threads,
                                     report=on_epoch, **kw)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {k: info.get(k) for k in SUMMARY_KEYS}
    summary.update(node_id=node, supernet_params=info["params"], peak_rss_mib=peak_rss_mib(),
                   history=[{k: v for k, v in h.items() if k != "step_losses"}
                            for h in info["history"]])
    tune.report({**json_safe(summary), "final": True})


def train_on_ranks(nproc: int, supernet, fidelity, data, *, seed: int, space, device: str,
                   checkpoint_dir: str, threads: int,
                   on_epoch: Callable[[dict], None] | None = None,
                   poll_seconds: float = 1.0) -> dict[str, Any]:
    """Train (or resume) the supernet data-parallel on ``nproc`` local ranks, each with
    ``threads // nproc`` torch threads (the trial holds ``nproc`` trials' CPUs); return the
    summary ``train_supernet`` gives, read back from the finished checkpoint, with this run's
    world size, threads per rank, wall time and the epoch it resumed at. ``on_epoch`` gets
    each epoch's metrics in this thread while the ranks run (rank 0 logs them after the
    epoch's checkpoint: :class:`EpochLog`), at most ``poll_seconds`` after they are logged."""
    path = os.path.join(checkpoint_dir, CHECKPOINT_NAME)
    resumed_at = load_supernet(path)[1]["epoch"] if os.path.isfile(path) else 0
    per_rank = max(1, threads // nproc)
    log = os.path.join(checkpoint_dir, "epochs.jsonl")
    if os.path.exists(log):
        os.remove(log)
    failure: list[BaseException] = []

    def ranks() -> None:
        try:
            train_supernet_ranks(nproc, supernet, fidelity, data, seed=seed,
                                 checkpoint_dir=checkpoint_dir, space=space, device=device,
                                 threads=per_rank, report=EpochLog(log))
        except BaseException as e:  # re-raised in the calling thread below
            failure.append(e)

    t0 = time.perf_counter()
    worker = threading.Thread(target=ranks, name="supernet-ranks", daemon=True)
    worker.start()
    done = 0
    while True:
        worker.join(timeout=poll_seconds)
        # alive BEFORE reading: a rank that logs its last epoch and ends between a read and the
        # check would otherwise end the loop with that epoch unread (its checkpoint never sent,
        # the driver scoring on the one before)
        alive = worker.is_alive()
        epochs = read_epoch_log(log)
        for m in epochs[done:]:
            if on_epoch is not None:
                on_epoch(m)
        done = len(epochs)
        if not alive:
            break
    if failure:
        raise failure[0]
    wall = time.perf_counter() - t0
    _, info = train_supernet(supernet, fidelity, data, seed=seed, space=space, device=device,
                             threads=per_rank, checkpoint_dir=checkpoint_dir)  # finished: loads
    return {**info, "world_size": nproc, "threads": per_rank, "train_seconds": wall,
            "resumed_at_epoch": resumed_at}


def epoch_row(m: Mapping[str, Any]) -> dict:
    """An epoch of ``train_supernet`` as an epoch row (per-step losses dropped)."""
    row = {k: v for k, v in m.items() if k != "step_losses"}
    row.update(train_loss=m.get("loss_largest"), train_cpu_seconds=m.get("cpu_seconds"))
    return row
