"""`tokenfleet`: catalog, predict, compare, validate, calibrate, simulate, plan, sweep."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from tokenfleet.catalog.chips import all_chips, get_chip
from tokenfleet.catalog.models import all_models, get_model
from tokenfleet.cli import tables
from tokenfleet.cli.plan_cmd import WorkersOpt, plan_command, sweep_command
from tokenfleet.cli.resolve import parse_hardware_list, resolve_deployment, spec_decode
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.precision import check_precision
from tokenfleet.perf.predict import Prediction, Workload, check_context, predict_static

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help="Which hardware for which LLM traffic.")


@app.callback()
def _global_options(
    efficiency: Annotated[Path | None, typer.Option("--efficiency", help="your own fit (from `tokenfleet calibrate --out`) in place of the shipped one "
                                                    "for the kinds it fits; also $TOKENFLEET_EFFICIENCY")] = None,
    stack: Annotated[str | None, typer.Option("--stack", help="predict with a software stack's own fit where a kind has one "
                                              "(e.g. mlperf: AMD as tuned for MLPerf); also $TOKENFLEET_STACK")] = None,
) -> None:
    """Which hardware for which LLM traffic."""
    from tokenfleet.perf.efficiency import (
        EFFICIENCY_ENV,
        STACK_ENV,
        check_stack,
        read_efficiency_file,
    )

    if efficiency is not None:
        os.environ[EFFICIENCY_ENV] = str(efficiency.resolve())
    if os.environ.get(EFFICIENCY_ENV):
        read_efficiency_file(Path(os.environ[EFFICIENCY_ENV]))  # a bad file fails here, in one line, before any work
    if stack is not None:
        os.environ[STACK_ENV] = stack
    if os.environ.get(STACK_ENV):
        check_stack(os.environ[STACK_ENV])
catalog_app = typer.Typer(no_args_is_help=True, help="What the built-in catalog knows, and where each figure comes from.")
app.add_typer(catalog_app, name="catalog")
console = tables.wide_console()

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="catalog name, Hugging Face id, or path to a config.json")]
InputOpt = Annotated[int, typer.Option("--input", "-i", help="prompt tokens per request")]
OutputOpt = Annotated[int, typer.Option("--output", "-o", help="generated tokens per request")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", help="requests served together")]
PrecisionOpt = Annotated[str, typer.Option("--precision", "-p", help="weight format: bf16, fp8, int8, fp4, int4, mxfp4")]
SpecTokensOpt = Annotated[int, typer.Option("--spec-tokens", help="speculative decoding: draft (or MTP) tokens per step, 0 = off")]
AcceptanceOpt = Annotated[float, typer.Option("--acceptance", help="speculative decoding: acceptance rate per draft token, in [0, 1)")]
DraftCostOpt = Annotated[float, typer.Option("--draft-cost", help="speculative decoding: one draft token's cost as a share of a decode step")]
KvPrecisionOpt = Annotated[str | None, typer.Option("--kv-precision", help="KV-cache format (default: fp8 with 8-bit or narrower weights, else bf16)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for machines")]
AttnDpOpt = Annotated[bool, typer.Option("--attn-dp", help="attention data parallel (MoE): each chip holds all but the routed "
                                         "experts and serves its own sequences, KV whole (TensorRT-LLM enable_attention_dp)")]


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")


@catalog_app.command("list")
def catalog_list(json_out: JsonOpt = False) -> None:
    """List chips and models."""
    chips, models = all_chips(), [get_model(m) for m in all_models()]
    if json_out:
        emit_json({"chips": [c.model_dump(mode="json") for c in chips.values()], "models": [tables.model_summary(m) for m in models]})
        return
    console.print(tables.chip_list(list(chips.values())))
    console.print(tables.model_list(models))


@catalog_app.command("show")
def catalog_show(name: Annotated[str, typer.Argument(help="a chip id or a model name")], json_out: JsonOpt = False) -> None:
    """Every figure of one chip or model, with its source."""
    if name.lower() in all_chips():
        chip = get_chip(name)
        if json_out:
            emit_json(chip.model_dump(mode="json"))
        else:
            console.print(tables.chip_detail(chip))
        return
    model = get_model(name)
    if json_out:
        emit_json(tables.model_summary(model))
    else:
        console.print(tables.model_detail(model))


@app.command()
def predict(
    model: ModelOpt,
    hardware: Annotated[str, typer.Option("--hardware", "-H", help="chip id, e.g. h100-sxm")],
    input_tokens: InputOpt = 1000,
    output_tokens: OutputOpt = 500,
    batch: BatchOpt = 1,
    chips: Annotated[str, typer.Option("--chips", "-n", help="chips in the replica, or 'auto'")] = "auto",
    tp: Annotated[int | None, typer.Option(help="tensor-parallel size")] = None,
    pp: Annotated[int | None, typer.Option(help="pipeline stages")] = None,
    ep: Annotated[int | None, typer.Option(help="expert-parallel size (MoE)")] = None,
    attn_dp: AttnDpOpt = False,
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = None,
    spec_tokens: SpecTokensOpt = 0,
    acceptance: AcceptanceOpt = 0.7,
    draft_cost: DraftCostOpt = 0.05,
    json_out: JsonOpt = False,
) -> None:
    """TTFT, TPOT, throughput, cost and energy of a static batch on one deployment."""
    spec, chip = get_model(model), get_chip(hardware)
    work = Workload(batch, input_tokens, output_tokens)
    dep = resolve_deployment(spec, chip, work, chips, tp, pp, ep, precision, kv_precision, attn_dp)
    pred = predict_static(spec, chip, dep, work, spec=spec_decode(spec_tokens, acceptance, draft_cost))
    if json_out:
        emit_json(pred.as_dict())
    else:
        console.print(tables.prediction_panel(pred))


@app.command()
def compare(
    model: ModelOpt,
    input_tokens: InputOpt = 1000,
    output_tokens: OutputOpt = 500,
    batch: BatchOpt = 1,
    hardware: Annotated[str | None, typer.Option("--hardware", "-H", help="comma-separated chip ids (default: every chip in the catalog)")] = None,
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = None,
    spec_tokens: SpecTokensOpt = 0,
    acceptance: AcceptanceOpt = 0.7,
    draft_cost: DraftCostOpt = 0.05,
    sort: Annotated[str, typer.Option(help="sort key: tok_s_user, tok_s_chip, usd_per_mtok")] = "tok_s_user",
    json_out: JsonOpt = False,
) -> None:
    """One row per chip with its smallest deployment that fits, sorted."""
    spec = get_model(model)
    work = Workload(batch, input_tokens, output_tokens)
    check_context(spec, work)
    keys = {"tok_s_user": lambda p: -p.output_tok_s_per_user, "tok_s_chip": lambda p: -p.output_tok_s_per_chip, "usd_per_mtok": lambda p: p.usd_per_mtok}
    if sort not in keys:
        raise TokenfleetError(f"unknown --sort {sort!r}: choose one of: {', '.join(keys)}")
    precision = check_precision(precision)
    speculation = spec_decode(spec_tokens, acceptance, draft_cost)
    if kv_precision:
        check_precision(kv_precision, "--kv-precision")
    rows: list[Prediction] = []
    failures: dict[str, str] = {}
    for chip in parse_hardware_list(hardware, sorted(all_chips())):
        try:
            dep = resolve_deployment(spec, chip, work, "auto", precision=precision, kv_precision=kv_precision)
            rows.append(predict_static(spec, chip, dep, work, spec=speculation))
        except TokenfleetError as exc:
            failures[chip.id] = str(exc)
    rows.sort(key=keys[sort])
    if json_out:
        emit_json({"rows": [r.as_dict() for r in rows], "not_predicted": failures})
    else:
        console.print(tables.compare_table(rows, spec.name, work, precision))
        for chip_id, why in failures.items():
            console.print(f"[yellow]{chip_id}[/]: {why}")


CasesOpt = Annotated[str | None, typer.Option("--cases", help="CSV in the calibration schema, or a shipped table: calibration (default), trtllm-perf-overview, trtllm-v0.17, argonne-sweep")]


def _cases_path(cases: str | None) -> Path:
    from tokenfleet.validation.cases import cases_path

    return cases_path(cases)


@app.command()
def validate(
    cases: CasesOpt = None,
    json_out: JsonOpt = False,
    loso: Annotated[bool, typer.Option("--loso", help="also show leave-one-source-out error")] = False,
    workers: WorkersOpt = None,
    by: Annotated[str | None, typer.Option("--by", help="also MAPE per family and row field: hardware, model, software, source, scenario, metric, trust")] = None,
) -> None:
    """Measured vs predicted for every row, and MAPE per hardware family and metric."""
    from tokenfleet.validation.report import check_group_field, validation_report

    if by is not None:
        check_group_field(by)
    report = validation_report(_cases_path(cases), loso=loso, track=tables.progress_track, workers=workers)
    if json_out:
        emit_json(report.as_dict(by))
    else:
        tables.print_validation(console, report, by)


@app.command()
def calibrate(
    cases: CasesOpt = None,
    write: Annotated[bool, typer.Option("--write", help="store the fit in the package's efficiency.yaml (maintainers)")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="write the fit to this file; use it with --efficiency or $TOKENFLEET_EFFICIENCY")] = None,
    workers: WorkersOpt = None,
) -> None:
    """Fit the efficiency parameters of each hardware family on the calibration rows (your own
    measurements in the same CSV schema fit your own stack)."""
    from tokenfleet.validation.calibrate import MIN_STACK_ROWS, write_efficiency
    from tokenfleet.validation.calibrate import calibrate as fit
    from tokenfleet.validation.cases import read_cases

    cases_file = _cases_path(cases)
    fits = fit(read_cases(cases_file), tables.progress_track, workers)
    if not fits:
        raise TokenfleetError(f"{cases_file}: no row could be fitted (needs counted static, per_user or throughput rows of a catalog chip and model)")
    for f in fits.values():
        console.print(f"{f.kind:16s} rows={len(f.rows):3d} in-sample MAPE={f.mape:6.1%} band=x{2.718281828 ** f.band_log:.2f}  {f.efficiency}")
        for st in f.stacks:
            console.print(f"  stack {st.stack:8s} rows={len(st.rows):3d} in-sample MAPE={st.mape:6.1%} compute_eff={st.efficiency.compute_eff:.3f}")
        for name, runs in f.stacks_too_small:
            console.print(f"  stack {name}: {runs} row(s) ({MIN_STACK_ROWS} needed to fit it apart, and rows of {f.kind}'s own); its rows use {f.kind}'s fit")
    targets = ([Path(__file__).resolve().parent.parent / "perf" / "data" / "efficiency.yaml"] if write else []) + ([out] if out else [])
    for target in targets:
        write_efficiency(fits, cases_file, target)
        console.print(f"wrote {target}")


@app.command()
def simulate(
    model: ModelOpt,
    hardware: Annotated[str, typer.Option("--hardware", "-H", help="chip id, or several comma-separated to compare side by side")],
    trace: Annotated[str | None, typer.Option("--trace", "-t", help="azure-code (default), azure-conv, mooncake-conv, or a trace file")] = None,
    chips: Annotated[str, typer.Option("--chips", "-n", help="chips per replica, or 'auto'")] = "auto",
    attn_dp: AttnDpOpt = False,
    precision: PrecisionOpt = "bf16",
    kv_precision: KvPrecisionOpt = None,
    replicas: Annotated[int, typer.Option(help="identical replicas behind the router")] = 1,
    router: Annotated[str, typer.Option(help="round-robin, least-outstanding-tokens, prefix-affinity")] = "round-robin",
    rate_scale: Annotated[float, typer.Option("--rate-scale", help="replay the trace's own arrival times this many times faster")] = 1.0,
    rate: Annotated[float | None, typer.Option("--rate", help="synthetic arrivals at this many requests/s instead of the trace's times; inf: all at t = 0")] = None,
    arrival: Annotated[str | None, typer.Option("--arrival", help="process for --rate: poisson (default), gamma, constant")] = None,
    burstiness: Annotated[float | None, typer.Option("--burstiness", help="gamma shape for --rate, as vllm bench serve's: 1 = Poisson, < 1 burstier")] = None,
    input_tokens: Annotated[int | None, typer.Option("--input", "-i", help="prompt tokens per request instead of a trace's (needs --rate)")] = None,
    output_tokens: Annotated[int | None, typer.Option("--output", "-o", help="output tokens per request instead of a trace's (needs --rate)")] = None,
    range_ratio: Annotated[float, typer.Option("--range-ratio", help="spread --input/--output as vllm bench serve's random dataset: uniform in [L(1-r), L(1+r)]")] = 0.0,
    shared_prefix: Annotated[int | None, typer.Option("--shared-prefix", help="first TOKENS of every prompt shared (a system prompt), for prefix caching")] = None,
    prefix_groups: Annotated[int, typer.Option("--prefix-groups", help="distinct shared prefixes, one picked per request")] = 1,
    requests: Annotated[int | None, typer.Option("--requests", help="first N requests (tiles the trace if longer); with --input/--output default 1000")] = None,
    seed: Annotated[int, typer.Option(help="seed for synthetic arrivals and lengths")] = 0,
    max_num_seqs: Annotated[int, typer.Option(help="cap on running sequences per replica (per chip of a stage with --attn-dp)")] = 256,
    max_batched_tokens: Annotated[int, typer.Option(help="per-step token budget (chunk size; per chip of a stage with --attn-dp)")] = 8192,
    chunked_prefill: Annotated[bool, typer.Option("--chunked-prefill/--no-chunked-prefill", help=(
        "--no-chunked-prefill: vLLM V0's prefill-first steps (whole prompts while decoders wait) instead of mixed steps"))] = True,
    gpu_memory_utilization: Annotated[float, typer.Option(help="vLLM's rule: share of each chip's memory for weights, activations and KV cache")] = 0.9,
    kv_cache_free_gpu_mem_fraction: Annotated[float | None, typer.Option(help="TensorRT-LLM's rule instead: the KV cache takes this share of the memory left after weights and runtime")] = None,
    spec_tokens: SpecTokensOpt = 0,
    acceptance: AcceptanceOpt = 0.7,
    draft_cost: DraftCostOpt = 0.05,
    slo: Annotated[list[str] | None, typer.Option(help="e.g. p99_ttft_ms=<=500 (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for summary.json and requests.jsonl")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay a trace, or synthetic arrivals, through replicas with continuous batching; vllm-bench-style metrics."""
    from tokenfleet.cli.simulate_cmd import WorkloadFlags, run_simulations

    flags = WorkloadFlags(trace=trace, rate_scale=rate_scale, rate=rate, arrival=arrival, burstiness=burstiness,
                          input_tokens=input_tokens, output_tokens=output_tokens, range_ratio=range_ratio, requests=requests,
                          seed=seed, shared_prefix_tokens=shared_prefix, prefix_groups=prefix_groups)
    summaries = run_simulations(
        model, hardware, flags, chips, (precision, kv_precision), replicas, router,
        {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_batched_tokens, "chunked_prefill": chunked_prefill,
         "gpu_memory_utilization": gpu_memory_utilization, "kv_cache_free_gpu_mem_fraction": kv_cache_free_gpu_mem_fraction,
         "spec": {"draft_tokens": spec_tokens, "acceptance_rate": acceptance, "draft_cost_ratio": draft_cost}},
        slo or [], out, quiet=json_out, attn_dp=attn_dp,
    )
    if json_out:
        emit_json(summaries if len(summaries) > 1 else summaries[0])
    else:
        console.print(tables.simulation_table(summaries))
        if summaries[0]["failed"]:
            console.print(f"{summaries[0]['failed']:,} requests refused unserved: prompt + output exceed the model's context window")


app.command("plan")(plan_command)
app.command("sweep")(sweep_command)


def run() -> None:
    """Console entry point: every user error becomes one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except TokenfleetError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        err = exc.errors()[0]
        _fail(f"invalid {'.'.join(str(p) for p in err['loc'])}: {err['msg']}")
    except (typer.Abort, KeyboardInterrupt):
        _fail("interrupted")
    except Exception as exc:
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click's usage errors
            _fail(str(exc.format_message()).splitlines()[0])
        if type(exc).__name__ == "Exit":
            sys.exit(getattr(exc, "exit_code", 0))
        raise


def _fail(message: str) -> None:
    Console(stderr=True).print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":
    run()
