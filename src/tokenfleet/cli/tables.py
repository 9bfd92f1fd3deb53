"""Rich tables for the terminal; JSON output never goes through here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import track
from rich.table import Table

from tokenfleet.catalog.chips import ChipSpec, get_chip
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.catalog.pricing import chip_hour_usd, price_basis
from tokenfleet.perf.precision import COMPUTE_FORMAT
from tokenfleet.perf.predict import Prediction, Workload
from tokenfleet.validation.report import FAMILIES, ValidationReport, fitted_row_ids


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:,.3g} {prefix}{unit}"
    return f"{value:,.3g} {unit}"


def chip_list(chips: list[ChipSpec]) -> Table:
    t = Table(title="Chips")
    for col in ("id", "family", "bf16 FLOP/s", "SRAM", "HBM", "HBM B/s", "$/chip-h", "price basis"):
        t.add_column(col)
    for c in chips:
        t.add_row(c.id, c.family, _si(c.get("bf16_flops_per_s"), "FLOP/s"), _si(c.sram_bytes, "B"), _si(c.hbm_bytes, "B"),
                  _si(c.hbm_bytes_per_s, "B/s"), f"{chip_hour_usd(c):.2f}", price_basis(c))
    return t


def chip_detail(chip: ChipSpec) -> Table:
    t = Table(title=f"{chip.name} ({chip.id}, {chip.family})", show_lines=False)
    for col in ("figure", "value", "estimate", "source"):
        t.add_column(col, overflow="fold")
    for key, fig in chip.figures.items():
        t.add_row(key, f"{fig.value:,.6g}", "yes" if fig.estimate else "", f"{fig.source} ({fig.date})" + (f" — {fig.note}" if fig.note else ""))
    return t


def model_summary(m: ModelSpec) -> dict[str, Any]:
    return {
        "name": m.name, "hf_id": m.hf_id, "layers": m.num_layers, "hidden_size": m.hidden_size,
        "heads": m.num_heads, "kv_heads": m.num_kv_heads, "head_dim": m.qk_head_dim, "attention": _attention_kind(m),
        "linear_attention_layers": m.num_linear_layers, "state_bytes_per_seq_bf16": m.state_bytes(2.0),
        "experts": m.num_experts, "experts_per_token": m.experts_per_token, "moe_layers": m.num_moe_layers,
        "total_params": m.total_params, "active_params": m.active_params,
        "kv_bytes_per_token_bf16": m.kv_bytes_per_token(2.0), "published_params": dict(m.published),
        "layer_groups": [{"count": g.count, "moe": g.is_moe, "window_tokens": g.window_tokens, "linear_attention": g.linear}
                         for g in m.layer_groups],
    }


def _attention_kind(m: ModelSpec) -> str:
    kind = "mla" if m.is_mla else ("gqa" if m.num_kv_heads < m.num_heads else "mha")
    return f"{kind} + gated deltanet" if m.num_linear_layers else kind


def model_list(models: list[ModelSpec]) -> Table:
    t = Table(title="Models")
    for col in ("name", "hf id", "layers", "attention", "experts", "total", "active", "KV/token (bf16)"):
        t.add_column(col)
    for m in models:
        s = model_summary(m)
        t.add_row(m.name, m.hf_id, str(m.num_layers), s["attention"], f"{m.num_experts}/{m.experts_per_token}" if m.is_moe else "-",
                  _si(m.total_params, ""), _si(m.active_params, ""), _si(m.kv_bytes_per_token(2.0), "B"))
    return t


def model_detail(m: ModelSpec) -> Table:
    t = Table(title=f"{m.name} ({m.hf_id})")
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k, v in model_summary(m).items():
        t.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    return t


def prediction_panel(p: Prediction) -> Table:
    spec = f", speculative: {p.decode_tokens_per_step:.2f} tokens per decode step" if p.decode_tokens_per_step > 1 else ""
    t = Table(title=f"{p.model} on {p.hardware}: {p.deployment}, batch {p.batch}, {p.input_tokens} in / {p.output_tokens} out{spec}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column(f"band (x/÷{p.band_factor:.2f})", justify="right")
    lo, hi = 1 / p.band_factor, p.band_factor
    for name, value, unit in (
        ("TTFT", p.ttft_s * 1e3, "ms"), ("TPOT", p.tpot_s * 1e3, "ms"), ("end to end", p.e2e_s, "s"),
        ("output tok/s per user", p.output_tok_s_per_user, ""), ("output tok/s total", p.output_tok_s_total, ""),
        ("output tok/s per chip", p.output_tok_s_per_chip, ""), ("$ per Mtok (output)", p.usd_per_mtok, ""),
        ("J per output token", p.joules_per_token, ""),
    ):
        t.add_row(f"{name}" + (f" ({unit})" if unit else ""), f"{value:,.4g}", f"{value * lo:,.3g} – {value * hi:,.3g}")
    t.add_row("memory per chip", f"{p.memory_gb_per_chip:,.1f} / {p.memory_capacity_gb_per_chip:,.1f} GB", f"weights in {p.weights_tier}, KV in {p.kv_tier}")
    t.add_row("bound by", p.bound, "")
    for phase, parts in (("decode", p.breakdown_decode_s), ("prefill", p.breakdown_prefill_s)):
        total = parts.get("total_s", 0.0) or 1.0
        t.add_row(f"{phase} breakdown", ", ".join(f"{k.removesuffix('_s')} {v / total:.0%}" for k, v in parts.items() if k != "total_s"), "")
    return t


def compare_table(rows: list[Prediction], model: str, work: Workload, precision: str) -> Table:
    """One row per chip; `*` marks a chip whose compute peak or weight-memory bandwidth for this
    run is an estimate in the catalog (`tokenfleet catalog show CHIP` says which and why)."""
    e = rows[0].decode_tokens_per_step if rows else 1.0
    spec = f", speculative: {e:.2f} tokens per decode step" if e > 1 else ""
    t = Table(title=f"{model}: batch {work.batch}, {work.input_tokens} in / {work.output_tokens} out{spec}",
              caption="* compute peak or memory bandwidth is an estimate, not a published figure")
    for col in ("hardware", "deployment", "TTFT ms", "tok/s/user", "tok/s/chip", "$/Mtok", "J/tok", "bound", "weights in"):
        t.add_column(col, justify="right" if col not in ("hardware", "deployment", "bound", "weights in") else "left")
    for p in rows:
        chip = get_chip(p.hardware)
        key = chip.estimated(chip.peak_key(COMPUTE_FORMAT[precision]), f"{p.weights_tier}_bytes_per_s")
        t.add_row(p.hardware + (" *" if key else ""), p.deployment, f"{p.ttft_s * 1e3:,.0f}", f"{p.output_tok_s_per_user:,.0f}",
                  f"{p.output_tok_s_per_chip:,.1f}", f"{p.usd_per_mtok:,.2f}", f"{p.joules_per_token:,.2f}", p.bound, p.weights_tier)
    return t


def wide_console() -> Console:
    """The terminal's width on a terminal; wide enough for the tables when piped to a file."""
    console = Console()
    return console if console.is_terminal else Console(width=180)


