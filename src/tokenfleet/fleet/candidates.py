"""Candidate deployments: for each chip, model and precision, replicas from the smallest that
fits up to the plan's limit, with each scheduler setting; pruned by the static cost model so
only a few per (class, chip, model) reach the simulator.

Pruning, per class: a deployment whose batch-1 request at the goodput-target quantile already
misses a TTFT or TPOT bound can never meet it under load (queueing only adds), so its capacity
is 0 without simulation. Among the rest, one that is no faster per user and no cheaper per
request than another of the same chip and model is dominated; of the survivors the fastest per
user and the `candidates_per_chip - 1` cheapest per request are simulated, with every scheduler
setting of the plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tokenfleet.catalog.chips import ChipSpec, get_chip
from tokenfleet.catalog.models import ModelSpec, get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.plan_file import HardwareEntry, Plan, TrafficClass
from tokenfleet.fleet.prices import ChipPrice
from tokenfleet.fleet.traffic import ClassStats, bounds_of, class_stats
from tokenfleet.perf.auto import auto_deployment, layout
from tokenfleet.perf.deployment import HEAD_SPLIT_FAMILIES, Deployment
from tokenfleet.perf.memory import plan_memory
from tokenfleet.perf.precision import formats_label
from tokenfleet.perf.predict import Workload, predict_static
from tokenfleet.serve.config import SchedulerConfig

#: The smallest replica considered holds this many of the class's longest requests in KV cache
#: (larger replicas hold more; `tokenfleet simulate --chips auto` asks for 16).
KV_LONGEST_REQUESTS = 4
FAMILY_GROUP = {"nvidia": "gpu", "amd": "gpu", "tpu": "tpu", "sram": "sram"}


@dataclass(frozen=True)
class Stage:
    """Replicas of one deployment of one chip; a disaggregated candidate has two stages."""

    chip_id: str
    deployment: Deployment
    replicas: int = 1

    @property
    def chips(self) -> int:
        return self.deployment.chips * self.replicas


def _non_default(sched: SchedulerConfig) -> dict[str, Any]:
    """Scheduler settings other than chunk and seqs that differ from the defaults, flattened."""
    ours, default = sched.model_dump(), SchedulerConfig().model_dump()
    flat = {k: v for k, v in ours.items() if k not in ("max_num_batched_tokens", "max_num_seqs", "spec") and v != default[k]}
    flat |= {f"spec.{k}": v for k, v in ours["spec"].items() if ours["spec"]["draft_tokens"] and v != default["spec"][k]}
    return flat


@dataclass(frozen=True)
class Candidate:
    """One unit the optimiser may replicate: a replica (or a prefill + decode group)."""

    model: str
    stages: tuple[Stage, ...]
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)

    @property
    def disaggregated(self) -> bool:
        return len(self.stages) > 1

    @property
    def key(self) -> str:
        """Unique per candidate: two that differ in any deployment or scheduler setting differ here."""
        parts = [f"{s.replicas}x{s.chip_id}:{s.deployment.describe().replace(' ', '-')}" for s in self.stages]
        s = self.scheduler
        extra = "".join(f"-{k}={v}" for k, v in _non_default(s).items())
        return f"{self.model}|{'>'.join(parts)}|chunk{s.max_num_batched_tokens}-seqs{s.max_num_seqs}{extra}"

    @property
    def label(self) -> str:
        stages = " -> ".join(f"{f'{s.replicas}x ' if s.replicas > 1 else ''}{s.chip_id} {s.deployment.describe()}" for s in self.stages)
        prefix = "prefill " if self.disaggregated else ""
        spec = self.scheduler.spec
        drafts = f", spec {spec.draft_tokens} @ {spec.acceptance_rate:g}" if spec.draft_tokens else ""
        return f"{prefix}{stages} (chunk {self.scheduler.max_num_batched_tokens}, seqs {self.scheduler.max_num_seqs}{drafts})"

    @property
    def short(self) -> str:
        """Compact label for sweep tables: `b200 TP1 fp8 chunk512`."""
        def one(s: Stage) -> str:
            d = s.deployment
            return (f"{f'{s.replicas}x ' if s.replicas > 1 else ''}{s.chip_id} TP{d.tp}{f'xPP{d.pp}' if d.pp > 1 else ''}"
                    f"{' ADP' if d.attn_dp else ''} {d.weight_precision}")
        return " -> ".join(one(s) for s in self.stages) + f" chunk{self.scheduler.max_num_batched_tokens}"

    @property
    def chips_by_chip(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.stages:
            out[s.chip_id] = out.get(s.chip_id, 0) + s.chips
        return out

    @property
    def chips(self) -> int:
        return sum(s.chips for s in self.stages)

    def usd_per_hour(self, prices: dict[str, ChipPrice]) -> float:
        return sum(n * prices[chip].usd_per_chip_hour for chip, n in self.chips_by_chip.items())

    def describe(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "short": self.short, "model": self.model, "chips": self.chips,
                "stages": [{"chip": s.chip_id, "replicas": s.replicas, "deployment": s.deployment.model_dump()} for s in self.stages],
                "scheduler": {"max_num_batched_tokens": self.scheduler.max_num_batched_tokens, "max_num_seqs": self.scheduler.max_num_seqs}}


# --- feasible deployments -------------------------------------------------------------------------
def chip_counts(chip: ChipSpec, min_chips: int, max_chips: int | None) -> list[int]:
    """Powers of two on GPUs and TPUs (up to 8x the minimum); whole nodes on SRAM systems (up to 2x)."""
    if chip.family == "sram":
        node = max(int(chip.get("chips_per_node", 1)), 1)
        top = max_chips or 2 * min_chips
        counts = {-(-int(min_chips * f) // node) * node for f in (1.0, 1.25, 1.5, 2.0)}
        return sorted(c for c in counts if c <= top) or [min_chips]
    top = max_chips or 8 * min_chips
    return [min_chips * 2**i for i in range(14) if min_chips * 2**i <= top] or [min_chips]


def deployments_for(model: ModelSpec, chip: ChipSpec, entry: HardwareEntry, longest_tokens: int) -> tuple[list[Deployment], list[str]]:
    """Every replica shape of `model` on `chip` the plan allows, smallest first (MoE models also
    with expert parallelism over the TP group, and on GPUs with attention data parallelism, which
    their serving engines offer); and notes on precisions that do not fit."""
    out: list[Deployment] = []
    notes: list[str] = []
    for prec, kv in entry.formats():
        precs = {"weight_precision": prec, "kv_precision": kv}
        fmt = formats_label(prec, kv)
        try:
            smallest = auto_deployment(model, chip, KV_LONGEST_REQUESTS, longest_tokens, weight_precision=prec, kv_precision=kv)
        except TokenfleetError as exc:
            notes.append(f"{chip.id} {fmt}: {model.name}: {exc}")
            continue
        if entry.max_chips_per_replica is not None and smallest.chips > entry.max_chips_per_replica:
            notes.append(f"{chip.id} {fmt}: {model.name} with KV for {KV_LONGEST_REQUESTS} of its longest requests needs "
                         f"{smallest.chips} chips per replica; max_chips_per_replica is {entry.max_chips_per_replica}")
            continue
        for n in chip_counts(chip, smallest.chips, entry.max_chips_per_replica):
            dense = layout(model, chip, n, 1, **precs)
            expert = layout(model, chip, n, n, **precs)  # MoE: experts spread over the whole TP group
            out += [dense] + ([expert] if model.is_moe and expert != dense else [])
            if model.is_moe and n > 1 and chip.family in HEAD_SPLIT_FAMILIES:
                out.append(expert.model_copy(update={"attn_dp": True}))
    return out, notes


# --- static estimates -------------------------------------------------------------------------
@dataclass(frozen=True)
class StaticEstimate:
    """The cost model's view of one deployment serving one class, before any simulation."""

    rate_per_s: float  # requests/s one replica sustains within the TPOT bound (0: cannot meet the SLOs)
    tpot_s: float  # batch-1 time per output token
    ttft_s: float  # batch-1 time to first token of the target-quantile prompt
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate_per_s, "tpot_ms": self.tpot_s * 1e3, "ttft_ms": self.ttft_s * 1e3, "reason": self.reason}


