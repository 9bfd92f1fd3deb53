"""The planner end to end on the tiny plan: cached reruns recompute nothing, verification rejects
an under-provisioned fleet, and an unverifiable plan is an error, never a result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fleet.conftest import TINY, runner, tiny_plan
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.cache import Cache
from tokenfleet.fleet.optimize import Solution
from tokenfleet.fleet.plan_file import parse_plan
from tokenfleet.fleet.planner import measure, plan_fleet, prepare, utilisation, verification_jobs
from tokenfleet.fleet.report import build_result
from tokenfleet.fleet.verify import misses


def test_a_rerun_is_answered_from_the_cache(tmp_path: Path) -> None:
    plan = parse_plan(tiny_plan())
    with runner(tmp_path) as r:
        first = build_result(plan_fleet(plan, r))
    assert r.computed["capacity"] >= 2 and r.computed["verify"] >= 1
    with runner(tmp_path) as r:
        second = build_result(plan_fleet(plan, r))
    assert r.computed == {}  # nothing simulated the second time
    assert second["fleet"] == first["fleet"] and second["classes"] == first["classes"]
    assert not list(tmp_path.rglob("*.tmp"))  # every write landed atomically


def test_a_corrupt_entry_is_a_miss_not_a_crash(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    cache.put("capacity", "ab" * 32, {"rate_per_s": 1.0})
    cache.path("capacity", "ab" * 32).write_text("{not json")
    assert cache.get("capacity", "ab" * 32) is None


def test_the_result_meets_every_target_and_adds_up(tmp_path: Path) -> None:
    plan = parse_plan(tiny_plan())
    with runner(tmp_path) as r:
        result = build_result(plan_fleet(plan, r))
    for c in result["classes"]:
        assert c["met"] and all(row["good_fraction"] >= c["goodput_target"] for row in c["rows"])
        assert sum(row["traffic_share"] for row in c["rows"]) == pytest.approx(1.0)
    fleet = result["fleet"]
    assert sum(f["cost_share"] for f in fleet["families"].values()) == pytest.approx(1.0)
    assert fleet["families"]["gpu"]["chips"] == fleet["chips"] == sum(fleet["chips_by_chip"].values())
    assert fleet["usd_per_hour"] == pytest.approx(sum(d["usd_per_hour"] for d in result["deployments"]))
    for d in result["deployments"]:  # the load is the capacity budget used, never more than the replicas have
        rows = [row for c in result["classes"] for row in c["rows"] if row["key"] == d["key"]]
        assert d["load"] == pytest.approx(sum(row["rate_per_s"] / row["capacity_per_replica"] for row in rows) / d["replicas"])
        assert 0 < d["load"] <= 1 + 1e-6 and all(row["deployment_load"] == d["load"] for row in rows)
    json.dumps(result)  # JSON first


def test_verification_rejects_an_under_provisioned_fleet(tmp_path: Path) -> None:
    """One replica given three times its measured capacity of chat traffic misses its target."""
    plan = parse_plan(tiny_plan(classes=[{**tiny_plan()["classes"][0], "share": 1.0}]))
    ctx = prepare(plan)
    with runner(tmp_path) as r:
        capacity = measure(ctx, r)
        (pair, res), = capacity.items()
        caps = {pair: res["rate_per_s"]}
        starved = Solution({pair[1]: 1}, {pair: 3 * res["rate_per_s"]}, 1.0)
        jobs = verification_jobs(ctx, starved)
        results = r.run(list(jobs.values()), "verify")
    found = misses({k: results[j.key] for k, j in jobs.items()}, utilisation(starved, caps), plan.options.verify)
    assert [m.cls for m in found] == ["chat"]
    assert "overloaded" in found[0].attainment.why() or found[0].attainment.good_fraction < 0.9


def test_a_plan_that_never_verifies_is_an_error_not_a_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Capacities inflated 10x: every round's fleet is overloaded; after max_rounds, one line."""
    from tokenfleet.fleet import planner

    real = planner.measure

    def inflated(ctx, r):  # type: ignore[no-untyped-def]
        return {pair: {**res, "rate_per_s": 10 * res["rate_per_s"]} for pair, res in real(ctx, r).items()}

    monkeypatch.setattr(planner, "measure", inflated)
    plan = parse_plan(tiny_plan(options={"verify": {"max_rounds": 1}}))
    with runner(tmp_path) as r, pytest.raises(TokenfleetError, match=r"no fleet passed verification in 1 rounds: class \w+ on h100-sxm"):
        plan_fleet(plan, r)


