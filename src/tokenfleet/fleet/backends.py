"""Run simulation jobs on a local process pool or on Ray, through the disk cache.

A job is a picklable object with `kind`, `key`, `about()` and `run() -> dict`. Cached jobs are
answered from disk; the rest run in parallel and each result is written to the cache the
moment it arrives, so an interrupted run loses only the jobs that were in flight.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.cache import Cache, digest
from tokenfleet.perf.efficiency import EFFICIENCY_DATA_ENV, EFFICIENCY_ENV, STACK_ENV

Backend = Literal["local", "ray"]
BACKENDS = ("local", "ray")


class Job(Protocol):
    kind: ClassVar[str]

    @property
    def key(self) -> str: ...

    def identity(self) -> dict[str, Any]: ...

    def about(self) -> dict[str, Any]: ...

    def run(self) -> dict[str, Any]: ...


def execute(job: Job) -> tuple[str, dict[str, Any]]:
    """Run one job (in a worker process or a Ray task), after checking that this worker would key
    it as the planner did: a worker with other code or another calibration would otherwise put
    its numbers in the cache under the planner's key."""
    if digest(job.identity()) != job.key:
        raise TokenfleetError(
            f"a worker sees this {job.kind} job differently from the planner (other tokenfleet code or calibration "
            f"on the worker): install the same version there and give it the same {EFFICIENCY_ENV}"
        )
    return job.key, job.run()


@dataclass
class Runner:
    """Maps jobs over a backend; counts what was computed and what came from the cache."""

    cache: Cache
    backend: str = "local"
    workers: int | None = None
    show_progress: bool = True
    console: Console = field(default_factory=lambda: Console(stderr=True))
    computed: dict[str, int] = field(default_factory=dict)
    cached: dict[str, int] = field(default_factory=dict)
    _pool: Executor | None = None
    _ray_started: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise TokenfleetError(f"unknown --backend {self.backend!r}: choose one of: {', '.join(BACKENDS)}")
        if self.workers is not None and self.workers < 1:
            raise TokenfleetError(f"--workers must be a positive integer, got {self.workers}")
        self.workers = self.workers or os.cpu_count() or 1

    # --- public ------------------------------------------------------------------------------
    def run(self, jobs: Sequence[Job], label: str) -> dict[str, dict[str, Any]]:
        """Every job's result by key: from the cache where present, else computed now."""
        results: dict[str, dict[str, Any]] = {}
        todo: dict[str, Job] = {}
        for job in jobs:
            hit = self.cache.get(job.kind, job.key)
            if hit is not None:
                results[job.key] = hit
                self.cached[job.kind] = self.cached.get(job.kind, 0) + 1
            elif job.key not in results:
                todo[job.key] = job
        with self._progress(label, len(todo)) as advance:
            for key, result in self._map(list(todo.values())):
                job = todo[key]
                self.cache.put(job.kind, key, result, job.about())
                self.computed[job.kind] = self.computed.get(job.kind, 0) + 1
                results[key] = result
                advance()
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._ray_started:
            import ray

            ray.shutdown()
            self._ray_started = False

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, dict[str, int]]:
        kinds = sorted(set(self.computed) | set(self.cached))
        return {k: {"computed": self.computed.get(k, 0), "cached": self.cached.get(k, 0)} for k in kinds}

    # --- backends ----------------------------------------------------------------------------
    def _map(self, jobs: list[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        if not jobs:
            return iter(())
        if self.backend == "ray":
            return self._map_ray(jobs)
        if self.workers == 1 or len(jobs) == 1:
            return (execute(j) for j in jobs)
        return self._map_pool(jobs)

    def _map_pool(self, jobs: list[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
            if os.name == "posix":
                ctx.set_forkserver_preload(["tokenfleet.fleet.capacity"])
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        futures: list[Future[tuple[str, dict[str, Any]]]] = [self._pool.submit(execute, j) for j in jobs]
        for fut in as_completed(futures):
            yield fut.result()

    def _map_ray(self, jobs: list[Job]) -> Iterator[tuple[str, dict[str, Any]]]:
        ray = _import_ray()
        if not ray.is_initialized():
            local = {} if os.environ.get("RAY_ADDRESS") else {"num_cpus": self.workers}
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, **local)
            self._ray_started = True
        task = ray.remote(execute)
        env_vars = {STACK_ENV: os.environ[STACK_ENV]} if os.environ.get(STACK_ENV) else {}
        if os.environ.get(EFFICIENCY_ENV):  # a user's fit travels with the tasks, not as a path the cluster lacks
            with open(os.environ[EFFICIENCY_ENV]) as f:
                env_vars[EFFICIENCY_DATA_ENV] = f.read()
        if env_vars:
            task = task.options(runtime_env={"env_vars": env_vars})
        pending = [task.remote(j) for j in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def _progress(self, label: str, total: int) -> _ProgressContext:
        return _ProgressContext(self.console, label, total, self.show_progress and total > 0 and self.console.is_terminal)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TokenfleetError('--backend ray needs Ray: pip install "tokenfleet[ray]"') from None
    return ray


class _ProgressContext:
    """A rich progress bar of jobs done / total (nothing when disabled)."""

    def __init__(self, console: Console, label: str, total: int, enabled: bool):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=True, disable=not enabled)
        self.task = self.bar.add_task(label, total=total)

    def __enter__(self) -> Callable[[], None]:
        self.bar.start()
        return lambda: self.bar.advance(self.task)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
