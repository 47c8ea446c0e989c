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

from search_space.io import atomic_write, json_safe
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

class DriverCheckpoint:
    """The supernet checkpoint on the driver's node (a Ray actor pinned there, zero CPUs).

    The trial sends the checkpoint after every epoch (``put``) and reads it back when it starts
    (``get``: a resumed run's last epoch), so the node the trial runs on needs neither the
    driver's ``--out`` nor a shared filesystem. Written atomically: a kill between two epochs
    leaves the previous one whole."""

    def __init__(self, path: str) -> None:
        self.path = path

    def get(self) -> bytes | None:
        if not os.path.isfile(self.path):
            return None
        with open(self.path, "rb") as f:
            return f.read()

    def put(self, blob: bytes) -> int:
        atomic_write(self.path, lambda tmp: tmp.write_bytes(blob))
        return len(blob)


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
        blob = ray.get(checkpoint.get.remote())
        if blob is not None:  # a resumed run: continue from the driver's last epoch
            with open(path, "wb") as f:
                f.write(blob)

        def send() -> None:
            with open(path, "rb") as f:
                ray.get(checkpoint.put.remote(f.read()))

        def on_epoch(m: dict) -> None:
            send()
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
        epochs = read_epoch_log(log)
        for m in epochs[done:]:
            if on_epoch is not None:
                on_epoch(m)
        done = len(epochs)
        if not worker.is_alive():
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
