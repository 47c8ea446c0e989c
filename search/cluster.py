"""Running on Ray: a local instance or an existing cluster (``--address``), checked node by node.

Shared by the search (``search.nas``) and the retraining on Ray Train (``search.retrain``).

* :func:`check_address` (cheap, before any work) refuses an address nothing answers at: Ray
  itself would retry for minutes.
* :func:`init_ray` starts or joins Ray; on a cluster this project is the job's
  ``runtime_env.working_dir``, so every node imports the same code.
* :func:`nodes_fitting` lists the nodes one trial / worker fits on (UsageError when none does).
* :func:`ask_each_node` runs one zero-CPU task pinned to each of them
  (``NodeAffinitySchedulingStrategy``) and returns their answers: whether the node can read
  the data (:func:`data_problem`, :func:`paths_problem`) and reach the storage
  (:func:`storage_problem`). Callers turn a problem into one UsageError line naming the
  input, the node and what is needed, before anything is written.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from search_space.errors import UsageError
from search_space.lazy import lazy_import

from .proxy.data import ProxyData
from .proxy.node_cache import cache_root_problem, listing_problem, node_data_problem
from .storage import local_fs

ray = lazy_import("ray")
strategies = lazy_import("ray.util.scheduling_strategies")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# What the job's working_dir leaves out (runs, databases and caches stay on the driver).
WORKING_DIR_EXCLUDES = ["runs/", ".git/", "*.db", "__pycache__/"]
HOST_PORT = re.compile(r"(?:ray://)?(\[[0-9a-fA-F:]+\]|[^:/\s]+):(\d{1,5})")
ADDRESS_HELP = ("allowed: auto (the cluster this machine belongs to), HOST:PORT of a running "
                "head (`ray start --head`) or ray://HOST:10001")
PROBE_TIMEOUT_S = 300.0  # a node may first have to set up the job's runtime environment
# Ray's worker_process_setup_hook for CPU-only trials (a dotted path: each worker imports it).
CPU_WORKER_SETUP_HOOK = "search.cluster.block_triton"


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address must accept a connection."""
    if address is None or address == "auto":
        return
    m = HOST_PORT.fullmatch(address.strip())
    if m is None:
        raise UsageError(f"--address {address!r}: not an address; {ADDRESS_HELP}")
    host, port = m.group(1).strip("[]"), int(m.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UsageError(f"--address {address}: no Ray cluster answers there ({why}); "
                         f"{ADDRESS_HELP}") from None


def _one_line(e: BaseException) -> str:
    cause = e.__cause__ or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0]}" if text else type(cause).__name__


def cpu_only_trials(torch_device: str, gpus_per_trial: float) -> bool:
    """Whether trials run on the CPU: no GPU reserved and no CUDA device asked for ("auto"
    with no GPU reserved is CPU on a CPU node; on a GPU node it may pick CUDA, which runs
    eagerly without triton: nothing in a trial compiles)."""
    return gpus_per_trial == 0 and not torch_device.startswith("cuda")


def block_triton() -> None:
    """Make ``import triton`` fail in this process (set up before torch is imported).

    Ray's ``worker_process_setup_hook`` for CPU-only trials: timm imports torchvision, whose
    ops import torch._dynamo, which imports triton (~75 MB RSS per worker, notes/search_proxy.md
    section 3); torch treats a missing triton as "no triton", and CPU trials never compile."""
    sys.modules.setdefault("triton", None)


def init_ray(address: str | None, log_to_driver: bool = False,
             cpu_only_workers: bool = False) -> float:
    """Start (or join) Ray quietly (``log_to_driver``: show the workers' prints here);
    returns the cluster's CPU count. ``cpu_only_workers``: every worker runs
    :func:`block_triton` at start (see :func:`cpu_only_trials`)."""
    for name in ("ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 1))
    hook = {"worker_process_setup_hook": CPU_WORKER_SETUP_HOOK} if cpu_only_workers else {}
    if address:
        try:
            ray.init(address=address, log_to_driver=log_to_driver,
                     logging_level=logging.ERROR,
                     runtime_env={"working_dir": str(PROJECT_ROOT),
                                  "excludes": WORKING_DIR_EXCLUDES, **hook})
        except ConnectionError as e:  # no cluster there, or it refused us (token auth)
            raise UsageError(f"--address {address}: could not join the Ray cluster "
                             f"({_one_line(e)}); {ADDRESS_HELP}") from None
    else:
        # Workers must import this project: they inherit PYTHONPATH from the local raylet.
        paths = [str(PROJECT_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
            os.pathsep) if p]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=log_to_driver,
                 logging_level=logging.ERROR, object_store_memory=256 * 2 ** 20,
                 configure_logging=True, runtime_env=hook or None)
    return float(ray.cluster_resources().get("CPU", 1))


