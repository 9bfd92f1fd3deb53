"""Sensitivity sweeps: re-plan while one input moves, sharing one capacity cache.

`--vary PATH=start:stop:steps` sets a dotted path into the plan file to each of `steps` evenly
spaced values. List items are addressed by index or by name (`classes.coding.share`). Varying a
class's `share` rescales the other classes' shares so they still add up to 1, so
`classes.coding.share=0:1:5` moves the traffic from all chat to all coding at a fixed total.

All points' capacity searches run first, as one batch (deduplicated, cached); then each point
is solved and verified. A point with no verified fleet is reported with its reason.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.backends import Runner
from tokenfleet.fleet.capacity import CapacityJob
from tokenfleet.fleet.plan_file import Plan, parse_plan
from tokenfleet.fleet.planner import Context, PlanRun, prepare, solve_verified
from tokenfleet.fleet.report import FAMILIES, build_result

VARY_HELP = "--vary must look like PATH=start:stop:steps, e.g. classes.coding.share=0:1:5"


def parse_vary(text: str) -> tuple[list[str], list[float]]:
    path, sep, rng = text.partition("=")
    parts = rng.split(":")
    if not sep or not path.strip() or len(parts) != 3:
        raise TokenfleetError(f"{VARY_HELP}; got {text!r}")
    try:
        start, stop, steps = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise TokenfleetError(f"{VARY_HELP}; got {text!r}") from None
    if not 1 <= steps <= 1000:
        raise TokenfleetError(f"--vary: steps must be 1 to 1000, got {steps}")
    values = [start] if steps == 1 else [float(v) for v in np.linspace(start, stop, steps)]
    return path.strip().split("."), values


def _child(node: Any, part: str, where: str) -> tuple[Any, str | int]:
    """The container key (dict key or list index) that `part` names inside `node`."""
    if isinstance(node, list):
        if part.isdigit() and int(part) < len(node):
            return node, int(part)
        for i, item in enumerate(node):
            if isinstance(item, dict) and item.get("name", item.get("chip")) == part:
                return node, i
        names = [str(x.get("name", x.get("chip"))) if isinstance(x, dict) else str(x) for x in node]
        raise TokenfleetError(f"--vary: {where} has no item {part!r}; choose an index or one of: {', '.join(names)}")
    if isinstance(node, dict):
        return node, part
    raise TokenfleetError(f"--vary: {where} is a value, not a mapping or list")


def set_path(raw: dict[str, Any], path: list[str], value: float) -> dict[str, Any]:
    """A copy of the plan data with `path` set to `value` (shares of other classes rescaled)."""
    data = copy.deepcopy(raw)
    node: Any = data
    for depth, part in enumerate(path):
        container, key = _child(node, part, ".".join(path[:depth]) or "the plan")
        if depth == len(path) - 1:
            container[key] = value
        else:
            if isinstance(container, dict) and key not in container:
                container[key] = {}
            node = container[key]  # type: ignore[index]
    if len(path) == 3 and path[0] == "classes" and path[2] == "share":
        _rescale_shares(data, node, value)
    return data


def _rescale_shares(data: dict[str, Any], moved: dict[str, Any], value: float) -> None:
    others = [c for c in data.get("classes", []) if c is not moved and isinstance(c, dict) and c.get("share") is not None]
    total = sum(float(c["share"]) for c in others)
    for c in others:
        c["share"] = (float(c["share"]) / total if total > 0 else 1 / len(others)) * max(1.0 - value, 0.0)


def _point_plans(raw: dict[str, Any], path: list[str], values: list[float], source: str) -> list[Plan]:
    return [parse_plan(set_path(raw, path, v), f"{source} with {'.'.join(path)}={v:g}") for v in values]


def _mix(result: dict[str, Any]) -> str:
    return ", ".join(f"{d['replicas']} x {d['short']}" for d in result["deployments"])


def _row(value: float, result: dict[str, Any]) -> dict[str, Any]:
    f = result["fleet"]
    row: dict[str, Any] = {"value": value, "usd_per_hour": f["usd_per_hour"], "usd_per_mtok": f["usd_per_mtok"],
                           "usd_per_mtok_all_tokens": f["usd_per_mtok_all_tokens"], "joules_per_token": f["joules_per_token"],
                           "chips": f["chips"], "chips_by_chip": f["chips_by_chip"], "mix": _mix(result), "rounds": result["verification"]["rounds"],
                           "error": ""}
    for fam in FAMILIES:
        for share in ("chip_share", "cost_share", "token_share"):
            row[f"{fam}_{share}"] = f["families"][fam][share]
    return row


def _solve_point(ctx: Context, by_key: dict[str, dict[str, Any]], runner: Runner) -> dict[str, Any]:
    start = time.perf_counter()
    capacity = {pair: by_key[job.key] for pair, job in ctx.jobs.items()}
    caps, rounds = solve_verified(ctx, capacity, runner)
    return build_result(PlanRun(ctx, capacity, caps, rounds, time.perf_counter() - start, runner.stats()))


def run_sweep(raw: dict[str, Any], vary: str, runner: Runner, source: str = "plan") -> dict[str, Any]:
    """Plan every point of the sweep; returns rows of how the fleet moves."""
    start = time.perf_counter()
    path, values = parse_vary(vary)
    plans = _point_plans(raw, path, values, source)
    contexts: list[Context | str] = []
    for plan in plans:
        try:
            contexts.append(prepare(plan))
        except TokenfleetError as exc:
            contexts.append(str(exc))
    jobs: dict[str, CapacityJob] = {j.key: j for c in contexts if isinstance(c, Context) for j in c.jobs.values()}
    by_key = runner.run(list(jobs.values()), f"capacity searches, {len(values)} points")
    rows = []
    for value, ctx in zip(values, contexts, strict=True):
        try:
            if isinstance(ctx, str):
                raise TokenfleetError(ctx)
            rows.append(_row(value, _solve_point(ctx, by_key, runner)))
        except TokenfleetError as exc:
            rows.append({"value": value, "error": str(exc)})
        if runner.show_progress:  # one line per point on stderr, whatever the terminal
            done = rows[-1]["error"] or f"${rows[-1]['usd_per_hour']:,.2f}/hour"
            runner.console.print(f"point {len(rows)}/{len(values)}: {'.'.join(path)} = {value:g}: {done}", highlight=False)
    return {"plan": plans[0].name, "vary": ".".join(path), "values": values, "points": rows, "stats": runner.stats(),
            "wall_s": time.perf_counter() - start}


# --- output ------------------------------------------------------------------------------------
def sweep_table(result: dict[str, Any]) -> Table:
    t = Table(title=f"{result['plan']}: sweep of {result['vary']}", title_justify="left")
    for col in (result["vary"], "$/hour", "$/Mtok out", "$/Mtok in+out", "J/tok", "chips gpu/tpu/sram", "cost gpu/tpu/sram", "tokens gpu/tpu/sram", "mix"):
        t.add_column(col, justify="left" if col == "mix" else "right")
    for r in result["points"]:
        if r["error"]:
            t.add_row(f"{r['value']:g}", *["-"] * 7, f"[red]{escape(r['error'])}[/]")
            continue
        shares = {s: " / ".join(f"{r[f'{fam}_{s}']:.0%}" for fam in FAMILIES) for s in ("chip_share", "cost_share", "token_share")}
        t.add_row(f"{r['value']:g}", f"{r['usd_per_hour']:,.2f}", f"{r['usd_per_mtok']:.3g}", f"{r['usd_per_mtok_all_tokens']:.3g}",
                  f"{r['joules_per_token']:.3g}", shares["chip_share"], shares["cost_share"], shares["token_share"], escape(r["mix"]))
    return t


def print_sweep(console: Console, result: dict[str, Any]) -> None:
    console.print(sweep_table(result))
    cap = result["stats"].get("capacity", {"computed": 0, "cached": 0})
    console.print(f"{len(result['points'])} points; capacity searches: {cap['computed']} simulated, {cap['cached']} cached; {result['wall_s']:.1f} s", highlight=False)


SWEEP_COLUMNS = ("value", "usd_per_hour", "usd_per_mtok", "usd_per_mtok_all_tokens", "joules_per_token", "chips",
                 *(f"{f}_{s}" for f in FAMILIES for s in ("chip_share", "cost_share", "token_share")), "mix", "error")


def write_sweep(result: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(SWEEP_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(result["points"])
    (out / "sweep.json").write_text(json.dumps(result, indent=2, default=float))
    (out / "sweep.csv").write_text(buf.getvalue())
    return [out / "sweep.json", out / "sweep.csv"]
