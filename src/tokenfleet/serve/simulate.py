"""Replay a trace through identical replicas behind a router; JSON summary first."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.catalog.pricing import chip_hour_usd
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.efficiency import calibration_for
from tokenfleet.perf.memory import require_fit
from tokenfleet.perf.step import Efficiency, StepModel, idle_power_w
from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.metrics import Metrics
from tokenfleet.serve.replica import Pipeline, Replica, raise_too_long
from tokenfleet.serve.request import Request
from tokenfleet.serve.router import get_router
from tokenfleet.serve.scheduler import KvPool
from tokenfleet.workload.traces import Trace


@dataclass
class SimulationResult:
    summary: dict[str, Any]


def build_engines(model: ModelSpec, chip: ChipSpec, dep: Deployment, cfg: SchedulerConfig, replicas: int,
                  metrics: Metrics, eff: Efficiency | None = None, kv_blocks: int | None = None) -> list[Replica]:
    """`replicas` x `pp` engines: a pipelined replica keeps `pp` micro-batches in flight, whose
    engines share the replica's KV cache (`kv_blocks` caps it, for experiments) and, on GPUs and
    TPUs, its stages (`Pipeline`). With attention DP each of a stage's `tp` ranks schedules its
    own sequences, so the caps apply per rank, as vLLM's data-parallel engines and TensorRT-LLM's
    attention-DP ranks apply theirs: an engine runs `tp` times the sequences and tokens, one
    request's prompt chunk at most one rank's budget, and one request's cache fits one rank."""
    cost = StepModel(model, chip, dep, eff or calibration_for(chip).efficiency, budget=cfg.kv_budget())
    require_fit(cost.memory, dep, chip, model)
    blocks = int(cost.memory.kv_capacity_tokens // cfg.block_size) if kv_blocks is None else kv_blocks
    per_engine = cfg if cfg.seqs_per_micro_batch else cfg.model_copy(update={"max_num_seqs": max(1, cfg.max_num_seqs // dep.pp)})
    ranks = dep.tp if dep.attn_dp else 1
    if ranks > 1:
        per_engine = per_engine.model_copy(update={
            "max_num_seqs": per_engine.max_num_seqs * ranks, "max_num_batched_tokens": cfg.max_num_batched_tokens * ranks,
            "max_chunk_tokens": min(cfg.max_chunk_tokens or cfg.max_num_batched_tokens, cfg.max_num_batched_tokens)})
    pools = [KvPool(blocks * cfg.block_size, cfg.block_size, cost.memory.state_tokens_per_seq, ranks) for _ in range(replicas)]
    # SRAM systems are dataflow machines that (we assume) stream activations between stages rather
    # than hand micro-batches on whole: their micro-batch engines stay independent, their stage
    # contention not modelled (README, "What is still wrong")
    staged = dep.pp > 1 and chip.family != "sram"
    pipelines = [Pipeline(dep.pp) if staged else None for _ in range(replicas)]
    return [Replica(cost, per_engine, pools[i // dep.pp], metrics, pipelines[i // dep.pp]) for i in range(replicas * dep.pp)]


def simulate(
    model: ModelSpec, chip: ChipSpec, dep: Deployment, trace: Trace, cfg: SchedulerConfig | None = None,
    replicas: int = 1, router: str = "round-robin", slo: dict[str, str] | None = None,
    requests_out: IO[str] | None = None, progress: Callable[[int, int], None] | None = None,
    eff: Efficiency | None = None, kv_blocks: int | None = None, kv_resident: np.ndarray | None = None,
) -> SimulationResult:
    """Every request of `trace` served; returns the `vllm bench serve`-style summary.
    A request whose prompt and output exceed the model's context window is refused, as vLLM
    answers it (HTTP 400), and counted in `failed`.
    `kv_resident` marks requests that arrive with their prompt's KV cache and first token (a
    disaggregated decode pool's input): they only decode, so each needs 2+ output tokens."""
    cfg = cfg or SchedulerConfig()
    if kv_resident is not None and bool(np.any(kv_resident & (trace.output_tokens < 2))):
        raise TokenfleetError("a request with resident KV must have output_tokens >= 2 (its first token was made where its prompt was)")
    route = get_router(router)
    metrics = Metrics(slo, requests_out)
    engines = build_engines(model, chip, dep, cfg, replicas, metrics, eff, kv_blocks)
    blocks = trace.prefix_blocks
    too_long = set(np.flatnonzero(trace.input_tokens + trace.output_tokens > model.context_window_tokens).tolist())
    if len(too_long) == len(trace):
        raise TokenfleetError(f"every request of trace {trace.name!r} exceeds {model.name}'s {model.max_context_tokens:,}-token "
                              "context (prompt + output): use a model with a longer context or a trace of shorter requests")
    for i in range(len(trace)):
        t = float(trace.arrival_s[i])
        if i in too_long:
            metrics.refuse(i, t, int(trace.input_tokens[i]), int(trace.output_tokens[i]), f"exceeds {model.name}'s {model.max_context_tokens}-token context")
            continue
        advance(engines, t)
        req = Request(i, t, int(trace.input_tokens[i]), int(trace.output_tokens[i]), blocks[i] if blocks else ())
        if kv_resident is not None and kv_resident[i]:
            req.with_resident_kv()
        engines[route(req, engines, i)].add(req)
        if progress is not None and i % 1024 == 0:
            progress(i, len(trace))
    _drain(engines)
    return SimulationResult(_summary(metrics, engines, chip, dep, replicas))


def advance(engines: list[Replica], t: float) -> None:
    """Every engine run until its clock passes `t`; the engines of a pipeline with shared stages in
    step, so that its stages take their micro-batches in the order they become ready."""
    pipeline = engines[0].pipeline
    if pipeline is None:
        for e in engines:
            e.run_until(t)
        return
    for first in range(0, len(engines), pipeline.stages):
        _advance_pipeline(engines[first:first + pipeline.stages], t)


def _advance_pipeline(siblings: list[Replica], t: float) -> None:
    """One step at a time for the sibling furthest behind; one stalled on the shared KV cache waits
    until another moves."""
    waiting: set[int] = set()
    while True:
        live = [i for i, e in enumerate(siblings) if e.sched.busy and e.clock < t and i not in waiting]
        if not live:
            return
        i = min(live, key=lambda j: siblings[j].clock)
        e = siblings[i]
        e.run_until(min(t, math.nextafter(e.clock, math.inf)))
        if e.stalled:
            waiting.add(i)
        else:
            waiting.clear()


def _drain(engines: list[Replica]) -> None:
    """Run every engine to completion; pipeline siblings stalled on a shared KV cache take turns.
    An engine stalls only after preempting all it held, so a round in which no clock moves
    means a waiting request does not fit even the empty cache."""
    while True:
        before = [e.clock for e in engines]
        advance(engines, math.inf)
        stalled = [e for e in engines if e.sched.busy]
        if not stalled:
            return
        if before == [e.clock for e in engines]:  # no engine moved: nothing will ever fit
            raise_too_long(stalled[0].sched.waiting[0], stalled[0].pool)


def _summary(metrics: Metrics, engines: list[Replica], chip: ChipSpec, dep: Deployment, replicas: int) -> dict[str, Any]:
    s = metrics.summary()
    duration, chips = s["duration_s"], dep.chips * replicas
    busy = sum(e.busy_s for e in engines)
    idle_j = max(duration * len(engines) - busy, 0.0) * idle_power_w(chip, dep) / dep.pp  # engines' idle time, each 1/pp of a replica
    energy_j = sum(e.energy_j for e in engines) + idle_j
    out_tokens = max(s["total_output_tokens"], 1)
    lookups = sum(e.sched.prefix_lookups for e in engines)
    s.update({
        "chips": chips,
        "replicas": replicas,
        "deployment": dep.describe(),
        "output_throughput_per_chip": s["output_throughput"] / chips,
        "mean_output_tok_s_per_user": 1e3 / s["mean_tpot_ms"] if s["mean_tpot_ms"] > 0 else float("nan"),
        "utilisation": busy / (duration * len(engines)),
        "mean_kv_occupancy": sum(e.kv_token_s for e in engines) / dep.pp / max(duration * replicas * engines[0].pool.capacity_tokens, 1e-12),
        "peak_kv_occupancy": max(e.pool.peak_tokens / e.pool.capacity_tokens for e in engines),
        "kv_capacity_tokens": engines[0].pool.capacity_tokens,  # one replica's cache, by the engine's memory rule
        "prefix_hit_rate": sum(e.sched.prefix_hits for e in engines) / lookups if lookups else 0.0,
        "prefix_hit_token_share": sum(e.sched.prefix_hit_tokens for e in engines) / max(s["total_input_tokens"], 1),
        "usd_per_mtok": chip_hour_usd(chip) * chips * duration / 3600 / out_tokens * 1e6,
        "energy_j": energy_j,
        "joules_per_token": energy_j / out_tokens,
    })
    return s


def open_requests_out(out_dir: Path | None) -> IO[str] | None:
    if out_dir is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    return (out_dir / "requests.jsonl").open("w")
