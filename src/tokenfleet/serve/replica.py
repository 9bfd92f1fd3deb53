"""One serving engine: schedule, cost the step, book it; runs of identical decode steps
between arrivals, completions and window crossings are advanced in closed form."""

from __future__ import annotations

import math

import numpy as np

from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.step import StepModel
from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.metrics import Metrics
from tokenfleet.serve.request import Request
from tokenfleet.serve.scheduler import KvPool, Scheduler, StepPlan

#: Decode runs at least this long are costed in one vectorised call; shorter ones step by step.
VECTORISE_FROM_STEPS = 24


class Pipeline:
    """The stages of a pipelined GPU or TPU replica, shared by its micro-batch engines.

    Each stage works on one micro-batch at a time, in the order they entered the first stage, and
    hands it on whole: TensorRT-LLM cycles its micro-batch ids and passes a stage's hidden states
    on after its last layer (cpp/tensorrt_llm/batch_manager/trtGptModelInflightBatching.cpp,
    `mNumMicroBatches` = pp), so a light step behind a heavy one leaves the last stage only after
    it. Stages are equal (layers split evenly): a step of latency L spends L/pp on each. Steps are
    booked in the order they become ready (`simulate` advances a pipeline's engines in step)."""

    def __init__(self, stages: int):
        self.stages = stages
        self.first_free_s = 0.0  # when the first stage takes the next micro-batch
        self.last_out_s = 0.0  # when the last stage released the latest one

    def book(self, ready_s: float, latency_s: float) -> float:
        """Wall time from `ready_s` until a step of `latency_s` (first stage in to last out) is done."""
        stage_s = latency_s / self.stages
        start = max(ready_s, self.first_free_s)
        done = max(start + latency_s, self.last_out_s + stage_s)
        self.first_free_s, self.last_out_s = start + stage_s, done
        return done - ready_s


