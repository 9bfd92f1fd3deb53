"""Turn CLI flags into catalog objects and a deployment, with one-line errors for bad input."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tokenfleet.catalog.chips import ChipSpec, get_chip
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.errors import TokenfleetError
from tokenfleet.perf.auto import auto_deployment, layout
from tokenfleet.perf.deployment import Deployment, parallelism_problem, tp_sizes
from tokenfleet.perf.precision import check_precision, default_kv_precision
from tokenfleet.perf.predict import Workload
from tokenfleet.perf.speculative import SpecDecode

SettingsT = TypeVar("SettingsT", bound=BaseModel)

SPEC_FLAGS = {"draft_tokens": "--spec-tokens", "acceptance_rate": "--acceptance", "draft_cost_ratio": "--draft-cost"}


def from_flags(settings: type[SettingsT], values: dict[str, Any], flags: dict[str, str]) -> SettingsT:
    """Validated settings from CLI flag values; a bad value gets one line naming its flag
    (`flags` maps a field path, e.g. `spec.acceptance_rate`, to the flag that sets it)."""
    try:
        return settings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise TokenfleetError(f"{flags.get(key, key)} {err['input']!r}: {err['msg'].lower()}") from None


def spec_decode(draft_tokens: int, acceptance_rate: float, draft_cost_ratio: float) -> SpecDecode:
    """Speculative decoding from its flags."""
    values = {"draft_tokens": draft_tokens, "acceptance_rate": acceptance_rate, "draft_cost_ratio": draft_cost_ratio}
    return from_flags(SpecDecode, values, SPEC_FLAGS)


def resolve_deployment(
    model: ModelSpec,
    chip: ChipSpec,
    work: Workload,
    chips: str = "auto",
    tp: int | None = None,
    pp: int | None = None,
    ep: int | None = None,
    precision: str = "bf16",
    kv_precision: str | None = None,
    attn_dp: bool = False,
) -> Deployment:
    """`--chips auto` picks the smallest deployment that fits; otherwise TP x PP must equal chips,
    in a layout serving engines can run (see `parallelism_problem`). `attn_dp`: attention data
    parallelism (MoE models only)."""
    prec = check_precision(precision)
    for flag, value in (("--tp", tp), ("--pp", pp), ("--ep", ep)):
        if value is not None and value <= 0:
            raise TokenfleetError(f"{flag} must be a positive integer, got {value}")
    if ep not in (None, 1) and not model.is_moe:
        raise TokenfleetError(f"--ep applies to mixture-of-experts models; {model.name} is dense: drop --ep")
    if attn_dp and not model.is_moe:
        raise TokenfleetError(f"--attn-dp applies to mixture-of-experts models; {model.name} is dense: drop --attn-dp "
                              "(for a dense model, data-parallel replicas do the same)")
    kv = check_precision(kv_precision, "--kv-precision") if kv_precision else default_kv_precision(prec)
    precs = {"weight_precision": prec, "kv_precision": kv}
    if chips == "auto" and tp is None and pp is None:
        dep = auto_deployment(model, chip, work.batch, work.input_tokens + work.output_tokens, attn_dp=attn_dp, **precs)
        n = dep.chips
    else:
        n = _positive_int(chips, "--chips") if chips != "auto" else (tp or 1) * (pp or 1)
        if tp is None and pp is None:
            dep = layout(model, chip, n, ep=ep or 1, **precs)
        else:
            tp_ = tp or max(n // (pp or 1), 1)
            pp_ = pp or max(n // tp_, 1)
            if tp_ * pp_ != n:
                raise TokenfleetError(f"--tp {tp_} x --pp {pp_} = {tp_ * pp_} chips, but --chips is {n}: make them agree")
            dep = Deployment(chips=n, tp=tp_, pp=pp_, **precs)
    if ep is not None and ep != dep.ep:
        try:  # Deployment holds the rule: ep divides tp
            dep = Deployment(**{**dep.model_dump(), "ep": ep})
        except ValueError:
            raise TokenfleetError(f"--ep {ep} must divide the tensor-parallel size of {dep.describe()} "
                                  "(experts are spread over the chips of one stage): set --tp or --chips to a multiple of it") from None
    if attn_dp and not dep.attn_dp:
        dep = dep.model_copy(update={"attn_dp": True})
    problem = parallelism_problem(model, chip, dep)
    if problem:
        raise TokenfleetError(f"cannot lay out {n} x {chip.id} as {dep.describe()}: {problem}; {_fix(model, chip, dep)}")
    return dep


def _fix(model: ModelSpec, chip: ChipSpec, dep: Deployment) -> str:
    """What to ask for instead of a layout `parallelism_problem` refuses."""
    if dep.ep > 1 and model.num_experts % dep.ep:
        sizes = [e for e in range(2, dep.tp + 1) if dep.tp % e == 0 and model.num_experts % e == 0]
        return f"use --ep {' or '.join(map(str, sizes))}" if sizes else "drop --ep"
    if dep.pp > model.num_layers:
        return f"use at most {model.num_layers * dep.tp} chips, or --chips auto"
    return f"use --tp {', '.join(map(str, tp_sizes(model, chip, max(dep.tp, chip.scaleup_domain_chips))))}"


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
