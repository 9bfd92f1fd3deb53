"""Calibrated efficiency per hardware kind, stored with the date and rows it was fitted on.

The package ships one fit (`data/efficiency.yaml`, from the published measurements). A user who
has measured their own stack fits it the same way (`tokenfleet calibrate --cases mine.csv --out
mine.yaml`) and points `TOKENFLEET_EFFICIENCY` (or `tokenfleet --efficiency mine.yaml ...`) at
the result: the kinds it fits replace the shipped ones everywhere, in every worker process, and
in the planner's cache keys; the kinds it leaves out keep the shipped fit. A kind may also carry
fits of named software stacks (`kinds.<kind>.stacks.<stack>`, see `validation/data/stacks.yaml`),
used where `TOKENFLEET_STACK` (`tokenfleet --stack`) names one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.step import Efficiency

EFFICIENCY_FILE = "data/efficiency.yaml"
#: Environment variable naming a user's fit (a file `tokenfleet calibrate --out` wrote).
EFFICIENCY_ENV = "TOKENFLEET_EFFICIENCY"
#: ... or holding the fit's text itself (how Ray tasks on other machines receive it).
EFFICIENCY_DATA_ENV = "TOKENFLEET_EFFICIENCY_YAML"
#: Environment variable naming a software stack (`tokenfleet --stack`): kinds with a fit for it
#: (`kinds.<kind>.stacks.<stack>`) predict with that fit, the others with their own.
STACK_ENV = "TOKENFLEET_STACK"


@dataclass(frozen=True)
class Calibration:
    """Fitted efficiency of one hardware kind and the spread of its residuals (log-space, for bands)."""

    kind: str
    efficiency: Efficiency
    band_log: float  # ~80% of calibration rows lie within prediction * exp(+-band_log)
    rows: tuple[str, ...]


def load_efficiency() -> dict[str, Any]:
    """The fit in use, as stored (`kinds.<kind>.params`, `.rows`, ...): the shipped one, with the
    kinds of the user's fit (`TOKENFLEET_EFFICIENCY_YAML`, else the file in
    `TOKENFLEET_EFFICIENCY`) in place of the shipped ones."""
    return _merged(os.environ.get(EFFICIENCY_ENV, ""), os.environ.get(EFFICIENCY_DATA_ENV, ""))


@cache
def _merged(user_path: str, user_text: str) -> dict[str, Any]:
    shipped: dict[str, Any] = yaml.safe_load(resources.files("tokenfleet.perf").joinpath(EFFICIENCY_FILE).read_text())
    if not (user_path or user_text):
        return shipped
    user = parse_efficiency(user_text, EFFICIENCY_DATA_ENV) if user_text else read_efficiency_file(Path(user_path))
    return {**shipped, "kinds": {**shipped.get("kinds", {}), **user["kinds"]}}


def read_efficiency_file(path: Path) -> dict[str, Any]:
    """A fit written by `tokenfleet calibrate --out`; a missing or malformed file is one line."""
    if not path.is_file():
        raise TokenfleetError(f"efficiency file {str(path)!r} not found: write one with `tokenfleet calibrate --cases FILE --out {path}`")
    return parse_efficiency(path.read_text(), str(path))


def parse_efficiency(text: str, where: str) -> dict[str, Any]:
    """A fit's text, checked: `kinds.<kind>.params` of numbers; else one line naming `where`."""
    try:
        data: dict[str, Any] = yaml.safe_load(text)
        kinds = data["kinds"]
        fits = [(kind, efficiency_from_dict(fit["params"]), float(fit.get("band_log", 0.5)))
                for kind, entry in kinds.items() for fit in (entry, *entry.get("stacks", {}).values())]
    except (yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError) as exc:
        raise TokenfleetError(f"efficiency file {where!r} is not a fit written by `tokenfleet calibrate --out` "
                              "(it needs kinds.<kind>.params with numbers); write it again") from exc
    if not kinds:
        raise TokenfleetError(f"efficiency file {where!r} fits no hardware kind; write it again with `tokenfleet calibrate --out`")
    for kind, eff, _ in fits:
        if why := beyond_peak(eff):
            raise TokenfleetError(f"efficiency file {where!r}: kinds.{kind} {why}: no step may beat its peak; fit it again")
    return data


def beyond_peak(eff: Efficiency) -> str:
    """What in a fit would run faster than the hardware's peak ('' if nothing): shares of peak
    bandwidth, compute (per format) or link bandwidth above 1, or not above 0; an overlap of an
    operator's compute and memory legs outside [0, 1]; a negative link latency."""
    shares = {"mem_eff": eff.mem_eff, "comm_eff": eff.comm_eff, "compute_eff": eff.compute_eff,
              "compute_eff x fp4_compute_factor": eff.compute_eff * eff.fp4_compute_factor,
              "compute_eff x fp8_compute_factor": eff.compute_eff * eff.fp8_compute_factor}
    beyond = next((f"{name} = {share:.3g} is outside (0, 1]" for name, share in shares.items() if not 0 < share <= 1), "")
    # overlap above 1 would hide more than an operator's shorter leg: faster than its roofline
    if not beyond and not 0 <= eff.overlap <= 1:
        beyond = f"overlap = {eff.overlap:.3g} is outside [0, 1]"
    if not beyond and eff.link_latency_factor < 0:  # a negative latency would hand time back
        beyond = f"link_latency_factor = {eff.link_latency_factor:.3g} is below 0"
    return beyond


def efficiency_from_dict(values: dict[str, Any]) -> Efficiency:
    names = {f.name for f in fields(Efficiency)}
    return Efficiency(**{k: float(v) for k, v in values.items() if k in names})


def fitted_stacks() -> dict[str, list[str]]:
    """The software stacks of the fit in use, each with the kinds fitted for it."""
    named: dict[str, list[str]] = {}
    for kind, entry in sorted(load_efficiency().get("kinds", {}).items()):
        for stack in entry.get("stacks", {}):
            named.setdefault(stack, []).append(kind)
    return named


def check_stack(stack: str) -> None:
    """A stack name the fit in use knows; else one line naming the ones it does."""
    known = fitted_stacks()
    if stack not in known:
        listed = ", ".join(f"{name} ({'/'.join(kinds)})" for name, kinds in known.items()) or "none"
        raise TokenfleetError(f"--stack {stack!r} is not a fitted software stack; fitted: {listed}")


def calibration_for(chip: ChipSpec, stack: str | None = None) -> Calibration:
    """The fitted calibration of the chip's kind (its family's defaults where none was fitted), on
    `stack` where the kind has a fit for it (None: the stack in $TOKENFLEET_STACK; "": none)."""
    kinds = load_efficiency().get("kinds", {})
    entry = kinds.get(chip.kind)
    if entry is None:
        return Calibration(chip.kind, Efficiency(), 0.5, ())
    stack = os.environ.get(STACK_ENV, "") if stack is None else stack
    if stack and stack in entry.get("stacks", {}):
        entry = entry["stacks"][stack]
    return Calibration(
        kind=chip.kind,
        efficiency=efficiency_from_dict(entry["params"]),
        band_log=float(entry.get("band_log", 0.5)),
        rows=tuple(entry.get("rows", ())),
    )
