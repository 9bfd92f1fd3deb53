"""A traffic class as the simulator sees it: a trace at a given rate, and whether its requests
met their SLOs.

Capacity searches and fleet verification both judge SLOs here, from the simulator's per-request
records, so the two can never disagree on what "met" means: a request is good when it meets
every bound; a class passes when at least `goodput_target` of its requests are good, every stated
percentile (p50/p90/p99/mean) is within its bound, and its queue is not growing.

The last test matters because a finite run can hide an overload: a burst may drain within the
SLOs although the backlog would grow without end. A growing queue shows as a growing wait for
the first token, so the median TTFT of the last quarter of arrivals may be at most
`QUEUE_GROWTH_LIMIT` times that of the second quarter (the first is warm-up). TTFT, unlike
completion counts, does not depend on how long the answers are. The queue belongs to the
deployment, not to a class, so where several classes share one it is judged on all their
requests together: a class sending a trickle of 20 requests cannot tell a queue from noise.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.plan_file import Lengths, Plan, TrafficClass
from tokenfleet.serve.metrics import parse_slo
from tokenfleet.workload.lengths import draw_lengths
from tokenfleet.workload.traces import BUILTIN, Trace, load_trace, shared_prefixes

#: Length pairs drawn for a class whose lengths come from distributions.
POOL_SIZE = 4096
#: Median TTFT of the last quarter of arrivals over that of the second quarter, at most.
QUEUE_GROWTH_LIMIT = 2.0
#: ... judged on at least this many requests (fewer: medians of a handful are noise) ...
MIN_GROWTH_REQUESTS = 40
#: ... unless they differ by less than this (noise on very fast replicas).
QUEUE_GROWTH_FLOOR_S = 0.01
OPS: dict[str, Callable[[Any, float], Any]] = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}


# --- traces ---------------------------------------------------------------------------------
@cache
def cached_trace(name: str) -> Trace:
    return load_trace(name)


@cache
def trace_fingerprint(name: str) -> str:
    """sha256 of a trace file's bytes, so a changed file never reuses cached capacities."""
    if name in BUILTIN:
        data = resources.files("tokenfleet.workload").joinpath(f"data/traces/{BUILTIN[name]}").read_bytes()
    else:
        cached_trace(name)  # raises the one-line error for a missing file
        data = Path(name).read_bytes()
    return hashlib.sha256(data).hexdigest()


def trace_rate_per_s(trace: Trace) -> float:
    """A trace's mean arrival rate."""
    return (len(trace) - 1) / trace.duration_s if trace.duration_s > 0 else float(len(trace))


def class_rates(plan: Plan) -> dict[str, float]:
    """Requests per second of each class, from rate_per_s, share or the trace's rate x rate_scale."""
    rates = {}
    for c in plan.classes:
        if c.rate_per_s is not None:
            rates[c.name] = c.rate_per_s
        elif c.share is not None:
            rates[c.name] = c.share * float(plan.total_rate_per_s or 0.0)
        else:
            rates[c.name] = trace_rate_per_s(cached_trace(str(c.trace))) * float(c.rate_scale or 1.0)
    return rates


def traffic_identity(cls: TrafficClass) -> dict[str, Any]:
    """Everything about a class that shapes its simulated traffic, apart from its rate and name."""
    src = cls.length_source()
    ident: dict[str, Any] = {"lengths": src.model_dump(mode="json"), "arrivals": cls.arrivals,
                             "prefix_sharing": cls.prefix_sharing.model_dump() if cls.prefix_sharing else None}
    if src.trace is not None:
        ident["lengths_sha256"] = trace_fingerprint(src.trace)
    if cls.arrivals == "trace":
        ident["trace"], ident["trace_sha256"] = cls.trace, trace_fingerprint(str(cls.trace))
    return ident


def length_pool(src: Lengths, seed: int) -> Trace:
    """The (input, output) pairs a class's requests are drawn from: a trace's, or sampled."""
    if src.trace is not None:
        return cached_trace(src.trace)
    rng = np.random.default_rng([seed, 7])
    zeros = np.zeros(POOL_SIZE)
    return Trace("lengths", zeros, draw_lengths(src.input_tokens, rng, POOL_SIZE), draw_lengths(src.output_tokens, rng, POOL_SIZE))


