"""Wall time of `tokenfleet plan examples/coding_vs_chat.yaml`, from a cold and a warm cache.

Targets (issue 4): <= 60 s from a cold cache on 2 cores, <= 5 s warm. Both runs are the command
a user types (a fresh process each, imports included), on all cores, with the cache in a
temporary folder so an existing ~/.cache/tokenfleet neither helps nor is touched.
Run: python benchmarks/bench_planner.py [PLAN.yaml]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COLD_TARGET_S, WARM_TARGET_S = 60.0, 5.0


def plan(path: Path, cache: Path) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tokenfleet.cli.main", "plan", str(path), "--cache", str(cache), "--json"],
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"plan failed: {out.stderr.strip()}")
    result: dict[str, Any] = json.loads(out.stdout)
    return wall, result


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "examples" / "coding_vs_chat.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        cold_s, cold = plan(path, Path(tmp))
        warm_s, warm = plan(path, Path(tmp))
    cap, ver = cold["stats"]["capacity"], cold["stats"].get("verify", {"computed": 0})
    fleet = warm["fleet"]
    print(f"{path.name} on {os.cpu_count()} cores")
    print(f"cold cache: {cold_s:6.1f} s  (target <= {COLD_TARGET_S:.0f} s; {cap['computed']} capacity searches, "
          f"{ver['computed']} verification runs, {cold['verification']['rounds']} round(s))")
    print(f"warm cache: {warm_s:6.1f} s  (target <= {WARM_TARGET_S:.0f} s; {warm['stats']['capacity']['cached']} searches from the cache)")
    print(f"answer: ${fleet['usd_per_hour']:,.2f}/hour, ${fleet['usd_per_mtok']:.2f}/Mtok output; same both runs: {cold['fleet'] == fleet}")


if __name__ == "__main__":
    main()
