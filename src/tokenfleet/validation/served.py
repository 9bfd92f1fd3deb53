"""`throughput` and `server` rows, predicted through the serving simulator.

Calibration fits a kind on its `static` and `per_user` rows, so for those kinds these rows are an
out-of-sample test of cost model and simulator together; only a kind with no such rows (the TPUs)
is fitted on its `throughput` rows, through this module.
How each scenario is replayed (see the data README for the scenario definitions):

* `throughput`: every request present at t = 0, served by continuous batching until the last
  finishes; a client `max_concurrency=N` or server `max_num_seqs=N` in the notes caps the
  running sequences.
* Rows measured with the InferenceX client's random dataset (`range ratio R` in the notes) draw
  each request's lengths as that client does, uniformly from [int(R x nominal), nominal].
* Rows whose submitter published the engine's configuration (`data/engine_settings.yaml`) run
  its caps on running sequences and tokens per step, on its instances' layout (cases.py).
* Rows measured with TensorRT-LLM admit a request only when the KV cache holds its whole output
  (its default GUARANTEED_NO_EVICT capacity policy) unless their published config sets max_util,
  and apply their engine's sequence cap to each micro-batch of a pipelined instance, as
  TensorRT-LLM does; other rows grow and preempt as vLLM does, one cap per instance.
* `server`: MLPerf's own procedure. A Server result is the highest Poisson rate a submitter found
  whose p99 TTFT and p99 TPOT meet the benchmark's limits, with the latencies measured there, at
  the knee of the latency curve. So a row with limits is replayed at *our* highest such rate over
  600 s of arrivals (an MLPerf Server run's length), found by bisection below the Offline rate, and
  its throughput and latencies are read there; its published `target_qps` is only compared with
  that rate in the row's note. Replayed at the submitter's rate instead, a capacity a few percent
  above the submitter's put the run below its knee and its mean TPOT 2-4x short (GT018, GT028),
  while the throughput at that rate was the rate itself, which tests nothing. A server row without
  limits is replayed at its `target_qps`.
"""

from __future__ import annotations

import dataclasses
import math
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
from tokenfleet.validation.datasets import EngineSettings, mlperf_lengths, mlperf_server_limits
from tokenfleet.workload.lengths import draw_lengths, inferencex_random
from tokenfleet.workload.traces import Trace

#: Requests simulated per row: the row's own count where its notes give one, capped here
#: (the steady state of a saturated run is reached well before).
MAX_REQUESTS = 4000
DEFAULT_REQUESTS = 3000
#: ... and per row in all, over its data-parallel replicas (each replica gets up to MAX_REQUESTS).
MAX_TOTAL_REQUESTS = 16000

#: Engine settings where a row publishes none: TensorRT-LLM's default max_num_tokens (8,192) and a
#: batch cap high enough that the KV cache, not the cap, limits a saturated run (assumption;
#: trtllm-bench and MLPerf submissions tune both per workload).
SATURATED = SchedulerConfig(max_num_batched_tokens=8192, max_num_seqs=2048, enable_prefix_caching=False)

#: TensorRT-LLM's default share of free memory for its KV cache (`KvCacheConfig.free_gpu_memory_fraction`).
TRTLLM_KV_FREE_FRACTION = 0.9

#: What each metric reads from the simulator's summary.
SERVED_METRICS = {
    "output_tok_s_total": lambda s, chips: s["output_throughput"],
    "output_tok_s_per_chip": lambda s, chips: s["output_throughput"] / chips,
    "total_tok_s": lambda s, chips: s["total_token_throughput"],
    "ttft_s": lambda s, chips: s["mean_ttft_ms"] / 1e3,
    "tpot_s": lambda s, chips: s["mean_tpot_ms"] / 1e3,
}

#: Requests per probe of a Server rate search at least (a p99 from its 40 slowest); a probe also
#: sends requests for MLPerf's whole Server run (`server_probe_requests`).
SERVER_REQUESTS = 4000
#: MLPerf Offline and Server runs last at least this long (mlcommons/inference loadgen/mlperf.conf,
#: `*.Offline.min_duration` and `*.Server.min_duration`, 600000 ms).
MLPERF_MIN_DURATION_S = 600.0
#: ... a cap on one replica's simulated Offline requests (a small model on a fast chip, e.g.
#: Mixtral on a B200, would need ~70,000 to fill 600 s).
MAX_OFFLINE_REQUESTS = 100_000