@dataclass(frozen=True)
class ClassStats:
    """What the static cost model needs to know about a class's lengths."""

    mean_input_tokens: float
    mean_output_tokens: float
    quantile_input_tokens: float  # at the goodput target: that share of prompts are no longer
    longest_tokens: int


def class_stats(cls: TrafficClass, seed: int = 0) -> ClassStats:
    pool = length_pool(cls.length_source(), seed)
    return ClassStats(
        mean_input_tokens=float(pool.input_tokens.mean()),
        mean_output_tokens=float(pool.output_tokens.mean()),
        quantile_input_tokens=float(np.quantile(pool.input_tokens, cls.goodput_target)),
        longest_tokens=int((pool.input_tokens + pool.output_tokens).max()),
    )


def class_trace(cls: TrafficClass, n: int, rate_per_s: float, seed: int, block_tokens: int = 512, salt: int = 0) -> Trace:
    """`n` requests of the class at `rate_per_s`: Poisson arrivals (or the trace's own, rate-scaled)
    with lengths from the class's pool; the same seed gives the same requests at every rate."""
    if not rate_per_s > 0:
        raise TokenfleetError(f"class {cls.name}: rate must be positive, got {rate_per_s}")
    rng = np.random.default_rng([seed, salt])
    pool = length_pool(cls.length_source(), seed)
    if cls.arrivals == "trace":
        first = cached_trace(str(cls.trace)).take(n)  # the replayed stretch runs at exactly the asked rate
        scaled = first.scale_rate(rate_per_s / trace_rate_per_s(first))
        arrival = scaled.arrival_s
    else:
        gaps = rng.exponential(1.0 / rate_per_s, n)
        arrival = np.cumsum(gaps) - gaps[0]
    pick = rng.integers(0, len(pool), n)
    inputs, outputs = pool.input_tokens[pick], pool.output_tokens[pick]
    if cls.arrivals == "trace" and cls.lengths is None:
        inputs, outputs, pick = scaled.input_tokens, scaled.output_tokens, np.arange(n) % len(pool)
    prefix = None
    if cls.prefix_sharing is not None:
        prefix = shared_prefixes(inputs, cls.prefix_sharing.shared_tokens, cls.prefix_sharing.groups, rng, block_tokens, salt)
    elif pool.prefix_blocks is not None:
        prefix = tuple(pool.prefix_blocks[i] for i in pick)
    return Trace(cls.name, np.asarray(arrival, dtype=float), inputs, outputs, prefix)


def merge_traces(parts: list[Trace]) -> tuple[Trace, np.ndarray]:
    """Several classes' requests in one arrival-ordered trace, and each request's part index."""
    arrival = np.concatenate([p.arrival_s for p in parts])
    order = np.argsort(arrival, kind="stable")
    label = np.concatenate([np.full(len(p), i) for i, p in enumerate(parts)])[order]
    prefix = None
    if any(p.prefix_blocks is not None for p in parts):
        flat = [b for p in parts for b in (p.prefix_blocks or ((),) * len(p))]
        prefix = tuple(flat[i] for i in order)
    merged = Trace("fleet", arrival[order], np.concatenate([p.input_tokens for p in parts])[order],
                   np.concatenate([p.output_tokens for p in parts])[order], prefix)
    return merged, label


# --- SLO attainment ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Bound:
    """One SLO bound: `stat` of `metric` (seconds) compared by `op` with `limit_s`."""

    key: str
    stat: str  # p50, p90, p99 or mean
    metric: str  # ttft, tpot or e2el
    op: str
    limit_s: float


def bounds_of(slo: dict[str, str]) -> list[Bound]:
    return [Bound(key, stat, metric, op, limit) for key, (stat, metric, op, limit) in zip(slo, parse_slo(slo), strict=True)]


