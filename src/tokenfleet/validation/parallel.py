"""Independent jobs of validation and calibration (a row's simulation, a kind's fit, a fold of
leave-one-source-out) on worker processes, results handed back as they finish."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from tokenfleet.errors import TokenfleetError

T = TypeVar("T")
R = TypeVar("R")


def worker_count(workers: int | None) -> int:
    """`--workers`: a positive count, all cores where not given."""
    if workers is not None and workers < 1:
        raise TokenfleetError(f"--workers must be a positive integer, got {workers}")
    return workers or os.cpu_count() or 1


def as_finished(job: Callable[[T], R], items: Sequence[T], workers: int) -> Iterator[tuple[int, R]]:
    """(index in `items`, job(item)) as each finishes: here, one after another, where `workers` is
    1 or there is one item; else on up to `workers` fresh processes (forkserver: no inherited
    threads), submitted in `items`' order, so put the longest first."""
    if workers <= 1 or len(items) <= 1:
        for i, item in enumerate(items):
            yield i, job(item)
        return
    context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
        futures = {pool.submit(job, item): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def in_order(job: Callable[[T], R], items: Sequence[T], workers: int,
             track: Callable[[Sequence[int], str], Iterable[int]] | None = None, description: str = "") -> list[R]:
    """[job(item) for item in items], run as `as_finished` runs them; `track` (e.g. a progress bar)
    wraps the loop over finished jobs."""
    done: dict[int, R] = {}
    finished = as_finished(job, items, workers)
    for _ in track(range(len(items)), description) if track else range(len(items)):
        i, result = next(finished)
        done[i] = result
    return [done[i] for i in range(len(items))]
