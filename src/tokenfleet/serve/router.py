"""Routing policies across engines, as string-named registered functions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tokenfleet.errors import TokenfleetError
from tokenfleet.serve.replica import Replica
from tokenfleet.serve.request import Request

Policy = Callable[[Request, Sequence[Replica], int], int]
ROUTERS: dict[str, Policy] = {}


def register(name: str) -> Callable[[Policy], Policy]:
    def wrap(fn: Policy) -> Policy:
        ROUTERS[name] = fn
        return fn

    return wrap


@register("round-robin")
def round_robin(req: Request, engines: Sequence[Replica], seq: int) -> int:
    return seq % len(engines)


@register("least-outstanding-tokens")
def least_outstanding(req: Request, engines: Sequence[Replica], seq: int) -> int:
    return min(range(len(engines)), key=lambda i: (engines[i].outstanding_tokens, i))


@register("prefix-affinity")
def prefix_affinity(req: Request, engines: Sequence[Replica], seq: int) -> int:
    """Same first prefix block, same engine (its cache holds the prefix); else least loaded."""
    if req.prefix:
        return hash(req.prefix[0]) % len(engines)
    return least_outstanding(req, engines, seq)


def get_router(name: str) -> Policy:
    if name not in ROUTERS:
        raise TokenfleetError(f"unknown router {name!r}; choose one of: {', '.join(ROUTERS)}")
    return ROUTERS[name]
