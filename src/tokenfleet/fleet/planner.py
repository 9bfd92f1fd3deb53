"""The planner: candidates -> simulated capacities -> MILP -> whole-fleet verification, tightening
and re-solving until the fleet passes; a plan that never passes raises instead of printing."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from tokenfleet.catalog.chips import get_chip
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.backends import Runner
from tokenfleet.fleet.candidates import Candidate, Choice, class_choices
from tokenfleet.fleet.capacity import CapacityJob
from tokenfleet.fleet.optimize import Problem, Solution, Unit, solve
from tokenfleet.fleet.plan_file import Plan, TrafficClass
from tokenfleet.fleet.prices import ChipPrice, chip_prices
from tokenfleet.fleet.traffic import class_rates
from tokenfleet.fleet.verify import BAD_REQUESTS_EXPECTED, Miss, VerifyJob, misses, verify_job

Pair = tuple[str, str]  # (class name, candidate key)


@dataclass
class Context:
    """A validated plan with its rates, prices, candidates and capacity jobs."""

    plan: Plan
    rates: dict[str, float]
    prices: dict[str, ChipPrice]
    classes: dict[str, TrafficClass]
    choices: list[Choice]
    notes: list[str] = field(default_factory=list)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    jobs: dict[Pair, CapacityJob] = field(default_factory=dict)


def prepare(plan: Plan) -> Context:
    """Rates, prices and the pruned candidate set of every class with traffic."""
    rates = class_rates(plan)
    if not any(r > 0 for r in rates.values()):
        raise TokenfleetError("every class has rate 0: nothing to plan")
    prices = chip_prices(plan)
    classes = {c.name: c for c in plan.classes if rates[c.name] > 0}
    notes: list[str] = []
    choices = [ch for c in classes.values() for ch in class_choices(plan, c, prices, notes)]
    if plan.options.disaggregated.enabled:
        from tokenfleet.fleet.disagg import disaggregated_choices

        choices += disaggregated_choices(plan, list(classes.values()), prices, choices)
    ctx = Context(plan, rates, prices, classes, choices, notes)
    for ch in choices:
        ctx.candidates.setdefault(ch.candidate.key, ch.candidate)
        if ch.simulate:
            ctx.jobs[(ch.cls, ch.candidate.key)] = capacity_job(plan, classes[ch.cls], ch)
    return ctx


def search_requests(plan: Plan, cls: TrafficClass) -> int:
    """Requests per capacity probe: the plan's, but enough to resolve the goodput target (a 0.99
    target needs ~1,000 requests to see ~10 bad ones), as verification uses."""
    return max(plan.options.requests_per_search, min(math.ceil(BAD_REQUESTS_EXPECTED / max(1 - cls.goodput_target, 1e-3)), 10_000))


def capacity_job(plan: Plan, cls: TrafficClass, ch: Choice) -> CapacityJob:
    o = plan.options
    return CapacityJob(ch.candidate, cls, tuple(cls.slo_bounds().items()), cls.goodput_target, search_requests(plan, cls),
                       o.seed, o.capacity_tolerance, ch.estimate.rate_per_s, o.disaggregated, o.probe_timeout_s)


def units(ctx: Context, keys: set[str]) -> list[Unit]:
    out = []
    for key in sorted(keys):
        cand = ctx.candidates[key]
        vendors: dict[str, float] = {}
        for chip, n in cand.chips_by_chip.items():
            vendor = get_chip(chip).vendor
            vendors[vendor] = vendors.get(vendor, 0.0) + n * ctx.prices[chip].usd_per_chip_hour
        out.append(Unit(key, cand.usd_per_hour(ctx.prices), cand.chips_by_chip, vendors))
    return out


def solve_fleet(ctx: Context, caps: dict[Pair, float]) -> Solution:
    limits = ctx.plan.limits
    keys = {k for (_, k), cap in caps.items() if cap > 0}
    problem = Problem(units(ctx, keys), {c: ctx.rates[c] for c in ctx.classes}, caps, dict(limits.chips_available), limits.max_share_per_vendor)
    return solve(problem)


def utilisation(sol: Solution, caps: dict[Pair, float]) -> dict[str, float]:
    """Share of each deployment's capacity budget the solution uses (1 = every replica full)."""
    used: dict[str, float] = {}
    for (c, k), x in sol.split.items():
        used[k] = used.get(k, 0.0) + x / caps[(c, k)]
    return {k: used.get(k, 0.0) / n for k, n in sol.replicas.items()}


def verification_jobs(ctx: Context, sol: Solution) -> dict[str, VerifyJob]:
    o = ctx.plan.options
    jobs = {}
    for key, n in sorted(sol.replicas.items()):
        split = {c: x for (c, k), x in sol.split.items() if k == key}
        if split:
            jobs[key] = verify_job(ctx.candidates[key], n, split, ctx.classes, o.verify, o.seed, o.disaggregated)
    return jobs


def require_servable(ctx: Context, capacity: dict[Pair, dict[str, Any]], caps: dict[Pair, float]) -> None:
    """One line per unservable class: why its fastest candidate failed."""
    for name in ctx.classes:
        if any(cap > 0 for (c, _), cap in caps.items() if c == name):
            continue
        mine = [ch for ch in ctx.choices if ch.cls == name]
        if not mine:
            raise TokenfleetError(f"class {name!r} cannot be served: none of its models fits the hardware ({'; '.join(ctx.notes) or 'no candidates'})")
        fastest = min(mine, key=lambda ch: (ch.estimate.tpot_s, ch.estimate.ttft_s))
        res = capacity.get((name, fastest.candidate.key))
        why = (res or {}).get("reason") or fastest.pruned
        raise TokenfleetError(f"class {name!r} cannot be served: no candidate meets its SLOs; the fastest, {fastest.candidate.label}: {why}")


