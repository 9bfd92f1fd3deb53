"""`throughput` and `server` rows, predicted through the serving simulator.

None of these rows is used to fit the efficiencies (calibration sees only `static` and
`per_user` rows), so their error is an out-of-sample test of cost model and simulator together.
How each scenario is replayed (see the data README for the scenario definitions):

* `throughput`: every request present at t = 0, served by continuous batching until the last
  finishes; a client `max_concurrency=N` or server `max_num_seqs=N` in the notes caps the
  running sequences.
* `server`: Poisson arrivals at the row's `target_qps`; where the rate was not transcribed, the
  highest rate whose p99 TTFT and p99 TPOT meet the row's SLO, found by bisection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.step import Efficiency
from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.simulate import simulate
from tokenfleet.workload.traces import Trace

#: Requests simulated per row: the row's own count where its notes give one, capped here
#: (the steady state of a saturated run is reached well before).
MAX_REQUESTS = 4000
DEFAULT_REQUESTS = 3000

#: Engine settings where a row publishes none: TensorRT-LLM's default max_num_tokens (8,192) and a
#: batch cap high enough that the KV cache, not the cap, limits a saturated run (assumption;
#: trtllm-bench and MLPerf submissions tune both per workload).
SATURATED = SchedulerConfig(max_num_batched_tokens=8192, max_num_seqs=2048, enable_prefix_caching=False)

#: What each metric reads from the simulator's summary.
SERVED_METRICS = {
    "output_tok_s_total": lambda s, chips: s["output_throughput"],
    "output_tok_s_per_chip": lambda s, chips: s["output_throughput"] / chips,
    "total_tok_s": lambda s, chips: s["total_token_throughput"],
    "ttft_s": lambda s, chips: s["mean_ttft_ms"] / 1e3,
    "tpot_s": lambda s, chips: s["mean_tpot_ms"] / 1e3,
}

#: Rate bisection for server rows without a transcribed target_qps.
BISECTION_STEPS = 12


@dataclass(frozen=True)
class ServedCase:
    """What a served row needs beyond model, chip and deployment."""

    input_tokens: int
    output_tokens: int
    requests: int
    cfg: SchedulerConfig
    target_qps: float | None  # server rows: Poisson rate (None: find the highest rate within the SLO)
    slo: tuple[tuple[str, str], ...]  # server rows: the MLPerf latency limits


def note_value(notes: str, key: str) -> float | None:
    """`key=value` settings in a row's notes (the data README's machine-readable convention)."""
    m = re.search(rf"\b{key}=([0-9.]+)", notes)
    return float(m.group(1)) if m else None


def mlperf_slo(notes: str) -> dict[str, str]:
    """`SLO p99 TTFT<=2 s, p99 TPOT<=0.2 s` in the notes, in the simulator's SLO form."""
    slo = {}
    for metric in ("TTFT", "TPOT"):
        m = re.search(rf"p99 {metric}<=([0-9.]+) s", notes)
        if m:
            slo[f"p99_{metric.lower()}_ms"] = f"<={float(m.group(1)) * 1e3:g}"
    return slo


def served_case(notes: str, scenario: str, input_tokens: int | None, output_tokens: int) -> ServedCase:
    """A row's replay; a row without a published prompt length is not guessed at (a saturated
    run's throughput depends on it about linearly; MLPerf rows leave the dataset mean out)."""
    if not input_tokens:
        raise TokenfleetError("prompt length not published (dataset mean not transcribed): a saturated run cannot be replayed without it")
    prompt = input_tokens
    requests = int(note_value(notes, "num_requests") or note_value(notes, "num_prompts") or DEFAULT_REQUESTS)
    caps = [c for c in (note_value(notes, "max_num_seqs"), note_value(notes, "max_concurrency")) if c]
    seqs = int(min(caps)) if caps else SATURATED.max_num_seqs
    cfg = SATURATED.model_copy(update={"max_num_seqs": seqs, "max_num_batched_tokens": max(SATURATED.max_num_batched_tokens, seqs)})
    qps = note_value(notes, "target_qps") if scenario == "server" else None
    slo = tuple(mlperf_slo(notes).items()) if scenario == "server" else ()
    return ServedCase(prompt, output_tokens, min(requests, MAX_REQUESTS), cfg, qps, slo)


def _trace(sc: ServedCase, rate_per_s: float | None) -> Trace:
    n = sc.requests
    arrivals = np.zeros(n) if rate_per_s is None else np.cumsum(np.random.default_rng(0).exponential(1 / rate_per_s, n))
    return Trace("validation", arrivals - arrivals[0], np.full(n, sc.input_tokens), np.full(n, sc.output_tokens))


_RUNS: dict[str, dict[str, Any]] = {}


def run_served(model: ModelSpec, chip: ChipSpec, dep: Deployment, sc: ServedCase, eff: Efficiency | None,
               scenario: str) -> dict[str, Any]:
    """The simulator's summary for this row's run (rows of one run, e.g. its TTFT and its
    throughput, share one simulation)."""
    key = repr((model, chip.id, dep, sc, eff, scenario))
    if key not in _RUNS:
        _RUNS[key] = _run(model, chip, dep, sc, eff, scenario)
    return _RUNS[key]


def _run(model: ModelSpec, chip: ChipSpec, dep: Deployment, sc: ServedCase, eff: Efficiency | None, scenario: str) -> dict[str, Any]:
    if scenario == "throughput":
        return simulate(model, chip, dep, _trace(sc, None), sc.cfg, eff=eff).summary
    if sc.target_qps is not None:
        return simulate(model, chip, dep, _trace(sc, sc.target_qps), sc.cfg, eff=eff).summary
    return _best_rate_within_slo(model, chip, dep, sc, eff)


def _best_rate_within_slo(model: ModelSpec, chip: ChipSpec, dep: Deployment, sc: ServedCase, eff: Efficiency | None) -> dict[str, Any]:
    """MLPerf Server without a transcribed rate: the highest Poisson rate meeting every p99 limit."""
    if not sc.slo:
        raise TokenfleetError("server row with neither target_qps nor an SLO transcribed: nothing to replay")
    saturated = simulate(model, chip, dep, _trace(sc, None), sc.cfg, eff=eff).summary
    lo, hi = 0.0, saturated["request_throughput"] * 1.2
    best = None
    for _ in range(BISECTION_STEPS):
        rate = (lo + hi) / 2
        summary = simulate(model, chip, dep, _trace(sc, rate), sc.cfg, slo=dict(sc.slo), eff=eff).summary
        if all(summary["slo_met"].values()):
            lo, best = rate, summary
        else:
            hi = rate
    return best if best is not None else {**saturated, "output_throughput": 0.0}
