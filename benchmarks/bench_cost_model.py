"""How fast the cost model answers: one step in a warm process, and many steps vectorised.

The peer is the same step model called once per batch state in a Python loop; the vectorised
path must beat it by a wide margin, and a single step must stay under 0.1 ms (the issue's target).
Run: python benchmarks/bench_cost_model.py
"""

from __future__ import annotations

import time

import numpy as np

from tokenfleet.catalog import get_chip, get_model
from tokenfleet.perf import BatchShape, Deployment, Efficiency, StepModel, batch_shape


def _rate(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    model, chip = get_model("llama-3.1-70b"), get_chip("h100-sxm")
    sm = StepModel(model, chip, Deployment(chips=4, tp=4, pp=1, weight_precision="fp8", kv_precision="fp8"), Efficiency())
    shape = batch_shape(model, [1] * 64 + [512], [2000] * 64 + [512])
    scalar_rate = _rate(lambda: sm.step(shape), 20_000)
    with_shape_rate = _rate(lambda: sm.step(batch_shape(model, [1] * 64 + [512], [2000] * 64 + [512])), 5_000)
    n = 100_000
    ctx = np.random.default_rng(0).integers(100, 8000, n).astype(float)
    many = BatchShape(num_seqs=64.0, new_tokens=64.0, kv_tokens=64 * ctx, kv_tokens_window=64 * ctx, attn_pairs=64 * ctx, attn_pairs_window=64 * ctx)
    start = time.perf_counter()
    sm.step(many)
    vector_rate = n / (time.perf_counter() - start)
    print(f"one step (aggregated batch), warm:   {scalar_rate:12,.0f} predictions/s  ({1e3 / scalar_rate:.4f} ms each; target <= 0.1 ms)")
    print(f"one step incl. summarising 65 seqs:  {with_shape_rate:12,.0f} predictions/s  ({1e3 / with_shape_rate:.4f} ms each)")
    print(f"vectorised over {n:,} batch states: {vector_rate:12,.0f} predictions/s")
    print(f"ratio vectorised / scalar loop:      {vector_rate / scalar_rate:12,.1f}x")


if __name__ == "__main__":
    main()
