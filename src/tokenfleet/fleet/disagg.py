"""Disaggregated prefill/decode: prompts computed on one kind of chip, tokens generated on another,
the prompt's KV cache moved over the network in between.

The prefill pool is the serving simulator itself, run on the requests with one output token:
its first-token times are the requests' TTFT. Each request's KV cache (the model's bytes per
token x prompt tokens) then crosses the network at `kv_bandwidth_bytes_per_s` plus a fixed
latency. The decode pool is simulated here, because the serving simulator always computes a
request's prompt: decode engines admit requests whose KV has arrived, first come first served,
while the sequence cap and the KV cache (reserved for prompt + output at admission, so nothing
is ever preempted) allow, and advance all running sequences one token per step, costed by the
same step model. A pipelined decode replica is `pp` engines, each with 1/pp of its KV cache and
sequence cap, like the simulator's micro-batch slots.
"""

from __future__ import annotations

import io
import math
from collections import deque
from typing import Any

import numpy as np

from tokenfleet.catalog.chips import get_chip
from tokenfleet.catalog.models import get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.candidates import Candidate, Choice, Stage, StaticEstimate, deployments_for
from tokenfleet.fleet.capacity import capped_joules_per_token, energy_cap_j
from tokenfleet.fleet.plan_file import Disaggregated, Plan, TrafficClass
from tokenfleet.fleet.prices import ChipPrice
from tokenfleet.fleet.traffic import Records, class_stats, read_records
from tokenfleet.perf.efficiency import calibration_for
from tokenfleet.perf.precision import bytes_per_elem
from tokenfleet.perf.predict import Workload, predict_static
from tokenfleet.perf.step import STATIC_POWER_FRACTION, BatchShape, StepModel
from tokenfleet.serve.simulate import simulate
from tokenfleet.workload.traces import Trace

#: Most decode replicas paired with one prefill replica.
MAX_DECODE_PER_PREFILL = 64


class DecodeEngine:
    """Decode-only continuous batching on one engine; all running sequences advance together."""

    def __init__(self, cost: StepModel, kv_tokens: float, max_seqs: int):
        self.cost, self.kv_tokens, self.max_seqs = cost, kv_tokens, max_seqs
        self.waiting: deque[tuple[int, float, float]] = deque()  # (id, context, tokens to generate)
        self.ids: list[int] = []
        self.ctx = np.zeros(0)
        self.left = np.zeros(0)
        self.reserved = 0.0
        self.clock = self.busy_s = self.energy_j = 0.0
        self.finish: dict[int, float] = {}

    @property
    def outstanding(self) -> float:
        return float(self.left.sum()) + sum(w[2] for w in self.waiting)

    def add(self, rid: int, ready_s: float, context: float, tokens: float) -> None:
        if context + tokens > self.kv_tokens:
            raise TokenfleetError(f"request {rid} needs {context + tokens:,.0f} tokens of KV cache but one decode engine holds {self.kv_tokens:,.0f}")
        if not self.ids and not self.waiting:
            self.clock = max(self.clock, ready_s)
        self.waiting.append((rid, context, tokens))

    def _admit(self) -> None:
        while self.waiting and len(self.ids) < self.max_seqs and self.reserved + sum(self.waiting[0][1:]) <= self.kv_tokens:
            rid, context, tokens = self.waiting.popleft()
            self.ids.append(rid)
            self.ctx = np.append(self.ctx, context)
            self.left = np.append(self.left, tokens)
            self.reserved += context + tokens

    def run_until(self, t_limit: float) -> None:
        while (self.ids or self.waiting) and self.clock < t_limit:
            self._admit()
            self._advance(t_limit)

    def _advance(self, t_limit: float) -> None:
        """Run until the next completion (or past `t_limit`), costing the steps in one call."""
        n, k = len(self.ids), int(self.left.min())
        kv = self.ctx.sum() + n * np.arange(1, k + 1, dtype=float)
        window = n * min(self.cost.window, 1e18)
        t = self.cost.step(BatchShape(num_seqs=float(n), new_tokens=float(n), kv_tokens=kv, kv_tokens_window=np.minimum(kv, window),
                                      attn_pairs=kv, attn_pairs_window=np.minimum(kv, window)))
        dt = np.asarray(t.latency_s, dtype=float)
        starts = self.clock + np.concatenate(([0.0], np.cumsum(dt)[:-1]))
        steps = max(int(np.searchsorted(starts, t_limit, side="left")), 1) if math.isfinite(t_limit) else k
        self.ctx += steps
        self.left -= steps
        self.busy_s += float(dt[:steps].sum())
        self.energy_j += float(np.sum(np.asarray(t.energy_j)[:steps]))
        self.clock = float(starts[steps - 1] + dt[steps - 1])
        done = self.left <= 0
        for i in np.flatnonzero(done):
            self.finish[self.ids[i]] = self.clock
            self.reserved -= self.ctx[i]
        self.ids = [r for r, d in zip(self.ids, done, strict=True) if not d]
        self.ctx, self.left = self.ctx[~done], self.left[~done]


