"""The one way a candidate is proxy-trained and its trial recorded.

Three features train candidates: the search (a Ray Tune trial per candidate), the scaling
ladder and the fidelity study. They all go through this module, so a trial row means the same
thing whoever wrote it:

* :func:`run_candidate` -- the worker side: zero-cost scores, then proxy training at a
  :class:`~search.proxy.fidelity.Fidelity`, with a callback per epoch. It touches no database,
  so it runs in a Ray worker or a process pool as well as in the caller's process.
* :class:`~search.proxy.record.TrialRecorder` -- the driver side, the only writer of trial rows
  (``search.proxy.record``, no torch); a finished result computed elsewhere is recorded in one
  call with :meth:`~search.proxy.record.TrialRecorder.record`.
* :func:`train_and_record` -- both in one process (the ladder).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from search_space.spec import ArchSpec

from .data import ProxyData
from .fidelity import Fidelity
from .memory import peak_rss_mib, reset_peak_rss
from .record import TrialRecorder
from .train import NonFiniteLoss, train_proxy
from .zero_cost import zero_cost_scores


def run_candidate(spec: ArchSpec, fidelity: Fidelity, data: ProxyData, *, seed: int,
                  device: str = "auto", threads: int | None = 1,
                  zero_cost: bool | Mapping[str, float] = True, zero_cost_batch: int = 32,
                  on_epoch: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train one candidate at ``fidelity`` on ``data``; return its final metrics.

    ``zero_cost``: True computes synflow / NASWOT / grad-norm first (a few seconds; stored with
    the trial so zero-cost ranks can be compared with trained ranks later), a mapping passes
    scores computed earlier (pre-ranking), False skips them. ``on_epoch`` gets the metrics of
    every epoch (see ``train_proxy``). Raises ``NonFiniteLoss`` when the training diverges.

    The result holds the ``search.proxy.record.FINAL_KEYS`` that apply, ``history`` (the per-epoch metrics),
    ``params`` and the identity fields ``train_proxy`` returns. ``peak_rss_mib``: the peak
    resident set of this process from the start of this call (what the process held before,
    imports included, counts: in a Tune trial it is the worker's peak during the trial).
    """
    reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {}
    if isinstance(zero_cost, Mapping):
        out.update({k: float(v) for k, v in zero_cost.items()})
    elif zero_cost:
        scores = zero_cost_scores(spec, data, seed=seed, batch_size=zero_cost_batch)
        out.update({k: float(v) for k, v in scores.items()})
        out["zero_cost_seconds"] = time.perf_counter() - t0
    out.update(train_proxy(spec, fidelity, data, seed=seed, device=device, report=on_epoch,
                           threads=threads))
    out["wall_seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def train_and_record(recorder: TrialRecorder, key: str, spec: ArchSpec, fidelity: Fidelity,
                     data: ProxyData, *, seed: int, config: Mapping[str, Any],
                     device: str = "auto", threads: int | None = 1,
                     zero_cost: bool | Mapping[str, float] = True,
                     latency: tuple[float | None, float | None] | None = None) -> dict[str, Any]:
    """Train ``spec`` in this process and record it as trial ``key`` of the recorder's study.

    Returns the :func:`run_candidate` result with ``status`` COMPLETED, or ``status`` FAILED
    and ``error`` when the training diverged (a diverged candidate is a result, not a crash).
    """
    recorder.start(key, spec, config=config, seed=seed)
    try:
        result = run_candidate(spec, fidelity, data, seed=seed, device=device, threads=threads,
                               zero_cost=zero_cost, on_epoch=lambda m: recorder.epoch(key, m))
    except NonFiniteLoss as e:
        recorder.fail(key, str(e))
        return {"status": "FAILED", "error": str(e), "epochs_done": 0}
    recorder.complete(key, result, latency)
    return {**result, "status": "COMPLETED"}
