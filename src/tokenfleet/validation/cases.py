"""Published measurements (`cases.csv`, schema in shared/calibration/README.md) and how each row
is predicted. Rows that cannot be predicted say why instead of getting a number."""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from tokenfleet.catalog.chips import ChipSpec, Figure, get_chip
from tokenfleet.catalog.models import ModelSpec, get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.auto import auto_deployment, layout
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.efficiency import calibration_for, fitted_stacks
from tokenfleet.perf.memory import plan_memory
from tokenfleet.perf.predict import Prediction, Workload, predict_static
from tokenfleet.perf.step import Efficiency
from tokenfleet.validation.datasets import engine_settings, mlperf_lengths
from tokenfleet.validation.served import (
    SERVED_METRICS,
    Layout,
    best_layout,
    run_served,
    served_case,
    server_rate_note,
)
from tokenfleet.validation.stacks import stack_of

#: Wraps a long loop (items, what it does) and yields the items, e.g. through a progress bar.
Track = Callable[[Sequence[Any], str], Iterable[Any]]

REQUIRED_COLUMNS = (
    "id", "model", "hardware", "num_chips", "tp", "pp", "ep", "precision", "scenario", "batch",
    "input_tokens", "output_tokens", "spec_decode", "metric", "value", "trust", "source",
)

#: Lengths assumed where a row publishes none: Artificial Analysis's standard workload
#: is a ~1,000-token prompt; 500 output tokens puts the measured speed mid-answer (assumption).
DEFAULT_PROMPT_TOKENS = 1000
DEFAULT_OUTPUT_TOKENS = 500

#: Weight format assumed where a row says `unknown`: what the vendor's serving stack of that era
#: ran by default (FP8 on Hopper/CDNA3 in MLPerf and TensorRT-LLM/vLLM docs, FP4 on Blackwell,
#: 16-bit on Cerebras and SambaNova per their own statements, 8-bit on Groq per SambaNova's
#: footnote to GT225; TPUs: bf16 in JetStream/vLLM-TPU recipes unless stated; MI355X: MXFP4 in
#: AMD's MLPerf v5.1 submissions, "2.7x the tokens per second of MI325X in FP8" on Llama 2 70B per
#: AMD (rocm.blogs.amd.com mlperf-inference5.1-repro, 2025-09-09; itbrief.news on the same release)).
DEFAULT_PRECISION = {
    "nvidia": "fp8", "amd": "fp8", "tpu": "bf16", "sram": "bf16",
    "b200": "fp4", "gb200": "fp4", "mi355x": "fp4", "groq-lpu": "int8", "a100-sxm": "bf16",
}


@dataclass(frozen=True)
class Case:
    """One published measurement."""

    id: str
    model: str
    hardware: str
    num_chips: str
    tp: str
    pp: str
    ep: str
    precision: str
    scenario: str
    batch: str
    input_tokens: str
    output_tokens: str
    spec_decode: str
    metric: str
    value: float
    trust: str
    source: str
    notes: str = ""
    software: str = ""  # optional column: the serving stack, e.g. "TensorRT-LLM 0.14.0"

    @property
    def counted(self) -> bool:
        """Claims are shown but never scored."""
        return self.trust != "claim"


#: Measurement tables that ship with tokenfleet, by the short name `--cases` takes (sources in
#: data/README.md): the calibration table the efficiencies are fitted on, and TensorRT-LLM's
#: whole v1.0-era performance table, an out-of-sample check on NVIDIA's saturated throughput.
SHIPPED_CASES = {"calibration": "cases.csv", "trtllm-perf-overview": "trtllm_perf_overview.csv", "trtllm-v0.17": "trtllm_v017_perf_overview.csv",
                 "argonne-sweep": "argonne_sweep.csv"}


def builtin_cases_path(name: str = "calibration") -> Path:
    """A shipped measurement table by its short name (see SHIPPED_CASES)."""
    return Path(str(resources.files("tokenfleet.validation").joinpath(f"data/{SHIPPED_CASES[name]}")))


def cases_path(given: str | None) -> Path:
    """What `--cases` names: a shipped table's short name, or a path; the calibration table if None."""
    if given is None:
        return builtin_cases_path()
    if given in SHIPPED_CASES and not Path(given).exists():
        return builtin_cases_path(given)
    return Path(given)


