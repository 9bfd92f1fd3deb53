"""The plan file: traffic classes with their SLOs, candidate hardware, prices, limits, options.

Every field has a type, a bound and a description; `load_plan` turns the first validation error
into one line that names the field path and says what to write instead, e.g.
`plan.yaml: classes[1].slo.p99_ttft_ms: '<=abc' must look like '<=500' (milliseconds)`.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tokenfleet.catalog.chips import get_chip
from tokenfleet.catalog.models import get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.precision import check_precision, default_kv_precision
from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.metrics import parse_slo
from tokenfleet.workload.lengths import LengthDist

FROZEN = ConfigDict(frozen=True, extra="forbid")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


# --- small validated types ----------------------------------------------------------------
def _chip_id(name: str) -> str:
    return get_chip(name).id  # unknown ids raise with the catalog's close-match suggestion


def _model_name(name: str) -> str:
    get_model(name)
    return name


def _slo_key(key: str) -> str:
    if key.split("_")[1:2] == ["itl"]:
        raise ValueError(f"{key!r}: inter-token-latency bounds are not per request; bound tpot instead (e.g. p50_tpot_ms)")
    parse_slo({key: "<=1"})
    return key


def _slo_bound(cond: str) -> str:
    text = str(cond).strip()
    op = next((o for o in ("<=", ">=", "<", ">") if text.startswith(o)), None)
    try:
        value = float(text[len(op or ""):])
    except ValueError:
        op = None
    if op is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{cond!r} must look like '<=500' (milliseconds)")
    return f"{op}{value:g}"


ChipId = Annotated[str, AfterValidator(_chip_id)]
ModelName = Annotated[str, AfterValidator(_model_name)]
SloKey = Annotated[str, AfterValidator(_slo_key)]
SloBound = Annotated[str, AfterValidator(_slo_bound)]


# --- traffic --------------------------------------------------------------------------------
class Lengths(BaseModel):
    """Prompt and output lengths: a trace's pairs, or one distribution (or fixed count) each."""

    model_config = FROZEN
    trace: str | None = Field(default=None, description="azure-code, azure-conv, mooncake-conv, or a trace file whose (input, output) pairs are sampled")
    input_tokens: int | LengthDist | None = Field(default=None, description="prompt tokens: a fixed count or {distribution, mean, cv, min, max}")
    output_tokens: int | LengthDist | None = Field(default=None, description="generated tokens: a fixed count or {distribution, mean, cv, min, max}")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"trace": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _check(self) -> Lengths:
        given = (self.input_tokens is not None, self.output_tokens is not None)
        if self.trace is None and given != (True, True):
            raise ValueError("give a trace name, or both input_tokens and output_tokens")
        if self.trace is not None and any(given):
            raise ValueError("give either a trace or input_tokens/output_tokens, not both")
        for name in ("input_tokens", "output_tokens"):
            value = getattr(self, name)
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{name} must be at least 1")
        return self


class PrefixSharing(BaseModel):
    """Prompts that start with a shared prefix (system prompt, repository context): the first
    `shared_tokens` of each prompt are one of `groups` prefixes, so prefix caching can reuse them."""

    model_config = FROZEN
    shared_tokens: int = Field(ge=1, le=1_000_000, description="tokens at the start of each prompt shared with its group")
    groups: int = Field(default=1, ge=1, le=1_000_000, description="distinct shared prefixes (requests pick one uniformly)")