@dataclass(frozen=True)
class Records:
    """Per-request timings from the simulator's JSONL, as arrays indexed like the trace."""

    ids: np.ndarray
    arrival_s: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2el_s: np.ndarray
    output_tokens: np.ndarray

    def subset(self, mask: np.ndarray) -> Records:
        return Records(self.ids[mask], self.arrival_s[mask], self.ttft_s[mask], self.tpot_s[mask], self.e2el_s[mask], self.output_tokens[mask])

    def queue_growth(self) -> float:
        """Median TTFT of the last quarter of arrivals / that of the second quarter (1: steady)."""
        if self.ids.size < MIN_GROWTH_REQUESTS:
            return 1.0
        order = np.argsort(self.arrival_s, kind="stable")
        q = order.size // 4
        mid, late = float(np.median(self.ttft_s[order[q:2 * q]])), float(np.median(self.ttft_s[order[3 * q:]]))
        if late - mid < QUEUE_GROWTH_FLOOR_S:
            return 1.0
        return late / max(mid, 1e-9)


def read_records(buf: io.StringIO) -> Records:
    rows = [json.loads(line) for line in buf.getvalue().splitlines() if line]
    rows.sort(key=lambda r: r["id"])
    # a refused request (`failed`) never gets a token: infinitely late, so never good
    get = {k: np.array([r.get(k, math.inf) for r in rows], dtype=float) for k in ("id", "arrival_s", "first_token_s", "finish_s", "output_tokens")}
    out = get["output_tokens"]
    decode_s = get["finish_s"] - get["first_token_s"]
    tpot = np.where(out > 1, decode_s / np.maximum(out - 1, 1), 0.0)
    return Records(get["id"].astype(np.int64), get["arrival_s"], get["first_token_s"] - get["arrival_s"], tpot,
                   get["finish_s"] - get["arrival_s"], out)


@dataclass(frozen=True)
class Attainment:
    """How a class fared: share of good requests, percentiles, and what missed."""

    requests: int
    good_fraction: float
    goodput_target: float
    met: bool
    failures: tuple[str, ...]
    worst_ratio: float  # >1: how far the worst percentile bound is exceeded (1 when all are met)
    p50_ttft_ms: float
    p99_ttft_ms: float
    p50_tpot_ms: float
    p99_tpot_ms: float
    mean_e2el_ms: float

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["failures"] = list(self.failures)
        return out

    def why(self) -> str:
        return "; ".join(self.failures) or "met"


def _stat(values: np.ndarray, stat: str) -> float:
    if values.size == 0:
        return float("nan")
    return float(values.mean()) if stat == "mean" else float(np.percentile(values, float(stat[1:])))


def attainment(rec: Records, slo: dict[str, str], target: float, queue_growth: float | None = None) -> Attainment:
    """Judge one class's requests against its SLOs and goodput target; `queue_growth` is that of
    the deployment they ran on when other classes shared it (default: from these requests)."""
    values = {"ttft": rec.ttft_s, "tpot": rec.tpot_s, "e2el": rec.e2el_s}
    good = np.ones(rec.ids.size, dtype=bool)
    failures, worst = [], 1.0
    for b in bounds_of(slo):
        good &= OPS[b.op](values[b.metric], b.limit_s)
        observed = _stat(values[b.metric], b.stat)
        if not OPS[b.op](observed, b.limit_s):
            failures.append(f"{b.key} {observed * 1e3:.4g} ms vs {b.op}{b.limit_s * 1e3:g}")
            ratio = observed / b.limit_s if b.op.startswith("<") else b.limit_s / max(observed, 1e-12)
            worst = max(worst, ratio)
    growth = rec.queue_growth() if queue_growth is None else queue_growth
    if growth > QUEUE_GROWTH_LIMIT:
        failures.append(f"overloaded: the wait for a first token grew {growth:.1f}x during the run")
        worst = max(worst, growth / QUEUE_GROWTH_LIMIT)
    frac = float(good.mean()) if good.size else 0.0
    if frac < target:
        failures.append(f"good {frac:.3f} < target {target:g}")
    ms = {f"{s}_{m}": _stat(values[m], s) * 1e3 for s in ("p50", "p99") for m in ("ttft", "tpot")}
    return Attainment(
        requests=int(rec.ids.size), good_fraction=frac, goodput_target=target, met=not failures and rec.ids.size > 0,
        failures=tuple(failures), worst_ratio=worst, mean_e2el_ms=_stat(rec.e2el_s, "mean") * 1e3,
        p50_ttft_ms=ms["p50_ttft"], p99_ttft_ms=ms["p99_ttft"], p50_tpot_ms=ms["p50_tpot"], p99_tpot_ms=ms["p99_tpot"],
    )
