"""Token counts from distributions, as the plan file and benchmark clients' random datasets draw them."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokenfleet.errors import TokenfleetError
from tokenfleet.workload.lengths import LengthDist, draw_lengths, inferencex_random, vllm_random
from tokenfleet.workload.traces import load_trace, synthetic


@given(tokens=st.integers(1, 200_000), ratio=st.floats(0, 0.99))
def test_vllm_random_lengths_stay_in_its_range(tokens: int, ratio: float) -> None:
    drawn = draw_lengths(vllm_random(tokens, ratio, "--input"), np.random.default_rng(0), 500)
    assert drawn.min() >= max(math.floor(tokens * (1 - ratio)), 1)
    assert drawn.max() <= math.ceil(tokens * (1 + ratio))


def test_vllm_random_is_centred_on_the_nominal_length_and_inferencex_below_it() -> None:
    rng = np.random.default_rng(0)
    assert draw_lengths(vllm_random(1000, 0.8, "--input"), rng, 50_000).mean() == pytest.approx(1000, rel=0.01)
    drawn = draw_lengths(inferencex_random(8192, 0.8), rng, 50_000)  # [int(0.8 x 8192), 8192]
    assert (drawn.min(), drawn.max()) == (6553, 8192)
    assert drawn.mean() == pytest.approx((6553 + 8192) / 2, rel=0.005)
    assert vllm_random(1000, 0.0, "--input") == 1000 and inferencex_random(1000, 1.0) == 1000


def test_lognormal_lengths_have_the_asked_mean_and_spread() -> None:
    drawn = draw_lengths(LengthDist(mean=2000, cv=0.5, max=1_000_000), np.random.default_rng(1), 100_000)
    assert drawn.mean() == pytest.approx(2000, rel=0.02)
    assert drawn.std() / drawn.mean() == pytest.approx(0.5, rel=0.05)


def test_sending_all_at_once_keeps_the_requests_a_finite_rate_would_send() -> None:
    lengths = load_trace("mooncake-conv")
    flood, paced = synthetic(300, float("inf"), lengths, seed=4), synthetic(300, 2.0, lengths, seed=4)
    assert not flood.arrival_s.any() and paced.duration_s > 0
    assert (flood.input_tokens == paced.input_tokens).all() and flood.prefix_blocks == paced.prefix_blocks


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: vllm_random(0, 0.1, "--output"), "--output must be a positive number of tokens"),
        (lambda: vllm_random(100, 1.0, "--input"), "--range-ratio must be in [0, 1)"),
        (lambda: synthetic(10, 1.0, load_trace("azure-code"), "gamma", burstiness=-1), "--burstiness must be positive"),
    ],
)
def test_bad_length_settings(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TokenfleetError, match=re.escape(message)):
        call()


@given(n=st.integers(1, 300), rate=st.floats(0.01, 1e4) | st.just(float("inf")),
       process=st.sampled_from(["poisson", "gamma", "constant"]), burstiness=st.floats(0.05, 20), seed=st.integers(0, 99))
def test_synthetic_arrivals_start_at_zero_never_go_back_and_keep_the_pools_lengths(
        n: int, rate: float, process: str, burstiness: float, seed: int) -> None:
    pool = load_trace("azure-code")
    t = synthetic(n, rate, pool, process, burstiness, seed)
    assert len(t) == n and t.arrival_s[0] == 0 and (np.diff(t.arrival_s) >= 0).all()
    assert set(t.input_tokens.tolist()) <= set(pool.input_tokens.tolist())