def progress_track(items: Sequence[Any], description: str) -> Iterable[Any]:
    """A transient progress bar on stderr (on a terminal only), so JSON on stdout stays clean."""
    err = Console(stderr=True)
    return track(items, description=description, console=err, transient=True, disable=not err.is_terminal)


def print_validation(console: Console, report: ValidationReport, by: str | None = None) -> None:
    fitted = fitted_row_ids()
    t = Table(title="Measured vs predicted (fit: row used in the efficiency fit; ! beats the deployment's roofline)")
    for col in ("id", "hardware", "model", "scenario", "metric", "trust", "fit", "measured", "predicted", "error"):
        t.add_column(col, overflow="fold")
    for o in report.outcomes:
        pred = f"{o.predicted:,.4g}" if o.predicted is not None else f"[dim]— {o.reason}[/]"
        err = f"{o.error:.1%}" if o.error is not None else ""
        trust = o.case.trust + ("" if o.case.counted else " (not counted)")
        measured = f"{o.case.value:,.4g}" + (" !" if o.beyond_roofline else "")
        t.add_row(o.case.id, o.case.hardware, o.case.model.split("/")[-1], o.case.scenario, o.case.metric, trust,
                  "fit" if o.case.id in fitted else "", measured, pred, err)
    console.print(t)
    console.print(mape_table(report))
    if by:
        console.print(mape_by_table(report, by))