#: Rate bisection for server rows without a transcribed target_qps: the rate to 1/256 of the
#: Offline rate that bounds it.
BISECTION_STEPS = 8


@dataclass(frozen=True)
class ServedCase:
    """What a served row needs beyond model, chip and deployment."""

    input_tokens: int
    output_tokens: int
    requests: int
    cfg: SchedulerConfig
    target_qps: float | None  # server rows: the published Poisson rate (replayed only where `slo` is empty)
    slo: tuple[tuple[str, str], ...]  # server rows: the MLPerf latency limits (the rate is searched within them)
    range_ratio: float = 1.0  # InferenceX client: lengths uniform in [int(range_ratio x nominal), nominal]
    dataset: str = ""  # MLPerf rows: the model whose dataset's lengths each request draws (see validation.datasets)


def note_value(notes: str, key: str) -> float | None:
    """`key=value` settings in a row's notes (the data README's machine-readable convention)."""
    m = re.search(rf"\b{key}=([0-9.]+)", notes)
    return float(m.group(1)) if m else None


def mlperf_slo(notes: str) -> dict[str, str]:
    """`SLO p99 TTFT<=2 s, p99 TPOT<=0.2 s` in the notes, in the simulator's SLO form; where the
    notes name an MLPerf benchmark's Server run but not its limits, the benchmark's own limits."""
    slo = {}
    for metric in ("TTFT", "TPOT"):
        m = re.search(rf"p99 {metric}<=([0-9.]+) s", notes)
        if m:
            slo[f"p99_{metric.lower()}_ms"] = f"<={float(m.group(1)) * 1e3:g}"
    return slo or benchmark_slo(notes)


def benchmark_slo(notes: str) -> dict[str, str]:
    """The Server latency limits of the MLPerf benchmark a row's notes name
    (`MLPerf v5.1 closed, llama3.1-405b-interactive Server`), from `data/mlperf_slo.yaml`."""
    m = re.search(r"MLPerf v[0-9.]+ \w+, ([\w.-]+) Server", notes)
    limits = mlperf_server_limits(m.group(1)) if m else None
    return {k: f"<={limits[k]:g}" for k in ("p99_ttft_ms", "p99_tpot_ms")} if limits else {}


def inferencex_range_ratio(notes: str) -> float:
    """A row benchmarked with the InferenceX client's random dataset (`range ratio R` in the notes)
    drew each length uniformly from [int(R x nominal), nominal]; other rows replay the nominal
    lengths (1.0)."""
    m = re.search(r"range ratio ([0-9.]+)", notes)
    return float(m.group(1)) if m and "InferenceX" in notes else 1.0


def served_case(notes: str, scenario: str, input_tokens: int | None, output_tokens: int, software: str = "",
                dataset: str = "", engine: EngineSettings | None = None) -> ServedCase:
    """A row's replay; a row without a prompt length (published, or for MLPerf rows their dataset's
    distribution) is not guessed at: a saturated run's throughput depends on it about linearly.
    Engine settings its submitter published (`engine`) replace the defaults they cover."""
    if not input_tokens:
        raise TokenfleetError("prompt length not published and no dataset estimate: a saturated run cannot be replayed without it")
    prompt = input_tokens
    requests = int(note_value(notes, "num_requests") or note_value(notes, "num_prompts") or DEFAULT_REQUESTS)
    seqs, engine_cap = sequence_cap(notes, engine)
    budget = engine.max_num_batched_tokens if engine and engine.max_num_batched_tokens else max(SATURATED.max_num_batched_tokens, seqs)
    # TensorRT-LLM may hold more running sequences than a step's token budget (Google's H200
    # Llama-2-70B Server: 2,048 and 1,536) and schedules at most the budget's tokens a step;
    # our scheduler decodes every running sequence each step, so it runs at most the budget's worth
    seqs = min(seqs, budget)
    trtllm = "TensorRT-LLM" in software
    cfg = SchedulerConfig.model_validate({**SATURATED.model_dump(), "max_num_seqs": seqs, "max_num_batched_tokens": budget,
                                          # TensorRT-LLM's default GUARANTEED_NO_EVICT, unless the config says max_util
                                          "reserve_output_kv": trtllm and not (engine and engine.batch_scheduler_policy == "max_util"),
                                          # TensorRT-LLM applies its own cap to each micro-batch
                                          "seqs_per_micro_batch": trtllm and engine_cap,
                                          # TensorRT-LLM sizes its cache from the memory left free
                                          "kv_cache_free_gpu_mem_fraction": kv_free_fraction(notes) if trtllm else None,
                                          # vLLM's share of the device, where the submitter's config sets it
                                          "gpu_memory_utilization": (engine.gpu_memory_utilization if engine and engine.gpu_memory_utilization
                                                                     else SATURATED.gpu_memory_utilization),
                                          # and whether it chunks prompts (vLLM V0 did not by default)
                                          "chunked_prefill": not (engine and engine.enable_chunked_prefill is False)})
    qps = note_value(notes, "target_qps") if scenario == "server" else None
    slo = tuple(mlperf_slo(notes).items()) if scenario == "server" else ()
    return ServedCase(prompt, output_tokens, min(requests, MAX_REQUESTS), cfg, qps, slo, inferencex_range_ratio(notes), dataset)


