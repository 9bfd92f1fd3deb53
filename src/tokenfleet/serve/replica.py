"""One serving engine: schedule, cost the step, post-process; runs of identical decode steps
between arrivals and completions are advanced in closed form (one vectorised cost call)."""

from __future__ import annotations

import math

import numpy as np

from tokenfleet.perf.step import BatchShape, StepModel, StepTime, batch_shape
from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.metrics import Metrics
from tokenfleet.serve.request import Request
from tokenfleet.serve.scheduler import BlockPool, Scheduler, StepPlan


class Replica:
    """An engine (a replica, or one of a pipelined replica's `pp` micro-batch slots)."""

    def __init__(self, cost: StepModel, cfg: SchedulerConfig, pool: BlockPool, metrics: Metrics):
        self.cost, self.cfg, self.metrics = cost, cfg, metrics
        self.sched = Scheduler(cfg, pool)
        self.clock = 0.0
        self.busy_s = self.energy_j = self.kv_block_s = 0.0
        self.draft_factor = 1 + cfg.spec.draft_tokens * cfg.spec.draft_cost_ratio
        self.outstanding_tokens = 0.0

    def add(self, req: Request) -> None:
        if self.sched.blocks_for(req.prompt + req.output) > self.sched.total_blocks:
            raise_too_long(req, self.sched.total_blocks * self.cfg.block_size)
        if not (self.sched.running or self.sched.waiting):
            self.clock = max(self.clock, req.arrival_s)
        self.sched.waiting.append(req)
        self.outstanding_tokens += req.prompt + req.output

    def run_until(self, t_limit: float) -> None:
        """The event loop: advance this engine until its clock passes `t_limit` or it idles."""
        sched = self.sched
        while (sched.running or sched.waiting) and self.clock < t_limit:
            if sched.decode_only() and self._decode_run(t_limit):
                continue
            plan = sched.schedule()
            if plan.empty:  # the head request can never fit in this engine's KV cache
                raise_too_long(sched.waiting[0], sched.total_blocks * self.cfg.block_size)
            t = self._cost(plan)
            dt = float(t.latency_s) * self.draft_factor
            self._account(float(t.energy_j), dt)
            self.clock += dt
            self._post_process(plan, dt)

    # --- one step --------------------------------------------------------------------------
    def _cost(self, plan: StepPlan) -> StepTime:
        new = [c for _, c in plan.prefills] + [self.cfg.spec.draft_tokens + 1] * len(plan.decodes)
        ctx = [r.computed + c for r, c in plan.prefills] + [r.computed + 1 for r in plan.decodes]
        return self.cost.step(batch_shape(self.cost.model, new, ctx))

    def _post_process(self, plan: StepPlan, dt: float) -> None:
        e = self.sched.tokens_per_step
        for req, chunk in plan.prefills:
            req.computed += chunk
            if req.computed >= self.sched.target(req):
                req.generated += 1
                if req.first_token_s < 0:
                    req.first_token_s = self.clock
                    self.sched.remember_prefix(req)
        for req in plan.decodes:
            req.computed += e
            req.generated += e
        if plan.decodes:
            self.metrics.itl(dt, len(plan.decodes))
        self._finish_done()

    def _finish_done(self) -> None:
        for req in [r for r in self.sched.running if r.generated >= r.output]:
            req.finish_s = self.clock
            self.sched.running.remove(req)
            self.sched.release(req)
            self.sched.prefill_target.pop(req.id, None)
            self.outstanding_tokens -= req.prompt + req.output
            self.metrics.complete(req)

    def _account(self, target_energy_j: float, wall_s: float) -> None:
        """Busy time, energy (drafting scales both) and block-seconds of KV held."""
        self.busy_s += wall_s
        self.energy_j += target_energy_j * self.draft_factor
        self.kv_block_s += (self.sched.total_blocks - self.sched.free_blocks) * wall_s

    # --- closed-form decode runs -------------------------------------------------------------
    def _decode_run(self, t_limit: float) -> int:
        """Advance k identical decode steps at once; returns k (0: take the general path)."""
        running, e = self.sched.running, self.sched.tokens_per_step
        ctx = np.array([r.computed for r in running], dtype=float)
        left = np.array([r.remaining for r in running], dtype=float)
        k = int(np.ceil(left.min() / e - 1e-9))
        k = self._kv_limited_steps(ctx, k)
        if k < 2:
            return 0
        n, j = len(running), np.arange(1, k + 1, dtype=float)
        kv = ctx.sum() + n * e * j
        window = min(self.cost.window, 1e18)
        shape = BatchShape(num_seqs=float(n), new_tokens=float(n * (self.cfg.spec.draft_tokens + 1)), kv_tokens=kv,
                           kv_tokens_window=np.minimum(kv, n * window), attn_pairs=kv, attn_pairs_window=np.minimum(kv, n * window))
        t = self.cost.step(shape)
        dt = np.asarray(t.latency_s, dtype=float) * self.draft_factor
        starts = self.clock + np.concatenate(([0.0], np.cumsum(dt)[:-1]))
        k = int(np.searchsorted(starts, t_limit, side="left")) if math.isfinite(t_limit) else k
        if k == 0:
            return 0
        for req in running:
            req.computed += k * e
            req.generated += k * e
            self.sched._grow(req, req.computed)
        self._account(float(np.sum(np.asarray(t.energy_j)[:k])), float(dt[:k].sum()))
        self.metrics.itl(dt[:k], n)
        self.clock = float(starts[k - 1] + dt[k - 1])
        self._finish_done()
        return k

    def _kv_limited_steps(self, ctx: np.ndarray, k: int) -> int:
        """The most steps (<= k) whose KV growth fits in the free blocks."""
        bs, e = self.cfg.block_size, self.sched.tokens_per_step
        have = np.array([r.blocks for r in self.sched.running])

        def need(steps: int) -> int:
            return int((np.ceil((ctx + steps * e) / bs) - have).clip(0).sum())

        if need(k) <= self.sched.free_blocks:
            return k
        lo, hi = 0, k
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if need(mid) <= self.sched.free_blocks else (lo, mid - 1)
        return lo


def raise_too_long(req: Request, capacity_tokens: int) -> None:
    from tokenfleet.errors import TokenfleetError

    raise TokenfleetError(
        f"request {req.id} needs {req.prompt + req.output:,} tokens of KV cache but one engine holds {capacity_tokens:,}: "
        "use more chips per replica, --precision fp8, or shorter requests"
    )
