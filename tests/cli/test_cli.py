"""The CLI as a user meets it: JSON for machines, one clear line for bad input, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def tokenfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenfleet.cli.main", *args], capture_output=True, text=True, timeout=300)


def test_predict_json_has_latencies_cost_and_band() -> None:
    out = tokenfleet("predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--input", "1000", "--output", "200", "--json")
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)
    assert p["ttft_s"] > 0 and p["tpot_s"] > 0 and p["usd_per_mtok"] > 0 and p["band_factor"] >= 1
    assert p["breakdown_decode_s"]["total_s"] == pytest.approx(p["tpot_s"] * 199, rel=1e-6)


def test_the_kv_cache_format_is_a_choice_of_its_own() -> None:
    """fp8 weights default to an fp8 cache; a 16-bit cache holds twice the bytes and reads slower."""
    args = ("predict", "-m", "llama-3.1-70b", "-H", "h200-sxm", "--chips", "4", "-p", "fp8", "-b", "32", "-i", "8000", "-o", "200", "--json")
    fp8, bf16 = (json.loads(tokenfleet(*args, *extra).stdout) for extra in ((), ("--kv-precision", "bf16")))
    assert (fp8["deployment"], bf16["deployment"]) == ("4 chips TP4 fp8", "4 chips TP4 fp8 KV bf16")
    assert bf16["memory_gb_per_chip"] > fp8["memory_gb_per_chip"] and bf16["tpot_s"] > fp8["tpot_s"]


def test_compare_sorts_by_speed_per_user() -> None:
    out = tokenfleet("compare", "--model", "llama-3.1-8b", "--hardware", "h100-sxm,groq-lpu,mi300x", "--json")
    rows = json.loads(out.stdout)["rows"]
    speeds = [r["output_tok_s_per_user"] for r in rows]
    assert speeds == sorted(speeds, reverse=True) and len(rows) == 3


def test_validate_json_shape(tmp_path) -> None:
    from tokenfleet.validation.cases import builtin_cases_path

    lines = builtin_cases_path().read_text().splitlines()
    ids = ("GT094,", "GT095,", "GT174,", "GT238,", "GT240,")  # two served groups (two workers), static, unpredicted, claim
    cases = tmp_path / "cases.csv"
    cases.write_text("\n".join([lines[0], *[ln for ln in lines if ln.startswith(ids)]]) + "\n")
    out = tokenfleet("validate", "--cases", str(cases), "--workers", "2", "--json")
    data = json.loads(out.stdout)
    assert {"id", "hardware", "metric", "measured", "predicted", "error"} <= set(data["rows"][0])
    assert [r["id"] for r in data["rows"]] == ["GT094", "GT095", "GT174", "GT238", "GT240"]
    unpredicted = [r for r in data["rows"] if r["predicted"] is None]
    assert [r["id"] for r in unpredicted] == ["GT238"] and all(r["reason"] for r in unpredicted)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sx"], "did you mean 'h100-sxm'"),
        (["predict", "-m", "lama-3.1-8b", "-H", "h100-sxm"], "unknown model"),
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--batch", "0"], "--batch must be a positive integer"),
        (["predict", "-m", "llama-3.1-70b", "-H", "h100-sxm", "--chips", "1"], "does not fit: needs"),
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--chips", "4", "--tp", "3"], "make them agree"),
        (["predict", "-m", "llama-3.1-70b", "-H", "h100-sxm", "--tp", "3"], "does not divide llama-3.1-70b's 64 attention heads"),
        (["predict", "-m", "llama-3.1-70b", "-H", "h100-sxm", "--chips", "1000"], "use at most 640 chips"),
        (["predict", "-m", "llama-3.1-70b", "-H", "h100-sxm", "--chips", "8", "--ep", "2"], "is dense: drop --ep"),
        (["predict", "-m", "llama-3.1-70b", "-H", "h100-sxm", "--chips", "8", "--attn-dp"], "is dense: drop --attn-dp"),
        (["predict", "-m", "deepseek-v3", "-H", "h100-sxm", "--chips", "8", "--precision", "fp8", "--attn-dp"], "use --chips 16 or --precision fp4"),
        (["predict", "-m", "llama-4-maverick", "-H", "tpu-v5e", "--chips", "8", "--attn-dp"], "holds the 28.3 GB of non-expert weights: drop --attn-dp"),
        (["predict", "-m", "mixtral-8x7b", "-H", "h100-sxm", "--chips", "4", "--ep", "8"], "--ep 8 must divide"),
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--tp", "0"], "--tp must be a positive integer"),
        (["compare", "-m", "llama-2-7b", "--input", "4000", "--output", "200"], "exceed llama-2-7b's 4,096-token context window"),
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--precision", "fp7"], "unknown precision"),
        (["compare", "-m", "llama-3.1-8b", "--kv-precision", "fp7"], "unknown --kv-precision 'fp7'"),
        (["compare", "-m", "llama-3.1-8b", "--spec-tokens", "2", "--acceptance", "1"], "--acceptance 1.0: input should be less than 1"),
        (["validate", "--cases", "/no/such.csv"], "not found"),
        (["validate", "--cases", "trtllm-perf-overveiw"], "or a shipped table (calibration, trtllm-perf-overview, trtllm-v0.17, argonne-sweep)"),
        (["validate", "--workers", "0"], "--workers must be a positive integer, got 0"),
        (["validate", "--by", "sofware"], "--by 'sofware' is not a row field to group by; choose one of hardware, model, software"),
        (["--stack", "mlpref", "compare", "-m", "llama-3.1-8b"], "'mlpref' is not a fitted software stack; fitted: llm-inference-bench (amd), mlperf (amd)"),
        (["predict", "-m", "llama-3.1-8b"], "Missing option"),
    ],
)
def test_bad_input_gets_one_line_and_nonzero_exit(args: list[str], message: str) -> None:
    out = tokenfleet(*args)
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_csv_missing_a_column(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "cases.csv"
    bad.write_text("id,model\nX,llama\n")
    out = tokenfleet("validate", "--cases", str(bad))
    assert out.returncode == 2 and "lacks column(s) hardware" in out.stderr


def test_your_own_measurements_fit_your_own_stack_and_replace_the_shipped_fit_for_that_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two MI300X runs 'measured' 2x faster than the shipped cases: calibrate on them, point
    --efficiency at the fit, and MI300X predictions speed up while H100's stay as shipped."""
    from tokenfleet.validation.cases import builtin_cases_path

    lines = builtin_cases_path().read_text().splitlines()
    header, rows = lines[0], [ln for ln in lines if ln.startswith(("GT175,", "GT177,"))]
    faster = [",".join(f"{float(v) * 2:g}" if i == 14 else v for i, v in enumerate(ln.split(",", 15)[:15])) + "," + ln.split(",", 15)[15]
              for ln in rows]  # column 14 is the measured total tok/s
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join([header, *faster]) + "\n")
    fit = tmp_path / "mine.yaml"
    out = tokenfleet("calibrate", "--cases", str(mine), "--out", str(fit))
    assert out.returncode == 0 and fit.is_file(), out.stderr

    def speed(chip: str, *extra: str) -> float:
        res = tokenfleet(*extra, "predict", "-m", "llama-3-8b", "-H", chip, "-b", "16", "-i", "1024", "-o", "1024", "--json")
        assert res.returncode == 0, res.stderr
        return float(json.loads(res.stdout)["output_tok_s_total"])

    assert speed("mi300x", "--efficiency", str(fit)) > 1.5 * speed("mi300x")
    assert speed("h100-sxm", "--efficiency", str(fit)) == pytest.approx(speed("h100-sxm"))


