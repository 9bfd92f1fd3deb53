"""Turn CLI flags into catalog objects and a deployment, with one-line errors for bad input."""

from __future__ import annotations

from tokenfleet.catalog.chips import ChipSpec, get_chip
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.auto import auto_deployment, layout
from tokenfleet.perf.deployment import Deployment
from tokenfleet.perf.precision import bytes_per_elem, check_precision
from tokenfleet.perf.predict import Workload


def kv_precision_for(weight_precision: str) -> str:
    """KV cache in fp8 when weights are 8-bit or narrower, else 16-bit (the engines' defaults)."""
    return "fp8" if bytes_per_elem(weight_precision) <= 1 else "bf16"


def resolve_deployment(
    model: ModelSpec,
    chip: ChipSpec,
    work: Workload,
    chips: str = "auto",
    tp: int | None = None,
    pp: int | None = None,
    ep: int | None = None,
    precision: str = "bf16",
) -> Deployment:
    """`--chips auto` picks the smallest deployment that fits; otherwise TP x PP must equal chips."""
    prec = check_precision(precision)
    precs = {"weight_precision": prec, "kv_precision": kv_precision_for(prec)}
    if chips == "auto" and tp is None and pp is None:
        return auto_deployment(model, chip, work.batch, work.input_tokens + work.output_tokens, **precs)
    n = _positive_int(chips, "--chips") if chips != "auto" else (tp or 1) * (pp or 1)
    if tp is None and pp is None:
        return layout(chip, n, ep=ep or 1, **precs)
    tp_ = tp or n // (pp or 1)
    pp_ = pp or n // tp_
    try:
        return Deployment(chips=n, tp=tp_, pp=pp_, ep=ep or 1, **precs)
    except ValueError as exc:
        raise TokenfleetError(f"bad deployment: {str(exc).splitlines()[-1].strip()}") from None


def _positive_int(text: str, flag: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise TokenfleetError(f"{flag} must be a positive integer or 'auto', got {text!r}") from None
    if value <= 0:
        raise TokenfleetError(f"{flag} must be a positive integer or 'auto', got {value}")
    return value


def parse_hardware_list(text: str | None, default: list[str]) -> list[ChipSpec]:
    names = [n.strip() for n in text.split(",") if n.strip()] if text else default
    return [get_chip(n) for n in names]
