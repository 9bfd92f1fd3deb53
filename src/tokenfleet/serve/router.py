"""Routing policies across engines, as string-named registered factories (one policy per run,
so a policy may keep state, as a cache-aware router keeps its view of the engines' caches)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from tokenfleet.errors import TokenfleetError
from tokenfleet.serve.replica import Replica
from tokenfleet.serve.request import Request

Policy = Callable[[Request, Sequence[Replica], int], int]
ROUTERS: dict[str, Callable[[], Policy]] = {}

#: sglang-router's cache-aware defaults: follow a cached prefix only if it covers more than this
#: share of the prompt (`--cache-threshold`) ...
CACHE_THRESHOLD = 0.5
#: ... and only while loads are balanced: the busiest engine holding more than this many requests
#: beyond the idlest (`--balance-abs-threshold`) and more than this multiple of its load
#: (`--balance-rel-threshold`) sends the request to the shortest queue instead.
BALANCE_ABS_REQUESTS = 32
BALANCE_REL = 1.0001
#: Prefix blocks the router remembers (its approximate tree), least recently routed evicted first.
ROUTER_TREE_BLOCKS = 1 << 20


def register(name: str) -> Callable[[Callable[[], Policy]], Callable[[], Policy]]:
    def wrap(factory: Callable[[], Policy]) -> Callable[[], Policy]:
        ROUTERS[name] = factory
        return factory

    return wrap


def round_robin(req: Request, engines: Sequence[Replica], seq: int) -> int:
    return seq % len(engines)


def least_outstanding(req: Request, engines: Sequence[Replica], seq: int) -> int:
    return min(range(len(engines)), key=lambda i: (engines[i].outstanding_tokens, i))


register("round-robin")(lambda: round_robin)
register("least-outstanding-tokens")(lambda: least_outstanding)


class PrefixAffinity:
    """sglang-router's cache-aware policy over prefix blocks: each block is remembered with the
    engine it was last routed to (as the router's radix tree inserts a prompt when it routes it);
    a request goes to the engine holding the longest run of its leading blocks when that run
    covers more than CACHE_THRESHOLD of the prompt, else, or when loads are imbalanced, to the
    shortest queue (below the threshold sglang-router picks the worker with the smallest tree;
    we take the shortest queue). Policy and defaults: sgl-project/sglang router README."""

    def __init__(self) -> None:
        self.owner: OrderedDict[int, int] = OrderedDict()

    def __call__(self, req: Request, engines: Sequence[Replica], seq: int) -> int:
        loads = [len(e.sched.waiting) + e.sched.seats() for e in engines]
        lo, hi = min(loads), max(loads)
        pick = loads.index(lo)
        if req.prefix and not (hi - lo > BALANCE_ABS_REQUESTS and hi > BALANCE_REL * lo):
            home, matched = self.owner.get(req.prefix[0]), 0
            for block in req.prefix:
                if self.owner.get(block) != home:
                    break
                matched += 1
            block_tokens = engines[0].sched.cfg.prefix_block_tokens
            if home is not None and matched * block_tokens > CACHE_THRESHOLD * req.prompt:
                pick = home
        for block in req.prefix:
            self.owner[block] = pick
            self.owner.move_to_end(block)
        while len(self.owner) > ROUTER_TREE_BLOCKS:
            self.owner.popitem(last=False)
        return pick


register("prefix-affinity")(PrefixAffinity)


def get_router(name: str) -> Policy:
    """A fresh policy for one run."""
    if name not in ROUTERS:
        raise TokenfleetError(f"unknown router {name!r}; choose one of: {', '.join(ROUTERS)}")
    return ROUTERS[name]()
