"""Continuous batching with paged KV blocks, chunked prefill, prefix reuse and recompute
preemption: one per-step token budget, and each request's computed tokens catch up to its
target (the vLLM v1 idea). Policy lives here; cost lives in the cost model."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from tokenfleet.serve.config import SchedulerConfig
from tokenfleet.serve.request import Request


@dataclass
class StepPlan:
    """What one step computes: prompt chunks and decode tokens."""

    prefills: list[tuple[Request, int]] = field(default_factory=list)
    decodes: list[Request] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.prefills and not self.decodes


class BlockPool:
    """Paged KV blocks of one replica, shared by its pipeline's micro-batch engines."""

    def __init__(self, blocks: int):
        self.total = self.free = blocks


class Scheduler:
    """FCFS admission, running requests first, newest preempted first when blocks run out."""

    def __init__(self, cfg: SchedulerConfig, pool: BlockPool):
        self.cfg, self.pool = cfg, pool
        kv_blocks = pool.total
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.prefix: OrderedDict[int, None] = OrderedDict()  # resident prefix blocks, LRU order
        self.prefix_capacity = kv_blocks * cfg.block_size // cfg.prefix_block_tokens
        self.tokens_per_step = cfg.spec.tokens_per_step
        self.prefill_target: dict[int, int] = {}
        self.prefix_lookups = self.prefix_hits = 0

    # --- KV blocks ---------------------------------------------------------------------
    def blocks_for(self, tokens: float) -> int:
        return math.ceil(tokens / self.cfg.block_size)

    def _grow(self, req: Request, context: float) -> bool:
        need = self.blocks_for(context) - req.blocks
        if need > self.pool.free:
            return False
        self.pool.free -= need
        req.blocks += need
        return True

    @property
    def total_blocks(self) -> int:
        return self.pool.total

    @property
    def free_blocks(self) -> int:
        return self.pool.free

    def release(self, req: Request) -> None:
        self.pool.free += req.blocks
        req.blocks = 0

    def _preempt(self, victim: Request) -> None:
        """Recompute preemption: drop the KV; the prompt and the tokens so far are prefilled again."""
        self.running.remove(victim)
        self.release(victim)
        victim.preemptions += 1
        self.prefill_target[victim.id] = victim.prompt + int(victim.generated)
        victim.computed = 0
        self.waiting.appendleft(victim)

    # --- prefix cache ------------------------------------------------------------------
    def _prefix_hit_tokens(self, req: Request) -> int:
        if not (self.cfg.enable_prefix_caching and req.prefix) or req.preemptions:
            return 0
        hits = 0
        for block in req.prefix:
            if block not in self.prefix:
                break
            self.prefix.move_to_end(block)
            hits += 1
        self.prefix_lookups += len(req.prefix)
        self.prefix_hits += hits
        return min(hits * self.cfg.prefix_block_tokens, req.prompt - 1)

    def remember_prefix(self, req: Request) -> None:
        for block in req.prefix:
            self.prefix[block] = None
            self.prefix.move_to_end(block)
        while len(self.prefix) > self.prefix_capacity:
            self.prefix.popitem(last=False)

    # --- scheduling --------------------------------------------------------------------
    def target(self, req: Request) -> int:
        return self.prefill_target.get(req.id, req.prompt)

    def schedule(self) -> StepPlan:
        plan, budget = StepPlan(), self.cfg.max_num_batched_tokens
        decode_cost = self.cfg.spec.draft_tokens + 1
        for req in list(self.running):
            if req not in self.running:  # preempted earlier in this pass
                continue
            prefilling = req.computed < self.target(req)
            want = int(min(self.target(req) - req.computed, budget)) if prefilling else decode_cost
            if want > budget or want <= 0:
                continue
            grow_to = req.computed + (want if prefilling else self.tokens_per_step)
            while not self._grow(req, grow_to):
                self._preempt(self.running[-1])
                if req not in self.running:
                    break
            else:
                budget -= want
                if prefilling:
                    plan.prefills.append((req, want))
                else:
                    plan.decodes.append(req)
        self._admit(plan, budget)
        return plan

    def _admit(self, plan: StepPlan, budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_num_seqs:
            req = self.waiting[0]
            if req.computed == 0 and not req.preemptions and not req.prefix_hit_tokens:
                req.prefix_hit_tokens = req.computed = self._prefix_hit_tokens(req)
            chunk = int(min(self.target(req) - req.computed, budget))
            if not self._grow(req, req.computed + chunk):
                break
            self.waiting.popleft()
            self.running.append(req)
            plan.prefills.append((req, chunk))
            budget -= chunk

    def decode_only(self) -> bool:
        """True when the next steps are plain decodes of the same requests (closed-form runs)."""
        if not self.running or any(r.computed < self.target(r) for r in self.running):
            return False
        return not self.waiting or len(self.running) >= self.cfg.max_num_seqs or self._head_blocked()

    def _head_blocked(self) -> bool:
        head = self.waiting[0]
        chunk = min(self.target(head) - head.computed, self.cfg.max_num_batched_tokens - len(self.running) * (self.cfg.spec.draft_tokens + 1))
        return chunk <= 0 or self.blocks_for(head.computed + chunk) - head.blocks > self.pool.free