class Replica:
    """An engine (a replica, or one of a pipelined replica's `pp` micro-batch slots)."""

    def __init__(self, cost: StepModel, cfg: SchedulerConfig, pool: KvPool, metrics: Metrics, pipeline: Pipeline | None = None):
        self.cost, self.cfg, self.metrics, self.pool, self.pipeline = cost, cfg, metrics, pool, pipeline
        self.sched = Scheduler(cfg, pool, cost.window, recurrent_state=cost.model.num_linear_layers > 0)
        self.clock = 0.0
        self.busy_s = self.energy_j = self.kv_token_s = 0.0
        self.draft_factor = cfg.spec.draft_factor
        self.outstanding_tokens = 0.0
        self.stalled = False
        #: prefill-only steps since the last decode step: (decoders waiting, step time)
        self.waits: list[tuple[int, float]] = []

    def add(self, req: Request) -> None:
        if req.prompt + req.output + self.pool.per_seq_tokens > self.pool.max_seq_tokens:
            raise_too_long(req, self.pool)
        if not self.sched.busy:
            self.clock = max(self.clock, req.arrival_s)
        self.sched.waiting.append(req)
        self.outstanding_tokens += req.prompt + req.output

    def run_until(self, t_limit: float) -> None:
        """The event loop: advance this engine until its clock passes `t_limit` or it idles.
        It stalls (returns early) when pipeline siblings hold all of the shared KV cache."""
        sched = self.sched
        if self.stalled:
            self.clock, self.stalled = max(self.clock, self.pool.last_release_s), False
        while sched.busy and self.clock < t_limit:
            if sched.decoding and not self.waits and not sched.can_admit() and self.pipeline is None and self._decode_run(t_limit):
                continue
            plan = sched.schedule()
            if plan.empty:
                self.stalled = True
                return
            latency_s, energy_j = self.cost.scalar(*self._shape(plan))
            drafting = self.draft_factor if plan.decodes else 1.0  # a prefill-only step drafts nothing
            busy = latency_s * drafting
            dt = self.pipeline.book(self.clock, busy) if self.pipeline else busy
            self._account(energy_j * drafting, busy, dt)
            self.clock += dt
            if plan.decodes:
                self._record_itl(dt, plan.decodes)
            elif sched.decoding:  # a prefill-only step (no chunked prefill): the decoders wait it out
                self.waits.append((len(sched.decoding), dt))
            self._finish(sched.advance(plan, self.clock))

    def _record_itl(self, step_s: float, decodes: int) -> None:
        """Every decoder's gap since its last token: the step, plus the prefill-only steps it waited
        (`waits`: decoders are only added while they wait, so the first n of them waited the first)."""
        left, before, waited = decodes, 0, sum(wait_s for _, wait_s in self.waits)
        for n, wait_s in self.waits:  # oldest first: decoders before..n sat through this wait and every later one
            group = min(n - before, left)
            if group:
                self.metrics.itl(step_s + waited, group)
            left, before, waited = left - group, n, waited - wait_s
        self.waits.clear()
        if left:
            self.metrics.itl(step_s, left)

    # --- one step --------------------------------------------------------------------------
    def _shape(self, plan: StepPlan) -> tuple[float, ...]:
        """(sequences, new tokens, KV tokens, windowed KV tokens, pairs, windowed pairs), then the
        largest prompt chunk's new tokens, context and pairs (decoders count as the mean one)."""
        s, w = self.sched, self.cost.window
        new = plan.decodes * s.t
        kv = kv_w = pairs = pairs_w = 0.0  # a prefill-only step: the decoders wait, reading nothing
        if plan.decodes:
            kv, kv_w = s.ctx_sum, self._decode_window_ctx()
            t_pairs = s.t * (s.t - 1) / 2
            pairs, pairs_w = s.t * kv - plan.decodes * t_pairs, s.t * kv_w - s.in_window * t_pairs
        big_new = big_kv = big_pairs = 0.0
        for req, chunk in plan.chunks:
            start, end = req.computed, req.computed + chunk
            new += chunk
            kv += end
            kv_w += min(end, w)
            chunk_pairs = chunk * start + chunk * (chunk + 1) / 2
            pairs += chunk_pairs
            below = min(max(w - start, 0.0), chunk)  # queries whose position is inside the window
            pairs_w += below * (start + 1) + below * (below - 1) / 2 + ((chunk - below) * w if chunk > below else 0.0)
            big_new, big_kv, big_pairs = max(big_new, chunk), max(big_kv, end), max(big_pairs, chunk_pairs)
        return float(plan.decodes + len(plan.chunks)), float(new), kv, kv_w, pairs, pairs_w, float(big_new), float(big_kv), big_pairs

    def _decode_window_ctx(self) -> float:
        """Decoders' context as windowed layers see it: capped at the window."""
        s = self.sched
        capped = len(s.decoding) - s.in_window
        return s.in_window_ctx + (capped * self.cost.window if capped else 0.0)

    def _finish(self, done: list[Request]) -> None:
        for req in done:
            req.finish_s = self.clock
            self.outstanding_tokens -= req.prompt + req.output
            self.metrics.complete(req)

    def _account(self, energy_j: float, busy_s: float, wall_s: float) -> None:
        """Busy time, energy (drafting included) and token-seconds of KV held (over the step's wall
        time: a pipelined step may wait for the stages)."""
        self.busy_s += busy_s
        self.energy_j += energy_j
        self.kv_token_s += self.pool.used_tokens * wall_s

    # --- closed-form decode runs -------------------------------------------------------------
    def _decode_run(self, t_limit: float) -> int:
        """Advance k identical decode steps at once; returns k (0: take the general path)."""
        s = self.sched
        n = len(s.decoding)
        k = min(s.steps_until_event(), int(s.pool.free_tokens // (n * s.e)))
        if k < 2:
            return 0
        k = self._vector_run(k, n, t_limit) if k >= VECTORISE_FROM_STEPS else self._scalar_run(k, n, t_limit)
        if k:
            self._finish(s.pop_finished(self.clock))
        return k

    def _vector_run(self, k: int, n: int, t_limit: float) -> int:
        """k decode steps costed in one numpy call, cut at the first step starting after `t_limit`."""
        s = self.sched
        j = np.arange(1, k + 1, dtype=float)
        kv = s.ctx_sum + n * s.e * j
        kv_w = self._decode_window_ctx() + s.in_window * s.e * j
        t_pairs = s.t * (s.t - 1) / 2
        latency_s, energy_j = self.cost.latency_energy(n, n * s.t, kv, kv_w, s.t * kv - n * t_pairs, s.t * kv_w - s.in_window * t_pairs)
        dt = latency_s * self.draft_factor
        ends = self.clock + np.cumsum(dt)
        if math.isfinite(t_limit):  # steps that start before t_limit
            k = min(k, int(np.searchsorted(ends, t_limit, side="left")) + 1) if self.clock < t_limit else 0
        if k:
            self.busy_s += float(dt[:k].sum())
            self.energy_j += float(energy_j[:k].sum()) * self.draft_factor
            self.kv_token_s += float(((s.pool.used_tokens + n * s.e * j[:k]) * dt[:k]).sum())
            s._grow_decoders(k)
            self.metrics.itl(dt[:k], n)
            self.clock = float(ends[k - 1])
        return k

    def _scalar_run(self, k: int, n: int, t_limit: float) -> int:
        """Up to k decode steps one at a time with the float cost path (cheaper for short runs)."""
        s = self.sched
        t_pairs = s.t * (s.t - 1) / 2
        for done in range(k):
            if self.clock >= t_limit:
                return done
            s._grow_decoders(1)
            kv, kv_w = s.ctx_sum, self._decode_window_ctx()
            latency_s, energy_j = self.cost.scalar(n, n * s.t, kv, kv_w, s.t * kv - n * t_pairs, s.t * kv_w - s.in_window * t_pairs)
            dt = latency_s * self.draft_factor
            self._account(energy_j * self.draft_factor, dt, dt)
            self.clock += dt
            self.metrics.itl(dt, n)
        return k


def raise_too_long(req: Request, pool: KvPool) -> None:
    raise TokenfleetError(
        f"request {req.id} needs {req.prompt + req.output + pool.per_seq_tokens:,} tokens of KV cache "
        f"(prompt + output + {'one block' if pool.per_seq_tokens == pool.block_size else 'one block and its linear-attention state'}) "
        f"but {'one replica' if pool.ranks == 1 else 'one attention-DP rank'} holds {int(pool.max_seq_tokens):,}: "
        "use more chips per replica, --precision fp8, or shorter requests"
    )
