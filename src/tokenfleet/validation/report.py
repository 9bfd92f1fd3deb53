"""`tokenfleet validate`: every row predicted (or a reason why not) and MAPE per family and metric."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.efficiency import load_efficiency
from tokenfleet.validation.cases import (
    SERVED_SCENARIOS,
    Case,
    Outcome,
    Track,
    predict_case,
    read_cases,
)
from tokenfleet.validation.floor import error_floors
from tokenfleet.validation.parallel import as_finished, worker_count

FAMILIES = ("nvidia", "amd", "sram", "tpu")
#: Row fields `validate --by` can group the error by (e.g. software: the rows disagree by stack).
GROUP_FIELDS = ("hardware", "model", "software", "source", "scenario", "metric", "trust")

T = TypeVar("T")


def check_group_field(by: str) -> None:
    """A field `validate --by` can group by; else one line naming the ones it can."""
    if by not in GROUP_FIELDS:
        raise TokenfleetError(f"--by {by!r} is not a row field to group by; choose one of {', '.join(GROUP_FIELDS)}")


@dataclass
class ValidationReport:
    outcomes: list[Outcome]
    loso: list[Outcome] = field(default_factory=list)

    def mape_by(self, by: str) -> dict[str, dict[str, Any]]:
        """MAPE and row count of the counted rows per family and value of the row field `by`."""
        check_group_field(by)
        groups: dict[str, list[float]] = defaultdict(list)
        for o in self.outcomes:
            if o.error is not None and o.case.counted:
                groups[f"{o.family}: {getattr(o.case, by) or '(blank)'}"].append(o.error)
        return _mape_cells(groups)

    @staticmethod
    def mape_table(outcomes: list[Outcome], errors: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
        """MAPE and row count per family, per (family, metric) and per (family, path): `cost_model`
        rows (static, per_user) against `served` rows (throughput, server, via the simulator).
        `errors` (by row id) replaces the rows' own errors, e.g. with their floors."""
        groups: dict[str, list[float]] = defaultdict(list)
        for o in outcomes:
            if o.error is None or not o.case.counted:
                continue
            error = o.error if errors is None else errors[o.case.id]
            path = "served" if o.case.scenario in SERVED_SCENARIOS else "cost_model"
            groups[o.family].append(error)
            groups[f"{o.family}/{o.case.metric}"].append(error)
            groups[f"{o.family}:{path}"].append(error)
        return _mape_cells(groups)

    def floor_table(self) -> dict[str, dict[str, Any]]:
        """`mape_table` of the lowest errors any model could reach (see `validation.floor`)."""
        return self.mape_table(self.outcomes, error_floors(self.outcomes))

    def as_dict(self, by: str | None = None) -> dict[str, Any]:
        """Rows and summary for machines; with `by` (a GROUP_FIELDS field), MAPE per its values too."""
        fitted = fitted_row_ids()
        floors = error_floors(self.outcomes)
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
                "error_floor": floors.get(o.case.id),
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
            "mape_floor": self.mape_table(self.outcomes, floors),
            "beyond_roofline": [o.case.id for o in self.outcomes if o.beyond_roofline],
        }
        if self.loso:
            summary["leave_one_source_out_mape"] = self.mape_table(self.loso)
        if by:
            summary[f"mape_by_{by}"] = self.mape_by(by)
        return {"rows": rows, "summary": summary}


def _mape_cells(groups: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    return {k: {"mape": sum(v) / len(v), "rows": len(v)} for k, v in sorted(groups.items())}


def fitted_row_ids() -> frozenset[str]:
    """Rows the shipped efficiency fit was made on (their error is in sample): each kind's own, its
    saturated step's (`saturated_rows`; `fp4_rows` in fits written before it) and its software
    stacks' (`stacks.<stack>.rows`)."""
    ids: set[str] = set()
    for entry in load_efficiency().get("kinds", {}).values():
        for fit in (entry, *entry.get("stacks", {}).values()):
            ids.update(fit.get("rows", ()), fit.get("saturated_rows", ()), fit.get("fp4_rows", ()))
    return frozenset(ids)


def no_progress(items: Sequence[T], description: str) -> Iterable[T]:
    return items


def validation_report(cases_path: Path, loso: bool = False, track: Track = no_progress, workers: int | None = None) -> ValidationReport:
    """Every row predicted (and with `loso`, refitted without its source); `track` wraps each
    long loop, e.g. in a progress bar; served rows and refits run on `workers` processes (default:
    all cores)."""
    workers = worker_count(workers)
    cases = read_cases(cases_path)
    outcomes: list[Outcome | None] = [None] * len(cases)
    finished = _predicted_as_finished(cases, workers)
    for _ in track(range(len(cases)), "predicting rows"):
        i, outcome = next(finished)
        outcomes[i] = outcome
    report = ValidationReport([o for o in outcomes if o is not None])
    if loso:
        from tokenfleet.validation.calibrate import leave_one_source_out

        report.loso = leave_one_source_out(cases, track, workers)
    return report


def _predicted_as_finished(cases: list[Case], workers: int) -> Iterator[tuple[int, Outcome]]:
    """(row index, outcome) as rows finish. A served row takes seconds to a minute of simulation,
    so those run in worker processes, rows that may share a simulation (one model on one chip
    count of one chip, e.g. a Server run's throughput and its TTFT) in the same one; cost-model
    rows take milliseconds and run here."""
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, case in enumerate(cases):
        if case.scenario in SERVED_SCENARIOS:
            groups[(case.model, case.hardware, case.num_chips)].append(i)
        else:
            yield i, predict_case(case)
    # longest first (more rows, more chips: more simulation), so no worker is left with a long one at the end
    order = sorted(groups.values(), key=lambda rows: -len(rows))
    for g, outcomes in as_finished(_predict_rows, [[cases[i] for i in rows] for rows in order], workers):
        yield from zip(order[g], outcomes, strict=True)


def _predict_rows(cases: list[Case]) -> list[Outcome]:
    return [predict_case(case) for case in cases]
