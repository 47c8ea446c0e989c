"""``retrain --ray``: the same recipe under Ray Train's ``TorchTrainer``, checkpointed through
Ray's storage, resumable after the driver or a node dies.

The driver (:func:`retrain_on_ray`) validates the job as ``retrain`` does, joins Ray
(``search.cluster``), asks every node a worker fits on whether it can read the dataset and see
the storage, records the run in the results database (the driver is its only writer), and runs
``TorchTrainer(train_loop_per_worker)`` with ``num_workers`` workers. Each worker
(:func:`train_loop_per_worker`) runs ``search.retrain.loop.retrain_worker`` (the same loop as
torchrun / Slurm; Ray set up the process group and the device) in a node-local run directory
and, after every epoch, calls ``ray.train.report`` with a checkpoint: rank 0 uploads
``checkpoint.pth``, ``metrics.jsonl`` and ``progress.json``, every rank its
``rank_logs/rank<r>.json`` and ``nodes/rank<r>.json`` (node id, host, pid, the epoch this
launch started at); Ray merges them into one checkpoint directory of
the storage. After the last epoch rank 0 uploads its whole run directory (``final.pth``,
``result.json``, exports), and the driver copies that checkpoint into ``--output``.

Resume: launching again with the same ``--output`` and ``--storage`` and ``--resume`` makes
Ray Train restore the run (same run name) and every worker start from
``ray.train.get_checkpoint()``: the bit-identical resume of ``checkpoints.py``. The run's
database row is the one the first launch created (``<output>/ray_run.json``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from search_space.errors import UsageError
from search_space.io import json_safe, write_json_atomic

from ..cluster import (ask_each_node, check_address, cpu_only_trials, init_ray, node_name,
                       nodes_fitting, paths_problem, slots, storage_problem)
from ..storage import join, local_fs, open_storage
from .checkpoints import CHECKPOINT_NAME
from .config import RayLaunch, RetrainJob
from ..distributed import log
from .loop import retrain_worker
from .prepare import PreparedRun, prepare_retrain
from .record import finish_recorded_run, start_recorded_run

RUN_FILE = "ray_run.json"  # <output>/ray_run.json: the run's name, storage and database row
RANK0_FILES = (CHECKPOINT_NAME, "metrics.jsonl")  # what rank 0 uploads after each epoch
PROGRESS_FILE = "progress.json"  # {"epoch": the last epoch in the checkpoint} (rank 0)


# -- the worker --------------------------------------------------------------------------------
def _node_record(rank: int) -> dict[str, Any]:
    return {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(), "pid": os.getpid()}


class EpochReporter:
    """Reports every epoch to Ray Train with this rank's files as (part of) the checkpoint."""

    def __init__(self, run_dir: Path, rank: int, start_epoch: int) -> None:
        self.run_dir, self.rank = run_dir, rank
        write_json_atomic(run_dir / "nodes" / f"rank{rank}.json",
                          {**_node_record(rank), "start_epoch": start_epoch})

    def _rank_files(self) -> list[str]:
        files = [f"nodes/rank{self.rank}.json", f"rank_logs/rank{self.rank}.json"]
        return (list(RANK0_FILES) + [PROGRESS_FILE] if self.rank == 0 else []) + files

    def _report(self, metrics: dict[str, Any], everything: bool = False) -> None:
        with tempfile.TemporaryDirectory(prefix="sfn-ckpt-") as staging:
            if everything and self.rank == 0:
                shutil.copytree(self.run_dir, staging, dirs_exist_ok=True)
            for name in self._rank_files():
                src = self.run_dir / name
                if src.is_file():
                    (Path(staging) / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, Path(staging) / name)
            ray.train.report(json_safe(metrics),
                             checkpoint=ray.train.Checkpoint.from_directory(staging))

    def epoch(self, metrics: dict[str, Any]) -> None:
        if self.rank == 0:  # the epoch this checkpoint ends (read back by _restore)
            write_json_atomic(self.run_dir / PROGRESS_FILE, {"epoch": metrics.get("epoch")})
        self._report(dict(metrics))

    def final(self, done: bool) -> None:
        """After the loop: rank 0 uploads the whole run directory (final.pth, result.json)."""
        self._report({"done": done}, everything=True)


