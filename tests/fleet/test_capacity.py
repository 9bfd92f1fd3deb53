"""Capacity search: the bisection brackets the true capacity, and on a real simulation the
answer passes while a little more load fails."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fleet.conftest import tiny_plan
from tokenfleet.fleet.capacity import bisect_rate, servable_target
from tokenfleet.fleet.plan_file import parse_plan
from tokenfleet.fleet.planner import prepare
from tokenfleet.fleet.traffic import Attainment


def verdict(met: bool) -> tuple[Attainment, dict[str, object]]:
    nan = float("nan")
    return Attainment(100, 1.0 if met else 0.0, 0.99, met, () if met else ("too slow",), 1.0, nan, nan, nan, nan, nan), {}


@settings(max_examples=60, deadline=None)
@given(true_cap=st.floats(0.05, 500), estimate=st.floats(0.05, 500), tol=st.sampled_from([0.01, 0.05, 0.2]))
def test_bisection_brackets_a_threshold_from_any_estimate(true_cap: float, estimate: float, tol: float) -> None:
    rate, search = bisect_rate(lambda r: verdict(r <= true_cap), estimate, tol)
    if true_cap < estimate / 256:  # below the lightest probe: reported as 0, with its reason
        assert rate == 0 and not any(p["met"] for p in search.log)
        return
    assert rate <= true_cap <= rate * (1 + tol) * (1 + 1e-9)
    assert len(search.log) <= 2 + 20 + math.ceil(math.log2(math.log(4) / math.log1p(tol)))


def test_capacity_of_a_tiny_model_passes_at_the_answer_and_fails_above() -> None:
    ctx = prepare(parse_plan(tiny_plan()))
    job = ctx.jobs[next(p for p in ctx.jobs if p[0] == "chat")]
    result = job.run()
    cap = result["rate_per_s"]
    assert cap > 0 and result["reason"] == ""
    assert result["attainment"]["met"] and result["attainment"]["good_fraction"] >= 0.9
    assert job.probe(cap)[0].met
    assert not job.probe(cap * 1.5)[0].met  # beyond the bracket's tolerance: overloaded
    assert 0.2 < cap / job.estimate_per_s < 5  # the static cost model brackets the simulated answer


def test_a_class_no_candidate_can_serve_gets_0_and_a_reason() -> None:
    plan = parse_plan(tiny_plan(classes=[{**tiny_plan()["classes"][0], "share": 1.0, "min_tok_s_per_user": 2000}]))
    ctx = prepare(plan)
    assert not ctx.jobs  # pruned statically: even one request alone is slower than 2,000 tok/s
    assert all("alone, TPOT is" in ch.pruned for ch in ctx.choices)


def test_a_probe_that_fails_at_light_load_gives_capacity_0() -> None:
    """A p99 TTFT bound just above what the goodput-target prompt needs alone passes the static
    check, but the longest 1% of prompts miss it even on an idle replica."""
    cls = {**tiny_plan()["classes"][0], "share": 1.0, "min_tok_s_per_user": None}
    alone_s = prepare(parse_plan(tiny_plan(classes=[cls]))).choices[0].estimate.ttft_s
    cls["slo"] = {"p99_ttft_ms": f"<={alone_s * 1e3 * 1.05:.1f}"}
    ctx = prepare(parse_plan(tiny_plan(classes=[cls])))
    results = [job.run() for job in ctx.jobs.values()]
    assert results
    for res in results:
        assert res["rate_per_s"] == 0 and "fails even at" in res["reason"] and "p99_ttft_ms" in res["reason"]


def test_a_class_must_clear_its_target_unloaded_by_one_standard_error_to_be_servable() -> None:
    """0.990 good on 1,000 requests nearly alone could be sampling luck; 0.9931 is not."""
    assert servable_target(0.99, 1000) == pytest.approx(0.99 + math.sqrt(0.99 * 0.01 / 1000))
    assert servable_target(0.95, 100) == pytest.approx(0.95 + math.sqrt(0.95 * 0.05 / 100))
    assert servable_target(0.99, 10_000) < servable_target(0.99, 1000) < 1
    assert servable_target(0.99, 1) == pytest.approx(0.995)  # never more than halfway to all
    ctx = prepare(parse_plan(tiny_plan()))
    job = next(iter(ctx.jobs.values()))
    alone = job.unloaded_check()
    assert alone["rate_per_s"] == pytest.approx(job.estimate_per_s / 256) and alone["met"]
    assert job.run()["probes"][0] == alone  # the search starts there and keeps it in its log


def test_a_scheduler_with_speculative_decoding_is_screened_with_it() -> None:
    """A TPOT bound one request alone misses may be met with a draft model; the static screen
    must not prune that candidate before the simulator sees it."""
    from tokenfleet.catalog.chips import get_chip
    from tokenfleet.catalog.models import get_model
    from tokenfleet.fleet.candidates import static_estimate
    from tokenfleet.fleet.traffic import class_stats
    from tokenfleet.perf.deployment import Deployment
    from tokenfleet.serve.config import SchedulerConfig, SpecDecode

    cls = parse_plan(tiny_plan()).classes[1].model_copy(update={"min_tok_s_per_user": 250.0})
    args = (get_model("llama-3.1-8b"), get_chip("h100-sxm"), Deployment(chips=1, tp=1, pp=1))
    plain = static_estimate(*args, SchedulerConfig(), cls, class_stats(cls))
    spec = static_estimate(*args, SchedulerConfig(spec=SpecDecode(draft_tokens=4, acceptance_rate=0.9)), cls, class_stats(cls))
    assert plain.rate_per_s == 0 and "TPOT" in plain.reason
    assert spec.rate_per_s > 0 and spec.tpot_s < 0.004 < plain.tpot_s
