"""Calibrated efficiency per hardware kind, stored with the date and rows it was fitted on."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

import yaml

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.perf.step import Efficiency

EFFICIENCY_FILE = "data/efficiency.yaml"


@dataclass(frozen=True)
class Calibration:
    """Fitted efficiency of one hardware kind and the spread of its residuals (log-space, for bands)."""

    kind: str
    efficiency: Efficiency
    band_log: float  # ~80% of calibration rows lie within prediction * exp(+-band_log)
    rows: tuple[str, ...]


@cache
def load_efficiency() -> dict[str, Any]:
    """The shipped fit, as stored (`kinds.<kind>.params`, `.rows`, ...)."""
    text = resources.files("tokenfleet.perf").joinpath(EFFICIENCY_FILE).read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def efficiency_from_dict(values: dict[str, Any]) -> Efficiency:
    names = {f.name for f in fields(Efficiency)}
    return Efficiency(**{k: float(v) for k, v in values.items() if k in names})


def calibration_for(chip: ChipSpec) -> Calibration:
    """The fitted calibration of the chip's kind (its family's defaults where none was fitted)."""
    kinds = load_efficiency().get("kinds", {})
    entry = kinds.get(chip.kind)
    if entry is None:
        return Calibration(chip.kind, Efficiency(), 0.5, ())
    return Calibration(
        kind=chip.kind,
        efficiency=efficiency_from_dict(entry["params"]),
        band_log=float(entry.get("band_log", 0.5)),
        rows=tuple(entry.get("rows", ())),
    )
