from pathlib import Path

import numpy as np
import pytest

from tokenfleet.errors import TokenfleetError
from tokenfleet.workload import builtin_traces, load_trace, synthetic


@pytest.mark.parametrize("name", builtin_traces())
def test_shipped_traces_load_sorted_from_zero(name: str) -> None:
    t = load_trace(name)
    assert len(t) > 8000 and t.arrival_s[0] == 0 and np.all(np.diff(t.arrival_s) >= 0)
    assert 3000 < t.duration_s < 4000  # one hour each


def test_azure_code_shape_long_inputs_short_outputs() -> None:
    t = load_trace("azure-code")
    assert np.median(t.input_tokens) == 1469 and np.median(t.output_tokens) == 13


def test_mooncake_carries_prefix_blocks() -> None:
    t = load_trace("mooncake-conv")
    assert t.prefix_blocks is not None and len(t.prefix_blocks[0]) == 14


def test_rate_scale_and_tiling() -> None:
    t = load_trace("azure-code")
    assert t.scale_rate(2).duration_s == pytest.approx(t.duration_s / 2)
    long = t.take(3 * len(t))
    assert len(long) == 3 * len(t) and np.all(np.diff(long.arrival_s) >= 0)


@pytest.mark.parametrize("fmt", ["plain", "burstgpt"])
def test_user_csv_formats(tmp_path: Path, fmt: str) -> None:
    header = "arrival_s,input_tokens,output_tokens" if fmt == "plain" else "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
    rows = ["0.5,100,20", "0.1,50,10"] if fmt == "plain" else ["5,ChatGPT,100,20,120,Conversation log", "1,ChatGPT,50,10,60,Conversation log"]
    path = tmp_path / "t.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    t = load_trace(str(path))
    assert list(t.input_tokens) == [50, 100] and t.arrival_s[0] == 0


def test_synthetic_processes() -> None:
    lengths = load_trace("azure-conv")
    poisson = synthetic(20_000, 10.0, lengths, "poisson", seed=1)
    assert len(poisson) / poisson.duration_s == pytest.approx(10.0, rel=0.05)
    bursty = synthetic(20_000, 10.0, lengths, "gamma", burstiness=0.25, seed=1)
    assert np.std(np.diff(bursty.arrival_s)) > 1.5 * np.std(np.diff(poisson.arrival_s))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: load_trace("azure-cod"), "not found"),
        (lambda: load_trace("azure-code").scale_rate(-1), "--rate-scale must be positive"),
        (lambda: synthetic(10, -2.0, load_trace("azure-code")), "--rate must be positive"),
    ],
)
def test_bad_trace_input(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TokenfleetError, match=message):
        call()


@pytest.mark.parametrize(("row", "message"), [("0,nan,10", "a nan or infinite value"), ("0,100,-3", "negative token counts"), ("inf,100,3", "a nan or infinite value")])
def test_a_bad_value_in_a_user_trace_names_the_file(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "mine.csv"
    path.write_text(f"arrival_s,input_tokens,output_tokens\n0,100,10\n{row}\n")
    with pytest.raises(TokenfleetError, match=f"trace '.*mine.csv' has a bad value \\({message}"):
        load_trace(str(path))
