"""The plan's result, JSON first; text tables and CSV files are rendered from the JSON.

Token and cost accounting use the planned rates (req/s x mean tokens), not the verification
sample, so shares are exact for the plan; latencies, goodput and J/token come from the
verification run. A class's cost on a shared deployment is the deployment's cost times the
class's share of the capacity budget it uses there. A deployment's `load` is the share of its
replicas' measured capacity the plan uses (1 = every replica at the highest rate that met the
SLOs in its capacity search): the headroom left for traffic the plan did not foresee.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tokenfleet.catalog.chips import get_chip
from tokenfleet.fleet.candidates import FAMILY_GROUP, Candidate
from tokenfleet.fleet.planner import DEDICATED, PlanRun, unit_label, utilisation
from tokenfleet.fleet.traffic import class_stats

FAMILIES = ("gpu", "tpu", "sram")
LATENCY_KEYS = ("p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "p99_tpot_ms")


def family_of(chip_id: str) -> str:
    return FAMILY_GROUP[get_chip(chip_id).family]


def _class_rows(run: PlanRun, name: str) -> list[dict[str, Any]]:
    ctx, final = run.ctx, run.final
    stats = class_stats(ctx.classes[name], ctx.plan.options.seed)
    load = utilisation(final.solution, run.caps)
    rows = []
    for (c, key), x in sorted(final.solution.split.items()):
        if c != name:
            continue
        cand, n = ctx.candidates[key], final.solution.replicas[key]
        budget = {cc: xx / run.caps[(cc, kk)] for (cc, kk), xx in final.solution.split.items() if kk == key}
        usd = cand.usd_per_hour(ctx.prices) * n * budget[c] / sum(budget.values())
        ver = final.verification[key]
        att = ver["streams"][c]
        out_tok_s = x * stats.mean_output_tokens
        rows.append({
            "class": c, "deployment": unit_label(ctx, key), "key": key, "chips_per_replica": cand.chips, "replicas": n, "chips": cand.chips * n,
            "shared_with": sorted(set(budget) - {c}), "rate_per_s": x, "traffic_share": x / ctx.rates[c],
            "capacity_per_replica": run.caps[(c, key)], "deployment_load": load[key], **{k: att[k] for k in LATENCY_KEYS},
            "good_fraction": att["good_fraction"], "verified_requests": att["requests"], "usd_per_hour": usd,
            "usd_per_mtok": usd / (out_tok_s * 3600) * 1e6,
            "usd_per_mtok_all_tokens": usd / (x * (stats.mean_input_tokens + stats.mean_output_tokens) * 3600) * 1e6,
            "joules_per_token": ver["summary"].get("joules_per_token"),
            "output_tokens_per_s": out_tok_s, "input_tokens_per_s": x * stats.mean_input_tokens,
        })
    return rows


def _classes(run: PlanRun) -> list[dict[str, Any]]:
    out = []
    for name, cls in run.ctx.classes.items():
        rows = _class_rows(run, name)
        rate = run.ctx.rates[name]
        good = sum(r["good_fraction"] * r["rate_per_s"] for r in rows) / rate
        out.append({"name": name, "rate_per_s": rate, "slo": cls.slo_bounds(), "goodput_target": cls.goodput_target,
                    "good_fraction": good, "met": good >= cls.goodput_target, "rows": rows})
    return out


def _families(run: PlanRun, classes: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    ctx, sol = run.ctx, run.final.solution
    fam = {f: {"chips": 0.0, "usd_per_hour": 0.0, "output_tokens_per_s": 0.0} for f in FAMILIES}
    for key, n in sol.replicas.items():
        cand = ctx.candidates[key]
        for chip, count in cand.chips_by_chip.items():
            fam[family_of(chip)]["chips"] += count * n
            fam[family_of(chip)]["usd_per_hour"] += count * n * ctx.prices[chip].usd_per_chip_hour
    for row in (r for c in classes for r in c["rows"]):
        fam[family_of(_decode_chip(ctx.candidates[row["key"]]))]["output_tokens_per_s"] += row["output_tokens_per_s"]
    totals = {k: sum(f[k] for f in fam.values()) for k in ("chips", "usd_per_hour", "output_tokens_per_s")}
    for f in fam.values():
        f["chip_share"] = f["chips"] / totals["chips"] if totals["chips"] else 0.0
        f["cost_share"] = f["usd_per_hour"] / totals["usd_per_hour"] if totals["usd_per_hour"] else 0.0
        f["token_share"] = f["output_tokens_per_s"] / totals["output_tokens_per_s"] if totals["output_tokens_per_s"] else 0.0
    return fam


def _decode_chip(cand: Candidate) -> str:
    return cand.stages[-1].chip_id


def _fleet(run: PlanRun, classes: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for c in classes for r in c["rows"]]
    usd = run.final.solution.usd_per_hour
    out_tok = sum(r["output_tokens_per_s"] for r in rows)
    all_tok = out_tok + sum(r["input_tokens_per_s"] for r in rows)
    joules = sum((r["joules_per_token"] or 0.0) * r["output_tokens_per_s"] for r in rows)
    chips: dict[str, int] = {}
    for key, n in run.final.solution.replicas.items():
        for chip, count in run.ctx.candidates[key].chips_by_chip.items():
            chips[chip] = chips.get(chip, 0) + count * n
    return {"usd_per_hour": usd, "output_tokens_per_s": out_tok, "usd_per_mtok": usd / (out_tok * 3600) * 1e6,
            "usd_per_mtok_all_tokens": usd / (all_tok * 3600) * 1e6, "joules_per_token": joules / out_tok,
            "chips": sum(chips.values()), "chips_by_chip": dict(sorted(chips.items())), "families": _families(run, classes)}


def _deployments(run: PlanRun) -> list[dict[str, Any]]:
    sol = run.final.solution
    load = utilisation(sol, run.caps)
    out = []
    for key, n in sorted(sol.replicas.items()):
        cand = run.ctx.candidates[key]
        only = f" [{key.split(DEDICATED)[1]} only]" if DEDICATED in key else ""
        out.append({**cand.describe(), "key": key, "label": unit_label(run.ctx, key), "short": cand.short + only, "replicas": n, "total_chips": cand.chips * n, "usd_per_hour": cand.usd_per_hour(run.ctx.prices) * n,
                    "classes": {c: x for (c, k), x in sol.split.items() if k == key}, "load": load[key],
                    "verification": run.final.verification.get(key, {}).get("summary", {})})
    return out


def _capacities(run: PlanRun) -> list[dict[str, Any]]:
    rows = []
    for ch in run.ctx.choices:
        res = run.capacity.get((ch.cls, ch.candidate.key))
        rows.append({"class": ch.cls, "candidate": ch.candidate.key, "label": ch.candidate.label, "simulated": ch.simulate,
                     "static": ch.estimate.as_dict(), "rate_per_s": res["rate_per_s"] if res else 0.0,
                     "usd_per_hour": ch.candidate.usd_per_hour(run.ctx.prices), "why": (res or {}).get("reason") or ch.pruned})
    return rows


def build_result(run: PlanRun) -> dict[str, Any]:
    """The plan's answer as one JSON-ready dict."""
    classes = _classes(run)
    history = [{"round": i + 1, "usd_per_hour": r.solution.usd_per_hour, "missed": [m.line(unit_label(run.ctx, m.unit)) for m in r.missed]}
               for i, r in enumerate(run.rounds)]
    return {
        "plan": run.ctx.plan.name, "classes": classes, "fleet": _fleet(run, classes), "deployments": _deployments(run),
        "verification": {"passed": True, "rounds": len(run.rounds), "history": history},
        "prices": {chip: {"usd_per_chip_hour": p.usd_per_chip_hour, "basis": p.basis} for chip, p in run.ctx.prices.items()},
        "capacities": _capacities(run), "notes": run.ctx.notes, "stats": run.stats, "wall_s": run.wall_s,
    }