def _restore(run_dir: Path, job: RetrainJob) -> tuple[str | None, int]:
    """The checkpoint this worker starts from -- Ray's latest (copied here), else --resume
    FILE -- and the epoch it starts at (-1: unknown, from a --resume file)."""
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            if (Path(d) / CHECKPOINT_NAME).is_file():
                run_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(d) / CHECKPOINT_NAME, run_dir / CHECKPOINT_NAME)
                done = json.loads((Path(d) / PROGRESS_FILE).read_text(encoding="utf-8"))
                return str(run_dir / CHECKPOINT_NAME), int(done["epoch"]) + 1
    if job.resume not in (None, "auto"):
        return job.resume, -1
    return None, 0


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: the retrain loop in a node-local run directory (see module doc)."""
    job: RetrainJob = config["job"]
    torch.set_num_threads(max(1, int(config["cpus_per_worker"])))
    rank = ray.train.get_context().get_world_rank()
    local = Path(tempfile.mkdtemp(prefix=f"sfn-retrain-rank{rank}-"))
    try:
        run_dir = local / "run"
        resume, start_epoch = _restore(run_dir, job)
        job = dataclasses.replace(job, output=str(run_dir), resume=resume, record=False)
        reporter = EpochReporter(run_dir, rank, start_epoch)
        result = retrain_worker(job, device=ray.train.torch.get_device(),
                                on_epoch_end=reporter.epoch)
        reporter.final(done=bool(result.get("checkpoint")) if rank == 0 else False)
    finally:
        shutil.rmtree(local, ignore_errors=True)


# -- the driver --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RayRun:
    """Where one Ray Train run of a job lives: its name and storage."""

    name: str  # retrain-<arch hash>-<hash of the output path>: one run per --output
    storage_path: str
    filesystem: Any  # pyarrow FileSystem for a URI, None for a directory
    shown: str  # the storage as given (for messages)

    @property
    def path(self) -> str:
        return join(self.storage_path, self.name)


def ray_run(prep: PreparedRun, launch: RayLaunch) -> RayRun:
    """The run's name and storage (UsageError when no installed filesystem opens it)."""
    output = str(prep.output.resolve())
    storage = launch.storage or os.path.join(output, "ray")
    fs, path = open_storage(storage)
    digest = hashlib.sha256(output.encode()).hexdigest()[:8]
    return RayRun(name=f"retrain-{prep.arch_hash[:12]}-{digest}", storage_path=path,
                  filesystem=fs, shown=storage)


def _check_capacity(launch: RayLaunch) -> list[dict[str, Any]]:
    """The nodes a worker fits on; UsageError when the cluster cannot hold num_workers."""
    what = f"--cpus-per-worker {launch.cpus_per_worker:g} --gpus-per-worker " \
           f"{launch.gpus_per_worker:g}"
    nodes = nodes_fitting(launch.cpus_per_worker, launch.gpus_per_worker, what)
    fits = slots(nodes, launch.cpus_per_worker, launch.gpus_per_worker)
    if fits < launch.num_workers:
        raise UsageError(f"--num-workers {launch.num_workers}: the Ray cluster holds {fits} "
                         f"worker(s) of {what}")
    return nodes


def check_nodes(job: RetrainJob, run: RayRun, nodes: list[dict[str, Any]]) -> None:
    """Every node a worker may run on reads the dataset and sees the storage (one UsageError
    naming the input and the node otherwise). The storage is checked with a marker file the
    driver writes there and each node looks for."""
    data = os.path.abspath(job.data)
    for node, problem in zip(nodes, ask_each_node(nodes, paths_problem, data, ("train", "val"))):
        if problem:
            raise UsageError(f"--data {job.data}: not readable on {node_name(node)}: {problem}; "
                             "every node that runs workers needs the dataset at this path")
    fs = local_fs(run.filesystem)
    marker = join(run.storage_path, f".sfn-reachable-{uuid.uuid4().hex}")
    fs.create_dir(run.storage_path)
    with fs.open_output_stream(marker):
        pass
    try:
        answers = ask_each_node(nodes, storage_problem, run.filesystem, marker)
    finally:
        fs.delete_file(marker)
    for node, problem in zip(nodes, answers):
        if problem:
            raise UsageError(f"--storage {run.shown}: not reachable from {node_name(node)} "
                             f"({problem}); workers upload checkpoints there: give a directory "
                             "every node mounts (NFS) or a URI such as s3://bucket/prefix")


def _run_exists(run: RayRun) -> bool:
    info = local_fs(run.filesystem).get_file_info(run.path)
    return info.type.name == "Directory"


def _run_id(job: RetrainJob, prep: PreparedRun, run: RayRun, resuming: bool) -> int | None:
    """The run's database row: the first launch's when resuming, else a new one (driver)."""
    if not job.record:
        return None
    state = prep.output / RUN_FILE
    if resuming and state.is_file():
        run_id = json.loads(state.read_text(encoding="utf-8")).get("run_id")
        if run_id is not None:
            return int(run_id)
    run_id = start_recorded_run(job, prep)
    write_json_atomic(state, {"run_id": run_id, "name": run.name, "storage": run.shown})
    return run_id


