"""The fleet MILP (scipy's HiGHS): integer replicas per candidate, continuous split of each class.

    minimise    sum_d usd_per_hour_d * n_d
    subject to  sum_d x_cd = rate_c                          every class is served
                sum_c x_cd / cap_cd <= n_d                    capacity shares add on a deployment
                sum_d chips_dk * n_d <= available_k           chips of kind k that can be had
                sum_d usd_dv * n_d <= share * sum_d usd_d n_d  no vendor above its share of cost
                n_d integer >= 0, x_cd >= 0 (only where cap_cd > 0)

Once the replicas are fixed, a class that several deployments can serve may split among them in
many ways at the same cost. The split kept is the max-min fair one (`balanced_split`): the fullest
deployment as empty as it can be, then the next, so spare capacity is spread where it buys the
most headroom, and the answer does not depend on which of the ties the solver happened to reach.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from tokenfleet.errors import TokenfleetError


@dataclass(frozen=True)
class Unit:
    """What the MILP needs of a candidate: its cost, its chips by kind and its cost by vendor."""

    key: str
    usd_per_hour: float
    chips_by_chip: dict[str, int]
    usd_by_vendor: dict[str, float]


@dataclass(frozen=True)
class Problem:
    units: list[Unit]
    rates: dict[str, float]  # class -> req/s (classes with rate 0 are ignored)
    caps: dict[tuple[str, str], float]  # (class, unit key) -> req/s per replica
    chips_available: dict[str, int] = field(default_factory=dict)
    max_share_per_vendor: float | None = None


@dataclass(frozen=True)
class Solution:
    replicas: dict[str, int]  # unit key -> replicas (only > 0)
    split: dict[tuple[str, str], float]  # (class, unit key) -> req/s (only > 0)
    usd_per_hour: float


def _pairs(p: Problem) -> list[tuple[str, str]]:
    return [(c, u.key) for c in sorted(p.rates) if p.rates[c] > 0 for u in p.units if p.caps.get((c, u.key), 0.0) > 0]


def _constraints(p: Problem, pairs: list[tuple[str, str]]) -> list[LinearConstraint]:
    nu, nv = len(p.units), len(p.units) + len(pairs)
    index = {u.key: i for i, u in enumerate(p.units)}
    out = []
    classes = [c for c in sorted(p.rates) if p.rates[c] > 0]
    serve = np.zeros((len(classes), nv))
    for j, (c, _) in enumerate(pairs):
        serve[classes.index(c), nu + j] = 1.0
    out.append(LinearConstraint(serve, 1.0, 1.0))  # every class's shares add up to all of it
    cap = np.zeros((nu, nv))
    for j, (c, k) in enumerate(pairs):
        cap[index[k], nu + j] = p.rates[c] / p.caps[(c, k)]
    cap[np.arange(nu), np.arange(nu)] = -1.0
    out.append(LinearConstraint(cap, -np.inf, 0.0))
    for chip, available in sorted(p.chips_available.items()):
        row = np.zeros(nv)
        row[:nu] = [u.chips_by_chip.get(chip, 0) for u in p.units]
        out.append(LinearConstraint(row, -np.inf, float(available)))
    if p.max_share_per_vendor is not None:
        for vendor in sorted({v for u in p.units for v in u.usd_by_vendor}):
            row = np.zeros(nv)
            row[:nu] = [u.usd_by_vendor.get(vendor, 0.0) - p.max_share_per_vendor * u.usd_per_hour for u in p.units]
            out.append(LinearConstraint(row, -np.inf, 0.0))
    return out


def _upper_replicas(p: Problem, u: Unit) -> float:
    need = sum(p.rates[c] / p.caps[(c, u.key)] for c in p.rates if p.rates[c] > 0 and p.caps.get((c, u.key), 0.0) > 0)
    return float(math.ceil(need - 1e-9) + 1)


@contextmanager
def _silent_stdout() -> Iterator[None]:
    """HiGHS (inside scipy) prints solver chatter straight to file descriptor 1 in some builds,
    which would corrupt `--json` output: point fd 1 at /dev/null while it runs."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (embedded interpreters): nothing to protect
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _solve(p: Problem) -> Solution | None:
    """Integer replicas per unit and, per (class, unit), the share of the class it serves: shares
    rather than req/s keep the demand rows at 1 whatever the rates (a class of 1e-7 req/s would
    otherwise sit inside the solver's feasibility tolerance and go unserved)."""
    pairs = _pairs(p)
    found = _milp(p, pairs)
    if found is None:
        return None
    n, shares = found
    split = balanced_split(p, _replicas(p, n))
    if split is not None and _short(p, n, split):
        # HiGHS's feasibility tolerance (~1e-6) let the replicas fall a sliver short of the demand
        # (a class of 1e-5 req/s beside replicas the other class fills exactly): the cheapest fleet
        # that carries it is the MILP's answer for a sliver more demand. Rounding up each
        # deployment the balanced split overfills instead doubled a $6 fleet that $7 carries.
        again = _milp(replace(p, rates={c: r * (1 + SLIVER) for c, r in p.rates.items()}), pairs)
        if again is not None:
            n, split = again[0], balanced_split(p, _replicas(p, again[0]))
    if split is not None and (more := _rounded_up(p, pairs, n, split)) is not None:
        n, split = more, balanced_split(p, _replicas(p, more))
    if split is None:
        split = {(c, k): float(shares[j]) * p.rates[c] for j, (c, k) in enumerate(pairs) if shares[j] > 1e-9}
    return Solution(_replicas(p, n), split, float(sum(u.usd_per_hour * n[i] for i, u in enumerate(p.units))))


