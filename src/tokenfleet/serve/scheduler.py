"""Continuous batching with a paged KV cache, chunked prefill, prefix reuse and recompute
preemption: one per-step token budget, and each request's computed tokens catch up to its
target (the vLLM v1 idea); or, without chunked prefill, vLLM V0's prefill-first steps (whole
prompts, decoders waiting). Policy lives here; cost lives in the cost model.

Decoding requests are kept as aggregates (count, summed context, heaps of the steps at which
each finishes or outgrows the attention window), so a step costs O(1) in the number of
running requests, and runs of identical decode steps can be advanced in closed form.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict, deque
from dataclasses import dataclass

from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.request import Request


@dataclass
class StepPlan:
    """What one step computes: prompt chunks, and one decode step of every decoding request."""

    chunks: list[tuple[Request, int]]
    decodes: int

    @property
    def empty(self) -> bool:
        return not self.chunks and not self.decodes


class KvPool:
    """KV-cache capacity of one replica in tokens, shared by its pipeline's micro-batch engines.

    Each sequence holds its context plus one block: its last, partly filled block counted whole,
    so the count is never below vLLM's block count and at most one block per sequence above it.
    A model with linear-attention layers adds each sequence's fixed state, as whole blocks of the
    same bytes (`state_tokens`, from the memory plan). With attention DP a sequence lives on one of
    `ranks` chips, so one sequence may hold at most that chip's share."""

    def __init__(self, capacity_tokens: float, block_size: int, state_tokens: float = 0.0, ranks: int = 1):
        self.capacity_tokens, self.block_size = float(capacity_tokens), block_size
        self.ranks = ranks
        self.max_seq_tokens = self.capacity_tokens / ranks
        #: what a sequence holds beyond its context: the partial last block and its state
        self.per_seq_tokens = block_size * (1 + math.ceil(state_tokens / block_size - 1e-9))
        self.used_tokens = self.peak_tokens = 0.0
        self.reserved_tokens = 0.0  # promised to admitted requests' future tokens (reserve_output_kv)
        self.last_release_s = 0.0
        self.schedulers: list[Scheduler] = []  # the engines sharing this cache (a pipeline's micro-batches)
        self.admissions = itertools.count()  # admission order across them

    @property
    def free_tokens(self) -> float:
        return self.capacity_tokens - self.used_tokens

    @property
    def unpromised_tokens(self) -> float:
        """What a new admission may claim: free and not promised to a running request."""
        return self.capacity_tokens - self.used_tokens - self.reserved_tokens

    def take(self, tokens: float, promise: float = 0.0) -> None:
        """Admit: `tokens` now and `promise` more for the request's later tokens."""
        self.used_tokens += tokens
        self.reserved_tokens += promise
        self.peak_tokens = max(self.peak_tokens, self.used_tokens)

    def grow(self, tokens: float) -> None:
        """Running requests' new tokens, drawn from their promise where they have one."""
        self.take(tokens)
        self.reserved_tokens = max(self.reserved_tokens - tokens, 0.0)

    def give(self, tokens: float, now_s: float, unpromise: float = 0.0) -> None:
        self.used_tokens -= tokens
        self.reserved_tokens = max(self.reserved_tokens - unpromise, 0.0)
        self.last_release_s = max(self.last_release_s, now_s)