def decode_pool(cand: Candidate, replicas: int, ready_s: np.ndarray, context: np.ndarray, tokens: np.ndarray) -> tuple[dict[int, float], dict[str, float]]:
    """Finish time of every request (ids = positions) on `replicas` decode replicas."""
    stage = cand.stages[-1]
    chip, dep = get_chip(stage.chip_id), stage.deployment
    cost = StepModel(get_model(cand.model), chip, dep, calibration_for(chip).efficiency)
    per_engine_kv = cost.memory.kv_capacity_tokens / dep.pp
    engines = [DecodeEngine(cost, per_engine_kv, max(1, cand.scheduler.max_num_seqs // dep.pp)) for _ in range(replicas * dep.pp)]
    finish: dict[int, float] = {}
    for i in np.argsort(ready_s, kind="stable"):
        if tokens[i] <= 0:
            finish[int(i)] = float(ready_s[i])
            continue
        for e in engines:
            e.run_until(float(ready_s[i]))
        min(engines, key=lambda e: e.outstanding).add(int(i), float(ready_s[i]), float(context[i]), float(tokens[i]))
    for e in engines:
        e.run_until(math.inf)
        finish.update(e.finish)
    span = max(max(finish.values(), default=0.0) - float(ready_s.min(initial=0.0)), 1e-12)
    idle_j = sum(max(span - e.busy_s, 0.0) for e in engines) * dep.chips / dep.pp * chip.tdp_w * STATIC_POWER_FRACTION
    return finish, {"energy_j": sum(e.energy_j for e in engines) + idle_j, "busy_s": sum(e.busy_s for e in engines),
                    "span_s": span, "engines": float(len(engines))}


def simulate_disaggregated(cand: Candidate, trace: Trace, replicas: int, router: str, opts: Disaggregated) -> tuple[Records, dict[str, Any]]:
    """Per-request records and a summary for `replicas` prefill+decode groups of the candidate."""
    pre, dec = cand.stages
    model = get_model(cand.model)
    ones = np.ones(len(trace), dtype=np.int64)
    buf = io.StringIO()
    pre_summary = simulate(model, get_chip(pre.chip_id), pre.deployment, Trace(trace.name, trace.arrival_s, trace.input_tokens, ones, trace.prefix_blocks),
                           cand.scheduler, replicas=replicas * pre.replicas, router=router, requests_out=buf).summary
    first = read_records(buf)
    first_token_s = trace.arrival_s + first.ttft_s  # read_records sorts by id = trace position
    kv_bytes = np.array([model.kv_bytes(float(n), bytes_per_elem(pre.deployment.kv_precision)) for n in trace.input_tokens])
    ready_s = first_token_s + kv_bytes / opts.kv_bandwidth_bytes_per_s + opts.kv_latency_s
    tokens = np.maximum(trace.output_tokens - 1, 0).astype(float)
    finish, dec_stats = decode_pool(cand, replicas * dec.replicas, ready_s, trace.input_tokens + 1.0, tokens)
    finish_s = np.array([finish[i] for i in range(len(trace))])
    out = trace.output_tokens.astype(float)
    tpot = np.where(out > 1, (finish_s - first_token_s) / np.maximum(out - 1, 1), 0.0)
    records = Records(np.arange(len(trace)), trace.arrival_s.astype(float), first.ttft_s, tpot, finish_s - trace.arrival_s, out)
    out_tokens = max(float(out.sum()), 1.0)
    pre_chips = pre.chips * replicas
    pre_j = capped_joules_per_token(pre_summary, pre_chips, get_chip(pre.chip_id).tdp_w) * float(pre_summary["total_output_tokens"])
    dec_chips = dec.chips * replicas
    busy = dec_stats["busy_s"] / max(dec_stats["span_s"] * dec_stats["engines"], 1e-12)
    dec_j = min(dec_stats["energy_j"], energy_cap_j(dec_chips, get_chip(dec.chip_id).tdp_w, busy, dec_stats["span_s"]))
    energy = pre_j + dec_j
    duration = float(finish_s.max() - trace.arrival_s.min()) if len(trace) else 0.0
    return records, {"completed": len(trace), "duration_s": duration, "request_throughput": len(trace) / max(duration, 1e-12),
                     "output_throughput": out_tokens / max(duration, 1e-12), "joules_per_token": energy / out_tokens,
                     "utilisation": busy,
                     "prefill_utilisation": pre_summary["utilisation"], "total_output_tokens": out_tokens,
                     "preemptions": pre_summary["preemptions"], "mean_kv_occupancy": pre_summary["mean_kv_occupancy"]}


# --- candidates ------------------------------------------------------------------------------------
def _prefill_rate_per_s(cand: Candidate, mean_input: int) -> tuple[float, float]:
    """Static requests/s of one prefill replica (full token budget per step) and its $ per request."""
    stage = cand.stages[0]
    batch = max(1, cand.scheduler.max_num_batched_tokens // max(mean_input, 1))
    p = predict_static(get_model(cand.model), get_chip(stage.chip_id), stage.deployment, Workload(batch, mean_input, 2))
    return batch / p.ttft_s, p.ttft_s


def _cheapest_prefill(plan: Plan, cls: TrafficClass, model: str, prices: dict[str, ChipPrice]) -> Stage | None:
    """The (chip, smallest deployment) with the lowest static $ per prefilled request."""
    mean_input = max(int(class_stats(cls, plan.options.seed).mean_input_tokens), 1)
    longest = class_stats(cls, plan.options.seed).longest_tokens
    best: tuple[float, Stage] | None = None
    for entry in plan.hardware:
        deps, _ = deployments_for(get_model(model), get_chip(entry.chip), entry, longest)
        if not deps:
            continue
        stage = Stage(entry.chip, deps[0])
        try:
            rate, _ = _prefill_rate_per_s(Candidate(model, (stage,), plan.options.schedulers[0]), mean_input)
        except TokenfleetError:
            continue
        usd = prices[entry.chip].usd_per_chip_hour * deps[0].chips / rate
        if best is None or usd < best[0]:
            best = (usd, stage)
    return best[1] if best else None


def _pairs(plan: Plan, cls: TrafficClass, model: str, prices: dict[str, ChipPrice]) -> list[tuple[Stage, str]]:
    """(prefill stage, decode chip) pairs: the plan's, else the cheapest prefill chip with every other chip."""
    longest = class_stats(cls, plan.options.seed).longest_tokens
    out = []
    if plan.options.disaggregated.pairs:
        for pair in plan.options.disaggregated.pairs:
            entry = next((h for h in plan.hardware if h.chip == pair.prefill), None)
            deps = deployments_for(get_model(model), get_chip(pair.prefill), entry, longest)[0] if entry else []
            if deps:
                out.append((Stage(pair.prefill, deps[0]), pair.decode))
        return out
    pre = _cheapest_prefill(plan, cls, model, prices)
    return [(pre, h.chip) for h in plan.hardware if pre is not None and h.chip != pre.chip_id]


def disaggregated_choices(plan: Plan, classes: list[TrafficClass], prices: dict[str, ChipPrice], colocated: list[Choice]) -> list[Choice]:
    """One prefill+decode unit per (class, model, pair): the decode side is the class's best
    colocated deployment on the decode chip; decode replicas per prefill replica balance the
    static prefill and decode rates."""
    out = []
    for cls in classes:
        mean_input = max(int(class_stats(cls, plan.options.seed).mean_input_tokens), 1)
        for model in cls.models:
            for pre, decode_chip in _pairs(plan, cls, model, prices):
                decode = [ch for ch in colocated if ch.cls == cls.name and ch.candidate.model == model and ch.simulate
                          and ch.candidate.stages[0].chip_id == decode_chip]
                if not decode:
                    continue
                best = min(decode, key=lambda ch: ch.candidate.usd_per_hour(prices) / ch.estimate.rate_per_s)
                probe = Candidate(model, (pre,), best.candidate.scheduler)
                pre_rate, ttft_s = _prefill_rate_per_s(probe, mean_input)
                k = min(max(1, round(pre_rate / best.estimate.rate_per_s)), MAX_DECODE_PER_PREFILL)
                cand = Candidate(model, (pre, Stage(decode_chip, best.candidate.stages[0].deployment, k)), best.candidate.scheduler)
                est = StaticEstimate(min(pre_rate, k * best.estimate.rate_per_s), best.estimate.tpot_s, ttft_s)
                out.append(Choice(cls.name, cand, est, True))
    return out

