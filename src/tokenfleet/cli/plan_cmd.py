"""`tokenfleet plan` and `tokenfleet sweep`: the fleet planner from the command line.

The fleet layer (scipy, the simulator) is imported inside the commands so that the rest of the
CLI starts as fast as before.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tokenfleet.cli.tables import wide_console

PlanFile = Annotated[Path, typer.Argument(help="plan file (YAML): classes, hardware, prices, limits, options")]
BackendOpt = Annotated[str, typer.Option("--backend", help="local (process pool) or ray (RAY_ADDRESS, else a local Ray)")]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="parallel simulations (default: all cores)")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="folder for JSON and CSV results")]
CacheOpt = Annotated[Path | None, typer.Option("--cache", help="capacity cache folder (default: $TOKENFLEET_CACHE or ~/.cache/tokenfleet)")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="neither read nor write the cache")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON for machines")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def _runner(backend: str, workers: int | None, cache: Path | None, no_cache: bool, quiet: bool) -> Any:
    from tokenfleet.fleet.backends import Runner
    from tokenfleet.fleet.cache import Cache, default_cache_dir

    root = None if no_cache else (cache or default_cache_dir())
    return Runner(Cache(root), backend=backend, workers=workers, show_progress=not quiet)



def _emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=float) + "\n")


def plan_command(file: PlanFile, backend: BackendOpt = "local", workers: WorkersOpt = None, out: OutOpt = None,
                 cache: CacheOpt = None, no_cache: NoCacheOpt = False, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """The cheapest verified fleet for several traffic classes, each with its own SLOs."""
    from tokenfleet.fleet.plan_file import load_plan
    from tokenfleet.fleet.planner import plan_fleet
    from tokenfleet.fleet.report import build_result, print_result, write_outputs

    plan, _ = load_plan(file)
    with _runner(backend, workers, cache, no_cache, quiet or json_out) as runner:
        result = build_result(plan_fleet(plan, runner))
    if out is not None:
        write_outputs(result, out)
    if json_out:
        _emit(result)
    else:
        print_result(wide_console(), result)


def sweep_command(file: PlanFile,
                  vary: Annotated[str, typer.Option("--vary", help="PATH=start:stop:steps, e.g. classes.coding.share=0:1:5")],
                  backend: BackendOpt = "local", workers: WorkersOpt = None, out: OutOpt = None, cache: CacheOpt = None,
                  no_cache: NoCacheOpt = False, json_out: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Re-plan while one input moves; how the mix, the hardware shares and $/Mtok follow."""
    from tokenfleet.fleet.plan_file import load_plan
    from tokenfleet.fleet.sweep import print_sweep, run_sweep, write_sweep

    _, raw = load_plan(file)
    with _runner(backend, workers, cache, no_cache, quiet or json_out) as runner:
        result = run_sweep(raw, vary, runner, source=file.name)
    if out is not None:
        write_sweep(result, out)
    if json_out:
        _emit(result)
    else:
        print_sweep(wide_console(), result)