def _upper_bounds_s(cls: TrafficClass, metric: str) -> float:
    limits = [b.limit_s for b in bounds_of(cls.slo_bounds()) if b.metric == metric and b.op.startswith("<")]
    return min(limits, default=math.inf)


def _max_sequences(model: ModelSpec, chip: ChipSpec, dep: Deployment, context_tokens: int, sched: SchedulerConfig) -> int:
    """Sequences of `context_tokens` whose KV cache fits beside the weights, by the engine's rule."""
    mem = plan_memory(model, chip, dep, budget=sched.kv_budget())
    room = mem.kv_capacity_tokens
    return int(room // max(context_tokens + mem.state_tokens_per_seq, 1)) if math.isfinite(room) else 1 << 30


def static_estimate(model: ModelSpec, chip: ChipSpec, dep: Deployment, sched: SchedulerConfig, cls: TrafficClass, stats: ClassStats) -> StaticEstimate:
    """Largest static batch (powers of two up to the sequence cap) whose TPOT meets the bound,
    as requests/s; 0 with a reason when even one request alone misses a bound. A pipelined
    replica keeps `pp` such batches in flight, as the simulator's micro-batch engines do; a
    scheduler with speculative decoding is estimated with it, as it will be simulated."""
    ttft_bound, tpot_bound = _upper_bounds_s(cls, "ttft"), _upper_bounds_s(cls, "tpot")
    inp, out = max(int(stats.mean_input_tokens), 1), max(int(stats.mean_output_tokens), 2)
    try:
        alone = predict_static(model, chip, dep, Workload(1, max(int(stats.quantile_input_tokens), 1), out), spec=sched.spec)
    except TokenfleetError as exc:
        return StaticEstimate(0.0, math.inf, math.inf, str(exc))
    if alone.ttft_s > ttft_bound * 1.02:
        return StaticEstimate(0.0, alone.tpot_s, alone.ttft_s, f"alone, a {stats.quantile_input_tokens:.0f}-token prompt takes {alone.ttft_s * 1e3:.4g} ms to first token (bound {ttft_bound * 1e3:g})")
    if alone.tpot_s > tpot_bound * 1.02:
        return StaticEstimate(0.0, alone.tpot_s, alone.ttft_s, f"alone, TPOT is {alone.tpot_s * 1e3:.4g} ms (bound {tpot_bound * 1e3:g})")
    seats = min(_max_sequences(model, chip, dep, inp + out, sched), sched.max_num_seqs)
    best, batch = 0.0, 1
    while batch <= seats:
        try:
            p = predict_static(model, chip, dep, Workload(batch, inp, out), spec=sched.spec)
        except TokenfleetError:
            break
        if p.tpot_s > tpot_bound:
            break
        best = max(best, min(batch * dep.pp, seats) / p.e2e_s)
        batch *= 2
    why = "" if best > 0 else f"no room for one {inp + out}-token request beside the weights"
    return StaticEstimate(best, alone.tpot_s, alone.ttft_s, why)


# --- per-class selection -------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """A candidate for one class with its static estimate; `simulate` false when pruned."""

    cls: str
    candidate: Candidate
    estimate: StaticEstimate
    simulate: bool
    pruned: str = ""


def _dominated(a: tuple[float, float], others: list[tuple[float, float]]) -> bool:
    """(tpot, usd per request): no faster and no cheaper than some other, strictly worse in one."""
    return any(o[0] <= a[0] and o[1] <= a[1] and o != a for o in others)


def _chosen_deployments(scores: dict[str, tuple[float, float]], keep: int) -> set[str]:
    """Of the non-dominated deployments, the `keep - 1` cheapest per request and the fastest per user."""
    front = sorted((k for k, v in scores.items() if not _dominated(v, list(scores.values()))), key=lambda k: (scores[k][1], k))
    chosen = set(front[: max(keep - 1, 1)])
    if keep > 1 and front:
        chosen.add(min(front, key=lambda k: (scores[k][0], scores[k][1], k)))
    return chosen


def _select(cls: TrafficClass, group: list[tuple[Candidate, StaticEstimate]], usd: dict[str, float], keep: int) -> list[Choice]:
    """Mark which candidates of one (chip, model) are simulated for `cls`; the rest say why not."""
    scores: dict[str, tuple[float, float]] = {}
    for c, e in group:
        if e.rate_per_s > 0:
            dep = c.stages[0].deployment.describe()
            score = (e.tpot_s, usd[c.key] / e.rate_per_s)
            scores[dep] = min(scores.get(dep, score), score)
    chosen = _chosen_deployments(scores, keep)
    out = []
    for c, e in group:
        picked = c.stages[0].deployment.describe() in chosen
        why = e.reason if e.rate_per_s <= 0 else ("" if picked else "dominated, or neither among the cheapest nor the fastest by the static cost model")
        out.append(Choice(cls.name, c, e, picked and e.rate_per_s > 0, why))
    return out


def class_choices(plan: Plan, cls: TrafficClass, prices: dict[str, ChipPrice], notes: list[str] | None = None) -> list[Choice]:
    """Every candidate of every allowed (chip, model) for one class, marked simulate or pruned;
    chips on which the model does not fit are explained in `notes`."""
    stats = class_stats(cls, plan.options.seed)
    choices: list[Choice] = []
    for entry in plan.hardware:
        chip = get_chip(entry.chip)
        for model_name in cls.models:
            model = get_model(model_name)
            if stats.longest_tokens > model.context_window_tokens:
                if notes is not None and (refused := _too_long(cls, model, stats)) not in notes:
                    notes.append(refused)
                continue
            longest = max(n for c in plan.classes if model_name in c.models
                          if (n := class_stats(c, plan.options.seed).longest_tokens) <= model.context_window_tokens)
            group = []
            deps, why = deployments_for(model, chip, entry, longest)
            if notes is not None:
                notes += [n for n in why if n not in notes]
            for dep in deps:
                for sched in entry.schedulers or plan.options.schedulers:
                    cand = Candidate(model_name, (Stage(chip.id, dep),), sched)
                    group.append((cand, static_estimate(model, chip, dep, sched, cls, stats)))
            usd = {c.key: c.usd_per_hour(prices) for c, _ in group}
            choices += _select(cls, group, usd, plan.options.candidates_per_chip)
    return choices


def _too_long(cls: TrafficClass, model: ModelSpec, stats: ClassStats) -> str:
    return (f"class {cls.name}: {model.name} not considered: its {model.max_context_tokens:,}-token context is shorter than the "
            f"class's longest request ({stats.longest_tokens:,} tokens), which engines refuse")
