"""`tokenfleet simulate`: resolve flags, run with a progress bar, write JSON and JSONL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.progress import Progress, TaskID

from tokenfleet.catalog.chips import get_chip
from tokenfleet.catalog.models import get_model
from tokenfleet.cli.resolve import resolve_deployment
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.predict import Workload
from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.simulate import simulate
from tokenfleet.workload.traces import load_trace


def parse_slo_flags(flags: list[str]) -> dict[str, str]:
    slo = {}
    for flag in flags:
        key, sep, cond = flag.partition("=")
        if not sep:
            raise TokenfleetError(f"--slo {flag!r}: write it as p99_ttft_ms=<=500")
        slo[key.strip()] = cond.strip()
    return slo


def run_simulations(model_name: str, hardware: str, trace_name: str, chips: str, precision: str, replicas: int, router: str,
                    rate_scale: float, requests: int | None, sched: dict[str, Any], slo_flags: list[str], out: Path | None,
                    quiet: bool = False) -> list[dict[str, Any]]:
    if replicas <= 0:
        raise TokenfleetError(f"--replicas must be a positive integer, got {replicas}")
    model, slo = get_model(model_name), parse_slo_flags(slo_flags)
    trace = load_trace(trace_name).scale_rate(rate_scale)
    if requests is not None:
        trace = trace.take(requests)
    try:
        cfg = SchedulerConfig.model_validate(sched)
    except ValueError as exc:
        raise TokenfleetError(f"bad scheduler setting: {str(exc).splitlines()[1:3]}") from None
    # auto deployments hold 16 of the trace's longest requests: enough KV for a pipelined SRAM
    # replica's micro-batches to each take a full-length request
    # (requests beyond the model's context are refused, so they size nothing)
    lengths = trace.input_tokens + trace.output_tokens
    longest = int(lengths[lengths <= model.context_window_tokens].max(initial=1))
    summaries = []
    for chip_id in [h.strip() for h in hardware.split(",") if h.strip()]:
        chip = get_chip(chip_id)
        dep = _deployment(model, chip, longest, chips, precision)
        with Progress(transient=True, disable=quiet) as bar:
            task = bar.add_task(f"{chip.id}: {len(trace):,} requests", total=len(trace))
            stream = _open(out, chip.id)
            def advance(done: int, total: int, task: TaskID = task) -> None:
                bar.update(task, completed=done)

            result = simulate(model, chip, dep, trace, cfg, replicas, router, slo, stream, progress=advance)
            if stream is not None:
                stream.close()
        summary = {"model": model.name, "hardware": chip.id, "trace": trace_name, "rate_scale": rate_scale, **result.summary}
        if out is not None:
            (out / f"summary-{chip.id}.json").write_text(json.dumps(summary, indent=2))
        summaries.append(summary)
    return summaries


def _deployment(model, chip, longest: int, chips: str, precision: str):  # type: ignore[no-untyped-def]
    """With `auto`, the smallest replica that holds 16 of the trace's longest requests."""
    return resolve_deployment(model, chip, Workload(16, longest, 1), chips, precision=precision)


def _open(out: Path | None, chip_id: str):  # type: ignore[no-untyped-def]
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    return (out / f"requests-{chip_id}.jsonl").open("w")