# --- text ---------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    v = float(x)
    if v != v:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}g}"


def percent(share: float) -> str:
    """A share as a percentage: whole percent from 10% up, one decimal below (a replica taking 0.4%
    of a class must not read as 0%)."""
    return f"{share:.0%}" if share >= 0.1 or share == 0 else f"{share:.1%}"


def class_table(result: dict[str, Any]) -> Table:
    t = Table(title=f"{result['plan']}: traffic classes (verified)", title_justify="left")
    for col in ("class", "deployment", "replicas", "chips", "share", "req/s", "load", "TTFT p50/p99 ms", "TPOT p50/p99 ms", "good", "$/Mtok", "J/tok"):
        t.add_column(col, justify="left" if col in ("class", "deployment") else "right")
    for c in result["classes"]:
        for r in c["rows"]:
            shared = f" [dim](shared with {', '.join(r['shared_with'])})[/]" if r["shared_with"] else ""
            t.add_row(c["name"], escape(r["deployment"]) + shared, str(r["replicas"]), str(r["chips"]), percent(r["traffic_share"]), _f(r["rate_per_s"]),
                      percent(r["deployment_load"]),
                      f"{_f(r['p50_ttft_ms'])} / {_f(r['p99_ttft_ms'])}", f"{_f(r['p50_tpot_ms'])} / {_f(r['p99_tpot_ms'])}",
                      f"{r['good_fraction']:.3f}", _f(r["usd_per_mtok"]), _f(r["joules_per_token"]))
    return t