def read_cases(path: Path) -> list[Case]:
    """Read a calibration CSV; a missing file or column gets one line naming it."""
    if not path.is_file():
        raise TokenfleetError(f"cases file {str(path)!r} not found: give --cases a CSV in the calibration schema "
                             f"or a shipped table ({', '.join(SHIPPED_CASES)})")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise TokenfleetError(f"cases file {str(path)!r} lacks column(s) {', '.join(missing)}: see the calibration README schema")
        cases = []
        for i, row in enumerate(reader, start=2):
            try:
                value = float(row["value"])
            except ValueError:
                raise TokenfleetError(f"{path}:{i}: column 'value' must be a number, got {row['value']!r}") from None
            fields = {k: (row.get(k) or "").strip() for k in Case.__dataclass_fields__ if k != "value"}
            cases.append(Case(value=value, **fields))
    return cases


def _int(text: str, default: int) -> int:
    return int(float(text)) if text and text not in ("auto", "unknown") else default


def precision_for(case: Case, chip: ChipSpec) -> str:
    """The row's weight format; where it says `unknown`, the one its submitter's published config
    quantises to (`data/engine_settings.yaml`), else the default of its chip's era (DEFAULT_PRECISION)."""
    if case.precision and case.precision != "unknown":
        return {"fp16": "bf16"}.get(case.precision, case.precision)
    engine = engine_settings(case.id, case.hardware)
    if engine is not None and engine.weight_precision:
        return engine.weight_precision
    return DEFAULT_PRECISION.get(chip.id, DEFAULT_PRECISION[chip.family])


def deployment_for(case: Case, model: ModelSpec, chip: ChipSpec, work: Workload) -> Deployment:
    """The published layout where given; `auto` (the smallest that fits) where not; with attention
    DP where the submitter's published config enables it (`data/engine_settings.yaml`)."""
    dep = _layout_for(case, model, chip, work)
    engine = engine_settings(case.id, case.hardware)
    if engine is not None and engine.attn_dp:
        return dep.model_copy(update={"attn_dp": True})
    return dep


def _layout_for(case: Case, model: ModelSpec, chip: ChipSpec, work: Workload) -> Deployment:
    prec = precision_for(case, chip)
    kv_prec = "fp8" if prec in ("fp8", "fp4") else "bf16"
    precisions = {"weight_precision": prec, "kv_precision": kv_prec}
    if case.num_chips in ("", "auto"):
        return auto_deployment(model, chip, work.batch, work.input_tokens + work.output_tokens, weight_precision=prec, kv_precision=kv_prec)
    chips = _int(case.num_chips, 1)
    tp, pp, ep = _int(case.tp, 0), _int(case.pp, 0), _int(case.ep, 1)
    if tp and tp * max(pp, 1) == chips:  # TPU7x counts TensorCores in tp: fall through to layout
        return Deployment(chips=chips, tp=tp, pp=max(pp, 1), ep=min(ep, tp), **precisions)
    return layout(model, chip, chips, ep=ep, **precisions)


def mlperf_dataset(case: Case) -> str | None:
    """An MLPerf row that leaves its prompt length out: the model whose MLPerf dataset's length
    distribution it replays (`data/dataset_lengths.yaml`); None for any other row."""
    if case.input_tokens or "MLPerf" not in case.source or mlperf_lengths(case.model) is None:
        return None
    return case.model


def dataset_prompt_tokens(case: Case) -> int | None:
    """The mean prompt of the MLPerf dataset an MLPerf row replays; None for any other row."""
    dataset = mlperf_dataset(case)
    lengths = mlperf_lengths(dataset) if dataset else None
    return lengths.mean_input_tokens if lengths else None


