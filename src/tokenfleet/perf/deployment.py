"""How a model is laid out over chips: counts, parallelism and number formats."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tokenfleet.catalog.chips import ChipSpec
from tokenfleet.catalog.models import ModelSpec
from tokenfleet.perf.precision import check_precision, formats_label

#: Families whose serving engines (vLLM, SGLang, TensorRT-LLM) split attention heads evenly over
#: tensor parallelism and whole layers over pipeline stages; XLA on TPUs pads uneven shardings and
#: the SRAM systems' compilers split layers over many chips, so neither rule binds there.
HEAD_SPLIT_FAMILIES = ("nvidia", "amd")


class Deployment(BaseModel):
    """One replica: `chips = tp * pp`; experts are spread over `ep` chips of each stage.

    With `attn_dp` (attention data parallelism, TensorRT-LLM's `enable_attention_dp`, SGLang's
    `--enable-dp-attention`) every chip of a stage holds all of the stage's weights but the routed
    experts, and serves its own share of the sequences whole, their KV cache included; only the
    MoE layers are split over the stage (over `ep` chips, else tensor parallel). It trades weight
    memory for KV room: a latent (MLA) cache, which tensor parallelism replicates, is held once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    chips: int = Field(ge=1, description="accelerators in the replica")
    tp: int = Field(ge=1, description="tensor-parallel size (chips per pipeline stage)")
    pp: int = Field(ge=1, description="pipeline stages")
    ep: int = Field(default=1, ge=1, description="expert-parallel size inside a stage (MoE only)")
    weight_precision: str = Field(default="bf16", description="stored weight format")
    kv_precision: str = Field(default="bf16", description="KV-cache format")
    act_precision: str = Field(default="bf16", description="activation format on the wire")
    attn_dp: bool = Field(default=False, description="attention data parallel: all but the routed experts replicated "
                          "on each chip of a stage, each chip serving its own sequences (MoE only)")

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
        if self.attn_dp:
            parts.append("attention-DP")
        parts.append(formats_label(self.weight_precision, self.kv_precision))
        return " ".join(parts)


def parallelism_problem(model: ModelSpec, chip: ChipSpec, dep: Deployment) -> str | None:
    """Why serving engines could not lay `model` out as `dep` on `chip` (None when they can):
    vLLM and TensorRT-LLM need TP to divide the attention heads and to divide, or be a multiple
    of, the KV heads (which are then replicated), at most one pipeline stage per layer, and
    expert parallelism only on MoE models, dividing their experts."""
    if dep.attn_dp and not model.is_moe:
        return f"attention DP applies to mixture-of-experts models; for {model.name} (dense) use data-parallel replicas"
    if chip.family in HEAD_SPLIT_FAMILIES:
        if model.num_heads % dep.tp and not dep.attn_dp:  # attention DP splits sequences, not heads
            return f"TP {dep.tp} does not divide {model.name}'s {model.num_heads} attention heads"
        kv = model.num_kv_heads
        if not model.is_mla and kv % dep.tp and dep.tp % kv and not dep.attn_dp:
            return f"TP {dep.tp} neither divides nor is a multiple of {model.name}'s {kv} KV heads"
        if dep.pp > model.num_layers:
            return f"PP {dep.pp} exceeds {model.name}'s {model.num_layers} layers (one stage holds at least one layer)"
    if dep.ep > 1 and not model.is_moe:
        return f"EP {dep.ep} applies to mixture-of-experts models; {model.name} is dense"
    if dep.ep > 1 and model.num_experts % dep.ep:
        return f"EP {dep.ep} does not divide {model.name}'s {model.num_experts} experts"
    return None


def tp_sizes(model: ModelSpec, chip: ChipSpec, limit: int) -> list[int]:
    """TP sizes up to `limit` that `parallelism_problem` accepts for `model` on `chip`."""
    probe = {"chips": 1, "tp": 1, "pp": 1}
    return [t for t in range(1, limit + 1)
            if parallelism_problem(model, chip, Deployment(**{**probe, "chips": t, "tp": t})) is None]
