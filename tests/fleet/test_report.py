"""How the planner's text report writes its figures."""

from __future__ import annotations

from tokenfleet.fleet.report import percent


def test_a_small_share_keeps_a_decimal_so_a_replica_never_reads_as_zero_percent() -> None:
    assert percent(0.004) == "0.4%"
    assert percent(0.063) == "6.3%"
    assert percent(0.68) == "68%"
    assert percent(0.0) == "0%"