def kv_free_fraction(notes: str) -> float:
    """A TensorRT-LLM row's `kv_cache_free_gpu_mem_fraction`: the largest its notes name (the
    performance overviews set 0.95 for most runs, 0.90 where that ran out of memory), else the
    engine's default, 0.9 (`KvCacheConfig.free_gpu_memory_fraction`)."""
    m = re.search(r"kv_cache_free_gpu_mem_fraction[ =]([0-9.]+)(?:[-–]([0-9.]+))?", notes)
    return max(float(x) for x in m.groups() if x) if m else TRTLLM_KV_FREE_FRACTION


def sequence_cap(notes: str, engine: EngineSettings | None) -> tuple[int, bool]:
    """The cap on a replay's running sequences, and whether it is the engine's (`max_num_seqs` in
    the notes or the published config) rather than the benchmark client's `max_concurrency`;
    neither published: SATURATED's, taken as no cap."""
    engine_caps = [c for c in (note_value(notes, "max_num_seqs"), engine.max_num_seqs if engine else None) if c]
    client = note_value(notes, "max_concurrency")
    if not engine_caps and not client:
        return SATURATED.max_num_seqs, False
    cap = min(engine_caps, default=math.inf)
    if client and client < cap:
        return int(client), False
    return int(cap), True


@dataclass(frozen=True)
class Layout:
    """Replicas of one deployment sharing a row's traffic (data parallel)."""

    deployment: Deployment
    replicas: int = 1

    @property
    def chips(self) -> int:
        return self.deployment.chips * self.replicas

    def describe(self) -> str:
        return self.deployment.describe() if self.replicas == 1 else f"{self.replicas} x ({self.deployment.describe()})"


def _trace(sc: ServedCase, rate_per_s: float | None, replicas: int, requests: int | None = None, drawn: int | None = None) -> Trace:
    """The row's requests: the first `requests` of `drawn` (so a rate search's probes, each as
    long as its rate needs, share their requests' lengths: common random numbers, which keep a
    probe's verdict from turning on a fresh draw), arriving at `rate_per_s` (None: all at once)."""
    n = requests or min(sc.requests * replicas, max(MAX_TOTAL_REQUESTS, sc.requests))
    m = max(n, drawn or 0)
    arrivals = np.zeros(n) if rate_per_s is None else np.cumsum(np.random.default_rng(0).exponential(1 / rate_per_s, n))
    rng = np.random.default_rng(0)
    lengths = mlperf_lengths(sc.dataset) if sc.dataset else None
    if lengths is not None:
        inputs, outputs = lengths.draw(m, sc.output_tokens, rng)
    else:
        inputs, outputs = (draw_lengths(inferencex_random(tokens, sc.range_ratio), rng, m) for tokens in (sc.input_tokens, sc.output_tokens))
    return Trace("validation", arrivals - arrivals[0], inputs[:n], outputs[:n])


_RUNS: dict[str, dict[str, Any]] = {}


