"""Disaggregated prefill/decode: prompts computed on one kind of chip, tokens generated on another,
the prompt's KV cache moved over the network in between.

Both pools are the serving simulator. The prefill pool runs the requests with one output
token: its first-token times are the requests' TTFT. Each request's KV cache (the model's bytes
per token x prompt tokens) then crosses the network at `kv_bandwidth_bytes_per_s` plus a fixed
latency, and the decode pool runs the requests as arriving at that moment with their prompt's
KV resident: they only decode, batched, capped and preempted like any others there.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from tokenfleet.catalog.chips import get_chip
from tokenfleet.catalog.models import get_model
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.candidates import Candidate, Choice, Stage, StaticEstimate, deployments_for
from tokenfleet.fleet.plan_file import Disaggregated, Plan, TrafficClass
from tokenfleet.fleet.prices import ChipPrice
from tokenfleet.fleet.traffic import Records, class_stats, read_records
from tokenfleet.perf.memory import state_bytes_per_elem
from tokenfleet.perf.precision import bytes_per_elem
from tokenfleet.perf.predict import Workload, predict_static
from tokenfleet.serve.simulate import simulate
from tokenfleet.workload.traces import Trace

#: Most decode replicas paired with one prefill replica.
MAX_DECODE_PER_PREFILL = 64


def decode_pool(cand: Candidate, replicas: int, ready_s: np.ndarray, prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                router: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Finish time of every request (by position) on `replicas` decode replicas: the serving
    simulator on requests that arrive, when their KV has landed, with their prompt's cache."""
    stage = cand.stages[-1]
    finish_s = ready_s.astype(float).copy()  # a one-token request is done where its prompt ran
    go = np.flatnonzero(output_tokens > 1)
    go = go[np.argsort(ready_s[go], kind="stable")]
    if not len(go):
        return finish_s, {"energy_j": 0.0, "utilisation": 0.0}
    trace = Trace("decode", ready_s[go].astype(float), prompt_tokens[go], output_tokens[go])
    buf = io.StringIO()
    summary = simulate(get_model(cand.model), get_chip(stage.chip_id), stage.deployment, trace, cand.scheduler,
                       replicas=replicas, router=router, requests_out=buf, kv_resident=np.ones(len(go), dtype=bool)).summary
    done = read_records(buf)  # ids are positions in the decode trace
    finish_s[go[done.ids]] = trace.arrival_s[done.ids] + done.e2el_s
    return finish_s, summary


def simulate_disaggregated(cand: Candidate, trace: Trace, replicas: int, router: str, opts: Disaggregated) -> tuple[Records, dict[str, Any]]:
    """Per-request records and a summary for `replicas` prefill+decode groups of the candidate."""
    pre, dec_stage = cand.stages
    model = get_model(cand.model)
    ones = np.ones(len(trace), dtype=np.int64)
    buf = io.StringIO()
    pre_summary = simulate(model, get_chip(pre.chip_id), pre.deployment, Trace(trace.name, trace.arrival_s, trace.input_tokens, ones, trace.prefix_blocks),
                           cand.scheduler, replicas=replicas * pre.replicas, router=router, requests_out=buf).summary
    first = read_records(buf)
    first_token_s = trace.arrival_s + first.ttft_s  # read_records sorts by id = trace position
    state_bytes = model.state_bytes(state_bytes_per_elem(pre.deployment))  # linear-attention state moves too
    kv_bytes = np.array([model.kv_bytes(float(n), bytes_per_elem(pre.deployment.kv_precision)) for n in trace.input_tokens]) + state_bytes
    ready_s = first_token_s + kv_bytes / opts.kv_bandwidth_bytes_per_s + opts.kv_latency_s
    ready_s = np.where(trace.output_tokens > 1, ready_s, first_token_s)
    finish_s, dec = decode_pool(cand, replicas * dec_stage.replicas, ready_s, trace.input_tokens, trace.output_tokens, router)
    out = trace.output_tokens.astype(float)
    tpot = np.where(out > 1, (finish_s - first_token_s) / np.maximum(out - 1, 1), 0.0)
    records = Records(np.arange(len(trace)), trace.arrival_s.astype(float), first.ttft_s, tpot, finish_s - trace.arrival_s, out)
    out_tokens = max(float(out.sum()), 1.0)
    energy = float(pre_summary["energy_j"]) + float(dec["energy_j"])
    duration = float(finish_s.max() - trace.arrival_s.min()) if len(trace) else 0.0
    return records, {"completed": len(trace), "duration_s": duration, "request_throughput": len(trace) / max(duration, 1e-12),
                     "output_throughput": out_tokens / max(duration, 1e-12), "joules_per_token": energy / out_tokens,
                     "utilisation": dec["utilisation"],
                     "prefill_utilisation": pre_summary["utilisation"], "total_output_tokens": out_tokens,
                     "preemptions": pre_summary["preemptions"] + dec.get("preemptions", 0),
                     "mean_kv_occupancy": pre_summary["mean_kv_occupancy"]}


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

