"""Capacity of one candidate for one class: the highest request rate one replica sustains while
the class meets its SLOs at its goodput target, by simulation.

The search gallops from the static cost model's estimate (x2 up while it passes, /4 down while it
fails, to 1/256 of the estimate) and then bisects the bracket geometrically until hi/lo <= 1 + tol.
Every probe replays the same seeded requests, only compressed or stretched in time, so the
pass/fail answer is (nearly) monotone in the rate. A candidate that fails even at the lightest
probe has capacity 0 and the reason is kept.

Before the search, the class is run nearly unloaded (at the lightest probe's rate) and must
clear its goodput target there by one binomial standard error of the sample (`servable_target`).
A pair whose requests miss their SLOs at about the target's share even alone (prompts too long to
prefill in time) would otherwise pass the search on a lucky sample and fail every fresh sample
verification draws, however little load the plan gave it. The search itself judges the plain target.
"""

from __future__ import annotations

import io
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from tokenfleet.catalog.chips import get_chip
from tokenfleet.catalog.models import get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.cache import code_fingerprint, digest
from tokenfleet.fleet.candidates import Candidate
from tokenfleet.fleet.plan_file import Disaggregated, TrafficClass
from tokenfleet.fleet.traffic import (
    Attainment,
    attainment,
    class_trace,
    merge_traces,
    read_records,
    traffic_identity,
)
from tokenfleet.perf.efficiency import calibration_for
from tokenfleet.serve.simulate import simulate

SUMMARY_KEYS = ("completed", "request_throughput", "output_throughput", "utilisation", "joules_per_token",
                "mean_kv_occupancy", "preemptions", "duration_s", "total_output_tokens")
MAX_DOUBLINGS = 20
DOWN_STEPS = 4  # /4 each: the lightest probe is 1/256 of the estimate


class ProbeTimeout(Exception):
    """A simulation ran past its wall-clock limit (treated as a failed probe)."""


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise ProbeTimeout in this (main) thread after `seconds`; a no-op where signals cannot."""
    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise ProbeTimeout(f"the simulation did not finish in {seconds:g} s of wall time")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass(frozen=True)
class Stream:
    """One class's requests sent to a candidate: its traffic, rate, SLOs and how many to simulate."""

    traffic: TrafficClass
    rate_per_s: float
    slo: tuple[tuple[str, str], ...]
    goodput_target: float
    requests: int
    salt: int = 0

    def identity(self) -> dict[str, Any]:
        return {"traffic": traffic_identity(self.traffic), "rate_per_s": self.rate_per_s, "slo": dict(self.slo),
                "goodput_target": self.goodput_target, "requests": self.requests, "salt": self.salt}


def candidate_identity(c: Candidate) -> dict[str, Any]:
    """The candidate with the full model and chip specs and the calibration in use."""
    return {
        "model": asdict(get_model(c.model)),
        "stages": [{"chip": get_chip(s.chip_id).model_dump(mode="json"), "efficiency": asdict(calibration_for(get_chip(s.chip_id)).efficiency),
                    "deployment": s.deployment.model_dump(), "replicas": s.replicas} for s in c.stages],
        "scheduler": c.scheduler.model_dump(),
    }


def run_streams(candidate: Candidate, streams: list[Stream], replicas: int, seed: int, router: str,
                disagg: Disaggregated | None) -> tuple[list[Attainment], dict[str, Any]]:
    """Simulate `replicas` of the candidate on the merged streams; judge each stream on its own
    requests, and the queue on all of them."""
    block = candidate.scheduler.prefix_block_tokens
    parts = [class_trace(s.traffic, s.requests, s.rate_per_s, seed, block, s.salt) for s in streams]
    trace, label = merge_traces(parts)
    if candidate.disaggregated:
        from tokenfleet.fleet.disagg import simulate_disaggregated

        records, summary = simulate_disaggregated(candidate, trace, replicas, router, disagg or Disaggregated())
    else:
        stage = candidate.stages[0]
        buf = io.StringIO()
        summary = simulate(get_model(candidate.model), get_chip(stage.chip_id), stage.deployment, trace, candidate.scheduler,
                           replicas=replicas * stage.replicas, router=router, requests_out=buf).summary
        records = read_records(buf)
    growth = records.queue_growth()
    judged = [attainment(records.subset(label[records.ids] == i), dict(s.slo), s.goodput_target, growth) for i, s in enumerate(streams)]
    return judged, {k: summary.get(k) for k in SUMMARY_KEYS}


# --- the search ------------------------------------------------------------------------------------
Probe = Callable[[float], tuple[Attainment, dict[str, Any]]]


