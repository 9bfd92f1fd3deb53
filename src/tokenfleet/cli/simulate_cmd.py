"""`tokenfleet simulate`: resolve flags, run with a progress bar, write JSON and JSONL."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress, TaskID

from tokenfleet.catalog.chips import get_chip
from tokenfleet.catalog.models import get_model
from tokenfleet.cli.resolve import SPEC_FLAGS, from_flags, resolve_deployment
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.predict import Workload
from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.metrics import parse_slo
from tokenfleet.serve.simulate import simulate
from tokenfleet.workload.lengths import draw_lengths, vllm_random
from tokenfleet.workload.traces import Trace, load_trace, shared_prefixes, synthetic

#: Requests in a run whose lengths come from --input/--output (vllm bench serve's --num-prompts default).
DEFAULT_SYNTHETIC_REQUESTS = 1000
#: The scheduler settings' flags, to name them in errors.
SCHEDULER_FLAGS = {"max_num_seqs": "--max-num-seqs", "max_num_batched_tokens": "--max-batched-tokens",
                   "gpu_memory_utilization": "--gpu-memory-utilization",
                   "kv_cache_free_gpu_mem_fraction": "--kv-cache-free-gpu-mem-fraction",
                   **{f"spec.{field}": flag for field, flag in SPEC_FLAGS.items()}}


@dataclass(frozen=True)
class WorkloadFlags:
    """What `simulate` replays: a trace as recorded (optionally faster), or synthetic arrivals at
    `rate` with lengths from the trace or from --input/--output."""

    trace: str | None = None
    rate_scale: float = 1.0
    rate: float | None = None
    arrival: str | None = None
    burstiness: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    range_ratio: float = 0.0
    requests: int | None = None
    seed: int = 0
    shared_prefix_tokens: int | None = None
    prefix_groups: int = 1

    def check(self) -> None:
        """Flags that cannot go together get one line saying which to drop or add."""
        if self.requests is not None and self.requests <= 0:
            raise TokenfleetError(f"--requests must be a positive integer, got {self.requests}")
        self._check_lengths()
        self._check_arrivals()
        self._check_prefixes()

    def _check_lengths(self) -> None:
        lengths = (self.input_tokens is not None, self.output_tokens is not None)
        if any(lengths) and not all(lengths):
            raise TokenfleetError("give both --input and --output (tokens per request), or neither to take lengths from the trace")
        if all(lengths) and self.trace is not None:
            raise TokenfleetError("--trace gives lengths too: drop --trace, or drop --input/--output to sample the trace's lengths")
        if all(lengths) and self.rate is None:
            raise TokenfleetError("--input/--output give lengths but no arrival times: add --rate (requests per second, or inf to send all at once)")
        if self.range_ratio and not all(lengths):
            raise TokenfleetError("--range-ratio spreads --input/--output: give them too, or drop --range-ratio")

    def _check_arrivals(self) -> None:
        if self.rate is None and (self.arrival is not None or self.burstiness is not None):
            raise TokenfleetError("--arrival and --burstiness shape synthetic arrivals: add --rate (requests per second)")
        if self.rate is not None and self.rate_scale != 1.0:
            raise TokenfleetError("--rate-scale speeds up a trace's recorded arrivals; with --rate give the rate itself")
        if self.arrival not in (None, "poisson", "gamma", "constant"):
            raise TokenfleetError(f"--arrival {self.arrival!r}: choose one of poisson, gamma, constant")
        if self.burstiness is not None and self.arrival not in (None, "gamma"):
            raise TokenfleetError(f"--burstiness shapes --arrival gamma, not {self.arrival}: drop one of them")

    def _check_prefixes(self) -> None:
        if self.shared_prefix_tokens is not None and self.shared_prefix_tokens < 1:
            raise TokenfleetError(f"--shared-prefix must be a positive number of tokens, got {self.shared_prefix_tokens}")
        if self.prefix_groups < 1:
            raise TokenfleetError(f"--prefix-groups must be a positive integer, got {self.prefix_groups}")
        if self.prefix_groups != 1 and self.shared_prefix_tokens is None:
            raise TokenfleetError("--prefix-groups counts the prompts' shared prefixes: give --shared-prefix TOKENS too")

    @property
    def process(self) -> str:
        return self.arrival or ("gamma" if self.burstiness is not None else "poisson")

    def describe(self) -> dict[str, Any]:
        """The workload as the summary JSON records it."""
        prefix = {} if self.shared_prefix_tokens is None else {"shared_prefix_tokens": self.shared_prefix_tokens, "prefix_groups": self.prefix_groups}
        return {**self._arrivals_and_lengths(), **prefix}

    def _arrivals_and_lengths(self) -> dict[str, Any]:
        source = "random" if self.input_tokens is not None else (self.trace or "azure-code")
        if self.rate is None:
            return {"trace": source, "arrival": "trace", "rate_scale": self.rate_scale}
        shape = {"burstiness": self.burstiness if self.burstiness is not None else 1.0} if self.process == "gamma" else {}
        lengths = ({"input_tokens": self.input_tokens, "output_tokens": self.output_tokens, "range_ratio": self.range_ratio}
                   if self.input_tokens is not None else {})
        if self.rate == float("inf"):  # JSON has no infinity
            return {"trace": source, "arrival": "all at t = 0", "rate_per_s": None, **lengths, "seed": self.seed}
        return {"trace": source, "arrival": self.process, "rate_per_s": self.rate, **shape, **lengths, "seed": self.seed}


def build_trace(flags: WorkloadFlags, block_tokens: int) -> Trace:
    """The requests `simulate` replays, with shared prompt prefixes where asked for."""
    trace = _requests(flags)
    if flags.shared_prefix_tokens is None:
        return trace
    if trace.prefix_blocks is not None:
        raise TokenfleetError(f"trace {trace.name!r} carries its own prefix hashes: drop --shared-prefix")
    rng = np.random.default_rng([flags.seed, 2])
    return replace(trace, prefix_blocks=shared_prefixes(trace.input_tokens, flags.shared_prefix_tokens, flags.prefix_groups, rng, block_tokens))


def _requests(flags: WorkloadFlags) -> Trace:
    flags.check()
    if flags.input_tokens is not None and flags.output_tokens is not None:
        n = flags.requests if flags.requests is not None else DEFAULT_SYNTHETIC_REQUESTS
        rng = np.random.default_rng([flags.seed, 1])
        inputs = draw_lengths(vllm_random(flags.input_tokens, flags.range_ratio, "--input"), rng, n)
        outputs = draw_lengths(vllm_random(flags.output_tokens, flags.range_ratio, "--output"), rng, n)
        lengths = Trace("random", np.zeros(n), inputs, outputs)
    else:
        lengths = load_trace(flags.trace or "azure-code")
    if flags.rate is None:
        trace = lengths.scale_rate(flags.rate_scale)
        return trace if flags.requests is None else trace.take(flags.requests)
    n = flags.requests if flags.requests is not None else len(lengths)
    return synthetic(n, flags.rate, lengths, flags.process, 1.0 if flags.burstiness is None else flags.burstiness, flags.seed)


def parse_slo_flags(flags: list[str]) -> dict[str, str]:
    slo = {}
    for flag in flags:
        key, sep, cond = flag.partition("=")
        if not sep:
            raise TokenfleetError(f"--slo {flag!r}: write it as p99_ttft_ms=<=500")
        slo[key.strip()] = cond.strip()
    return slo


def scheduler_config(sched: dict[str, Any]) -> SchedulerConfig:
    """The scheduler settings from their flags."""
    return from_flags(SchedulerConfig, sched, SCHEDULER_FLAGS)


def run_simulations(model_name: str, hardware: str, flags: WorkloadFlags, chips: str, precisions: tuple[str, str | None], replicas: int, router: str,
                    sched: dict[str, Any], slo_flags: list[str], out: Path | None, quiet: bool = False,
                    attn_dp: bool = False) -> list[dict[str, Any]]:
    """One summary per chip in `hardware` (comma-separated), each over the same requests; with
    `out`, each chip's summary and per-request JSONL are written as it finishes."""
    if replicas <= 0:
        raise TokenfleetError(f"--replicas must be a positive integer, got {replicas}")
    model, slo = get_model(model_name), parse_slo_flags(slo_flags)
    parse_slo(slo)  # an unknown metric is refused before any progress bar draws
    cfg = scheduler_config(sched)
    trace = build_trace(flags, cfg.prefix_block_tokens)
    # auto deployments hold 16 of the trace's longest requests: enough KV for a pipelined SRAM
    # replica's micro-batches to each take a full-length request
    # (requests beyond the model's context are refused, so they size nothing)
    lengths = trace.input_tokens + trace.output_tokens
    longest = int(lengths[lengths <= model.context_window_tokens].max(initial=1))
    summaries: list[dict[str, Any]] = []
    for chip_id in [h.strip() for h in hardware.split(",") if h.strip()]:
        chip = get_chip(chip_id)
        dep = _deployment(model, chip, longest, chips, precisions, attn_dp)
        with Progress(transient=True, disable=quiet) as bar:
            task = bar.add_task(f"{chip.id}: {len(trace):,} requests", total=len(trace))
            stream = _open(out, chip.id)
            def advance(done: int, total: int, task: TaskID = task) -> None:
                bar.update(task, completed=done)

            try:
                result = simulate(model, chip, dep, trace, cfg, replicas, router, slo, stream, progress=advance)
            except KeyboardInterrupt:
                raise TokenfleetError(_interrupted(chip.id, out, [s["hardware"] for s in summaries])) from None
            finally:
                if stream is not None:
                    stream.close()
        summary = {"model": model.name, "hardware": chip.id, **flags.describe(), **result.summary}
        if out is not None:
            (out / f"summary-{chip.id}.json").write_text(json.dumps(summary, indent=2))
        summaries.append(summary)
    return summaries


def _interrupted(chip_id: str, out: Path | None, finished: list[str]) -> str:
    """What an interrupted run kept: the finished chips' summaries and this chip's finished requests."""
    if out is None:
        return f"interrupted while simulating {chip_id}; give --out DIR to keep finished requests and summaries"
    kept = f"; summaries of {', '.join(finished)} are in {out}" if finished else ""
    return f"interrupted while simulating {chip_id}: the requests it finished are in {out / f'requests-{chip_id}.jsonl'}{kept}"


def _deployment(model, chip, longest: int, chips: str, precisions: tuple[str, str | None], attn_dp: bool = False):  # type: ignore[no-untyped-def]
    """With `auto`, the smallest replica that holds 16 of the trace's longest requests;
    `precisions` are the weight and KV formats (None: the weight format's default)."""
    return resolve_deployment(model, chip, Workload(16, longest, 1), chips, precision=precisions[0], kv_precision=precisions[1],
                              attn_dp=attn_dp)


def _open(out: Path | None, chip_id: str):  # type: ignore[no-untyped-def]
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    return (out / f"requests-{chip_id}.jsonl").open("w")