def mape_by_table(report: ValidationReport, by: str) -> Table:
    t = Table(title=f"MAPE by hardware family and {by} (counted rows)")
    for col in ("family", by, "rows", "MAPE"):
        t.add_column(col, overflow="fold", justify="right" if col in ("rows", "MAPE") else "left")
    for key, cell in report.mape_by(by).items():
        family, value = key.split(": ", 1)
        t.add_row(family, value, str(cell["rows"]), f"{cell['mape']:.1%}")
    return t


def mape_table(report: ValidationReport) -> Table:
    fit = report.mape_table(report.outcomes)
    floor = report.floor_table()
    loso = report.mape_table(report.loso) if report.loso else {}
    t = Table(title="MAPE by hardware family (claims excluded; simulator rows are out of sample except the fitted ones: "
              "the TPUs', NVIDIA's and AMD's saturated runs; floor: the least any model could score, "
              "the rows disagreeing or beating physics)")
    held_out = ["leave one source out"] if loso else []
    for col in ["family", "cost model: rows", "MAPE", *held_out, "floor", "simulator: rows", "MAPE", *held_out, "floor",
                "all rows", "MAPE", "floor"]:
        t.add_column(col)

    def cell(key: str) -> list[str]:
        return [str(int(fit[key]["rows"])), f"{fit[key]['mape']:.1%}"] if key in fit else ["0", "—"]

    def loso_cell(key: str) -> list[str]:
        if not loso:
            return []
        return [f"{loso[key]['mape']:.1%} ({int(loso[key]['rows'])} fitted)" if key in loso else "—"]

    def floor_cell(key: str) -> list[str]:
        return [f"{floor[key]['mape']:.1%}" if key in floor else "—"]

    for fam in FAMILIES:
        cost, served = f"{fam}:cost_model", f"{fam}:served"
        t.add_row(fam, *cell(cost), *loso_cell(cost), *floor_cell(cost), *cell(served), *loso_cell(served), *floor_cell(served),
                  *cell(fam), *floor_cell(fam))
    return t


def simulation_table(summaries: list[dict[str, Any]]) -> Table:
    t = Table(title="Simulated serving (" + ", ".join(f"{s['hardware']}: {s['deployment']} x{s['replicas']}" for s in summaries) + ")")
    t.add_column("metric")
    for s in summaries:
        t.add_column(s["hardware"], justify="right")
    rows = ["completed", "failed", "request_throughput", "output_throughput", "output_throughput_per_chip", "mean_ttft_ms", "p99_ttft_ms",
            "mean_tpot_ms", "p99_tpot_ms", "p99_itl_ms", "mean_e2el_ms", "mean_output_tok_s_per_user", "utilisation",
            "mean_kv_occupancy", "prefix_hit_rate", "prefix_hit_token_share", "preemptions", "usd_per_mtok", "joules_per_token", "request_goodput"]
    for key in rows:
        if any(key in s for s in summaries):
            t.add_row(key, *[f"{s[key]:,.4g}" if isinstance(s.get(key), (int, float)) else str(s.get(key, "")) for s in summaries])
    return t
