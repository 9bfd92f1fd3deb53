"""Accelerator specs, one YAML file per chip under `data/chips/`, every figure with its source."""

from __future__ import annotations

import datetime as dt
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokenfleet.errors import TokenfleetError, unknown_name

Family = Literal["nvidia", "amd", "tpu", "sram"]
Precision = Literal["fp4", "fp8", "int8", "bf16"]

#: Key of the peak-compute figure used for each compute precision.
PEAK_KEY: dict[str, str] = {
    "bf16": "bf16_flops_per_s",
    "fp8": "fp8_flops_per_s",
    "int8": "int8_ops_per_s",
    "fp4": "fp4_flops_per_s",
}


class Figure(BaseModel):
    """One number with where it came from; `estimate` marks figures no source states outright."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    value: float = Field(ge=0)
    source: str = Field(min_length=3)
    date: dt.date | str
    estimate: bool = False
    note: str = ""


class ChipSpec(BaseModel):
    """An accelerator as the cost model sees it: compute, memory tiers, links, power and price."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    id: str
    name: str
    vendor: str
    family: Family
    form_factor: str = ""
    figures: dict[str, Figure]
    notes: str = ""

    def get(self, key: str, default: float = 0.0) -> float:
        """The value of figure `key`, or `default` where the catalog has none."""
        fig = self.figures.get(key)
        return fig.value if fig is not None else default

    @property
    def sram_bytes(self) -> float:
        return self.get("sram_bytes")

    @property
    def sram_bytes_per_s(self) -> float:
        return self.get("sram_bytes_per_s")

    @property
    def hbm_bytes(self) -> float:
        return self.get("hbm_bytes")

    @property
    def hbm_bytes_per_s(self) -> float:
        return self.get("hbm_bytes_per_s")

    @property
    def link_bytes_per_s(self) -> float:
        return self.get("link_bytes_per_s")

    @property
    def link_latency_s(self) -> float:
        return self.get("link_latency_s")

    @property
    def tdp_w(self) -> float:
        return self.get("tdp_w")

    @property
    def scaleup_domain_chips(self) -> int:
        return int(self.get("scaleup_domain_chips", 8))

    @property
    def kind(self) -> str:
        """Calibration group: GPUs and TPUs of one vendor share a software stack and behave alike;
        every SRAM-first design is an architecture of its own."""
        return self.id if self.family == "sram" else self.family

    @property
    def weights_on_chip(self) -> bool:
        """True for SRAM-first chips that keep the model on die (no large off-chip tier)."""
        return self.family == "sram" and self.sram_bytes_per_s > 0

    def peak_flops_per_s(self, precision: str) -> float:
        """Dense peak for `precision`, falling back to the next wider format the chip has."""
        return self.get(self.peak_key(precision))

    def peak_key(self, precision: str) -> str:
        """The figure `peak_flops_per_s` reads for `precision`."""
        order = ["fp4", "fp8", "int8", "bf16"]
        for p in order[order.index(precision) if precision in order else 3 :]:
            if PEAK_KEY[p] in self.figures:
                return PEAK_KEY[p]
        return "bf16_flops_per_s"

    def estimated(self, *keys: str) -> list[str]:
        """Which of `keys` are estimates rather than figures a source states."""
        return [k for k in keys if k in self.figures and self.figures[k].estimate]

    def native_precisions(self) -> list[str]:
        """Compute precisions the chip runs natively, narrowest first."""
        return [p for p in ("fp4", "fp8", "int8", "bf16") if PEAK_KEY[p] in self.figures]


def _chip_files() -> dict[str, str]:
    root = resources.files("tokenfleet.catalog").joinpath("data/chips")
    return {p.name.removesuffix(".yaml"): p.read_text() for p in root.iterdir() if p.name.endswith(".yaml")}


@cache
def all_chips() -> dict[str, ChipSpec]:
    """Every chip in the built-in catalog, by id."""
    chips: dict[str, ChipSpec] = {}
    for chip_id, text in sorted(_chip_files().items()):
        try:
            chips[chip_id] = ChipSpec.model_validate(yaml.safe_load(text))
        except ValidationError as exc:  # a broken data file is a bug in the package
            raise TokenfleetError(f"chip file {chip_id}.yaml is invalid: {exc.errors()[0]}") from exc
    return chips


def get_chip(name: str) -> ChipSpec:
    """Look a chip up by id (case-insensitive); unknown names get close-match suggestions."""
    chips = all_chips()
    key = name.strip().lower()
    if key in chips:
        return chips[key]
    raise unknown_name("hardware", name, chips)