def test_a_software_stacks_own_fit_replaces_its_kinds_where_it_has_one() -> None:
    """--stack mlperf: AMD chips predict with the compute efficiency of AMD's MLPerf runs (a
    compute-bound prefill speeds up), NVIDIA chips, which have no such fit, keep their own."""
    def prefill_s(chip: str, *extra: str) -> float:
        res = tokenfleet(*extra, "predict", "-m", "llama-3.1-8b", "-H", chip, "-b", "16", "-i", "4096", "-o", "16", "--json")
        assert res.returncode == 0, res.stderr
        return float(json.loads(res.stdout)["ttft_s"])

    assert prefill_s("mi300x", "--stack", "mlperf") < 0.8 * prefill_s("mi300x")
    assert prefill_s("h100-sxm", "--stack", "mlperf") == pytest.approx(prefill_s("h100-sxm"))


@pytest.mark.parametrize("content", [None, "kinds: [1, 2]\n", "kinds: {amd: {params: {mem_eff: fast}}}\n"])
def test_a_missing_or_malformed_efficiency_file_is_one_line(tmp_path, content: str | None) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "fit.yaml"
    if content is not None:
        path.write_text(content)
    out = tokenfleet("--efficiency", str(path), "compare", "-m", "llama-3.1-8b")
    assert out.returncode == 2 and "efficiency file" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_compare_covers_the_whole_catalog_and_marks_estimated_chips() -> None:
    from tokenfleet.catalog import all_chips

    out = tokenfleet("compare", "--model", "llama-3.1-8b")
    assert out.returncode == 0, out.stderr
    listed = {line.split("│")[1].strip() for line in out.stdout.splitlines() if line.startswith("│")}
    assert {name.removesuffix(" *") for name in listed} == set(all_chips())
    assert "cerebras-wse3 *" in listed and "h100-sxm" in listed  # Cerebras's dense compute is an estimate; H100's is not


def test_speculative_decoding_speeds_up_a_memory_bound_decode_and_says_by_how_much() -> None:
    args = ("predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--json")
    plain, spec = (json.loads(tokenfleet(*args, *extra).stdout) for extra in ((), ("--spec-tokens", "3", "--acceptance", "0.8")))
    assert spec["decode_tokens_per_step"] == pytest.approx((1 - 0.8**4) / 0.2) and plain["decode_tokens_per_step"] == 1
    assert plain["tpot_s"] / 3 < spec["tpot_s"] < plain["tpot_s"] / 2  # ~2.95 tokens a step, drafting on top
    assert spec["ttft_s"] == plain["ttft_s"] and spec["breakdown_decode_s"]["drafting_s"] > 0