def test_a_pair_keeps_its_strikes_in_a_pool_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A class that keeps missing is tried shared, then alone, then dropped: three rounds, not a
    fresh count once it has its own pool (which let slivers of traffic cycle for many rounds)."""
    from tokenfleet.fleet import planner
    from tokenfleet.fleet.traffic import Attainment
    from tokenfleet.fleet.verify import Miss

    units: list[str] = []

    def code_always_misses(results, util, opts):  # type: ignore[no-untyped-def]
        unit = next(k for k, res in sorted(results.items()) if "code" in res["streams"])
        units.append(unit)
        nan = float("nan")
        return [Miss("code", unit, Attainment(100, 0.5, 0.9, False, ("good 0.500 < target 0.9",), 1.0, nan, nan, nan, nan, nan), 0.9)]

    monkeypatch.setattr(planner, "misses", code_always_misses)
    chat = tiny_plan()["classes"][0]
    twins = [chat, {**chat, "name": "code", "share": 0.4}]  # alike, so they share one deployment
    plan = parse_plan(tiny_plan(classes=twins, options={"verify": {"max_rounds": 10}}))
    with runner(tmp_path) as r, pytest.raises(TokenfleetError, match="code"):
        plan_fleet(plan, r)
    assert len(units) == 3
    assert planner.DEDICATED not in units[0] and units[2].endswith(f"{planner.DEDICATED}code")


def test_a_model_whose_context_is_shorter_than_a_class_s_requests_is_not_considered() -> None:
    """Azure conversations run to 14k tokens; Llama-3-8B's window is 8,192, so engines would refuse some."""
    chat, code = TINY["classes"]
    ctx = prepare(parse_plan(tiny_plan(classes=[{**chat, "models": ["llama-3-8b", "llama-3.1-8b"]}, code])))
    assert {ch.candidate.model for ch in ctx.choices if ch.cls == "chat"} == {"llama-3.1-8b"}
    assert any("chat: llama-3-8b not considered: its 8,192-token context" in n for n in ctx.notes)


def test_candidates_that_differ_only_in_speculation_kv_format_or_ep_stay_apart() -> None:
    """Each is simulated under its own settings: one key per candidate, never one for two."""
    from tokenfleet.fleet.candidates import Candidate, Stage
    from tokenfleet.perf.deployment import Deployment
    from tokenfleet.serve.config import SchedulerConfig, SpecDecode

    dep = Deployment(chips=8, tp=8, pp=1, weight_precision="fp8", kv_precision="fp8")
    variants = [
        Candidate("mixtral-8x7b", (Stage("h100-sxm", dep),)),
        Candidate("mixtral-8x7b", (Stage("h100-sxm", dep),), SchedulerConfig(spec=SpecDecode(draft_tokens=3))),
        Candidate("mixtral-8x7b", (Stage("h100-sxm", dep.model_copy(update={"kv_precision": "bf16"})),)),
        Candidate("mixtral-8x7b", (Stage("h100-sxm", dep.model_copy(update={"ep": 8})),)),
        Candidate("mixtral-8x7b", (Stage("h100-sxm", dep),), SchedulerConfig(reserve_output_kv=True)),
    ]
    assert len({c.key for c in variants}) == len(variants)
    assert "spec 3 @ 0.7" in variants[1].label


def test_a_plan_with_and_without_a_draft_model_sizes_both(tmp_path: Path) -> None:
    schedulers = [{}, {"spec": {"draft_tokens": 4, "acceptance_rate": 0.9}}]
    ctx = prepare(parse_plan(tiny_plan(options={"schedulers": schedulers})))
    specs = {c.scheduler.spec.draft_tokens for c in ctx.candidates.values()}
    assert specs == {0, 4}
    assert {job.candidate.scheduler.spec.draft_tokens for job in ctx.jobs.values()} <= specs
    assert all(ctx.candidates[key].scheduler == job.candidate.scheduler for (_, key), job in ctx.jobs.items())