def _trainer(job: RetrainJob, launch: RayLaunch, run: RayRun) -> TorchTrainer:
    use_gpu = launch.gpus_per_worker > 0
    resources = {"CPU": launch.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = launch.gpus_per_worker
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job, "cpus_per_worker": launch.cpus_per_worker},
        scaling_config=ScalingConfig(num_workers=launch.num_workers, use_gpu=use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=run.name, storage_path=run.storage_path,
                             storage_filesystem=run.filesystem,
                             failure_config=FailureConfig(max_failures=launch.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             logging_config=LoggingConfig(log_level="WARNING")))


def _check_job(job: RetrainJob, launch: RayLaunch) -> None:
    if job.processes.nproc > 1:
        raise UsageError(f"--nproc {job.processes.nproc}: not with --ray (Ray Train starts "
                         "--num-workers processes)")
    dev = job.processes.torch_device
    if dev.startswith("cuda") and launch.gpus_per_worker <= 0:
        raise UsageError(f"--torch-device {dev}: give --gpus-per-worker (the workers get no "
                         "GPU without it)")
    check_address(launch.address)


def _worker_job(job: RetrainJob, prep: PreparedRun) -> RetrainJob:
    """The job as every worker runs it: the spec inline and absolute paths (a worker runs in
    the job's working directory on its node), no database access."""
    absolute = {k: os.path.abspath(getattr(job, k)) for k in ("data", "teacher_checkpoint")
                if getattr(job, k)}
    if job.resume not in (None, "auto"):
        absolute["resume"] = os.path.abspath(job.resume)
    return dataclasses.replace(job, arch=prep.input_spec.canonical_json(), record=False,
                               **absolute)


def _collect(result: Any, prep: PreparedRun) -> dict[str, Any]:
    """Copy the run's last checkpoint (the whole run directory after the last epoch) into
    --output; returns result.json's summary ({} when training stopped before the end)."""
    out = prep.output
    out.mkdir(parents=True, exist_ok=True)
    if result.checkpoint is not None:
        with tempfile.TemporaryDirectory(prefix="sfn-result-", dir=out) as tmp:
            result.checkpoint.to_directory(tmp)
            shutil.copytree(tmp, out, dirs_exist_ok=True)
    path = out / "result.json"
    if not path.is_file() or not (result.metrics or {}).get("done"):
        return {}
    summary = json.loads(path.read_text(encoding="utf-8"))
    summary.update(checkpoint=str((out / "final.pth").resolve()))
    write_json_atomic(path, summary)
    return summary


def _fit(job: RetrainJob, launch: RayLaunch, run: RayRun, prep: PreparedRun,
         run_id: int | None) -> dict[str, Any]:
    try:
        result = _trainer(_worker_job(job, prep), launch, run).fit()
    except ray.train.TrainingFailedError as e:
        if job.record:
            finish_recorded_run(job.db, run_id, "FAILED", error=f"{type(e).__name__}: {e}"[:2000])
        raise
    summary = _collect(result, prep)
    if summary and job.record:
        finish_recorded_run(job.db, run_id, "COMPLETED", top1=summary.get("top1"),
                            top5=summary.get("top5"), checkpoint=summary["checkpoint"])
        summary.update(run_id=run_id, db=job.db)
        write_json_atomic(prep.output / "result.json", summary)
    return summary


def retrain_on_ray(job: RetrainJob, launch: RayLaunch) -> int:
    """``retrain --ray``: validate (nothing is written on bad input), join Ray, check every
    node, record the run, train under ``TorchTrainer``, copy the result into --output."""
    prep = prepare_retrain(job)
    _check_job(job, launch)
    run = ray_run(prep, launch)
    resuming = job.resume is not None
    if not resuming and _run_exists(run):
        raise UsageError(f"--output {prep.output}: its Ray Train run is already in {run.shown}; "
                         "add --resume to continue it, or give another --output")
    started = not ray.is_initialized()
    try:
        # rank 0's epoch lines; CPU-only workers start without triton, as the search's trials
        init_ray(launch.address, log_to_driver=True,
                 cpu_only_workers=cpu_only_trials(job.processes.torch_device,
                                                  launch.gpus_per_worker))
        nodes = _check_capacity(launch)
        if launch.address:
            check_nodes(job, run, nodes)
        run_id = _run_id(job, prep, run, resuming)
        log(f"ray train: {launch.num_workers} worker(s) of {launch.cpus_per_worker:g} CPU / "
            f"{launch.gpus_per_worker:g} GPU on {len(nodes)} node(s); run {run.name} in "
            f"{run.shown}{' (resuming)' if resuming else ''}")
        summary = _fit(job, launch, run, prep, run_id)
    finally:
        if started:
            ray.shutdown()
    log(f"done: {prep.output / 'result.json'}" if summary else
        f"stopped before the last epoch; continue with --resume ({prep.output})")
    return 0