def best_layout(model: ModelSpec, chip: ChipSpec, layouts: list[Layout], sc: ServedCase, eff: Efficiency | None) -> Layout:
    """Where a submission does not publish its layout, we assume it ran its fastest: of the layouts
    a row's chips allow, the one with the highest output throughput in the row's own scenario, i.e.
    within its latency limits for a Server row that searches its rate (an interactive submission
    runs fewer, larger replicas than its Offline one), else saturated."""
    if len(layouts) == 1:
        return layouts[0]
    saturated = [run_served(model, chip, lay, sc, eff, "throughput")["output_throughput"] for lay in layouts]
    if not sc.slo:
        return layouts[int(np.argmax(saturated))]
    # A Server rate cannot beat its layout's Offline rate: search the fastest Offline layouts first
    # and stop at one that cannot beat the best rate found.
    best, best_tok_s = layouts[0], -1.0
    for i in np.argsort(saturated)[::-1]:
        if saturated[i] <= best_tok_s:
            break
        tok_s = run_served(model, chip, layouts[i], sc, eff, "server")["output_throughput"]
        if tok_s > best_tok_s:
            best, best_tok_s = layouts[i], tok_s
    return best


def run_served(model: ModelSpec, chip: ChipSpec, lay: Layout, sc: ServedCase, eff: Efficiency | None,
               scenario: str) -> dict[str, Any]:
    """The simulator's summary for this row's run (rows of one run, e.g. its TTFT and its
    throughput, share one simulation)."""
    key = repr((model, chip.id, lay, sc, eff, scenario))
    if key not in _RUNS:
        _RUNS[key] = _run(model, chip, lay, sc, eff, scenario)
    return _RUNS[key]


def _simulate(model: ModelSpec, chip: ChipSpec, lay: Layout, sc: ServedCase, eff: Efficiency | None,
              rate_per_s: float | None, slo: dict[str, str] | None = None, requests: int | None = None,
              drawn: int | None = None) -> dict[str, Any]:
    trace = _trace(sc, rate_per_s, lay.replicas, requests, drawn)
    summary = simulate(model, chip, lay.deployment, trace, sc.cfg, replicas=lay.replicas, router="least-outstanding-tokens",
                       slo=slo, eff=eff).summary
    return summary if rate_per_s is None else _as_long_as_mlperf_server(summary, float(trace.arrival_s[-1]))


def _as_long_as_mlperf_server(summary: dict[str, Any], arrivals_s: float) -> dict[str, Any]:
    """An MLPerf Server run sends requests for at least 600 s (mlperf.conf `*.Server.min_duration`)
    and divides its tokens by the time to the last completion, so the drain after the last
    arrival costs it a few percent; our replay sends a few thousand requests, for which the same
    drain would cost a third. Rates are rescaled to a 600 s run with the replay's drain."""
    drain_s = max(summary["duration_s"] - arrivals_s, 0.0)
    run_s = max(arrivals_s, MLPERF_MIN_DURATION_S)
    scale = summary["duration_s"] / arrivals_s * run_s / (run_s + drain_s) if arrivals_s > 0 else 1.0
    return _rates_scaled(summary, scale)


def _rates_scaled(summary: dict[str, Any], factor: float) -> dict[str, Any]:
    """The summary with its per-second rates multiplied by `factor` (latencies and counts kept)."""
    return {**summary, **{k: summary[k] * factor for k in ("request_throughput", "output_throughput", "total_token_throughput")}}


def _run(model: ModelSpec, chip: ChipSpec, lay: Layout, sc: ServedCase, eff: Efficiency | None, scenario: str) -> dict[str, Any]:
    if scenario == "throughput" and sc.dataset:
        return _mlperf_offline(model, chip, lay, sc, eff)
    if scenario == "throughput":
        return _simulate(model, chip, lay, sc, eff, None)
    if sc.slo:
        return _best_rate_within_slo(model, chip, lay, sc, eff)
    if sc.target_qps is not None:
        return _at_most_offline(_simulate(model, chip, lay, sc, eff, sc.target_qps), run_served(model, chip, lay, sc, eff, "throughput"))
    raise TokenfleetError("server row with neither an SLO nor target_qps transcribed: nothing to replay")


