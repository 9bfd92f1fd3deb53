"""Sweeps: paths into the plan, shares that stay whole, and a sweep killed mid-way that resumes
without recomputing what finished and ends with the same answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.conftest import runner, tiny_plan, tokenfleet, write_plan
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.sweep import parse_vary, run_sweep, set_path

VARY = "classes.chat.min_tok_s_per_user=10:40:4"
KILLER = '''
import os, signal, sys
from pathlib import Path
from tokenfleet.fleet.backends import Runner
from tokenfleet.fleet.cache import Cache
from tokenfleet.fleet.plan_file import load_plan
from tokenfleet.fleet.sweep import run_sweep


class DiesAfter(Cache):
    """A cache whose process is killed (SIGKILL, no clean-up) after N entries are written."""

    def put(self, kind, key, result, about=None):
        super().put(kind, key, result, about)
        if sum(self.writes.values()) >= int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    _, raw = load_plan(sys.argv[1])
    with Runner(DiesAfter(Path(sys.argv[2])), workers=1, show_progress=False) as r:
        run_sweep(raw, sys.argv[4], r)
'''


def test_vary_paths_address_lists_by_name_or_index() -> None:
    raw = tiny_plan()
    assert set_path(raw, ["classes", "code", "goodput_target"], 0.5)["classes"][1]["goodput_target"] == 0.5
    assert set_path(raw, ["classes", "0", "min_tok_s_per_user"], 7)["classes"][0]["min_tok_s_per_user"] == 7
    assert set_path(raw, ["options", "verify", "max_rounds"], 2)["options"]["verify"] == {"max_rounds": 2}
    assert raw == tiny_plan()  # the original is left alone


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_varying_a_share_rescales_the_others_to_keep_the_total(share: float) -> None:
    classes = set_path(tiny_plan(), ["classes", "code", "share"], share)["classes"]
    assert classes[1]["share"] == share and sum(c["share"] for c in classes) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("vary", "message"),
    [("classes.chat.share", "must look like PATH=start:stop:steps"), ("classes.chat.share=a:1:3", "must look like"),
     ("classes.chat.share=0:1:0", "steps must be 1 to 1000")],
)
def test_bad_vary_is_one_line(vary: str, message: str) -> None:
    with pytest.raises(TokenfleetError, match=message):
        parse_vary(vary)


def test_a_path_to_nothing_lists_what_is_there() -> None:
    with pytest.raises(TokenfleetError, match="--vary: classes has no item 'x'; choose an index or one of: chat, code"):
        set_path(tiny_plan(), ["classes", "x", "share"], 0.5)


def test_a_sweep_reports_one_row_per_point(tmp_path: Path) -> None:
    with runner(tmp_path) as r:
        result = run_sweep(tiny_plan(), "classes.code.share=0:1:3", r)
    rows = result["points"]
    assert [p["value"] for p in rows] == [0.0, 0.5, 1.0] and not any(p["error"] for p in rows)
    assert all(p["gpu_chip_share"] == 1.0 and p["usd_per_hour"] > 0 and "h100-sxm" in p["mix"] for p in rows)


def _sweep_json(plan: Path, cache: Path) -> dict[str, Any]:
    out = tokenfleet("sweep", str(plan), "--vary", VARY, "--cache", str(cache), "--workers", "1", "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_a_killed_sweep_resumes_without_recomputing_finished_work(tmp_path: Path) -> None:
    one_class = tiny_plan(classes=[{**tiny_plan()["classes"][0], "share": 1.0}])
    plan = write_plan(tmp_path / "plan.yaml", one_class)
    (tmp_path / "killer.py").write_text(KILLER)
    cache = tmp_path / "cache"
    killed = subprocess.run([sys.executable, str(tmp_path / "killer.py"), str(plan), str(cache), "2", VARY], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr  # SIGKILL mid-way: two of four capacity searches done
    finished = {p: p.stat().st_mtime_ns for p in cache.rglob("*.json")}
    assert len(finished) == 2 and not list(cache.rglob("*.tmp"))

    resumed = _sweep_json(plan, cache)
    assert resumed["stats"]["capacity"] == {"computed": 2, "cached": 2}
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items())  # finished entries never rewritten

    clean = _sweep_json(plan, tmp_path / "fresh")
    assert resumed["points"] == clean["points"]
    assert not any(p["error"] for p in clean["points"])
