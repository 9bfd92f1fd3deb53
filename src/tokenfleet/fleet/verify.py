"""Verification: the chosen fleet simulated as a whole before anything is reported.

Each deployment of the solution is simulated with all its replicas behind the router, on the
merged traffic the plan sends it: every class at its planned rate on that deployment (a seeded
Poisson stream, or the class's trace rate-scaled; independent streams per deployment are what a
weighted random router splitting each class would produce), for at least 600 s of arrivals
(`min_duration_s`, within `max_requests`): capacity searches probe ~1,000 requests, and a load a
few percent above a replica's capacity passes that many (Llama-3.1-8B on one H100, chat at 32
req/s: p99 TTFT 0.38 s over 1,000 requests, 6.6 s over 20,000). Each class is then judged on each
deployment it uses from the per-request records. A (class, deployment) that misses its target
gets its capacity scaled down by its shortfall and the MILP is solved again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

from tokenfleet.fleet.cache import code_fingerprint, digest
from tokenfleet.fleet.candidates import Candidate
from tokenfleet.fleet.capacity import Stream, candidate_identity, run_streams
from tokenfleet.fleet.plan_file import Disaggregated, TrafficClass, VerifyOptions
from tokenfleet.fleet.traffic import Attainment

#: Each class on a deployment gets at least this many simulated requests (if the cap allows), and
#: at least `BAD_REQUESTS_EXPECTED / (1 - goodput_target)`, so a 0.99 target is judged on >= 1,000.
MIN_REQUESTS_PER_STREAM = 200
BAD_REQUESTS_EXPECTED = 10
#: Tightening never cuts a capacity by more than half in one round.
MIN_TIGHTEN = 0.5


@dataclass(frozen=True)
class VerifyJob:
    """Simulate `replicas` of one candidate on its planned mix of classes."""

    kind: ClassVar[str] = "verify"
    candidate: Candidate
    replicas: int
    streams: tuple[Stream, ...]
    seed: int
    router: str
    disagg: Disaggregated | None = None

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "code": code_fingerprint(), "candidate": candidate_identity(self.candidate),
                "replicas": self.replicas, "streams": [s.identity() for s in self.streams], "seed": self.seed,
                "router": self.router, "disagg": self.disagg.model_dump() if self.candidate.disaggregated and self.disagg else None}

    @cached_property
    def key(self) -> str:
        return digest(self.identity())

    def about(self) -> dict[str, Any]:
        return {"candidate": self.candidate.key, "replicas": self.replicas,
                "classes": {s.traffic.name: s.rate_per_s for s in self.streams}}

    def run(self) -> dict[str, Any]:
        judged, summary = run_streams(self.candidate, list(self.streams), self.replicas, self.seed, self.router, self.disagg)
        return {"streams": {s.traffic.name: a.as_dict() for s, a in zip(self.streams, judged, strict=True)}, "summary": summary}


def salt_of(name: str) -> int:
    """A stable per-class seed offset (Python's hash() is salted per process)."""
    return int(digest(name)[:8], 16)


def stream_requests(rates: dict[str, float], targets: dict[str, float], replicas: int, opts: VerifyOptions) -> dict[str, int]:
    """Requests per class on one deployment: a common window long enough for every replica and
    every class to see a sample that can tell its goodput target, and for a slow overload to show
    (`min_duration_s`), within the per-deployment cap."""
    total = sum(rates.values())
    window_s = max(opts.min_requests_per_replica * replicas / total, opts.min_duration_s)
    for c, rate in rates.items():
        need = max(MIN_REQUESTS_PER_STREAM, BAD_REQUESTS_EXPECTED / max(1 - targets[c], 1e-3))
        window_s = max(window_s, need / rate)
    window_s = min(window_s, opts.max_requests / total)
    return {c: max(1, round(r * window_s)) for c, r in rates.items()}


def verify_job(candidate: Candidate, replicas: int, split: dict[str, float], classes: dict[str, TrafficClass],
               opts: VerifyOptions, seed: int, disagg: Disaggregated | None) -> VerifyJob:
    """The verification job of one deployment of a solution (`split`: class -> req/s on it)."""
    counts = stream_requests(split, {c: classes[c].goodput_target for c in split}, replicas, opts)
    streams = tuple(
        Stream(classes[c], rate, tuple(classes[c].slo_bounds().items()), classes[c].goodput_target, counts[c], salt_of(c))
        for c, rate in sorted(split.items())
    )
    return VerifyJob(candidate, replicas, streams, seed, opts.router, disagg if candidate.disaggregated else None)


@dataclass(frozen=True)
class Miss:
    """A class that missed its target on one deployment, and the capacity cut to apply."""

    cls: str
    unit: str
    attainment: Attainment
    factor: float

    def line(self, label: str) -> str:
        a = self.attainment
        return f"class {self.cls} on {label}: {a.good_fraction:.3f} of requests good (target {a.goodput_target:g}); {a.why()}"


def tighten_factor(a: Attainment, utilisation: float, opts: VerifyOptions) -> float:
    """Scale for a missed (class, deployment) capacity: down to the load it was run at, then by the
    shortfall (good share / target, or bound / observed), at least by `opts.tighten_factor`."""
    shortfall = min(a.good_fraction / a.goodput_target, 1.0 / max(a.worst_ratio, 1e-9))
    step = min(opts.tighten_factor, max(MIN_TIGHTEN, shortfall if math.isfinite(shortfall) else MIN_TIGHTEN))
    return min(max(utilisation, MIN_TIGHTEN), 1.0) * step


def misses(results: dict[str, dict[str, Any]], utilisation: dict[str, float], opts: VerifyOptions) -> list[Miss]:
    """Every (class, deployment) of a verification that missed, with its capacity cut."""
    out = []
    for unit, res in sorted(results.items()):
        for cls, raw in sorted(res["streams"].items()):
            a = attainment_from(raw)
            if not a.met:
                out.append(Miss(cls, unit, a, tighten_factor(a, utilisation[unit], opts)))
    return out


def attainment_from(raw: dict[str, Any]) -> Attainment:
    return Attainment(**{**raw, "failures": tuple(raw["failures"])})
