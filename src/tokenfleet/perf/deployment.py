"""How a model is laid out over chips: counts, parallelism and number formats."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenfleet.perf.precision import check_precision


class Deployment(BaseModel):
    """One replica: `chips = tp * pp`; experts are spread over `ep` chips of each stage."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    chips: int = Field(ge=1, description="accelerators in the replica")
    tp: int = Field(ge=1, description="tensor-parallel size (chips per pipeline stage)")
    pp: int = Field(ge=1, description="pipeline stages")
    ep: int = Field(default=1, ge=1, description="expert-parallel size inside a stage (MoE only)")
    weight_precision: str = Field(default="bf16", description="stored weight format")
    kv_precision: str = Field(default="bf16", description="KV-cache format")
    act_precision: str = Field(default="bf16", description="activation format on the wire")

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        if self.tp * self.pp != self.chips:
            raise ValueError(f"tp ({self.tp}) x pp ({self.pp}) must equal chips ({self.chips})")
        if self.ep > self.tp or self.tp % self.ep:
            raise ValueError(f"ep ({self.ep}) must divide tp ({self.tp})")
        for name in ("weight_precision", "kv_precision", "act_precision"):
            check_precision(getattr(self, name), name)
        return self

    def describe(self) -> str:
        parts = [f"{self.chips} chip{'s' if self.chips > 1 else ''}", f"TP{self.tp}"]
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        if self.ep > 1:
            parts.append(f"EP{self.ep}")
        parts.append(self.weight_precision)
        return " ".join(parts)
