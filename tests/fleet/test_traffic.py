"""A class's traffic and how its SLOs are judged from per-request records."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fleet.conftest import tiny_plan
from tokenfleet.fleet.plan_file import parse_plan
from tokenfleet.fleet.traffic import (
    Records,
    attainment,
    class_trace,
    merge_traces,
    trace_rate_per_s,
)


def records(ttft_s: list[float], tpot_s: list[float], arrival_s: list[float] | None = None) -> Records:
    n = len(ttft_s)
    arrival = np.array(arrival_s if arrival_s is not None else np.arange(n), dtype=float)
    ttft, tpot = np.array(ttft_s), np.array(tpot_s)
    return Records(np.arange(n), arrival, ttft, tpot, ttft + 10 * tpot, np.full(n, 11.0))


def test_goodput_counts_requests_that_meet_every_bound_and_stated_percentiles_hold_too() -> None:
    slo = {"p99_ttft_ms": "<=1000", "p50_tpot_ms": "<=20"}
    one_slow = records([0.1] * 99 + [2.0], [0.01] * 100)
    assert attainment(one_slow, slo, 0.99).met
    strict = attainment(one_slow, slo, 0.995)
    assert not strict.met and strict.why() == "good 0.990 < target 0.995"
    five_slow = attainment(records([0.1] * 95 + [2.0] * 5, [0.01] * 100), slo, 0.95)
    assert five_slow.good_fraction == pytest.approx(0.95)  # the goodput target is met ...
    assert not five_slow.met and "p99_ttft_ms 2000 ms vs <=1000" in five_slow.why()  # ... the stated p99 is not


def test_a_growing_queue_is_an_overload_even_within_the_slos() -> None:
    """The wait for a first token climbs through the run: the backlog would grow without end."""
    growing = records(list(np.linspace(0.01, 0.9, 100)), [0.01] * 100)
    steady = records([0.2, 0.3] * 50, [0.01] * 100)
    assert "overloaded" in attainment(growing, {"p99_ttft_ms": "<=1000"}, 0.9).why()
    assert attainment(steady, {"p99_ttft_ms": "<=1000"}, 0.9).met


def test_a_trickle_is_judged_by_its_deployments_queue_not_by_its_own_handful() -> None:
    """20 requests whose TTFT wobbles 3x are too few to show a queue; the deployment's growth,
    measured on every class it serves, decides for them either way."""
    trickle = records([0.02] * 10 + [0.06] * 10, [0.01] * 20)
    slo = {"p99_ttft_ms": "<=1000"}
    assert trickle.queue_growth() == 1.0 and attainment(trickle, slo, 0.9).met
    assert attainment(trickle, slo, 0.9, queue_growth=1.3).met
    assert "grew 3.0x" in attainment(trickle, slo, 0.9, queue_growth=3.0).why()


def test_same_seed_same_requests_at_any_rate() -> None:
    cls = parse_plan(tiny_plan()).classes[1]
    slow, fast = class_trace(cls, 500, 1.0, seed=3), class_trace(cls, 500, 4.0, seed=3)
    assert np.array_equal(slow.input_tokens, fast.input_tokens)
    assert np.allclose(slow.arrival_s, 4 * fast.arrival_s)
    assert 1500 * 0.8 < slow.input_tokens.mean() < 1500 * 1.2 and set(slow.output_tokens) == {40}


def test_trace_arrivals_are_rate_scaled_and_prefixes_shared() -> None:
    base = tiny_plan()["classes"][0]
    cls = parse_plan(tiny_plan(classes=[{**base, "share": 1.0, "arrivals": "trace", "trace": "azure-conv",
                                         "prefix_sharing": {"shared_tokens": 1024, "groups": 2}}])).classes[0]
    trace = class_trace(cls, 2000, 20.0, seed=0)
    assert trace_rate_per_s(trace) == pytest.approx(20.0, rel=0.05)
    assert trace.prefix_blocks is not None
    firsts = {p[0] for p in trace.prefix_blocks if p}
    assert len(firsts) == 2 and max(len(p) for p in trace.prefix_blocks) == 2  # 1,024 tokens = two 512-token blocks


def test_merging_classes_keeps_each_requests_label() -> None:
    a, b = (class_trace(c, 50, 2.0, seed=1, salt=i) for i, c in enumerate(parse_plan(tiny_plan()).classes))
    merged, label = merge_traces([a, b])
    assert np.all(np.diff(merged.arrival_s) >= 0) and (label == 0).sum() == 50 and (label == 1).sum() == 50
    assert sorted(merged.input_tokens[label == 1]) == sorted(b.input_tokens)
