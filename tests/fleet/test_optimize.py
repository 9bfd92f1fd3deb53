"""The MILP: never less capacity than demand, cost monotone in demand, limits that bind are named."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.optimize import Problem, Solution, Unit, solve


def unit(key: str, usd: float, chip: str = "gpu-a", chips: int = 1, vendor: str = "A") -> Unit:
    return Unit(key, usd, {chip: chips}, {vendor: usd})


caps_strategy = st.lists(st.floats(0.5, 50), min_size=3, max_size=3)
problems = st.tuples(
    st.lists(st.floats(1, 100), min_size=3, max_size=3),  # $/hour of units u0..u2
    st.tuples(caps_strategy, caps_strategy),  # capacity of each unit for classes a and b
    st.tuples(st.floats(0, 80), st.floats(0.1, 80)),  # rates
)


def build(usd: list[float], caps: tuple[list[float], list[float]], rates: tuple[float, float]) -> Problem:
    units = [unit(f"u{i}", u, chip=f"chip{i}", vendor=f"V{i}") for i, u in enumerate(usd)]
    cap = {(c, f"u{i}"): caps[j][i] for j, c in enumerate("ab") for i in range(3)}
    return Problem(units, {"a": rates[0], "b": rates[1]}, cap)


@settings(max_examples=40, deadline=None)
@given(problems)
def test_the_fleet_always_covers_demand(args: tuple[list[float], tuple[list[float], list[float]], tuple[float, float]]) -> None:
    p = build(*args)
    sol = solve(p)
    for c, rate in p.rates.items():
        assert sum(x for (cc, _), x in sol.split.items() if cc == c) == pytest.approx(rate, rel=1e-6, abs=1e-9)
    for u in p.units:
        load = sum(x / p.caps[(c, k)] for (c, k), x in sol.split.items() if k == u.key)
        assert load <= sol.replicas.get(u.key, 0) + 1e-6
    assert sol.usd_per_hour == pytest.approx(sum(u.usd_per_hour * sol.replicas.get(u.key, 0) for u in p.units))


@settings(max_examples=30, deadline=None)
@given(problems, st.floats(1.0, 3.0))
@example(([4.0, 1.0, 1.0], ([1.0, 1.0, 10.0], [4.5, 1.0, 1.0]), (1e-05, 6.5)), 1.5)  # found by hypothesis: $12 against $9
def test_cost_is_monotone_in_demand(args: tuple[list[float], tuple[list[float], list[float]], tuple[float, float]], factor: float) -> None:
    usd, caps, rates = args
    low = solve(build(usd, caps, rates)).usd_per_hour
    high = solve(build(usd, caps, (rates[0] * factor, rates[1] * factor))).usd_per_hour
    assert high >= low - 1e-6


def test_replicas_a_sliver_short_get_the_cheapest_top_up_not_one_more_of_each() -> None:
    """Class b fills one $4 replica and two $1 ones exactly; a class of 1e-5 req/s beside it is
    within HiGHS's feasibility tolerance, so the MILP answers those three ($6) a sliver short. The
    cheapest fleet that carries both costs $7, not the $12 of rounding each overfilled one up."""
    p = build([4.0, 1.0, 1.0], ([1.0, 1.0, 10.0], [4.5, 1.0, 1.0]), (1e-5, 6.5))
    sol = solve(p)
    assert sol.usd_per_hour == 7.0
    for u in p.units:
        load = sum(x / p.caps[(c, k)] for (c, k), x in sol.split.items() if k == u.key)
        assert load <= sol.replicas.get(u.key, 0)


def test_classes_share_a_deployment_when_that_is_cheaper() -> None:
    """Half a replica of each class fits in one replica: sharing beats two replicas."""
    p = Problem([unit("u", 10.0)], {"a": 5.0, "b": 5.0}, {("a", "u"): 10.0, ("b", "u"): 10.0})
    assert solve(p).replicas == {"u": 1}


def test_chips_available_and_vendor_share_are_respected_and_named_when_they_bind() -> None:
    units = [unit("cheap", 1.0, chip="x", vendor="X"), unit("dear", 3.0, chip="y", vendor="Y")]
    caps = {("a", "cheap"): 1.0, ("a", "dear"): 1.0}
    sol = solve(Problem(units, {"a": 4.0}, caps, chips_available={"x": 3}))
    assert sol.replicas == {"cheap": 3, "dear": 1}
    with pytest.raises(TokenfleetError, match=r"limits.chips_available.x = 3 binds"):
        solve(Problem(units, {"a": 4.0}, caps, chips_available={"x": 3, "y": 0}))
    with pytest.raises(TokenfleetError, match=r"limits.max_share_per_vendor = 0.2 binds"):
        solve(Problem(units, {"a": 4.0}, caps, max_share_per_vendor=0.2))


def test_a_class_nothing_can_serve_is_named() -> None:
    with pytest.raises(TokenfleetError, match="class 'b' cannot be served"):
        solve(Problem([unit("u", 1.0)], {"a": 1.0, "b": 1.0}, {("a", "u"): 1.0}))


def utilisations(p: Problem, sol: Solution) -> dict[str, float]:
    return {k: sum(x / p.caps[(c, kk)] for (c, kk), x in sol.split.items() if kk == k) / n for k, n in sol.replicas.items()}


def test_spare_capacity_is_spread_so_the_fullest_deployment_is_as_empty_as_it_can_be() -> None:
    """Coding needs the fast replica, which leaves half of it spare; chat can use that spare or the
    two B200 replicas it needs anyway. Any split costs the same; the kept one fills both to 90%
    rather than, say, the B200s to 100% and the fast replica to 70%."""
    units = [unit("b200", 10.0), unit("fast", 100.0)]
    caps = {("coding", "fast"): 4.0, ("chat", "fast"): 10.0, ("chat", "b200"): 10.0}
    p = Problem(units, {"coding": 2.0, "chat": 22.0}, caps)
    sol = solve(p)
    assert sol.replicas == {"b200": 2, "fast": 1}
    assert utilisations(p, sol) == pytest.approx({"b200": 0.9, "fast": 0.9})
    assert sol.split[("chat", "fast")] == pytest.approx(4.0)


def test_the_split_is_max_min_fair_beyond_the_fullest_deployment() -> None:
    """`a` can only use u1 and fills it; `b` needs both u2 and u3 and spreads over them evenly,
    though any split of `b` leaves the fullest deployment (u1) where it is."""
    units = [unit("u1", 1.0), unit("u2", 1.0, chip="x"), unit("u3", 1.0, chip="y")]
    caps = {("a", "u1"): 1.0, ("b", "u2"): 1.0, ("b", "u3"): 1.0}
    p = Problem(units, {"a": 1.0, "b": 1.5}, caps, chips_available={"x": 1, "y": 1})
    assert utilisations(p, solve(p)) == pytest.approx({"u1": 1.0, "u2": 0.75, "u3": 0.75})


@settings(max_examples=30, deadline=None)
@given(problems)
def test_the_split_does_not_depend_on_the_order_the_deployments_are_listed(
        args: tuple[list[float], tuple[list[float], list[float]], tuple[float, float]]) -> None:
    p = build(*args)
    q = Problem(list(reversed(p.units)), p.rates, p.caps)
    sol, rev = solve(p), solve(q)
    if sol.replicas == rev.replicas:  # replica counts may tie in cost too; the split is what is fixed here
        assert utilisations(q, rev) == pytest.approx(utilisations(p, sol), abs=1e-6)


def test_a_sliver_of_demand_beside_a_full_replica_gets_a_replica_not_the_solvers_tolerance() -> None:
    """1e-6 req/s of `a` (2e-6 of a replica) beside a replica that `b` fills: HiGHS accepts one
    replica within its feasibility tolerance, but the demand is 1.000002 replicas, so two it is."""
    p = build([1.0, 1.0, 1.0], ([0.5, 1.0, 1.0], [2.0, 1.0, 1.0]), (1e-6, 2.0))
    sol = solve(p)
    assert sol.usd_per_hour == 2.0 and sum(sol.replicas.values()) == 2
    assert all(load <= 1.0 for load in utilisations(p, sol).values())
