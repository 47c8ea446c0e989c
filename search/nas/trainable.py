"""The Ray Tune trainable: one trial = one candidate through ``search.proxy.trial.run_candidate``.

It runs in a Ray worker, on any node of the cluster, and touches no database: it reports every
epoch's metrics (``final: False``) and then the final result (``final: True``); the driver's
:class:`~search.nas.callback.StoreCallback` records them. Trials whose result is already in the
store are never sent here (the searcher tells Optuna from the store instead), so a resumed
search never trains a completed candidate twice.

On its node the trial first finds (or builds) the node's copy of the data cache
(``search.proxy.node_cache.localize``: no shared filesystem needed), runs as many torch threads
as Tune gave it CPUs, and reports the node it ran on (``node_id``, Ray's node id) and the cache
it read (``data_cache``) with every result, so the store says where each trial ran.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

from search_space.io import json_safe
from search_space.lazy import lazy_import
from search_space.spec import ArchSpec

from ..proxy.data import ProxyData
from ..proxy.fidelity import Fidelity
from ..proxy.node_cache import localize
from ..proxy.trial import run_candidate

torch = lazy_import("torch")
ray = lazy_import("ray")
tune = lazy_import("ray.tune")

Trainable = Callable[..., None]


def allocated_threads(default: int) -> int:
    """Torch threads for this trial: the CPUs Tune allocated to it (whole ones, at least 1);
    ``default`` outside a Tune trial."""
    with warnings.catch_warnings():  # outside a trial Ray warns and returns None
        warnings.simplefilter("ignore")
        resources = tune.get_context().get_trial_resources()
    cpus = resources.required_resources.get("CPU") if resources is not None else None
    return max(1, int(cpus if cpus else default))


def proxy_trial(config: dict, *, data: ProxyData, fidelity: Fidelity, threads: int = 1,
                device: str = "auto") -> None:
    """One Tune trial: this node's data cache, zero-cost scores, then proxy training with a
    report per epoch."""
    threads = allocated_threads(threads)
    torch.set_num_threads(threads)  # zero-cost scoring runs before train_proxy sets it
    data = localize(data, fidelity, workers=threads)
    base = {"trial_key": config["trial_key"], "latency_ms": config["latency_ms"],
            "latency_std_ms": config.get("latency_std_ms"),
            "node_id": ray.get_runtime_context().get_node_id(), "data_cache": data.path}

    def on_epoch(m: dict) -> None:
        tune.report({**base, **json_safe(m), "final": False})

    result = run_candidate(ArchSpec.from_json(config["spec"]), fidelity, data,
                           seed=int(config["seed"]), device=device, threads=threads,
                           zero_cost=config.get("zero_cost") or True, on_epoch=on_epoch)
    final = {k: v for k, v in result.items() if k not in ("history", "params")}
    tune.report({**base, **json_safe(final), "final": True})


def build_trainable(data: ProxyData, fidelity: Fidelity, *, threads: int, device: str,
                    cpus: float, gpus: float,
                    wrap: Callable[[Trainable], Trainable] | None = None) -> Any:
    """``proxy_trial`` with its parameters (through Ray's object store) and resources.

    ``wrap`` replaces the plain trainable by ``wrap(proxy_trial)`` (same signature); tests use
    it to inject failures into chosen trials without any hook in this module.
    """
    fn = wrap(proxy_trial) if wrap is not None else proxy_trial
    trainable = tune.with_parameters(fn, data=data, fidelity=fidelity, threads=threads,
                                     device=device)
    return tune.with_resources(trainable, {"cpu": cpus, "gpu": gpus})