def served_layouts(case: Case, model: ModelSpec, chip: ChipSpec, work: Workload, dep: Deployment) -> list[Layout]:
    """A served row on N chips that does not publish its layout may run data parallel: every
    power-of-two replica size (in the same TP/PP layout rule) whose replica holds the model and
    one request's KV, with N / size replicas. MLPerf submissions, for example, run one model
    instance per GPU or per pair of GPUs where it fits. A layout its submitter published
    (`data/engine_settings.yaml`) is the only one."""
    engine = engine_settings(case.id, case.hardware)
    if engine is not None and engine.tp is not None:
        return [published_layout(engine.tp, engine.pp, dep)]
    if case.tp or case.num_chips in ("", "auto") or "one instance" in case.notes:
        return [Layout(dep)]
    precisions = {"weight_precision": dep.weight_precision, "kv_precision": dep.kv_precision}
    out = []
    for size in (2**i for i in range(13)):
        if size > dep.chips:
            break
        if dep.chips % size:
            continue
        replica = dep if size == dep.chips else layout(model, chip, size, ep=_int(case.ep, 1), **precisions)
        if plan_memory(model, chip, replica, 1, work.input_tokens + work.output_tokens).fits:
            out.append(Layout(replica, dep.chips // size))
    return out or [Layout(dep)]


def published_layout(tp: int, pp: int, dep: Deployment) -> Layout:
    """Instances of `tp` x `pp` chips filling the row's deployment, as its submitter ran them."""
    size = tp * pp
    if dep.chips % size:
        raise TokenfleetError(f"published instance of {size} chips (tp {tp} x pp {pp}) does not divide the row's {dep.chips} chips")
    return Layout(Deployment.model_validate({**dep.model_dump(), "chips": size, "tp": tp, "pp": pp, "ep": 1}), dep.chips // size)


def workload_for(case: Case) -> Workload:
    """The row's batch and lengths; unpublished ones take the documented defaults."""
    return Workload(
        batch=_int(case.batch, 1),
        input_tokens=_int(case.input_tokens, dataset_prompt_tokens(case) or DEFAULT_PROMPT_TOKENS),
        output_tokens=_int(case.output_tokens, DEFAULT_OUTPUT_TOKENS),
    )


METRICS: dict[str, Callable[[Prediction], float]] = {
    "e2e_s": lambda p: p.e2e_s,
    "ttft_s": lambda p: p.ttft_s,
    "tpot_s": lambda p: p.tpot_s,
    "total_tok_s": lambda p: p.total_tok_s,
    "output_tok_s_total": lambda p: p.output_tok_s_total,
    "output_tok_s_per_chip": lambda p: p.output_tok_s_per_chip,
    "output_tok_s_per_user": lambda p: p.output_tok_s_per_user,
}

#: Speed metrics (a measurement above the bound is impossible); the rest are times (below is).
SPEED_METRICS = ("total_tok_s", "output_tok_s_total", "output_tok_s_per_chip", "output_tok_s_per_user")


def beyond(metric: str, value: float, bound: float) -> bool:
    """`value` of `metric` is physically impossible against `bound` (faster than it)."""
    return value > bound if metric in SPEED_METRICS else value < bound


#: The physical bound of a deployment: every byte at peak bandwidth, every FLOP at peak compute,
#: no fixed overhead, and (see `free_links`) communication for free.
PEAK = Efficiency(mem_eff=1.0, compute_eff=1.0, layer_overhead_s=0.0, moe_layer_overhead_s=0.0, step_overhead_s=0.0, overlap=1.0)


def free_links(chip: ChipSpec) -> ChipSpec:
    """The chip with infinitely fast, zero-latency links: what the roofline bound assumes."""
    free = {"link_bytes_per_s": Figure(value=math.inf, source="roofline bound", date=""),
            "link_latency_s": Figure(value=0.0, source="roofline bound", date="")}
    return chip.model_copy(update={"figures": {**chip.figures, **free}})


SPECULATIVE = ("mtp", "eagle3", "draft")
#: Scenarios the cost model predicts alone (and calibration fits); the rest go through the simulator.
COST_MODEL_SCENARIOS = ("static", "per_user")
SERVED_SCENARIOS = ("throughput", "server")


@dataclass(frozen=True)
class Outcome:
    """A row's prediction, or why there is none."""

    case: Case
    family: str
    predicted: float | None
    reason: str = ""  # why there is no prediction, or what a prediction assumed
    deployment: str = ""
    bound: float | None = None  # the assumed deployment's physical bound on the metric (cost-model rows)

    @property
    def beyond_roofline(self) -> bool:
        """The measurement beats the assumed deployment's physical bound."""
        return self.bound is not None and beyond(self.case.metric, self.case.value, self.bound)

    @property
    def error(self) -> float | None:
        """Absolute percentage error as a fraction (0.1 = 10%)."""
        if self.predicted is None:
            return None
        return abs(self.predicted - self.case.value) / abs(self.case.value)

    @property
    def log_ratio(self) -> float | None:
        if self.predicted is None or self.predicted <= 0:
            return None
        return math.log(self.predicted / self.case.value)


@dataclass(frozen=True)
class PreparedCase:
    """A row resolved to model, chip, deployment and workload; only the efficiency varies."""

    case: Case
    model: ModelSpec
    chip: ChipSpec
    deployment: Deployment
    work: Workload
    stack: str = ""  # the software stack fitted apart that the row ran (see validation.stacks), or ""

    def predict(self, efficiency: Efficiency | None = None) -> float:
        return self.predict_with_layout(efficiency)[0]

    def roofline_bound(self) -> float | None:
        """The metric at this deployment's physical bound (PEAK efficiency, free links) for
        cost-model rows, None for served ones. A measurement beyond it (`beyond`) means the source
        used something the row does not say (speculative decoding, a lower precision, more chips)."""
        if self.case.scenario in SERVED_SCENARIOS:
            return None
        return dataclasses.replace(self, chip=free_links(self.chip)).predict(PEAK)

    def predict_with_layout(self, efficiency: Efficiency | None = None) -> tuple[float, str, str]:
        """The prediction, the layout it ran on (for served rows, possibly data parallel) and what
        the replay chose or took as published (a Server row's rate, the submitter's engine); by
        default with the fit of the row's own kind and stack, whatever `--stack` says."""
        if efficiency is None:
            efficiency = calibration_for(self.chip, self.stack).efficiency
        if self.case.scenario in SERVED_SCENARIOS:
            dataset = mlperf_dataset(self.case)
            known = self.case.input_tokens or dataset
            engine = engine_settings(self.case.id, self.case.hardware)
            sc = served_case(self.case.notes, self.case.scenario, self.work.input_tokens if known else None, self.work.output_tokens,
                             self.case.software, dataset or "", engine)
            lay = best_layout(self.model, self.chip, served_layouts(self.case, self.model, self.chip, self.work, self.deployment), sc, efficiency)
            summary = run_served(self.model, self.chip, lay, sc, efficiency, self.case.scenario)
            published = "engine: the submitter's published settings (validation/data/engine_settings.yaml)" if engine else ""
            replay = "; ".join(note for note in (server_rate_note(summary, sc), published) if note)
            return float(SERVED_METRICS[self.case.metric](summary, lay.chips)), lay.describe(), replay
        pred = predict_static(self.model, self.chip, self.deployment, self.work, efficiency)
        return METRICS[self.case.metric](pred), self.deployment.describe(), ""


def prepare_case(case: Case) -> PreparedCase | Outcome:
    """Resolve a row for the cost model, or say why the cost model alone cannot predict it."""
    family = ""
    try:
        chip = get_chip(case.hardware)
        family = chip.family
        if case.scenario not in (*COST_MODEL_SCENARIOS, *SERVED_SCENARIOS):
            return Outcome(case, family, None, f"unknown scenario '{case.scenario}'")
        if case.spec_decode in SPECULATIVE:
            return Outcome(case, family, None, f"uses speculative decoding ({case.spec_decode}) with unpublished acceptance rates")
        if case.metric not in (SERVED_METRICS if case.scenario in SERVED_SCENARIOS else METRICS):
            return Outcome(case, family, None, f"metric '{case.metric}' is not predicted")
        model = get_model(case.model)
        work = workload_for(case)
        return PreparedCase(case, model, chip, deployment_for(case, model, chip, work), work, stack_of(case, chip.kind))
    except (TokenfleetError, ValueError) as exc:
        return Outcome(case, family, None, _one_line(str(exc)))


def predict_case(case: Case, efficiency: dict[str, Efficiency] | None = None) -> Outcome:
    """Predict one row: with the cost model (static, per_user) or the simulator (throughput, server)."""
    prepared = prepare_case(case)
    if isinstance(prepared, Outcome):
        return prepared
    family = prepared.chip.family
    given = (efficiency or {}).get(family)
    try:
        value, described, replay = prepared.predict_with_layout(given)
        bound = prepared.roofline_bound()
    except (TokenfleetError, ValueError) as exc:
        return Outcome(case, family, None, _one_line(str(exc)))
    mean_prompt = dataset_prompt_tokens(case)
    notes = [f"lengths: drawn from the MLPerf dataset's distribution (mean prompt {mean_prompt} tokens)"] if mean_prompt else []
    notes += [replay] if replay else []
    if prepared.stack and given is None and prepared.chip.kind in fitted_stacks().get(prepared.stack, []):
        notes.append(f"efficiency: the {prepared.stack} stack's own fit (validation/data/stacks.yaml)")
    if bound is not None and beyond(case.metric, case.value, bound):
        notes.append("measured beats this deployment's roofline: implies speculative decoding, lower precision or more chips than assumed")
    return Outcome(case, family, value, "; ".join(notes), deployment=described, bound=bound)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:160]
