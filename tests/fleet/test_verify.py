"""Verification samples: long enough to tell a goodput target and to show a slow overload."""

from __future__ import annotations

from tests.fleet.conftest import tiny_plan
from tokenfleet.catalog import get_chip, get_model
from tokenfleet.fleet.capacity import Stream, run_streams
from tokenfleet.fleet.plan_file import VerifyOptions, parse_plan
from tokenfleet.fleet.planner import prepare
from tokenfleet.fleet.traffic import class_trace
from tokenfleet.fleet.verify import stream_requests
from tokenfleet.serve.simulate import simulate


def test_a_deployment_is_verified_on_600_s_of_arrivals_within_the_request_cap() -> None:
    opts = VerifyOptions()
    assert stream_requests({"chat": 10.0, "code": 2.0}, {"chat": 0.95, "code": 0.95}, 1, opts) == {"chat": 6000, "code": 1200}
    assert stream_requests({"chat": 100.0}, {"chat": 0.95}, 4, opts) == {"chat": 20000}  # max_requests: 200 s
    short = VerifyOptions(min_duration_s=0)
    assert stream_requests({"chat": 10.0}, {"chat": 0.99}, 1, short) == {"chat": 1000}  # ~10 bad requests at 0.99


def test_verification_rejects_a_replica_loaded_above_its_saturated_throughput() -> None:
    """Chat on one H100 at 1.1x the rate it completes requests with all of them queued at once:
    no SLO can hold, however well a short sample looks; 600 s of arrivals show the queue."""
    chat = {**tiny_plan()["classes"][0], "share": 1.0, "slo": {"p99_ttft_ms": "<=3000"}, "goodput_target": 0.95}
    plan = parse_plan(tiny_plan(classes=[chat], hardware=[{"chip": "h100-sxm", "precisions": ["fp8"], "max_chips_per_replica": 1}]))
    job = next(iter(prepare(plan).jobs.values()))
    stage = job.candidate.stages[0]
    saturated = simulate(get_model(job.candidate.model), get_chip(stage.chip_id), stage.deployment,
                         class_trace(job.traffic, 3000, 1e9, job.seed), job.candidate.scheduler).summary["request_throughput"]
    rate = 1.1 * saturated
    n = stream_requests({"chat": rate}, {"chat": 0.95}, 1, plan.options.verify)["chat"]
    assert n == min(round(600 * rate), plan.options.verify.max_requests)  # ~600 s of arrivals
    (judged,), _ = run_streams(job.candidate, [Stream(job.traffic, rate, job.slo, 0.95, n)], 1, job.seed, "round-robin", None)
    assert not judged.met and judged.p99_ttft_ms > 3000