def fleet_table(result: dict[str, Any]) -> Table:
    f = result["fleet"]
    t = Table(title=f"fleet: ${f['usd_per_hour']:,.2f}/hour, ${f['usd_per_mtok']:.3g}/Mtok output (${f['usd_per_mtok_all_tokens']:.3g}/Mtok in+out), {_f(f['joules_per_token'])} J/token",
              title_justify="left")
    for col in ("hardware", "chips", "share of chips", "share of cost", "share of output tokens", "$/hour"):
        t.add_column(col, justify="left" if col == "hardware" else "right")
    for name, fam in f["families"].items():
        kinds = ", ".join(f"{n} x {chip}" for chip, n in f["chips_by_chip"].items() if family_of(chip) == name)
        t.add_row(f"{name}" + (f" ({kinds})" if kinds else ""), f"{fam['chips']:.0f}", percent(fam["chip_share"]), percent(fam["cost_share"]),
                  percent(fam["token_share"]), f"{fam['usd_per_hour']:,.2f}")
    return t


def summary_line(result: dict[str, Any]) -> str:
    stats, ver = result["stats"], result["verification"]
    cap = stats.get("capacity", {"computed": 0, "cached": 0})
    vjobs = stats.get("verify", {"computed": 0, "cached": 0})
    return (f"capacity searches: {cap['computed'] + cap['cached']} ({cap['computed']} simulated, {cap['cached']} cached); "
            f"verification: {ver['rounds']} round(s), {vjobs['computed']} simulated, {vjobs['cached']} cached; {result['wall_s']:.1f} s")


def print_result(console: Console, result: dict[str, Any]) -> None:
    console.print(class_table(result))
    console.print(fleet_table(result))
    console.print(summary_line(result), highlight=False)


# --- files -------------------------------------------------------------------------------------
CLASS_COLUMNS = ("class", "deployment", "replicas", "chips", "traffic_share", "rate_per_s", "capacity_per_replica", "deployment_load", *LATENCY_KEYS,
                 "good_fraction", "usd_per_hour", "usd_per_mtok", "usd_per_mtok_all_tokens", "joules_per_token")


def _csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def fleet_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    f = result["fleet"]
    rows = [{"hardware": name, **fam} for name, fam in f["families"].items()]
    rows.append({"hardware": "total", "chips": f["chips"], "usd_per_hour": f["usd_per_hour"], "output_tokens_per_s": f["output_tokens_per_s"],
                 "chip_share": 1.0, "cost_share": 1.0, "token_share": 1.0})
    return rows


def write_outputs(result: dict[str, Any], out: Path) -> list[Path]:
    """plan.json, classes.csv, fleet.csv and capacities.csv under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "plan.json": json.dumps(result, indent=2, default=float),
        "classes.csv": _csv([r for c in result["classes"] for r in c["rows"]], CLASS_COLUMNS),
        "fleet.csv": _csv(fleet_rows(result), ("hardware", "chips", "chip_share", "cost_share", "token_share", "usd_per_hour", "output_tokens_per_s")),
        "capacities.csv": _csv(result["capacities"], ("class", "candidate", "simulated", "rate_per_s", "usd_per_hour", "why")),
    }
    for name, text in files.items():
        (out / name).write_text(text)
    return [out / n for n in files]
