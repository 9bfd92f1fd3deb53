"""Backends: the local process pool and Ray give the answer the in-process run gives; a missing
Ray is one clear line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.fleet.conftest import runner, tiny_plan, tokenfleet
from tokenfleet.errors import TokenfleetError
from tokenfleet.fleet.plan_file import parse_plan
from tokenfleet.fleet.planner import plan_fleet
from tokenfleet.fleet.report import build_result


def fleet_of(tmp: Path, **kw: object) -> dict[str, object]:
    with runner(tmp, **kw) as r:
        result = build_result(plan_fleet(parse_plan(tiny_plan()), r))
    assert r.computed["capacity"] >= 2  # really computed on this backend, not read from a cache
    fleet: dict[str, object] = result["fleet"]
    return fleet


def test_process_pool_matches_in_process(tmp_path: Path) -> None:
    assert fleet_of(tmp_path / "pool", workers=2) == fleet_of(tmp_path / "inline", workers=1)


def test_a_small_plan_on_a_local_ray_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # no cluster: ray.init() starts a local one
    assert fleet_of(tmp_path / "ray", backend="ray", workers=2) == fleet_of(tmp_path / "inline", workers=1)


def test_missing_ray_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with runner(tmp_path, backend="ray") as r, pytest.raises(TokenfleetError, match=r'--backend ray needs Ray: pip install "tokenfleet\[ray\]"'):
        plan_fleet(parse_plan(tiny_plan()), r)


@pytest.mark.parametrize(("kw", "message"), [({"backend": "dask"}, "unknown --backend 'dask'"), ({"workers": 0}, "--workers must be a positive integer")])
def test_bad_backend_options(tmp_path: Path, kw: dict[str, object], message: str) -> None:
    with pytest.raises(TokenfleetError, match=message):
        runner(tmp_path, **kw)


def test_missing_ray_through_the_cli_keeps_the_extra_in_brackets(plan_path: Path) -> None:
    (plan_path.parent / "ray.py").write_text("raise ImportError('not installed')\n")  # shadows any installed Ray
    out = tokenfleet("plan", str(plan_path), "--backend", "ray", "--no-cache", "-q", env_extra={"PYTHONPATH": str(plan_path.parent)})
    assert out.returncode == 2 and out.stderr.strip() == 'error: --backend ray needs Ray: pip install "tokenfleet[ray]"'


AMD_FIT = "kinds:\n  amd:\n    params: {mem_eff: 0.9, compute_eff: 0.9, layer_overhead_s: 0, moe_layer_overhead_s: 0, step_overhead_s: 0}\n"


def test_a_worker_with_another_calibration_refuses_the_job_instead_of_caching_its_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner keys a job with its own fit; a worker that sees another (say a Ray node without
    the user's fit) must not answer under that key."""
    from tokenfleet.catalog import get_chip
    from tokenfleet.fleet.backends import execute
    from tokenfleet.fleet.planner import prepare
    from tokenfleet.perf.efficiency import EFFICIENCY_DATA_ENV, calibration_for

    plan = parse_plan(tiny_plan(hardware=["mi300x"]))
    job = next(iter(prepare(plan).jobs.values()))
    assert job.key  # keyed with the shipped fit, as the planner does before dispatch
    monkeypatch.setenv(EFFICIENCY_DATA_ENV, AMD_FIT)  # this "worker" sees a user's fit
    assert calibration_for(get_chip("mi300x")).efficiency.compute_eff == 0.9
    with pytest.raises(TokenfleetError, match="sees this capacity job differently"):
        execute(job)
