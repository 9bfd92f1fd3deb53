"""Disaggregated prefill/decode: the decode pool conserves requests and respects causality, and a
plan with disaggregation on prices prefill+decode units next to colocated replicas."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import deployment
from tests.fleet.conftest import runner, tiny_plan
from tokenfleet.fleet.candidates import Candidate, Stage
from tokenfleet.fleet.disagg import decode_pool
from tokenfleet.fleet.plan_file import parse_plan
from tokenfleet.fleet.planner import measure, prepare
from tokenfleet.serve.config import SchedulerConfig

UNIT = Candidate("llama-3.1-8b", (Stage("b200", deployment()), Stage("h100-sxm", deployment())), SchedulerConfig(max_num_seqs=8))


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2), st.integers(1, 4000), st.integers(1, 300)), min_size=1, max_size=40), st.integers(1, 3))
def test_every_request_decodes_after_its_kv_arrives(reqs: list[tuple[float, int, int]], replicas: int) -> None:
    ready, prompt, output = (np.array(col) for col in zip(*reqs, strict=True))
    finish, stats = decode_pool(UNIT, replicas, ready.astype(float), prompt, output, "least-outstanding-tokens")
    assert len(finish) == len(reqs)
    for i, (r, _, n) in enumerate(reqs):
        assert finish[i] >= r + (n - 1) * 1e-4  # n - 1 decode steps of >= 0.1 ms each
    assert stats["energy_j"] > 0 or (output <= 1).all()


def test_a_plan_with_disaggregation_prices_prefill_decode_units(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = tiny_plan(hardware=["h100-sxm", "b200"], options={"disaggregated": {"enabled": True, "pairs": [{"prefill": "b200", "decode": "h100-sxm"}]}})
    ctx = prepare(parse_plan(data))
    units = [k for (_, k) in ctx.jobs if ctx.candidates[k].disaggregated]
    assert units and all("b200" in k.split(">")[0] and "h100-sxm" in k.split(">")[1] for k in units)
    with runner(tmp_path) as r:
        capacity = measure(ctx, r)
    for (_, key), res in capacity.items():
        if ctx.candidates[key].disaggregated:
            assert res["rate_per_s"] > 0, res["reason"]
            assert res["attainment"]["p50_ttft_ms"] > 0 and res["attainment"]["p50_tpot_ms"] > 0