#: How much more demand a re-solve asks for when the MILP's replicas fell a sliver short: well
#: above HiGHS's feasibility tolerance (~1e-6) relative to a replica's load, far below any real margin.
SLIVER = 1e-5


def _milp(p: Problem, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray] | None:
    """The MILP's replicas per unit and each (class, unit) pair's share of its class; None if infeasible."""
    nu = len(p.units)
    cost = np.concatenate([[u.usd_per_hour for u in p.units], np.zeros(len(pairs))])
    upper = np.concatenate([[_upper_replicas(p, u) for u in p.units], np.ones(len(pairs))])
    integrality = np.concatenate([np.ones(nu), np.zeros(len(pairs))])
    with _silent_stdout():
        res = milp(cost, integrality=integrality, bounds=Bounds(np.zeros_like(upper), upper), constraints=_constraints(p, pairs),
                   options={"time_limit": 60.0, "mip_rel_gap": 1e-6})
    if res.x is None or res.status not in (0, 1):
        return None
    return np.rint(res.x[:nu]).astype(int), res.x[nu:]


def _replicas(p: Problem, n: np.ndarray) -> dict[str, int]:
    return {u.key: int(n[i]) for i, u in enumerate(p.units) if n[i] > 0}


def _rounded_up(p: Problem, pairs: list[tuple[str, str]], n: np.ndarray, split: dict[tuple[str, str], float]) -> np.ndarray | None:
    """Replica counts that carry `split` in full where HiGHS's feasibility tolerance (~1e-6) let
    the MILP leave a deployment a sliver short (a class of 1e-6 req/s beside a full replica: its
    load is 1.000002 replicas), if the chip and vendor limits allow them; None when `n` already
    carries it (or the limits leave nothing more)."""
    need = _needed(p, n, split)
    if np.array_equal(need, n):
        return None
    shares = [split.get((c, k), 0.0) / p.rates[c] for c, k in pairs]
    v = np.concatenate([need, shares])
    within = all(np.all(con.A @ v >= con.lb - 1e-6) and np.all(con.A @ v <= con.ub + 1e-6) for con in _constraints(p, pairs))
    return need if within else None


def _needed(p: Problem, n: np.ndarray, split: dict[tuple[str, str], float]) -> np.ndarray:
    """Replicas of each unit that carry `split`: `n`, or more where its load exceeds them."""
    load = {u.key: 0.0 for u in p.units}
    for (c, k), x in split.items():
        load[k] += x / p.caps[(c, k)]
    return np.array([max(int(n[i]), math.ceil(load[u.key] - LEVEL_TOLERANCE)) for i, u in enumerate(p.units)])


