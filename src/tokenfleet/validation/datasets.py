"""MLPerf reference data the result rows leave out: the datasets' prompt and answer lengths, each
benchmark's Server latency limits, and the engine settings submitters published beside a result.

MLPerf results give tokens per second and the mean generated tokens per sample, never the prompt
lengths; a saturated run's throughput depends on them about linearly, and a Server run's p99 TTFT
on their spread. `data/dataset_lengths.yaml` names, per model, the dataset's length distribution
(1,000 quantiles of prompt and answer lengths, under `data/mlperf_lengths/`) and its source.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tokenfleet.perf.precision import check_precision

_DATA = resources.files("tokenfleet.validation").joinpath("data")


@dataclass(frozen=True)
class DatasetLengths:
    """A dataset's prompt and reference-answer lengths, as equally likely quantiles (tokens)."""

    name: str
    samples: int  # in the dataset: an MLPerf Offline run issues every one of them at least once
    input_quantiles: np.ndarray
    output_quantiles: np.ndarray

    @property
    def mean_input_tokens(self) -> int:
        return round(float(self.input_quantiles.mean()))

    def draw(self, n: int, output_mean: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`n` prompt and answer lengths, each quantile used equally often (stratified, so a few
        thousand requests carry the dataset's mean), prompts and answers drawn independently;
        answers rescaled so their mean is the run's published `output_mean`."""
        k = len(self.input_quantiles)
        inputs = self.input_quantiles[rng.permutation(np.arange(n) % k)]
        scale = output_mean / float(self.output_quantiles.mean())
        outputs = np.maximum(np.rint(self.output_quantiles[rng.permutation(np.arange(n) % k)] * scale), 1)
        return inputs.astype(np.int64), outputs.astype(np.int64)


@functools.cache
def _entries() -> dict[str, dict[str, Any]]:
    entries: dict[str, dict[str, Any]] = yaml.safe_load(_DATA.joinpath("dataset_lengths.yaml").read_text())["mlperf"]
    return entries


@functools.cache
def mlperf_lengths(hf_model_id: str) -> DatasetLengths | None:
    """The length distribution of the MLPerf dataset a model's rows were measured on, or None."""
    entry = _entries().get(hf_model_id)
    if entry is None:
        return None
    with _DATA.joinpath(entry["file"]).open() as f:
        table = np.loadtxt(f, delimiter=",", skiprows=1, ndmin=2)
    return DatasetLengths(entry["dataset"], int(entry["samples"]), table[:, 1].astype(np.int64), table[:, 2].astype(np.int64))


@functools.cache
def mlperf_server_limits(benchmark: str) -> dict[str, float] | None:
    """A benchmark's Server p99 limits (`p99_ttft_ms`, `p99_tpot_ms`) from `data/mlperf_slo.yaml`,
    by the name the rows' notes give it (`llama3.1-405b-interactive`); None for an unknown one."""
    benchmarks: dict[str, dict[str, float]] = yaml.safe_load(_DATA.joinpath("mlperf_slo.yaml").read_text())["benchmarks"]
    return benchmarks.get(benchmark)


class EngineSettings(BaseModel):
    """What a submitter published of the engine a row ran (`data/engine_settings.yaml`): the layout
    of each model instance and the scheduler's caps; a field left out was not published."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    rows: tuple[str, ...]
    hardware: str  # the rows' chip: a row gets these settings only where id and chip both match
    tp: int | None = Field(default=None, ge=1, description="tensor parallel size of one instance")
    pp: int = Field(default=1, ge=1, description="pipeline parallel size of one instance (with tp)")
    max_num_seqs: int | None = Field(default=None, ge=1, description="cap on running sequences (TensorRT-LLM: per micro-batch of an instance)")
    max_num_batched_tokens: int | None = Field(default=None, ge=1, description="token budget per step")
    batch_scheduler_policy: Literal["max_util", "guaranteed_no_evict"] | None = Field(
        default=None, description="TensorRT-LLM's capacity policy: max_util admits while blocks last and pauses "
        "requests when they run out; guaranteed_no_evict (its default) reserves each request's whole output")
    weight_precision: str | None = Field(
        default=None, description="the weight format the config quantises to, where the row does not say it and it is not "
        "the chip's default (a mixed-precision search: its average bits' nearest format)")
    attn_dp: bool = Field(default=False, description="attention data parallelism (TensorRT-LLM's enable_attention_dp): "
                          "the row's deployment runs it (perf.deployment.Deployment.attn_dp)")
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1, description="vLLM's share of each GPU for "
                                                 "weights, activations and KV cache (its default, 0.9, where not published)")
    enable_chunked_prefill: bool | None = Field(default=None, description="vLLM's switch: false runs V0's prefill-first "
                                                  "steps (serve.config.SchedulerConfig.chunked_prefill)")
    source: str
    inferred: str = ""  # where the source has several configs for the system: why this one

    @field_validator("weight_precision")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        return None if value is None else check_precision(value, "weight_precision")


@functools.cache
def _engine_settings() -> dict[str, EngineSettings]:
    entries = yaml.safe_load(_DATA.joinpath("engine_settings.yaml").read_text())["settings"]
    return {row: settings for settings in map(EngineSettings.model_validate, entries) for row in settings.rows}


def engine_settings(row_id: str, hardware: str) -> EngineSettings | None:
    """The published engine settings of a row of the shipped cases (by its id and chip), or None."""
    settings = _engine_settings().get(row_id)
    return settings if settings is not None and settings.hardware == hardware else None