def nodes_fitting(cpus: float, gpus: float, what: str) -> list[dict[str, Any]]:
    """The alive nodes one trial / worker of ``cpus`` CPUs and ``gpus`` GPUs fits on:
    [{node_id, ip, cpus, gpus}]; UsageError naming ``what`` (the options) when none."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    fit = [n for n in nodes if n["Resources"].get("CPU", 0) >= cpus
           and n["Resources"].get("GPU", 0) >= gpus]
    if not fit:
        have = ", ".join(f"{n['Resources'].get('CPU', 0):g} CPU/{n['Resources'].get('GPU', 0):g} "
                         f"GPU" for n in nodes) or "none"
        raise UsageError(f"{what}: no node of the Ray cluster has that much (nodes: {have})")
    return [{"node_id": n["NodeID"], "ip": n.get("NodeManagerAddress", "?"),
             "cpus": n["Resources"].get("CPU", 0), "gpus": n["Resources"].get("GPU", 0)}
            for n in fit]


def slots(nodes: list[dict[str, Any]], cpus: float, gpus: float) -> int:
    """How many trials / workers of ``cpus`` CPUs and ``gpus`` GPUs the nodes hold at once."""
    total = 0
    for n in nodes:
        by_gpu = n["gpus"] / gpus if gpus > 0 else float("inf")
        total += int(min(n["cpus"] / cpus, by_gpu))
    return total


def _answer(fn: Callable[..., Any], args: tuple) -> dict[str, Any]:
    """Runs on one node: its id and ``fn(*args)``."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "answer": fn(*args)}


def ask_each_node(nodes: list[dict[str, Any]], fn: Callable[..., Any], *args: Any) -> list[Any]:
    """``fn(*args)`` on each node (a zero-CPU task pinned to it), in the order of ``nodes``.
    ``fn`` is a module-level function (workers import it by name)."""
    task = ray.remote(num_cpus=0)(_answer)
    refs = [task.options(scheduling_strategy=strategies.NodeAffinitySchedulingStrategy(
        n["node_id"], soft=False)).remote(fn, args) for n in nodes]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
    if len(ready) < len(refs):
        late = [n["node_id"][:12] for n, r in zip(nodes, refs) if r not in ready]
        raise UsageError(f"--address: node(s) {', '.join(late)} did not answer within "
                         f"{PROBE_TIMEOUT_S:.0f} s (is the node up, can it set up the job?)")
    return [a["answer"] for a in ray.get(refs)]


def node_name(node: dict[str, Any]) -> str:
    return f"node {node['node_id'][:12]} ({node['ip']})"


# -- what a node is asked ---------------------------------------------------------------------
def data_problem(data: ProxyData) -> str | None:
    """Whether this node can get the proxy data cache (None: it can)."""
    return node_data_problem(data)


def cache_problem() -> str | None:
    """Whether this node's ``$SWIFTFORMER_NAS_CACHE`` is unusable (None: unset or usable)."""
    return cache_root_problem()


def paths_problem(root: str, subdirs: tuple[str, ...]) -> str | None:
    """Whether ``root/<sub>`` can be listed on this node for every sub (None: yes)."""
    return listing_problem(root, subdirs)


def storage_problem(filesystem: Any, marker: str) -> str | None:
    """Whether this node sees the marker file the driver wrote on the storage (None: yes)."""
    try:
        info = local_fs(filesystem).get_file_info(marker)
    except OSError as e:
        return f"{type(e).__name__}: {str(e).splitlines()[0]}"
    return None if info.type.name == "File" else "the driver's marker file is not there"