def _short(p: Problem, n: np.ndarray, split: dict[tuple[str, str], float]) -> bool:
    """Whether `n` replicas fall short of carrying `split`."""
    return not np.array_equal(_needed(p, n, split), n)


#: Utilisation levels closer than this are one level (the LP's own tolerance is ~1e-9).
LEVEL_TOLERANCE = 1e-7


def balanced_split(p: Problem, replicas: dict[str, int]) -> dict[tuple[str, str], float] | None:
    """The max-min fair split of every class over the chosen `replicas`: lowest possible highest
    utilisation (load / replicas), then, with the deployments that set it held there, the lowest
    possible next one, and so on (progressive filling; a deployment whose utilisation constraint
    has a non-zero dual cannot go lower without raising the current level, so it is held).
    None if an LP fails (the MILP's own split is then kept)."""
    pairs = [(c, k) for c, k in _pairs(p) if replicas.get(k, 0) > 0]
    keys = sorted({k for _, k in pairs})
    if not keys:
        return None
    classes = sorted({c for c, _ in pairs})
    load = np.zeros((len(keys), len(pairs) + 1))  # last column: the level u
    for j, (c, k) in enumerate(pairs):
        load[keys.index(k), j] = p.rates[c] / p.caps[(c, k)] / replicas[k]
    serve = np.zeros((len(classes), len(pairs) + 1))
    for j, (c, _) in enumerate(pairs):
        serve[classes.index(c), j] = 1.0
    objective = np.zeros(len(pairs) + 1)
    objective[-1] = 1.0
    held: dict[int, float] = {}
    x = np.zeros(len(pairs) + 1)
    while len(held) < len(keys):
        free = [i for i in range(len(keys)) if i not in held]
        a_ub = load.copy()
        a_ub[free, -1] = -1.0
        b_ub = np.array([held[i] + LEVEL_TOLERANCE if i in held else 0.0 for i in range(len(keys))])
        # variables (shares and the level) are >= 0: linprog's default bounds
        res = linprog(objective, A_ub=a_ub, b_ub=b_ub, A_eq=serve, b_eq=np.ones(len(classes)), method="highs")
        if res.status != 0:
            return None
        x, level = res.x, float(res.x[-1])
        duals = res.ineqlin.marginals
        tight = [i for i in free if duals[i] < -1e-9] or free  # none with a dual: every free one is at its floor
        held.update({i: level for i in tight})
    return {(c, k): float(x[j]) * p.rates[c] for j, (c, k) in enumerate(pairs) if x[j] > 1e-9}


def solve(p: Problem) -> Solution:
    """The cheapest fleet; infeasible problems raise one line saying which limit binds."""
    served = {c for c, _ in _pairs(p)}
    missing = [c for c in sorted(p.rates) if p.rates[c] > 0 and c not in served]
    if missing:
        raise TokenfleetError(f"class {missing[0]!r} cannot be served: no candidate deployment meets its SLOs")
    if not any(r > 0 for r in p.rates.values()):
        raise TokenfleetError("every class has rate 0: nothing to plan")
    sol = _solve(p)
    if sol is None:
        raise TokenfleetError(_why_infeasible(p))
    return sol


def _why_infeasible(p: Problem) -> str:
    """Relax one limit at a time to name the one that binds."""
    for chip in sorted(p.chips_available):
        relaxed = {k: v for k, v in p.chips_available.items() if k != chip}
        if _solve(Problem(p.units, p.rates, p.caps, relaxed, p.max_share_per_vendor)) is not None:
            return f"limits.chips_available.{chip} = {p.chips_available[chip]} binds: the traffic needs more {chip} chips (raise it or loosen the SLOs)"
    if p.max_share_per_vendor is not None and _solve(Problem(p.units, p.rates, p.caps, p.chips_available, None)) is not None:
        return f"limits.max_share_per_vendor = {p.max_share_per_vendor:g} binds: no fleet within it serves the traffic (raise it or add hardware of another vendor)"
    return "limits.chips_available and max_share_per_vendor together leave too little hardware: raise them or add hardware"
