"""Streaming serving metrics with `vllm bench serve` names; memory stays flat in the request count.

Latency distributions go into log-spaced histograms (0.64% wide bins from 1 us to 1e5 s), so
percentiles are exact to within one bin; means are exact.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from tokenfleet.errors import TokenfleetError
from tokenfleet.serve.request import Request

EDGES = np.logspace(-6, 5, 4001)
METRICS = ("ttft", "tpot", "itl", "e2el")
PERCENTILES = {"mean": None, "median": 50, "p90": 90, "p99": 99}
OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


class Histogram:
    """Log-binned counts; samples are buffered and binned in batches (one numpy call per 64k)."""

    def __init__(self) -> None:
        self.counts = np.zeros(EDGES.size + 1)
        self.total = 0.0
        self.n = 0.0
        self._values: list[float] = []
        self._weights: list[float] = []

    def add(self, value: float, weight: float = 1.0) -> None:
        self._values.append(value)
        self._weights.append(weight)
        if len(self._values) >= 65536:
            self._flush()

    def add_many(self, values: np.ndarray, weight: float) -> None:
        self._bin(np.asarray(values, dtype=float), np.full(np.size(values), float(weight)))

    def _flush(self) -> None:
        if self._values:
            self._bin(np.array(self._values), np.array(self._weights))
            self._values, self._weights = [], []

    def _bin(self, v: np.ndarray, w: np.ndarray) -> None:
        self.counts += np.bincount(np.searchsorted(EDGES, v), weights=w, minlength=self.counts.size)
        self.total += float(v @ w)
        self.n += float(w.sum())

    def quantile(self, q: float) -> float:
        self._flush()
        if self.n == 0:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.n))
        lo, hi = EDGES[max(i - 1, 0)], EDGES[min(i, EDGES.size - 1)]
        return float(math.sqrt(lo * hi))

    def mean(self) -> float:
        self._flush()
        return self.total / self.n if self.n else float("nan")


def parse_slo(slo: dict[str, str] | None) -> list[tuple[str, str, str, float]]:
    """`{"p99_ttft_ms": "<=500"}` -> [(stat, metric, op, seconds)]; unknown names get one clear line."""
    parsed = []
    for key, cond in (slo or {}).items():
        parts = key.split("_")
        if len(parts) != 3 or parts[0] not in {*PERCENTILES, "p50"} or parts[1] not in METRICS or parts[2] != "ms":
            raise TokenfleetError(f"unknown SLO metric {key!r}: use <stat>_<metric>_ms with stat in mean, median, p50, p90, p99 and metric in {', '.join(METRICS)}")
        op = next((o for o in ("<=", ">=", "<", ">") if str(cond).strip().startswith(o)), None)
        try:
            value = float(str(cond).strip()[len(op or ""):])
        except ValueError:
            op = None
        if op is None:
            raise TokenfleetError(f"SLO {key}: {cond!r} must look like '<=500' (milliseconds)")
        parsed.append(("p50" if parts[0] == "median" else parts[0], parts[1], op, value / 1e3))
    return parsed


class Metrics:
    """Per-request records (optionally streamed to JSONL) folded into histograms and sums."""

    def __init__(self, slo: dict[str, str] | None = None, stream: IO[str] | None = None):
        self.hist = {m: Histogram() for m in METRICS}
        self.slo = parse_slo(slo)
        self.stream = stream
        self.completed = self.good = self.failed = 0
        self.input_tokens = self.output_tokens = 0
        self.preemptions = 0
        self.first_arrival_s, self.last_finish_s = math.inf, 0.0

    def itl(self, step_s: float | np.ndarray, weight: float) -> None:
        """Inter-token latency: every one of `weight` decoding requests waited `step_s`."""
        if isinstance(step_s, np.ndarray):
            self.hist["itl"].add_many(step_s, weight)
        else:
            self.hist["itl"].add(step_s, weight)

    def complete(self, req: Request) -> None:
        ttft, e2el = req.first_token_s - req.arrival_s, req.finish_s - req.arrival_s
        tpot = (req.finish_s - req.first_token_s) / (req.output - 1) if req.output > 1 else 0.0
        values = {"ttft": ttft, "tpot": tpot, "e2el": e2el}
        for name, v in values.items():
            self.hist[name].add(v)
        self.completed += 1
        self.good += all(m == "itl" or OPS[op](values[m], limit) for _, m, op, limit in self.slo)
        self.input_tokens += req.prompt
        self.output_tokens += req.output
        self.preemptions += req.preemptions
        self.first_arrival_s = min(self.first_arrival_s, req.arrival_s)
        self.last_finish_s = max(self.last_finish_s, req.finish_s)
        if self.stream is not None:
            self.stream.write(json.dumps({
                "id": req.id, "arrival_s": req.arrival_s, "first_token_s": req.first_token_s, "finish_s": req.finish_s,
                "input_tokens": req.prompt, "output_tokens": req.output, "preemptions": req.preemptions,
                "prefix_hit_tokens": req.prefix_hit_tokens,
            }) + "\n")

    def refuse(self, request_id: int, arrival_s: float, input_tokens: int, output_tokens: int, reason: str) -> None:
        """A request the engine turns away unserved (it counts against goodput)."""
        self.failed += 1
        if self.stream is not None:
            self.stream.write(json.dumps({"id": request_id, "arrival_s": arrival_s, "input_tokens": input_tokens,
                                          "output_tokens": output_tokens, "failed": reason}) + "\n")

    def summary(self) -> dict[str, Any]:
        duration = max(self.last_finish_s - min(self.first_arrival_s, self.last_finish_s), 1e-12)
        out: dict[str, Any] = {
            "completed": self.completed,
            "failed": self.failed,
            "duration_s": duration,
            "request_throughput": self.completed / duration,
            "output_throughput": self.output_tokens / duration,
            "total_token_throughput": (self.input_tokens + self.output_tokens) / duration,
            "total_input_tokens": self.input_tokens,
            "total_output_tokens": self.output_tokens,
            "preemptions": self.preemptions,
        }
        for m, h in self.hist.items():
            for stat, q in PERCENTILES.items():
                out[f"{stat}_{m}_ms"] = (h.mean() if q is None else h.quantile(q / 100)) * 1e3
        if self.slo:
            out["request_goodput"] = self.good / duration
            out["goodput_fraction"] = self.good / max(self.completed + self.failed, 1)
            out["slo_met"] = {
                f"{stat}_{m}_ms": OPS[op](self.hist[m].quantile(int(stat[1:]) / 100) if stat != "mean" else self.hist[m].mean(), limit)
                for stat, m, op, limit in self.slo
            }
        return out
