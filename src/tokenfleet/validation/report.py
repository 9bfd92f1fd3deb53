"""`tokenfleet validate`: every row predicted (or a reason why not) and MAPE per family and metric."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tokenfleet.perf.efficiency import load_efficiency
from tokenfleet.validation.cases import SERVED_SCENARIOS, Outcome, Track, predict_case, read_cases

FAMILIES = ("nvidia", "amd", "sram", "tpu")

T = TypeVar("T")


@dataclass
class ValidationReport:
    outcomes: list[Outcome]
    loso: list[Outcome] = field(default_factory=list)

    @staticmethod
    def mape_table(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
        """MAPE and row count per family, per (family, metric) and per (family, path): `cost_model`
        rows (static, per_user) against `served` rows (throughput, server, via the simulator)."""
        groups: dict[str, list[float]] = defaultdict(list)
        for o in outcomes:
            if o.error is None or not o.case.counted:
                continue
            path = "served" if o.case.scenario in SERVED_SCENARIOS else "cost_model"
            groups[o.family].append(o.error)
            groups[f"{o.family}/{o.case.metric}"].append(o.error)
            groups[f"{o.family}:{path}"].append(o.error)
        return {k: {"mape": sum(v) / len(v), "rows": len(v)} for k, v in sorted(groups.items())}

    def as_dict(self) -> dict[str, Any]:
        fitted = fitted_row_ids()
        rows = [
            {
                "id": o.case.id,
                "hardware": o.case.hardware,
                "family": o.family,
                "model": o.case.model,
                "software": o.case.software,
                "scenario": o.case.scenario,
                "metric": o.case.metric,
                "trust": o.case.trust,
                "counted": o.case.counted,
                "deployment": o.deployment,
                "measured": o.case.value,
                "predicted": o.predicted,
                "error": o.error,
                "reason": o.reason or None,
                "beyond_roofline": o.beyond_roofline,
                "in_fit": o.case.id in fitted,
            }
            for o in self.outcomes
        ]
        summary: dict[str, Any] = {
            "rows": len(self.outcomes),
            "predicted": sum(o.predicted is not None for o in self.outcomes),
            "mape": self.mape_table(self.outcomes),
            "beyond_roofline": [o.case.id for o in self.outcomes if o.beyond_roofline],
        }
        if self.loso:
            summary["leave_one_source_out_mape"] = self.mape_table(self.loso)
        return {"rows": rows, "summary": summary}


def fitted_row_ids() -> frozenset[str]:
    """Rows the shipped efficiency fit was made on (their error is in sample)."""
    kinds = load_efficiency().get("kinds", {}).values()
    return frozenset(row for entry in kinds for row in (*entry.get("rows", ()), *entry.get("fp4_rows", ())))


def no_progress(items: Sequence[T], description: str) -> Iterable[T]:
    return items


def validation_report(cases_path: Path, loso: bool = False, track: Track = no_progress) -> ValidationReport:
    """Every row predicted (and with `loso`, refitted without its source); `track` wraps each
    long loop, e.g. in a progress bar."""
    cases = read_cases(cases_path)
    report = ValidationReport([predict_case(c) for c in track(cases, "predicting rows")])
    if loso:
        from tokenfleet.validation.calibrate import leave_one_source_out

        report.loso = leave_one_source_out(cases, track)
    return report
