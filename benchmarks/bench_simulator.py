"""Simulated requests per wall-second on the issue's reference configuration.

Vidur's reference run: Llama-3-8B on one A100, Azure conversation lengths, Poisson 6.45 req/s,
chunked prefill with 512-token chunks, batch cap 512. Vidur itself is not installed here (its
~1,000 requests/s on this kind of machine is the issue's figure, not measured in this run); the
peer measured in the same run is tokenfleet with the closed-form decode runs switched off.
Run: python benchmarks/bench_simulator.py [N]
"""

from __future__ import annotations

import sys
import time

from tokenfleet.catalog import get_chip, get_model
from tokenfleet.perf import Deployment
from tokenfleet.serve import SchedulerConfig, simulate
from tokenfleet.serve.replica import Replica
from tokenfleet.workload import load_trace, synthetic


def run(n: int) -> float:
    trace = synthetic(n, 6.45, load_trace("azure-conv"), seed=0)
    cfg = SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=512)
    start = time.perf_counter()
    simulate(get_model("llama-3-8b"), get_chip("a100-sxm"), Deployment(chips=1, tp=1, pp=1), trace, cfg)
    return n / (time.perf_counter() - start)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    fast = run(n)
    closed_form = Replica._decode_run
    Replica._decode_run = lambda self, t: 0  # type: ignore[method-assign,assignment]
    try:
        slow = run(min(n, 2_000))
    finally:
        Replica._decode_run = closed_form  # type: ignore[method-assign]
    print(f"tokenfleet, {n:,} requests:            {fast:10,.0f} requests/s (target >= 20,000; Vidur ~1,000 per the issue)")
    print(f"same, one event per step (peer):     {slow:10,.0f} requests/s")
    print(f"ratio closed-form / per-step:        {fast / slow:10.1f}x")


if __name__ == "__main__":
    main()