@dataclass
class Round:
    solution: Solution
    verification: dict[str, dict[str, Any]]
    missed: list[Miss]


@dataclass
class PlanRun:
    """Everything a report needs: the context, measured capacities, and the verified rounds."""

    ctx: Context
    capacity: dict[Pair, dict[str, Any]]
    caps: dict[Pair, float]
    rounds: list[Round]
    wall_s: float = 0.0
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def final(self) -> Round:
        return self.rounds[-1]


def measure(ctx: Context, runner: Runner) -> dict[Pair, dict[str, Any]]:
    by_key = runner.run(list(ctx.jobs.values()), "capacity searches")
    return {pair: by_key[job.key] for pair, job in ctx.jobs.items()}


def solve_verified(ctx: Context, capacity: dict[Pair, dict[str, Any]], runner: Runner) -> tuple[dict[Pair, float], list[Round]]:
    """MILP, verify, tighten the (class, deployment) capacities that missed, repeat."""
    caps = {pair: float(res["rate_per_s"]) for pair, res in capacity.items()}
    require_servable(ctx, capacity, caps)
    isolate_lopsided(ctx, caps)
    opts = ctx.plan.options.verify
    rounds: list[Round] = []
    strikes: dict[Pair, int] = {}
    for i in range(opts.max_rounds):
        sol = solve_fleet(ctx, caps)
        jobs = verification_jobs(ctx, sol)
        results = runner.run(list(jobs.values()), f"verification, round {i + 1}")
        verification = {k: results[j.key] for k, j in jobs.items()}
        missed = misses(verification, utilisation(sol, caps), opts)
        rounds.append(Round(sol, verification, missed))
        if not missed:
            return caps, rounds
        for m in missed:
            pair = (m.cls, m.unit.split(DEDICATED)[0])  # a pool of its own keeps the pair's strikes
            strikes[pair] = strikes.get(pair, 0) + 1
            tighten(ctx, caps, sol, m, strikes[pair])
    worst = rounds[-1].missed[0]
    raise TokenfleetError(
        f"no fleet passed verification in {opts.max_rounds} rounds: {worst.line(unit_label(ctx, worst.unit))}; "
        "raise options.verify.max_rounds, loosen the SLOs or add hardware"
    )


DEDICATED = "|only:"


#: Classes share a deployment only if each one's capacity on it is at least this share of the
#: largest: a class the replica serves at a sliver of another's rate is the one the mix hurts.
MIN_SHARED_CAPACITY_RATIO = 0.25


def isolate_lopsided(ctx: Context, caps: dict[Pair, float]) -> None:
    """Move lopsided (class, deployment) pairs to a pool of their own before the first solve."""
    by_unit: dict[str, dict[str, float]] = {}
    for (c, k), cap in caps.items():
        if cap > 0:
            by_unit.setdefault(k, {})[c] = cap
    for key, classes in sorted(by_unit.items()):
        top = max(classes.values())
        for c, cap in sorted(classes.items()):
            if len(classes) > 1 and cap < MIN_SHARED_CAPACITY_RATIO * top:
                own = f"{key}{DEDICATED}{c}"
                ctx.candidates[own] = ctx.candidates[key]
                caps[(c, own)], caps[(c, key)] = cap, 0.0


#: A (class, deployment) that misses this many times is dropped: its measured capacity does not
#: hold up on other samples of the traffic even at the lower loads it was given.
STRIKES_OUT = 3


def tighten(ctx: Context, caps: dict[Pair, float], sol: Solution, miss: Miss, strike: int) -> None:
    """React to a class that missed its target on a deployment (the `strike`-th time).

    Shared deployment: first lower the load of every class on it (the mix may simply be too
    full); on a second miss give the class a pool of its own (the others' traffic is what hurts
    it). Alone: lower its load per replica; on the third miss drop the pair."""
    shared = [c for c, k in sol.split if k == miss.unit and c != miss.cls]
    if shared and strike == 1:
        for c in [miss.cls, *shared]:
            caps[(c, miss.unit)] *= miss.factor
    elif shared and DEDICATED not in miss.unit:
        own = f"{miss.unit}{DEDICATED}{miss.cls}"
        ctx.candidates[own] = ctx.candidates[miss.unit]
        caps[(miss.cls, own)] = caps[(miss.cls, miss.unit)]
        caps[(miss.cls, miss.unit)] = 0.0
    elif strike >= STRIKES_OUT:
        caps[(miss.cls, miss.unit)] = 0.0
    else:
        caps[(miss.cls, miss.unit)] *= miss.factor


def unit_label(ctx: Context, key: str) -> str:
    label = ctx.candidates[key].label
    return f"{label} [{key.split(DEDICATED)[1]} only]" if DEDICATED in key else label


def plan_fleet(plan: Plan, runner: Runner) -> PlanRun:
    """Plan one fleet; raises TokenfleetError when no verified fleet exists."""
    start = time.perf_counter()
    ctx = prepare(plan)
    capacity = measure(ctx, runner)
    caps, rounds = solve_verified(ctx, capacity, runner)
    return PlanRun(ctx, capacity, caps, rounds, time.perf_counter() - start, runner.stats())
