"""The Ray Tune trainable: one trial = one candidate through ``search.proxy.trial.run_candidate``.

It runs in a Ray worker and touches no database: it reports every epoch's metrics
(``final: False``) and then the final result (``final: True``); the driver's
:class:`~search.nas.callback.StoreCallback` records them. Trials whose result is already in the
store are never sent here (the searcher tells Optuna from the store instead), so a resumed
search never trains a completed candidate twice.
"""
from __future__ import annotations

from typing import Any, Callable

from search_space.io import json_safe
from search_space.lazy import lazy_import
from search_space.spec import ArchSpec

from ..proxy.data import ProxyData
from ..proxy.fidelity import Fidelity
from ..proxy.trial import run_candidate

torch = lazy_import("torch")
tune = lazy_import("ray.tune")

Trainable = Callable[..., None]


def proxy_trial(config: dict, *, data: ProxyData, fidelity: Fidelity, threads: int = 1,
                device: str = "auto") -> None:
    """One Tune trial: zero-cost scores, then proxy training with a report per epoch."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)  # zero-cost scoring runs before train_proxy sets it
    base = {"trial_key": config["trial_key"], "latency_ms": config["latency_ms"],
            "latency_std_ms": config.get("latency_std_ms")}

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