@dataclass
class Search:
    """Probe log of one bisection, and the result at the highest passing rate."""

    probe: Probe
    log: list[dict[str, Any]]
    best: tuple[Attainment, dict[str, Any]] | None = None
    best_rate: float = 0.0

    def passes(self, rate: float) -> bool:
        att, summary = self.probe(rate)
        self.log.append({"rate_per_s": rate, "met": att.met, "why": att.why()})
        if att.met and rate >= self.best_rate:
            self.best, self.best_rate = (att, summary), rate
        return att.met


def bisect_rate(probe: Probe, estimate_per_s: float, tolerance: float) -> tuple[float, Search]:
    """Highest passing rate to within `tolerance` (relative), or 0 when the lightest probe fails."""
    search = Search(probe, [])
    lo, hi = 0.0, math.inf
    rate = estimate_per_s
    if search.passes(rate):
        lo = rate
        for _ in range(MAX_DOUBLINGS):
            if not search.passes(lo * 2):
                hi = lo * 2
                break
            lo *= 2
    else:
        hi = rate
        for _ in range(DOWN_STEPS):
            if search.passes(hi / 4):
                lo = hi / 4
                break
            hi /= 4
    if lo == 0.0 or math.isinf(hi):
        return lo, search
    while hi / lo > 1 + tolerance:
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if search.passes(mid) else (lo, mid)
    return lo, search


def servable_target(goodput_target: float, requests: int) -> float:
    """The goodput a class must reach nearly unloaded on `requests` to be servable at all: the
    target plus one binomial standard error (0.99 on 1,000 requests: 0.9931), so it is not luck."""
    return min(goodput_target + math.sqrt(goodput_target * (1 - goodput_target) / max(requests, 1)), (1 + goodput_target) / 2)


@dataclass(frozen=True)
class CapacityJob:
    """Find one candidate's capacity for one class (a unit of work for the backends)."""

    kind: ClassVar[str] = "capacity"
    candidate: Candidate
    traffic: TrafficClass
    slo: tuple[tuple[str, str], ...]
    goodput_target: float
    requests: int
    seed: int
    tolerance: float
    estimate_per_s: float
    disagg: Disaggregated | None = None
    probe_timeout_s: float | None = None

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": code_fingerprint(), "candidate": candidate_identity(self.candidate),
                "traffic": traffic_identity(self.traffic), "slo": dict(self.slo), "goodput_target": self.goodput_target,
                "requests": self.requests, "seed": self.seed, "tolerance": self.tolerance, "estimate_per_s": self.estimate_per_s,
                "probe_timeout_s": self.probe_timeout_s,
                "disagg": self.disagg.model_dump() if self.candidate.disaggregated and self.disagg else None}

    @cached_property
    def key(self) -> str:
        return digest(self.identity())

    def about(self) -> dict[str, Any]:
        return {"candidate": self.candidate.key, "class": self.traffic.name, "slo": dict(self.slo)}

    def probe(self, rate: float) -> tuple[Attainment, dict[str, Any]]:
        return self._probe(rate, self.goodput_target)

    def _probe(self, rate: float, goodput_target: float) -> tuple[Attainment, dict[str, Any]]:
        stream = Stream(self.traffic, rate, self.slo, goodput_target, self.requests)
        try:
            with deadline(self.probe_timeout_s):
                judged, summary = run_streams(self.candidate, [stream], 1, self.seed, "round-robin", self.disagg)
        except (TokenfleetError, ProbeTimeout) as exc:  # e.g. a request longer than the replica's KV cache
            nan = float("nan")
            return Attainment(0, 0.0, goodput_target, False, (str(exc),), math.inf, nan, nan, nan, nan, nan), {}
        return judged[0], summary

    def unloaded_check(self) -> dict[str, Any]:
        """The class nearly alone on a replica (the lightest probe's rate), judged against
        `servable_target`: a pair that misses there has no capacity to search for."""
        rate = self.estimate_per_s / 4**DOWN_STEPS
        att, _ = self._probe(rate, servable_target(self.goodput_target, self.requests))
        return {"rate_per_s": rate, "met": att.met, "why": f"nearly unloaded: {att.why()}"}

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        alone = self.unloaded_check()
        if alone["met"]:
            rate, search = bisect_rate(self.probe, self.estimate_per_s, self.tolerance)
        else:
            rate, search = 0.0, Search(self.probe, [])
        search.log.insert(0, alone)
        failed = [p for p in search.log if not p["met"]]
        reason = "" if rate > 0 else f"fails even at {failed[-1]['rate_per_s']:.3g} req/s: {failed[-1]['why']}"
        at = search.best
        return {
            "rate_per_s": float(rate), "reason": reason, "estimate_per_s": self.estimate_per_s, "probes": search.log,
            "attainment": at[0].as_dict() if at else None, "summary": _jsonable(at[1]) if at else None,
            "wall_s": time.perf_counter() - start,
        }


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in d.items()}
