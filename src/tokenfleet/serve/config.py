"""Scheduler settings, validated at construction with errors that name the field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenfleet.perf.memory import KvBudget
from tokenfleet.perf.speculative import SpecDecode

__all__ = ["SchedulerConfig", "SpecDecode"]


class SchedulerConfig(BaseModel):
    """Iteration-level continuous batching under one per-step token budget (vLLM v1 style)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    max_num_batched_tokens: int = Field(default=8192, ge=1, description="token budget per step; prompts longer than this are chunked")
    max_num_seqs: int = Field(default=256, ge=1, description="cap on sequences running at once")
    max_chunk_tokens: int | None = Field(default=None, ge=1, description=(
        "most prompt tokens one request computes in a step (None: the whole budget); an "
        "attention-DP replica sets it to one rank's budget (serve/simulate.py build_engines)"))
    chunked_prefill: bool = Field(default=True, description=(
        "false: vLLM V0 without chunked prefill (`enable_chunked_prefill=False`): a step either "
        "prefills whole waiting prompts, as many as the token budget, the seat cap and the cache "
        "take, while the decoders wait, or decodes every running sequence; a prompt longer than "
        "the budget prefills alone"))
    seqs_per_micro_batch: bool = Field(default=False, description=(
        "apply max_num_seqs to each micro-batch of a pipelined replica, as TensorRT-LLM applies its "
        "max_batch_size (cpp/tensorrt_llm/batch_manager/trtGptModel.h: running sequences = "
        "max_batch_size x pp); false: to the replica, its micro-batches sharing it (vLLM)"))
    block_size: int = Field(default=16, ge=1, description="tokens per paged KV block")
    enable_prefix_caching: bool = Field(default=True, description="reuse resident prompt blocks (needs prefix ids in the trace)")
    prefix_block_tokens: int = Field(default=512, ge=1, description="tokens per prefix-hash block in the trace (Mooncake: 512)")
    reserve_output_kv: bool = Field(default=False, description=(
        "admit a request only if the cache holds its prompt and its whole output, reserved at once "
        "(TensorRT-LLM's default GUARANTEED_NO_EVICT: nothing is preempted, fewer run); "
        "false: blocks as tokens come, newest preempted when full (vLLM)"))
    spec: SpecDecode = Field(default_factory=SpecDecode, description="speculative decoding")
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description=(
        "vLLM's rule: the share of each chip's memory the engine may use for weights, one step's "
        "activations and the KV cache"))
    kv_cache_free_gpu_mem_fraction: float | None = Field(default=None, gt=0, le=1, description=(
        "TensorRT-LLM's rule, where set (its default is 0.9): the KV cache takes this share of the "
        "memory left free once weights and runtime buffers are loaded; replaces gpu_memory_utilization"))

    def kv_budget(self) -> KvBudget:
        """The engine's rule for its KV cache, with the step its runtime buffers are sized for."""
        free = self.kv_cache_free_gpu_mem_fraction
        fraction, of_free = (self.gpu_memory_utilization, False) if free is None else (free, True)
        return KvBudget(fraction, of_free, step_tokens=self.max_num_batched_tokens, step_seqs=self.max_num_seqs)

    @model_validator(mode="after")
    def _budget_holds_every_decode(self) -> SchedulerConfig:
        """As in vLLM: every running sequence must be able to decode in the same step (per
        micro-batch, with `seqs_per_micro_batch`; else a pipelined replica is held to more)."""
        need = self.max_num_seqs * (self.spec.draft_tokens + 1)
        if self.max_num_batched_tokens < need:
            raise ValueError(f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be at least max_num_seqs x (draft_tokens + 1) = {need}: raise it or lower max_num_seqs")
        return self
