"""`tokenfleet simulate` as a user meets it: a trace replayed, or synthetic traffic shaped like
`vllm bench serve --dataset-name random`, with JSON for machines and one line for bad flags."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_cli import tokenfleet

BASE = ("simulate", "-m", "llama-3.1-8b", "-H", "h100-sxm")


def run_json(*args: str) -> dict:  # type: ignore[type-arg]
    out = tokenfleet(*BASE, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_synthetic_traffic_with_a_spread_of_lengths_like_vllm_bench_serve() -> None:
    s = run_json("--rate", "4", "--input", "600", "--output", "100", "--range-ratio", "0.5", "--requests", "300")
    assert (s["trace"], s["arrival"], s["rate_per_s"], s["completed"]) == ("random", "poisson", 4.0, 300)
    assert 300 * 300 <= s["total_input_tokens"] <= 300 * 900  # each prompt in [300, 900]
    assert s["total_input_tokens"] / 300 == pytest.approx(600, rel=0.05)
    assert s["request_throughput"] == pytest.approx(4.0, rel=0.2)  # a light load is served as it arrives


def test_sending_everything_at_once_saturates_the_replica() -> None:
    light = run_json("--rate", "2", "-i", "500", "-o", "200", "--requests", "200")
    flood = run_json("--rate", "inf", "-i", "500", "-o", "200", "--requests", "200")
    assert flood["arrival"] == "all at t = 0" and flood["rate_per_s"] is None
    assert flood["output_throughput"] > 3 * light["output_throughput"]
    assert flood["mean_ttft_ms"] > light["mean_ttft_ms"]


def test_a_trace_at_a_synthetic_rate_keeps_its_lengths_and_the_same_seed_repeats_the_run(tmp_path) -> None:  # type: ignore[no-untyped-def]
    args = ("--trace", "azure-conv", "--rate", "3", "--burstiness", "0.5", "--requests", "150")
    first, again = run_json(*args), run_json(*args)
    assert first == again and (first["arrival"], first["burstiness"]) == ("gamma", 0.5)
    other = run_json(*args[:-2], "--requests", "150", "--seed", "1")
    assert other["total_input_tokens"] != first["total_input_tokens"]
    out = tokenfleet(*BASE, *args, "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert len((tmp_path / "requests-h100-sxm.jsonl").read_text().splitlines()) == 150
    assert json.loads((tmp_path / "summary-h100-sxm.json").read_text())["completed"] == 150


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--input", "100"), "give both --input and --output"),
        (("--input", "100", "--output", "10"), "add --rate"),
        (("--trace", "azure-conv", "--rate", "1", "-i", "100", "-o", "10"), "drop --trace"),
        (("--range-ratio", "0.5",), "--range-ratio spreads --input/--output"),
        (("--rate", "1", "-i", "100", "-o", "10", "--range-ratio", "1"), "--range-ratio must be in [0, 1)"),
        (("--arrival", "gamma",), "add --rate"),
        (("--rate", "2", "--rate-scale", "2"), "with --rate give the rate itself"),
        (("--rate", "2", "--arrival", "bursty"), "choose one of poisson, gamma, constant"),
        (("--rate", "2", "--arrival", "constant", "--burstiness", "0.5"), "--burstiness shapes --arrival gamma"),
        (("--rate", "2", "--burstiness", "0"), "--burstiness must be positive"),
        (("--rate", "-1",), "--rate must be positive"),
        (("--rate", "1", "-i", "0", "-o", "10"), "--input must be a positive number of tokens"),
        (("--max-num-seqs", "0", "--requests", "5"), "--max-num-seqs 0: input should be greater than or equal to 1"),
        (("--spec-tokens", "2", "--acceptance", "1.5", "--requests", "5"), "--acceptance 1.5"),
        (("--trace", "azure-cod",), "not found"),
        (("--trace", "mooncake-conv", "--shared-prefix", "512"), "carries its own prefix hashes"),
        (("--prefix-groups", "3",), "give --shared-prefix TOKENS too"),
        (("--shared-prefix", "0",), "--shared-prefix must be a positive number of tokens"),
        (("--requests", "5", "--slo", "p99_foo_ms=<=5"), "unknown SLO metric 'p99_foo_ms'"),
    ],
)
def test_bad_flags_get_one_line_naming_them(args: tuple[str, ...], message: str) -> None:
    out = tokenfleet(*BASE, *args)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not out.stdout.strip()


def test_a_shared_system_prompt_is_served_from_the_prefix_cache() -> None:
    plain = run_json("--requests", "400")
    shared = run_json("--requests", "400", "--shared-prefix", "1024", "--prefix-groups", "4")
    assert (shared["shared_prefix_tokens"], shared["prefix_groups"]) == (1024, 4)
    assert plain["prefix_hit_token_share"] == 0 and 0.2 < shared["prefix_hit_token_share"] < 1
    assert shared["mean_ttft_ms"] < plain["mean_ttft_ms"]


def test_an_fp8_kv_cache_beside_16_bit_weights_halves_the_cache_the_same_traffic_fills() -> None:
    args = ("--chips", "1", "--rate", "4", "-i", "3000", "-o", "300", "--requests", "200")
    bf16, fp8 = run_json(*args), run_json(*args, "--kv-precision", "fp8")
    assert (bf16["deployment"], fp8["deployment"]) == ("1 chip TP1 bf16", "1 chip TP1 bf16 KV fp8")
    assert fp8["mean_kv_occupancy"] < 0.7 * bf16["mean_kv_occupancy"]


def test_an_interrupted_run_says_where_its_finished_requests_are(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess
    import sys
    import time

    # the child takes Ctrl-C even where this test runs with SIGINT ignored (a shell's background job)
    proc = subprocess.Popen([sys.executable, "-m", "tokenfleet.cli.main", *BASE, "--requests", "2000000", "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    jsonl = tmp_path / "requests-h100-sxm.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (jsonl.exists() and jsonl.stat().st_size > 0):  # the run is under way
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never leave two million requests running beside the rest of the suite
    assert proc.returncode == 2 and "Traceback" not in err
    assert f"the requests it finished are in {jsonl}" in err
    assert len(jsonl.read_text().splitlines()) > 0


def test_without_chunked_prefill_decoders_wait_out_each_newcomers_prompt() -> None:
    """vLLM V0's prefill-first steps: the same traffic, the same throughput, but every running
    request's token stream stalls while a 2,000-token prompt prefills alone."""
    args = ("--rate", "6", "-i", "2000", "-o", "100", "--requests", "300")
    mixed, v0 = run_json(*args), run_json(*args, "--no-chunked-prefill")
    assert v0["output_throughput"] == pytest.approx(mixed["output_throughput"], rel=0.02)
    assert v0["p99_itl_ms"] > 1.5 * mixed["p99_itl_ms"] and v0["mean_tpot_ms"] > mixed["mean_tpot_ms"]
