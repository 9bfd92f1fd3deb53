"""Shared factories: small, readable ways to build the objects tests talk about."""

from __future__ import annotations

import pytest

from tokenfleet.catalog import get_chip, get_model
from tokenfleet.perf import Deployment, Efficiency, StepModel


def deployment(chips: int = 1, tp: int | None = None, pp: int = 1, precision: str = "bf16", ep: int = 1, attn_dp: bool = False) -> Deployment:
    return Deployment(chips=chips, tp=tp or chips // pp, pp=pp, ep=ep, weight_precision=precision, kv_precision=precision if precision in ("bf16", "fp8") else "fp8",
                      attn_dp=attn_dp)


def step_model(model: str = "llama-3.1-8b", chip: str = "h100-sxm", **kw: object) -> StepModel:
    return StepModel(get_model(model), get_chip(chip), deployment(**kw), Efficiency())  # type: ignore[arg-type]


@pytest.fixture
def llama8b_h100() -> StepModel:
    return step_model()
