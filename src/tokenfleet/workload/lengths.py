"""Token counts drawn from a distribution, for workloads without a trace's (input, output) pairs.

The plan file's `lengths: {input_tokens, output_tokens}` and `simulate --input/--output` both draw
here, and so does `validate` where a benchmark client drew lengths at random.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenfleet.errors import TokenfleetError


class LengthDist(BaseModel):
    """Token counts drawn from a distribution instead of a trace."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    distribution: Literal["fixed", "lognormal", "uniform"] = Field(default="lognormal", description="fixed, lognormal (mean and cv) or uniform (min..max)")
    mean: float = Field(default=1000.0, gt=0, le=2_000_000, description="mean tokens per request")
    cv: float = Field(default=0.5, ge=0, le=10, description="coefficient of variation (std / mean) of the lognormal")
    min: int = Field(default=1, ge=1, description="smallest count drawn")
    max: int = Field(default=131072, ge=1, le=2_000_000, description="largest count drawn")

    @model_validator(mode="after")
    def _check(self) -> LengthDist:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


def draw_lengths(spec: int | LengthDist | None, rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` token counts: all `spec` for a fixed count, else drawn from the distribution."""
    if spec is None:
        raise TokenfleetError("lengths need input_tokens and output_tokens")
    if isinstance(spec, int):
        return np.full(n, spec, dtype=np.int64)
    if spec.distribution == "fixed":
        values = np.full(n, spec.mean)
    elif spec.distribution == "uniform":
        values = rng.integers(spec.min, spec.max + 1, n).astype(float)
    else:  # lognormal with the given mean and coefficient of variation
        sigma2 = np.log1p(spec.cv**2)
        values = rng.lognormal(np.log(spec.mean) - sigma2 / 2, np.sqrt(sigma2), n)
    out: np.ndarray = np.clip(np.rint(values), spec.min, spec.max).astype(np.int64)
    return out


def vllm_random(tokens: int, range_ratio: float, flag: str) -> int | LengthDist:
    """`vllm bench serve --dataset-name random`'s lengths: uniform over
    [floor(tokens x (1 - r)), ceil(tokens x (1 + r))], at least 1; r = 0 gives `tokens` exactly."""
    if tokens < 1:
        raise TokenfleetError(f"{flag} must be a positive number of tokens, got {tokens}")
    if not 0 <= range_ratio < 1:
        raise TokenfleetError(f"--range-ratio must be in [0, 1) as in vllm bench serve, got {range_ratio}")
    if range_ratio == 0:
        return tokens
    low, high = max(math.floor(tokens * (1 - range_ratio)), 1), math.ceil(tokens * (1 + range_ratio))
    return LengthDist(distribution="uniform", min=low, max=high)


def inferencex_random(tokens: int, range_ratio: float) -> int | LengthDist:
    """The InferenceX client's random dataset (SemiAnalysis; its `sample_uniform`): uniform over
    [int(tokens x r), tokens], unlike vLLM's own client; r = 1 gives `tokens` exactly."""
    low = max(int(tokens * range_ratio), 1)
    return tokens if low >= tokens else LengthDist(distribution="uniform", min=low, max=tokens)