def _at_most_offline(server: dict[str, Any], offline: dict[str, Any]) -> dict[str, Any]:
    """A Server run's rates capped at the same layout's Offline rates. The 600 s rescale
    (`_as_long_as_mlperf_server`) takes the replay's drain for the last requests' lifetime; when
    the replica cannot keep up with the rate, the drain is a backlog that grows with the run, and
    a 600 s run would deliver the replica's capacity, not the offered rate."""
    factor = min(1.0, offline["output_throughput"] / server["output_throughput"]) if server["output_throughput"] > 0 else 1.0
    return _rates_scaled(server, factor)


def _mlperf_offline(model: ModelSpec, chip: ChipSpec, lay: Layout, sc: ServedCase, eff: Efficiency | None) -> dict[str, Any]:
    """MLPerf Offline: every sample of the dataset, and more until the run lasts at least 600 s
    (mlperf.conf `*.Offline.min_duration`), queued at once, so start-up and the final drain are a
    small share of the run and its replicas work independently. One replica is simulated through
    as many requests (with varied lengths, a run of a few thousand would lose a tenth or more of its
    rate to the drain, the last long answers finishing at a small batch) and its rates are
    multiplied by the replica count."""
    lengths = mlperf_lengths(sc.dataset)
    n = lengths.samples if lengths else sc.requests
    s = _simulate(model, chip, Layout(lay.deployment), dataclasses.replace(sc, requests=n), eff, None)
    for _ in range(3):  # the run is not quite proportional to its requests (start-up, drain): rescale until it lasts
        if s["duration_s"] >= MLPERF_MIN_DURATION_S or n >= MAX_OFFLINE_REQUESTS:
            break
        n = min(math.ceil(n * MLPERF_MIN_DURATION_S / s["duration_s"] * 1.01), MAX_OFFLINE_REQUESTS)
        s = _simulate(model, chip, Layout(lay.deployment), dataclasses.replace(sc, requests=n), eff, None)
    return _rates_scaled(s, lay.replicas)


def _best_rate_within_slo(model: ModelSpec, chip: ChipSpec, lay: Layout, sc: ServedCase, eff: Efficiency | None) -> dict[str, Any]:
    """MLPerf Server: the highest Poisson rate meeting every p99 limit, and the run at that rate
    (its `offered_rate_per_s` says which). A Server run cannot sustain more than its Offline rate,
    which bounds the search; loose limits (llama2-70b's 2 s and 200 ms) hold at nearly all of it,
    so that rate is tried first."""
    saturated = run_served(model, chip, lay, sc, eff, "throughput")
    top = saturated["request_throughput"] * (1 - 2.0**-BISECTION_STEPS)
    drawn = server_probe_requests(top)  # every probe replays the first requests of the fastest one's

    def probe(rate: float) -> dict[str, Any] | None:
        summary = _simulate(model, chip, lay, sc, eff, rate, dict(sc.slo), requests=server_probe_requests(rate), drawn=drawn)
        return {**summary, "offered_rate_per_s": rate} if all(summary["slo_met"].values()) else None

    best = probe(top)
    if best is not None:
        return best
    lo, hi = 0.0, top
    for _ in range(BISECTION_STEPS):
        rate = (lo + hi) / 2
        summary = probe(rate)
        if summary is not None:
            lo, best = rate, summary
        else:
            hi = rate
    return best if best is not None else {**saturated, "output_throughput": 0.0, "offered_rate_per_s": 0.0}


def server_rate_note(summary: dict[str, Any], sc: ServedCase) -> str:
    """Where a Server row searched its own rate: that rate, beside the one the submission ran."""
    rate = summary.get("offered_rate_per_s")
    if rate is None:
        return ""
    published = f" (the submission's: {sc.target_qps:g})" if sc.target_qps else ""
    return f"rate: {rate:.3g} req/s, the highest within the p99 limits{published}"


def server_probe_requests(rate_per_s: float) -> int:
    """Requests for a rate-search probe: arrivals for MLPerf's whole Server run. A shorter probe
    passes rates no server sustains: with a high cap on running sequences an overload shows first
    as a batch that keeps growing, and a 30 s probe ends before its TPOT crosses the limit (GB200
    llama2-70b: 4,000 requests passed 16% above the Offline rate)."""
    return max(SERVER_REQUESTS, math.ceil(rate_per_s * MLPERF_MIN_DURATION_S))