class Scheduler:
    """FCFS admission; decoding requests first, then prompt chunks (without chunked prefill,
    whole waiting prompts first, in steps of their own); newest preempted first."""

    def __init__(self, cfg: SchedulerConfig, pool: KvPool, window_tokens: float = math.inf, recurrent_state: bool = False):
        self.cfg, self.pool, self.window = cfg, pool, window_tokens
        #: A model with linear-attention layers can resume only where a state was checkpointed: vLLM's
        #: `mamba_cache_mode=align` saves one at each prefill step's end, so a prefix hit counts only in
        #: whole steps' worth of prefix blocks (an 8,192-token step: prompts shorter than that never hit).
        block = cfg.prefix_block_tokens
        self.prefix_step_tokens = max(cfg.max_num_batched_tokens // block, 1) * block if recurrent_state else block
        self.reserve = cfg.reserve_output_kv
        self.chunk_cap = cfg.max_chunk_tokens or cfg.max_num_batched_tokens
        self.e = cfg.spec.tokens_per_step  # tokens accepted per decode step (1 without speculation)
        self.t = cfg.spec.verified_tokens  # tokens verified per decode step
        self.waiting: deque[Request] = deque()
        self.prefilling: deque[Request] = deque()
        self.decoding: dict[int, Request] = {}  # insertion order = decode start order
        self.ctx_sum = 0.0  # summed context of decoding requests (this step's tokens included)
        self.in_window, self.in_window_ctx = 0, 0.0  # decoders shorter than the window, their context
        self.finish_heap: list[tuple[int, int, Request]] = []  # (step it finishes, ticket, request)
        self.window_heap: list[tuple[int, int, Request]] = []  # (step it reaches the window, ...)
        self.steps = 0  # decode steps taken (the decoders' clock; prefill-only steps leave it)
        self._preempted_this_step = False
        self._tickets = itertools.count()
        pool.schedulers.append(self)
        self.prefix: OrderedDict[int, None] = OrderedDict()  # resident prefix blocks, LRU order
        self.prefix_capacity = int(pool.capacity_tokens // cfg.prefix_block_tokens)
        self.prefix_lookups = self.prefix_hits = self.prefix_hit_tokens = 0

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.prefilling or self.decoding)

    def seats(self) -> int:
        return len(self.decoding) + len(self.prefilling)

    def context(self, req: Request) -> float:
        """Tokens in `req`'s KV cache now (for a decoder, including the step in flight)."""
        return req.computed + (self.e * (self.steps - req.since_step) if req.ticket >= 0 else 0.0)

    # --- scheduling --------------------------------------------------------------------
    def schedule(self) -> StepPlan:
        """One step: every decoder advances, then prompt chunks fill the rest of the budget
        (without chunked prefill: waiting prompts that fit make a step of their own first).
        A step that preempted admits nothing new (as vLLM does): the freed cache goes to the
        requests still running here or, in a pipeline, to the sibling micro-batches."""
        self._preempted_this_step = False
        self._admit_resident()
        if not self.cfg.chunked_prefill:
            prompts: list[tuple[Request, int]] = []
            self._admit(prompts, self.cfg.max_num_batched_tokens)
            if prompts:
                return StepPlan(prompts, 0)  # the decoders wait for this step
        while self.decoding and self.pool.free_tokens < len(self.decoding) * self.e:
            self._preempt_newest()
        if self.decoding:
            self._grow_decoders(1)
        budget = self.cfg.max_num_batched_tokens - len(self.decoding) * self.t
        chunks: list[tuple[Request, int]] = []
        for req in list(self.prefilling):
            if req.admitted < 0:  # preempted above to make room for an older request
                continue
            chunk = self._chunk(req, budget)
            if chunk <= 0:
                continue
            if not self._room_for(req, chunk):
                break  # it went itself, after everything newer
            self.pool.grow(chunk)
            chunks.append((req, chunk))
            budget -= chunk
        if not self._preempted_this_step and self.cfg.chunked_prefill:
            self._admit(chunks, budget)
        return StepPlan(chunks, len(self.decoding))

    def _grow_decoders(self, steps: int) -> None:
        grow = self.e * steps
        self.steps += steps
        self.ctx_sum += len(self.decoding) * grow
        self.in_window_ctx += self.in_window * grow
        self.pool.grow(len(self.decoding) * grow)

    def _room_for(self, req: Request, tokens: float) -> bool:
        """Preempt newer requests until `tokens` fit; False if `req` itself had to go."""
        while self.pool.free_tokens < tokens:
            victim = self._preempt_newest()
            if victim is req:
                return False
        return True

    def _admit_resident(self) -> None:
        """Queue heads whose prompt KV is already here (moved from a prefill pool) join the
        decoders and decode in this very step, if a seat and their cache fit."""
        while self.waiting and self.seats() < self.cfg.max_num_seqs and self._resident_fits(self.waiting[0]):
            req = self.waiting.popleft()
            self.pool.take(req.computed + self.pool.per_seq_tokens, self._promise(req, req.computed))
            req.admitted = next(self.pool.admissions)
            self._start_decoding(req)

    def _resident_fits(self, req: Request) -> bool:
        return req.computed >= req.target and self._fits(req, 0, len(self.decoding) + 1)

    def _fits(self, req: Request, chunk: float, growing_seqs: int) -> bool:
        """Whether admitting `req` with `chunk` new tokens fits beside `growing_seqs` decoders'
        next tokens (those come out of their promise when outputs are reserved)."""
        growth = 0.0 if self.reserve else growing_seqs * self.e
        need = req.computed + chunk + self.pool.per_seq_tokens + self._promise(req, req.computed + chunk)
        return self.pool.unpromised_tokens >= need + growth

    def _promise(self, req: Request, held: float) -> float:
        """Tokens to reserve now for `req`'s later ones (with reserve_output_kv), when it holds `held`."""
        return max(req.prompt + req.output - held, 0.0) if self.reserve else 0.0

    def _release(self, req: Request, now_s: float) -> None:
        self.pool.give(req.computed + self.pool.per_seq_tokens, now_s, self._promise(req, req.computed))

    def _admit(self, chunks: list[tuple[Request, int]], budget: int) -> None:
        """FCFS: queue heads join with a prompt chunk while the budget, the seats and the cache last
        (without chunked prefill, with their whole prompt; the first alone if longer than the budget)."""
        while self.waiting and budget > 0 and self.seats() < self.cfg.max_num_seqs:
            req = self.waiting[0]
            if req.computed >= req.target:
                break  # KV resident: joins the decoders at the start of the next step
            if req.computed == 0 and not req.preemptions and not req.prefix_hit_tokens:
                req.prefix_hit_tokens = req.computed = self._prefix_hit_tokens(req)
            chunk = self._chunk(req, budget)
            if chunk > budget and chunks:
                break
            if not self._fits(req, chunk, 0):  # this step's decoder growth is already taken (or none)
                break
            self.waiting.popleft()
            self.pool.take(req.computed + chunk + self.pool.per_seq_tokens, self._promise(req, req.computed + chunk))
            req.admitted = next(self.pool.admissions)
            self.prefilling.append(req)
            chunks.append((req, chunk))
            budget -= chunk

    def _chunk(self, req: Request, budget: float) -> int:
        """The prompt tokens `req` computes in a step with `budget` tokens left."""
        left = req.target - req.computed
        return int(left if not self.cfg.chunked_prefill else min(left, budget, self.chunk_cap))

    def can_admit(self) -> bool:
        """Whether the next step would take a prompt chunk (if not, decode steps repeat)."""
        if self.prefilling:
            return True
        if not self.waiting or self.seats() >= self.cfg.max_num_seqs:
            return False
        head, n = self.waiting[0], len(self.decoding)
        if head.computed >= head.target:
            return self._resident_fits(head)
        if not self.cfg.chunked_prefill:  # a prefill-only step: the decoders do not grow in it
            return self._fits(head, self._chunk(head, self.cfg.max_num_batched_tokens), 0)
        chunk = self._chunk(head, self.cfg.max_num_batched_tokens - n * self.t)
        return chunk > 0 and self._fits(head, chunk, n)

    # --- after a step --------------------------------------------------------------------
    def advance(self, plan: StepPlan, now_s: float) -> list[Request]:
        """Book the step's tokens; returns the requests that finished with it."""
        done = []
        for req, chunk in plan.chunks:
            req.computed += chunk
            if req.computed < req.target:
                continue
            self.prefilling.remove(req)
            req.generated += 1
            if req.first_token_s < 0:
                req.first_token_s = now_s
                self.remember_prefix(req)
            if req.generated >= req.output:
                done.append(req)
                self._release(req, now_s)
            else:
                self._start_decoding(req)
        return done + self.pop_finished(now_s)

    def pop_finished(self, now_s: float) -> list[Request]:
        """Decoders whose last token came with the step just taken; also retire window crossings."""
        while self.window_heap and self.window_heap[0][0] <= self.steps:
            _, ticket, req = heapq.heappop(self.window_heap)
            if req.ticket == ticket and req.in_window:
                self._leave_window(req)
        done = []
        while self.finish_heap and self.finish_heap[0][0] <= self.steps:
            _, ticket, req = heapq.heappop(self.finish_heap)
            if req.ticket == ticket:
                self._stop_decoding(req)
                self._release(req, now_s)
                done.append(req)
        return done

    def steps_until_event(self) -> int:
        """Decode steps until the next decoder finishes or outgrows the window (live heap tops)."""
        for heap in (self.finish_heap, self.window_heap):
            while heap and heap[0][1] != heap[0][2].ticket:
                heapq.heappop(heap)
        tops = [h[0][0] - self.steps for h in (self.finish_heap, self.window_heap) if h]
        return max(min(tops), 0) if tops else 0

    # --- decoders as aggregates ------------------------------------------------------------
    def _start_decoding(self, req: Request) -> None:
        req.ticket, req.since_step = next(self._tickets), self.steps
        self.decoding[req.id] = req
        self.ctx_sum += req.computed
        left = math.ceil((req.output - req.generated) / self.e - 1e-9)
        heapq.heappush(self.finish_heap, (self.steps + left, req.ticket, req))
        if req.computed < self.window:
            req.in_window = True
            self.in_window += 1
            self.in_window_ctx += req.computed
            if math.isfinite(self.window):
                reach = math.ceil((self.window - req.computed) / self.e)
                heapq.heappush(self.window_heap, (self.steps + reach, req.ticket, req))

    def _stop_decoding(self, req: Request) -> None:
        """Write the decoder's context and output back and drop it from the aggregates."""
        ctx = self.context(req)
        req.generated += ctx - req.computed
        if req.in_window:
            self._leave_window(req)
        req.computed, req.ticket = ctx, -1
        del self.decoding[req.id]
        self.ctx_sum -= ctx

    def _leave_window(self, req: Request) -> None:
        req.in_window = False
        self.in_window -= 1
        self.in_window_ctx -= self.context(req)

    def _newest(self) -> Request:
        last_decoder = self.decoding[next(reversed(self.decoding))] if self.decoding else None
        last_prefill = self.prefilling[-1] if self.prefilling else None
        if last_decoder is None or (last_prefill is not None and last_prefill.admitted > last_decoder.admitted):
            assert last_prefill is not None
            return last_prefill
        return last_decoder

    def _preempt_newest(self) -> Request:
        """Preempt the newest request in the cache, whichever engine sharing it runs it (as vLLM's
        one scheduler does over a pipeline's micro-batches): the oldest always progresses. Each
        engine choosing among its own let a pipeline's micro-batches, each with a long prompt in
        a cache that holds one, preempt themselves in turn forever."""
        owner, victim = max(((s, s._newest()) for s in self.pool.schedulers if s.decoding or s.prefilling),
                            key=lambda pair: pair[1].admitted)
        owner._preempt(victim)
        self._preempted_this_step = True
        return victim

    def _preempt(self, victim: Request) -> None:
        """Recompute preemption: drop the KV; the prompt and the tokens so far are prefilled again."""
        if victim.ticket >= 0:
            self._stop_decoding(victim)
        else:
            self.prefilling.remove(victim)
        self._release(victim, 0.0)
        self._preempted_this_step = True
        victim.preemptions += 1
        victim.admitted = -1
        victim.target = victim.prompt + int(victim.generated)
        victim.computed = 0
        self.waiting.appendleft(victim)

    # --- prefix cache ------------------------------------------------------------------
    def _prefix_hit_tokens(self, req: Request) -> int:
        if not (self.cfg.enable_prefix_caching and req.prefix):
            return 0
        hits = 0
        for block in req.prefix:
            if block not in self.prefix:
                break
            self.prefix.move_to_end(block)
            hits += 1
        usable = hits * self.cfg.prefix_block_tokens // self.prefix_step_tokens * self.prefix_step_tokens
        self.prefix_lookups += len(req.prefix)
        self.prefix_hits += usable // self.cfg.prefix_block_tokens
        hit_tokens = min(usable, req.prompt - 1)  # the last prompt token is always computed
        self.prefix_hit_tokens += hit_tokens
        return hit_tokens

    def remember_prefix(self, req: Request) -> None:
        for block in req.prefix:
            self.prefix[block] = None
            self.prefix.move_to_end(block)
        while len(self.prefix) > self.prefix_capacity:
            self.prefix.popitem(last=False)
