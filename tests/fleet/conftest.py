"""Factories for the fleet tests: a tiny plan (Llama-3.1-8B on H100s, two classes, few requests)
that plans in well under a second, written where a test wants it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tokenfleet.fleet.backends import Runner
from tokenfleet.fleet.cache import Cache

TINY: dict[str, Any] = {
    "name": "tiny",
    "total_rate_per_s": 20,
    "classes": [
        {"name": "chat", "share": 0.6, "lengths": "azure-conv", "slo": {"p99_ttft_ms": "<=2000"},
         "min_tok_s_per_user": 20, "goodput_target": 0.9, "models": ["llama-3.1-8b"]},
        {"name": "code", "share": 0.4, "lengths": {"input_tokens": {"mean": 1500, "cv": 1.0, "max": 8000}, "output_tokens": 40},
         "slo": {"p99_ttft_ms": "<=1000"}, "min_tok_s_per_user": 60, "goodput_target": 0.9, "models": ["llama-3.1-8b"]},
    ],
    "hardware": ["h100-sxm"],
    "options": {"requests_per_search": 200, "candidates_per_chip": 1},
}


def tiny_plan(**changes: Any) -> dict[str, Any]:
    """The tiny plan's data with top-level keys replaced (`options` is merged)."""
    data = copy.deepcopy(TINY)
    for key, value in changes.items():
        data[key] = {**data[key], **value} if key == "options" else value
    return data


def write_plan(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def runner(cache_dir: Path | None, **kw: Any) -> Runner:
    return Runner(Cache(cache_dir), show_progress=False, workers=kw.pop("workers", 1), **kw)


def tokenfleet(*args: str, timeout: float = 120, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tokenfleet.cli.main", *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def plan_path(tmp_path: Path) -> Path:
    return write_plan(tmp_path / "plan.yaml", tiny_plan())
