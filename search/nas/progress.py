"""Concise progress lines of a running search (Ray's own tables are off).

``[mm:ss] 5/16 done, 2 rejected over budget | cand 3 0.93 ms completed top1 41.20% |
front(3): 0.62ms/31.0%, ... | dominated baselines: XS``. The running front is
``results.pareto``'s, over the candidates completed so far at the full proxy budget.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from results.pareto import Objective, dominating, pareto_mask

OBJECTIVES = (Objective("top1", "max"), Objective("latency_ms", "min"))
# Statuses that are not trainings, counted apart from "done".
NOT_TRAINED = ("REJECTED", "PRERANKED_OUT", "DUPLICATE")


class Progress:
    """Timestamped lines on a stream (stdout by default) and counts per final status."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()
        self.counts: dict[str, int] = {}

    def line(self, text: str) -> None:
        el = time.monotonic() - self.t0
        print(f"[{int(el // 60):02d}:{int(el % 60):02d}] {text}", file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        self.line(f"warning: {text}")

    def count(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1

    def done_summary(self) -> str:
        """``5/16 done, 2 rejected over budget, ...``"""
        n_done = sum(v for k, v in self.counts.items() if k not in NOT_TRAINED)
        parts = [f"{n_done}/{self.total} done"]
        for status, what in (("REJECTED", "rejected over budget"),
                             ("PRERANKED_OUT", "pre-ranked out"),
                             ("DUPLICATE", "duplicate(s) reused")):
            if self.counts.get(status):
                parts.append(f"{self.counts[status]} {what}")
        return ", ".join(parts)


def front_summary(points: list[tuple[float, float]],
                  baselines: dict[str, tuple[float, float]]) -> str:
    """``front(n): lat/top1, ...`` of (top1, latency_ms) points, and the baselines it dominates."""
    if not points:
        return "front: (none yet)"
    values = np.array(points, dtype=float)
    front = values[pareto_mask(values, OBJECTIVES)]
    front = front[np.lexsort((-front[:, 0], front[:, 1]))]  # by latency
    shown = ", ".join(f"{lat:.2f}ms/{top1:.1f}%" for top1, lat in front[:6].tolist())
    more = f" +{len(front) - 6}" if len(front) > 6 else ""
    dom = [name for name, point in baselines.items()
           if len(dominating(front, point, OBJECTIVES))]
    tail = f" | dominated baselines: {','.join(dom)}" if dom else ""
    return f"front({len(front)}): {shown}{more}{tail}"
