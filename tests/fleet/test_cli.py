"""`tokenfleet plan` and `tokenfleet sweep` as a user meets them: tables, JSON, CSV files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.fleet.conftest import tokenfleet


def test_plan_prints_tables_and_writes_json_and_csv(plan_path: Path, tmp_path: Path) -> None:
    out = tokenfleet("plan", str(plan_path), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "traffic classes (verified)" in out.stdout and "share of cost" in out.stdout and "$/hour" in out.stdout
    assert "capacity searches: " in out.stdout
    result = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert result["verification"]["passed"] and {c["name"] for c in result["classes"]} == {"chat", "code"}
    rows = list(csv.DictReader((tmp_path / "out" / "classes.csv").open()))
    assert {r["class"] for r in rows} == {"chat", "code"} and all(float(r["usd_per_mtok"]) > 0 for r in rows)
    fleet = list(csv.DictReader((tmp_path / "out" / "fleet.csv").open()))
    assert [r["hardware"] for r in fleet] == ["gpu", "tpu", "sram", "total"]


def test_plan_json_on_stdout_is_the_whole_result(plan_path: Path, tmp_path: Path) -> None:
    out = tokenfleet("plan", str(plan_path), "--cache", str(tmp_path / "cache"), "--json", "--workers", "1")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"classes", "fleet", "deployments", "verification", "capacities", "prices", "stats"} <= set(result)


def test_sweep_writes_csv(plan_path: Path, tmp_path: Path) -> None:
    out = tokenfleet("sweep", str(plan_path), "--vary", "classes.code.share=0:1:2", "--cache", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "out"), "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "sweep of classes.code.share" in out.stdout
    rows = list(csv.DictReader((tmp_path / "out" / "sweep.csv").open()))
    assert [float(r["value"]) for r in rows] == [0.0, 1.0]


def test_sweep_bad_vary_is_one_line(plan_path: Path) -> None:
    out = tokenfleet("sweep", str(plan_path), "--vary", "classes.nope.share=0:1:2", "--no-cache")
    assert out.returncode == 2 and "has no item 'nope'" in out.stderr and len(out.stderr.strip().splitlines()) == 1
