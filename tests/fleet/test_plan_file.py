"""The plan file: every mistake becomes one line naming the field and what to write instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import tiny_plan, tokenfleet, write_plan
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.plan_file import parse_plan
from tokenfleet.fleet.traffic import class_rates


def with_class(i: int, **changes: Any) -> dict[str, Any]:
    data = tiny_plan()
    data["classes"][i] = {**data["classes"][i], **changes}
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (with_class(1, slo={"p99_ttft_ms": "<=abc"}), "classes[1].slo.p99_ttft_ms: '<=abc' must look like '<=500'"),
        (with_class(0, slo={"p99_latency_ms": "<=5"}), "classes[0].slo.p99_latency_ms: unknown SLO metric 'p99_latency_ms'"),
        (with_class(0, slo={"p99_itl_ms": "<=5"}), "bound tpot instead"),
        (with_class(0, goodput_target=1.5), "classes[0].goodput_target: Input should be less than or equal to 1"),
        (with_class(0, rate_per_sec=3), "classes[0].rate_per_sec: unknown field 'rate_per_sec': did you mean 'rate_per_s'?"),
        (with_class(0, models=["lama-3.1-8b"]), "classes[0].models[0]: unknown model 'lama-3.1-8b'"),
        (with_class(0, rate_per_s=5.0), "give exactly one of rate_per_s, share"),
        (with_class(0, slo={}, min_tok_s_per_user=None), "give at least one SLO bound"),
        (with_class(1, lengths={"input_tokens": 100}), "classes[1].lengths: give a trace name, or both input_tokens and output_tokens"),
        (with_class(0, share=0.1), "shares add up to 0.5; make them add up to 1"),
        (tiny_plan(hardware=["h200"]), "hardware[0].chip: unknown hardware 'h200': did you mean 'b200', 'h200-sxm'"),
        (tiny_plan(hardware=[{"chip": "b200", "precisions": ["fp7"]}]), "hardware[0].precisions: unknown precision 'fp7'"),
        (tiny_plan(hardware=[{"chip": "b200", "kv_precisions": ["fp7"]}]), "hardware[0].kv_precisions: unknown KV precision 'fp7'"),
        (tiny_plan(limits={"chips_available": {"b200": 8}}), "limits.chips_available: b200 is not in hardware (h100-sxm)"),
        (tiny_plan(options={"requests_per_search": 5}), "options.requests_per_search: Input should be greater than or equal to 50"),
        (tiny_plan(total_rate_per_s=None), "classes use share: give total_rate_per_s"),
    ],
)
def test_bad_plans_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenfleetError) as err:
        parse_plan(data, "plan.yaml")
    assert str(err.value).startswith("plan.yaml: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_a_good_plan_resolves_rates_and_slos() -> None:
    plan = parse_plan(with_class(0, slo={"p50_tpot_ms": "<=100"}))
    assert class_rates(plan) == pytest.approx({"chat": 12.0, "code": 8.0})
    assert plan.classes[0].slo_bounds() == {"p50_tpot_ms": "<=50"}  # 20 tok/s per user is the tighter bound
    trace_class = parse_plan(with_class(0, share=None, trace="azure-conv", rate_scale=2.0, arrivals="trace"))
    assert class_rates(trace_class)["chat"] == pytest.approx(2 * 5.53, rel=0.01)  # the trace runs at ~5.5 req/s


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "plan file"),
        ("classes: [\n", "not valid YAML"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_cli_bad_file_is_one_line_exit_2(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "plan.yaml"
    if content is not None:
        path.write_text(content)
    out = tokenfleet("plan", str(path), "--no-cache")
    assert out.returncode == 2 and message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_cli_validation_error_is_one_line_exit_2(tmp_path: Path) -> None:
    path = write_plan(tmp_path / "plan.yaml", with_class(1, slo={"p99_ttft_ms": "<=abc"}))
    out = tokenfleet("plan", str(path), "--no-cache")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == "error: plan.yaml: classes[1].slo.p99_ttft_ms: '<=abc' must look like '<=500' (milliseconds)"


def test_kv_cache_formats_are_tried_beside_each_weight_format() -> None:
    from tokenfleet.catalog.chips import get_chip
    from tokenfleet.catalog.models import get_model
    from tokenfleet.fleet.candidates import deployments_for

    default, both = (parse_plan(tiny_plan(hardware=[entry])).hardware[0] for entry in
                     ({"chip": "h100-sxm", "precisions": ["bf16", "fp8"]},
                      {"chip": "h100-sxm", "precisions": ["bf16", "fp8"], "kv_precisions": ["bf16", "fp8"]}))
    assert default.formats() == [("bf16", "bf16"), ("fp8", "fp8")]
    assert len(both.formats()) == 4
    deps, _ = deployments_for(get_model("llama-3.1-8b"), get_chip("h100-sxm"), both, 8000)
    assert {(d.weight_precision, d.kv_precision) for d in deps} == set(both.formats())


def test_moe_models_on_gpus_are_also_tried_with_attention_dp() -> None:
    """Serving engines offer attention DP for MoE models on GPUs (it multiplies an MLA model's KV
    room); the planner tries it beside tensor and expert parallelism, and nowhere else."""
    from tokenfleet.catalog.chips import get_chip
    from tokenfleet.catalog.models import get_model
    from tokenfleet.fleet.candidates import deployments_for

    def shapes(model: str, chip: str) -> list[tuple[int, int, bool]]:
        entry = parse_plan(tiny_plan(hardware=[{"chip": chip, "precisions": ["fp8"]}])).hardware[0]
        return [(d.chips, d.ep, d.attn_dp) for d in deployments_for(get_model(model), get_chip(chip), entry, 8000)[0]]

    deepseek = shapes("deepseek-v3", "h200-sxm")
    assert (8, 8, True) in deepseek and (8, 8, False) in deepseek and (8, 1, False) in deepseek
    assert not any(adp for *_, adp in shapes("llama-3.1-70b", "h200-sxm"))
    assert not any(adp for *_, adp in shapes("qwen3-235b-a22b", "tpu-v6e"))