class TrafficClass(BaseModel):
    """One kind of traffic: how much, how long, and the SLOs its users pay for."""

    model_config = FROZEN
    name: str = Field(pattern=NAME_PATTERN, description="short name used in tables and sweep paths, e.g. coding")
    rate_per_s: float | None = Field(default=None, ge=0, le=1e6, description="mean arrival rate in requests per second")
    share: float | None = Field(default=None, ge=0, le=1, description="share of the plan's total_rate_per_s (0-1)")
    arrivals: Literal["poisson", "trace"] = Field(default="poisson", description="poisson, or trace: replay the trace's own (bursty) arrival times")
    trace: str | None = Field(default=None, description="trace for arrivals: and for lengths when none are given")
    rate_scale: float | None = Field(default=None, gt=0, le=1e6, description="with trace: replay the trace this many times faster; rate = the trace's rate x rate_scale")
    lengths: Lengths | None = Field(default=None, description="trace name, or {input_tokens, output_tokens}; default: the class's trace")
    prefix_sharing: PrefixSharing | None = Field(default=None, description="shared prompt prefixes, if known: {shared_tokens, groups}")
    slo: dict[SloKey, SloBound] = Field(default_factory=dict, description="bounds in the simulator's form, e.g. {p99_ttft_ms: '<=300', p50_tpot_ms: '<=20'}")
    min_tok_s_per_user: float | None = Field(default=None, gt=0, le=1e6, description="output tokens/s each user must see; becomes p50_tpot_ms <= 1000/x")
    goodput_target: float = Field(default=0.99, gt=0, le=1, description="share of requests that must meet every SLO bound (0-1]")
    models: list[ModelName] = Field(min_length=1, description="models that may serve this class (catalog names or config.json paths)")

    @field_validator("models", mode="before")
    @classmethod
    def _one_model(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> TrafficClass:
        sources = [self.rate_per_s is not None, self.share is not None, self.rate_scale is not None]
        if sum(sources) != 1:
            raise ValueError("give exactly one of rate_per_s, share (of total_rate_per_s) or rate_scale (with trace)")
        if (self.rate_scale is not None or self.arrivals == "trace") and self.trace is None:
            raise ValueError("rate_scale and arrivals: trace need a trace (e.g. trace: azure-code)")
        if self.lengths is None and self.trace is None:
            raise ValueError("give lengths (a trace name or {input_tokens, output_tokens}) or a trace")
        if not self.slo_bounds():
            raise ValueError("give at least one SLO bound (e.g. slo: {p99_ttft_ms: '<=1000'}) or min_tok_s_per_user")
        return self

    def slo_bounds(self) -> dict[str, str]:
        """The SLO dict the simulator understands, with `min_tok_s_per_user` as a TPOT bound."""
        bounds = dict(self.slo)
        if self.min_tok_s_per_user is not None:
            ms = 1000.0 / self.min_tok_s_per_user
            old = bounds.get("p50_tpot_ms")
            if old is None or float(old.lstrip("<=>")) > ms:
                bounds["p50_tpot_ms"] = f"<={ms:.6g}"
        return dict(sorted(bounds.items()))

    def length_source(self) -> Lengths:
        return self.lengths if self.lengths is not None else Lengths(trace=self.trace)


# --- hardware, prices, limits -------------------------------------------------------------------
class HardwareEntry(BaseModel):
    """A chip the planner may use, and how far a replica of it may grow."""

    model_config = FROZEN
    chip: ChipId = Field(description="catalog chip id, e.g. h200-sxm")
    max_chips_per_replica: int | None = Field(default=None, ge=1, le=16384, description="largest replica in chips (default: 8x the smallest that fits on GPUs/TPUs, 2x on SRAM systems)")
    precisions: list[str] = Field(default_factory=lambda: ["bf16"], min_length=1, description="weight formats allowed: bf16, fp8, int8, fp4, int4, mxfp4")
    kv_precisions: list[str] | None = Field(default=None, min_length=1, description="KV-cache formats to try with each weight format (default: fp8 with 8-bit or narrower weights, else bf16)")
    price_usd_per_chip_hour: float | None = Field(default=None, gt=0, le=1e6, description="override the catalog / TCO price, $ per chip-hour")
    capex_usd_per_chip: float | None = Field(default=None, gt=0, le=1e9, description="purchase price per chip for prices.basis: tco")
    schedulers: list[SchedulerConfig] | None = Field(default=None, min_length=1, description="scheduler settings for this chip (default: options.schedulers)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"chip": data} if isinstance(data, str) else data

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, value: list[str]) -> list[str]:
        return [check_precision(p, "precision") for p in value]

    @field_validator("kv_precisions")
    @classmethod
    def _kv_precisions(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_precision(p, "KV precision") for p in value]

    def formats(self) -> list[tuple[str, str]]:
        """(weight, KV) format pairs to try, each weight format with its default cache if none are listed."""
        return [(w, kv) for w in self.precisions for kv in (self.kv_precisions or [default_kv_precision(w)])]


class TcoSpec(BaseModel):
    """Owning instead of renting (see catalog/pricing.py for the defaults' sources)."""

    model_config = FROZEN
    years: float = Field(default=4.0, gt=0, le=30, description="straight-line amortisation period")
    usd_per_kwh: float = Field(default=0.10, ge=0, le=10, description="electricity price at the wall")
    pue: float = Field(default=1.3, ge=1, le=5, description="data-centre power usage effectiveness")
    utilisation: float = Field(default=0.7, ge=0, le=1, description="average draw as a share of the catalog TDP")
    overhead_factor: float = Field(default=1.5, ge=1, le=10, description="host, network, facility and staff on top of the chip capex")


class Prices(BaseModel):
    """Where $/chip-hour comes from; per-chip overrides win over both bases."""

    model_config = FROZEN
    basis: Literal["cloud", "tco"] = Field(default="cloud", description="cloud: catalog on-demand price (TCO where none); tco: capex amortised plus power")
    tco: TcoSpec = Field(default_factory=TcoSpec, description="TCO assumptions: years, usd_per_kwh, pue, utilisation, overhead_factor")
    usd_per_chip_hour: dict[ChipId, float] = Field(default_factory=dict, description="price overrides by chip id, $ per chip-hour")
    capex_usd_per_chip: dict[ChipId, float] = Field(default_factory=dict, description="capex overrides by chip id for basis: tco, $")

    @field_validator("usd_per_chip_hour", "capex_usd_per_chip")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for chip, price in value.items():
            if not price > 0:
                raise ValueError(f"{chip}: {price} must be a positive number of dollars")
        return value


class Limits(BaseModel):
    """Optional constraints on the fleet."""

    model_config = FROZEN
    max_share_per_vendor: float | None = Field(default=None, gt=0, le=1, description="largest share of the fleet's $/hour one vendor may take (0-1]")
    chips_available: dict[ChipId, int] = Field(default_factory=dict, description="chips of each kind that can be had, by chip id")

    @field_validator("chips_available")
    @classmethod
    def _non_negative(cls, value: dict[str, int]) -> dict[str, int]:
        for chip, count in value.items():
            if count < 0:
                raise ValueError(f"{chip}: {count} must be a count of chips, 0 or more")
        return value


# --- options ------------------------------------------------------------------------------
class VerifyOptions(BaseModel):
    """How the chosen fleet is simulated as a whole before it is reported."""

    model_config = FROZEN
    min_requests_per_replica: int = Field(default=200, ge=10, le=1_000_000, description="simulated requests per replica of each deployment (at least)")
    min_duration_s: float = Field(default=600.0, ge=0, le=86_400, description=(
        "arrivals simulated per deployment, in seconds (at least; within max_requests): a load a few "
        "percent above capacity takes minutes to show (MLPerf runs 600 s)"))
    max_requests: int = Field(default=20000, ge=100, le=10_000_000, description="cap on simulated requests per deployment")
    max_rounds: int = Field(default=8, ge=1, le=30, description="tighten-and-resolve rounds before giving up")
    tighten_factor: float = Field(default=0.9, gt=0, lt=1, description="capacity scale applied to a (class, deployment) that missed its target")
    router: Literal["round-robin", "least-outstanding-tokens", "prefix-affinity"] = Field(default="least-outstanding-tokens", description="router among a deployment's replicas (prefix-affinity: sglang-router's cache-aware policy)")


class DisaggPair(BaseModel):
    """Prefill on one kind of chip, decode on another."""

    model_config = FROZEN
    prefill: ChipId = Field(description="chip id that computes prompts")
    decode: ChipId = Field(description="chip id that generates tokens")


class Disaggregated(BaseModel):
    """Disaggregated prefill/decode: the prompt's KV cache moves over the network."""

    model_config = FROZEN
    enabled: bool = Field(default=False, description="also consider prefill on one chip, decode on another")
    kv_bandwidth_bytes_per_s: float = Field(default=50e9, gt=0, le=1e15, description="network bandwidth per transfer (400 Gb/s RDMA = 50e9)")
    kv_latency_s: float = Field(default=1e-3, ge=0, le=10, description="fixed cost per transfer (connection set-up, metadata)")
    pairs: list[DisaggPair] = Field(default_factory=list, description="pairs to try; default: the cheapest prefill chip with every other chip")


class Options(BaseModel):
    """Search effort and features."""

    model_config = FROZEN
    requests_per_search: int = Field(default=1000, ge=50, le=1_000_000, description="simulated requests per capacity probe (at least 10 / (1 - goodput_target) are used)")
    seed: int = Field(default=0, ge=0, description="seed of every random draw")
    probe_timeout_s: float | None = Field(default=None, gt=0, le=86400, description="wall seconds one capacity probe may run before it counts as failed (a guard for huge probes; it makes results depend on machine speed); null: no limit")
    capacity_tolerance: float = Field(default=0.05, ge=0.005, le=0.5, description="bisection stops when hi/lo <= 1 + this")
    candidates_per_chip: int = Field(default=2, ge=1, le=64, description="deployments per (class, chip, model) simulated: the fastest per user and the cheapest per request by the static cost model")
    schedulers: list[SchedulerConfig] = Field(default_factory=lambda: [SchedulerConfig()], min_length=1, description="scheduler settings tried on each deployment: {max_num_batched_tokens, max_num_seqs, ...}")
    verify: VerifyOptions = Field(default_factory=VerifyOptions, description="whole-fleet verification")
    disaggregated: Disaggregated = Field(default_factory=Disaggregated, description="disaggregated prefill/decode")


class Plan(BaseModel):
    """A fleet-planning problem."""

    model_config = FROZEN
    name: str = Field(default="plan", description="a label for reports")
    description: str = Field(default="", description="free text")
    total_rate_per_s: float | None = Field(default=None, ge=0, le=1e7, description="requests per second over all classes that use share")
    classes: list[TrafficClass] = Field(min_length=1, description="traffic classes")
    hardware: list[HardwareEntry] = Field(min_length=1, description="chips the planner may use: ids or {chip, max_chips_per_replica, precisions, price_usd_per_chip_hour}")
    prices: Prices = Field(default_factory=Prices, description="price basis and overrides")
    limits: Limits = Field(default_factory=Limits, description="max_share_per_vendor, chips_available")
    options: Options = Field(default_factory=Options, description="search effort and features")

    @model_validator(mode="after")
    def _check(self) -> Plan:
        _unique([c.name for c in self.classes], "classes", "class name")
        _unique([h.chip for h in self.hardware], "hardware", "chip")
        shares = [c.share for c in self.classes if c.share is not None]
        if shares and self.total_rate_per_s is None:
            raise ValueError("classes use share: give total_rate_per_s")
        if shares and len(shares) == len(self.classes) and abs(sum(shares) - 1) > 1e-6:
            raise ValueError(f"the classes' shares add up to {sum(shares):g}; make them add up to 1")
        chips = {h.chip for h in self.hardware}
        for where, table in (("prices.usd_per_chip_hour", self.prices.usd_per_chip_hour), ("prices.capex_usd_per_chip", self.prices.capex_usd_per_chip),
                             ("limits.chips_available", self.limits.chips_available)):
            for chip in table:
                if chip not in chips:
                    raise ValueError(f"{where}: {chip} is not in hardware ({', '.join(sorted(chips))})")
        return self

    def entry(self, chip_id: str) -> HardwareEntry:
        return next(h for h in self.hardware if h.chip == chip_id)


def _unique(names: list[str], where: str, what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{where}: {what} {name!r} appears twice")
        seen.add(name)


# --- loading ----------------------------------------------------------------------------------
def load_plan(path: str | Path) -> tuple[Plan, dict[str, Any]]:
    """Read and validate a plan file; returns the plan and its raw data (for sweeps)."""
    p = Path(path)
    if not p.is_file():
        raise TokenfleetError(f"plan file {str(p)!r} not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise TokenfleetError(f"{p.name}: not valid YAML: {where}{getattr(exc, 'problem', None) or exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenfleetError(f"{p.name}: unreadable: {exc}") from None
    if not isinstance(raw, dict):
        raise TokenfleetError(f"{p.name}: expected a mapping with classes: and hardware:, got {type(raw).__name__}")
    return parse_plan(raw, p.name), raw


def parse_plan(raw: dict[str, Any], source: str = "plan") -> Plan:
    """Validate plan data; the first error becomes one line naming the field path."""
    try:
        return Plan.model_validate(raw)
    except ValidationError as exc:
        raise TokenfleetError(f"{source}: {format_error(exc)}") from None


def format_error(exc: ValidationError) -> str:
    """The most specific error as `path: what is wrong (what the field expects)`."""
    errors = exc.errors()
    err = max(errors, key=lambda e: len(_clean_loc(e["loc"])))
    loc = _clean_loc(err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if err["type"] == "extra_forbidden":
        return f"{_path(loc)}: {_unknown_field(loc)}"
    if err["type"] == "missing":
        hint = _describe(loc)
        return f"{_path(loc)}: missing" + (f"; give {hint}" if hint else "")
    if err["type"] in ("value_error", "assertion_error"):
        return f"{_path(loc)}: {msg}" if loc else msg
    hint = _describe(loc)
    return f"{_path(loc)}: {msg}, got {err.get('input')!r}" + (f" ({hint})" if hint else "")


_TAG = re.compile(r"^([A-Z]\w*|int|str|float|bool|list|dict|none|literal\[.*\]|function-\w+\[.*\]|\[key\])$")


def _clean_loc(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    return tuple(p for p in loc if not (isinstance(p, str) and _TAG.match(p)))


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "plan"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the last field of `loc`."""
    cls: type[BaseModel] | None = Plan
    for part in loc[:-1]:
        if isinstance(part, int) or cls is None:
            continue
        field = cls.model_fields.get(part)
        cls = _inner_model(field.annotation) if field is not None else None
    return cls


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, dict, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def _describe(loc: tuple[int | str, ...]) -> str:
    cls = _model_at(loc)
    name = next((p for p in reversed(loc) if isinstance(p, str)), None)
    if cls is None or name is None or name not in cls.model_fields:
        return ""
    return cls.model_fields[name].description or ""


def _unknown_field(loc: tuple[int | str, ...]) -> str:
    cls = _model_at(loc)
    name = str(loc[-1]) if loc else ""
    if cls is None:
        return f"unknown field {name!r}"
    known = sorted(cls.model_fields)
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field {name!r}: {hint}choose from {', '.join(known)}"
