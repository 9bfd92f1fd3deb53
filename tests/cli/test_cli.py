"""The CLI as a user meets it: JSON for machines, one clear line for bad input, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def tokenfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tokenfleet.cli.main", *args], capture_output=True, text=True, timeout=120)


def test_predict_json_has_latencies_cost_and_band() -> None:
    out = tokenfleet("predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--input", "1000", "--output", "200", "--json")
    assert out.returncode == 0, out.stderr
    p = json.loads(out.stdout)
    assert p["ttft_s"] > 0 and p["tpot_s"] > 0 and p["usd_per_mtok"] > 0 and p["band_factor"] >= 1
    assert p["breakdown_decode_s"]["total_s"] == pytest.approx(p["tpot_s"] * 199, rel=1e-6)


def test_compare_sorts_by_speed_per_user() -> None:
    out = tokenfleet("compare", "--model", "llama-3.1-8b", "--hardware", "h100-sxm,groq-lpu,mi300x", "--json")
    rows = json.loads(out.stdout)["rows"]
    speeds = [r["output_tok_s_per_user"] for r in rows]
    assert speeds == sorted(speeds, reverse=True) and len(rows) == 3


def test_validate_json_shape() -> None:
    out = tokenfleet("validate", "--json")
    data = json.loads(out.stdout)
    assert {"id", "hardware", "metric", "measured", "predicted", "error"} <= set(data["rows"][0])
    unpredicted = [r for r in data["rows"] if r["predicted"] is None]
    assert all(r["reason"] for r in unpredicted)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sx"], "did you mean 'h100-sxm'"),
        (["predict", "-m", "lama-3.1-8b", "-H", "h100-sxm"], "unknown model"),
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--batch", "0"], "--batch must be a positive integer"),
        (["predict", "-m", "llama-3.1-70b", "-H", "h100-sxm", "--chips", "1"], "does not fit: needs"),
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--chips", "4", "--tp", "3"], "bad deployment"),
        (["predict", "-m", "llama-3.1-8b", "-H", "h100-sxm", "--precision", "fp7"], "unknown precision"),
        (["validate", "--cases", "/no/such.csv"], "not found"),
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
