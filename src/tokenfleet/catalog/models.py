"""Transformer architectures read from Hugging Face `config.json`: dense, GQA, MoE, MLA, sliding
windows, and hybrids of softmax attention with Gated DeltaNet linear attention (Qwen3-Next, Qwen3.5).

The parser never assumes `head_dim = hidden_size / num_attention_heads` when the config says
otherwise, descends into `text_config` for multimodal checkpoints, and accepts the field names
of the Llama, Mixtral, Qwen, DeepSeek, gpt-oss and Llama-4 families.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tokenfleet.errors import TokenfleetError, unknown_name

#: Old or alternative config keys mapped to the names used here (first found wins).
ALIASES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_size", "n_embd", "d_model", "dim"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer", "num_layers", "n_layers"),
    "num_attention_heads": ("num_attention_heads", "n_head", "num_heads", "n_heads"),
    "num_key_value_heads": ("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num"),
    "intermediate_size": ("intermediate_size", "ffn_hidden_size", "n_inner"),
    "num_experts": ("num_local_experts", "n_routed_experts", "num_experts", "moe_num_experts"),
    "experts_per_token": ("num_experts_per_tok", "experts_per_token", "moe_top_k", "top_k"),
}


@dataclass(frozen=True)
class LayerGroup:
    """Layers that cost the same: how many, whether their MLP is MoE, their attention window, and
    whether their token mixer is linear attention (a fixed-size state per sequence, no KV cache)."""

    count: int
    is_moe: bool
    window_tokens: int | None  # None: full attention over the whole context
    linear: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The numbers of an architecture that decide inference cost; counts are per model, not per chip."""

    name: str
    hf_id: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    qk_head_dim: int
    v_head_dim: int
    vocab_size: int
    tied_embeddings: bool
    layer_groups: tuple[LayerGroup, ...]
    attn_params_per_layer: int
    dense_mlp_params: int  # one dense MLP layer
    expert_params: int  # one routed expert
    shared_expert_params: int  # all shared experts of one MoE layer
    router_params: int  # one MoE layer's router
    num_experts: int
    experts_per_token: int
    kv_elems_per_token_layer: int  # cached elements per token per full layer (K+V, or MLA latent)
    is_mla: bool
    max_context_tokens: int  # `max_position_embeddings`; 0 where a config leaves it out
    published: Mapping[str, Any] = field(default_factory=dict)
    linear_params_per_layer: int = 0  # one linear-attention (Gated DeltaNet) layer's mixer
    linear_state_elems_per_layer: int = 0  # its state per sequence: recurrent (heads x d_k x d_v) + conv
    linear_flops_per_token_layer: int = 0  # its recurrence and convolution per token (matmuls aside)
    linear_value_heads: int = 0  # heads the recurrent state splits into (tensor parallelism splits these)

    # --- derived sizes -------------------------------------------------------------------
    @property
    def num_moe_layers(self) -> int:
        return sum(g.count for g in self.layer_groups if g.is_moe)

    @property
    def num_dense_layers(self) -> int:
        return self.num_layers - self.num_moe_layers

    @property
    def num_linear_layers(self) -> int:
        """Layers whose token mixer is linear attention (no KV cache)."""
        return sum(g.count for g in self.layer_groups if g.linear)

    @property
    def num_attention_layers(self) -> int:
        """Layers with softmax attention, full or windowed: the ones that cache K and V."""
        return self.num_layers - self.num_linear_layers

    @property
    def embedding_params(self) -> int:
        """Input embedding plus output head (counted once when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def expert_params_total(self) -> int:
        """All routed experts of all MoE layers."""
        return self.num_moe_layers * self.num_experts * self.expert_params

    @property
    def dense_params(self) -> int:
        """Everything every token reads: attention, dense MLPs, shared experts, routers, norms, embeddings."""
        per_layer_norms = 2 * self.hidden_size
        return (
            self.num_attention_layers * self.attn_params_per_layer
            + self.num_linear_layers * self.linear_params_per_layer
            + self.num_layers * per_layer_norms
            + self.num_dense_layers * self.dense_mlp_params
            + self.num_moe_layers * (self.shared_expert_params + self.router_params)
            + self.embedding_params
            + self.hidden_size
        )

    @property
    def total_params(self) -> int:
        return self.dense_params + self.expert_params_total

    @property
    def active_params(self) -> int:
        """Parameters one token touches (routed experts: only `experts_per_token` of them)."""
        return self.dense_params + self.num_moe_layers * self.experts_per_token * self.expert_params

    @property
    def matmul_params_per_token(self) -> int:
        """Parameters in matrix products per token: active minus the input-embedding lookup."""
        return self.active_params - self.vocab_size * self.hidden_size * (0 if self.tied_embeddings else 1)

    @property
    def context_window_tokens(self) -> float:
        """Longest request (prompt + output) engines accept; unbounded where the config is silent."""
        return float(self.max_context_tokens) if self.max_context_tokens > 0 else math.inf

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def kv_bytes_per_token(self, kv_bytes_per_elem: float) -> float:
        """KV-cache bytes one token adds over all attention layers (windowed ones too, inside their window)."""
        return self.num_attention_layers * self.kv_elems_per_token_layer * kv_bytes_per_elem

    def kv_bytes(self, context_tokens: float, kv_bytes_per_elem: float) -> float:
        """KV-cache bytes held by one sequence of `context_tokens` (linear layers' state aside)."""
        per_layer = self.kv_elems_per_token_layer * kv_bytes_per_elem
        total = 0.0
        for g in self.layer_groups:
            if g.linear:
                continue
            held = context_tokens if g.window_tokens is None else min(context_tokens, g.window_tokens)
            total += g.count * held * per_layer
        return total

    def state_bytes(self, state_bytes_per_elem: float) -> float:
        """Fixed state one sequence holds in the linear-attention layers, at any context length."""
        return self.num_linear_layers * self.linear_state_elems_per_layer * state_bytes_per_elem

    @property
    def attn_flops_per_pair(self) -> int:
        """FLOPs of one query-key pair in one layer (QK^T and PV, all heads)."""
        return 2 * self.num_heads * (self.qk_head_dim + self.v_head_dim)


# --- parsing -----------------------------------------------------------------------------


def _pick(cfg: Mapping[str, Any], name: str, default: Any = None) -> Any:
    for key in ALIASES.get(name, (name,)):
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def _need(cfg: Mapping[str, Any], name: str, where: str) -> int:
    value = _pick(cfg, name)
    if not isinstance(value, int) or value <= 0:
        raise TokenfleetError(
            f"{where}: field '{name}' is missing or not a positive integer; "
            "give a Hugging Face config.json of a decoder-only transformer"
        )
    return value


def _text_config(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    for key in ("text_config", "llm_config", "language_config"):
        if isinstance(cfg.get(key), Mapping):
            return {**cfg, **cfg[key]}
    return cfg


def _moe_layer_flags(cfg: Mapping[str, Any], num_layers: int, num_experts: int) -> list[bool]:
    """Which layers have a routed-expert MLP, by each family's rule."""
    if num_experts <= 0:
        return [False] * num_layers
    if isinstance(cfg.get("moe_layers"), list):
        listed = set(cfg["moe_layers"])
        return [i in listed for i in range(num_layers)]
    dense_only = set(cfg.get("mlp_only_layers") or [])
    first_dense = int(cfg.get("first_k_dense_replace") or 0)
    every = int(cfg.get("interleave_moe_layer_step") or cfg.get("decoder_sparse_step") or 1)
    freq = int(cfg.get("moe_layer_freq") or 1)  # DeepSeek: MoE where i % freq == 0
    return [
        i >= first_dense and (i + 1) % every == 0 and i % freq == 0 and i not in dense_only
        for i in range(num_layers)
    ]


def _layer_windows(cfg: Mapping[str, Any], num_layers: int) -> list[int | None]:
    window = cfg.get("sliding_window")
    if isinstance(cfg.get("layer_types"), list) and window:
        return [int(window) if t == "sliding_attention" else None for t in cfg["layer_types"]]
    chunk = cfg.get("attention_chunk_size")
    if chunk and isinstance(cfg.get("no_rope_layers"), list):  # Llama 4: chunked attention on RoPE layers
        return [int(chunk) if uses_rope else None for uses_rope in cfg["no_rope_layers"]]
    if window and cfg.get("use_sliding_window", True) and cfg.get("model_type") in ("mistral", "mixtral"):
        return [int(window)] * num_layers
    return [None] * num_layers


def _linear_layer_flags(cfg: Mapping[str, Any], num_layers: int) -> list[bool]:
    """Which layers mix tokens by linear attention: `layer_types`, else every layer but each
    `full_attention_interval`-th (Qwen3-Next, Qwen3.5)."""
    if isinstance(cfg.get("layer_types"), list) and len(cfg["layer_types"]) == num_layers:
        return [t == "linear_attention" for t in cfg["layer_types"]]
    interval = int(cfg.get("full_attention_interval") or 0)
    return [interval > 0 and (i + 1) % interval != 0 for i in range(num_layers)]


#: Gated DeltaNet fields a hybrid config must give (Qwen3-Next and Qwen3.5 names).
GDN_KEYS = ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim", "linear_conv_kernel_dim")


def _gated_deltanet(cfg: Mapping[str, Any], hidden: int, name: str) -> tuple[int, int, int, int]:
    """(params, state elements per sequence, FLOPs per token beyond the projections, value heads)
    of one Gated DeltaNet layer [Yang et al. 2025, arXiv:2412.06464; Qwen3-Next in HF transformers]:
    projections to q, k (key heads x d_k), v and the output gate z (value heads x d_v), the decay
    and write strengths a, b (one per value head), a causal depthwise convolution over q, k, v,
    per-head A and dt, a gated RMSNorm over d_v, and the output projection. The state per sequence
    is one d_k x d_v matrix per value head plus the convolution's last kernel-1 inputs. Per token
    the delta rule reads, updates and queries that matrix: ~6 FLOPs per entry (three
    matrix-vector products), an estimate that leaves out the chunked prefill kernel's extra work."""
    missing = [k for k in GDN_KEYS if not isinstance(cfg.get(k), int) or cfg[k] <= 0]
    if missing:
        raise TokenfleetError(f"{name}: linear-attention layers need field '{missing[0]}' (Gated DeltaNet); give the full config.json")
    nk, nv, dk, dv, kernel = (int(cfg[k]) for k in GDN_KEYS)
    key_dim, value_dim = nk * dk, nv * dv
    conv_dim = 2 * key_dim + value_dim
    params = hidden * (2 * key_dim + 2 * value_dim) + hidden * 2 * nv + conv_dim * kernel + 2 * nv + dv + value_dim * hidden
    state = nv * dk * dv + conv_dim * (kernel - 1)
    flops = 6 * nv * dk * dv + 2 * conv_dim * kernel
    return params, state, flops, nv


#: Model types whose attention has a sigmoid output gate unless the config says otherwise (vLLM's default).
GATED_ATTENTION_TYPES = ("qwen3_next", "qwen3_5")


def _attention(cfg: Mapping[str, Any], hidden: int, heads: int, kv_heads: int, head_dim: int) -> tuple[int, int, int, int, bool]:
    """(params per layer, qk head dim, v head dim, cached elements per token, is_mla)."""
    kv_lora = cfg.get("kv_lora_rank")
    if kv_lora:  # DeepSeek multi-head latent attention
        rope, nope = int(cfg["qk_rope_head_dim"]), int(cfg["qk_nope_head_dim"])
        v_dim = int(cfg.get("v_head_dim") or nope)
        q_lora = cfg.get("q_lora_rank")
        q = hidden * q_lora + q_lora + q_lora * heads * (nope + rope) if q_lora else hidden * heads * (nope + rope)
        kv = hidden * (kv_lora + rope) + kv_lora + kv_lora * heads * (nope + v_dim)
        return q + kv + heads * v_dim * hidden, nope + rope, v_dim, int(kv_lora) + rope, True
    gated = cfg.get("attn_output_gate", str(cfg.get("model_type", "")).startswith(GATED_ATTENTION_TYPES))
    q_and_o = (3 if gated else 2) * hidden * heads * head_dim  # an output gate doubles q_proj
    k_and_v = 2 * hidden * kv_heads * head_dim
    bias = (heads + 2 * kv_heads) * head_dim if cfg.get("attention_bias") or cfg.get("qkv_bias") else 0
    return q_and_o + k_and_v + bias, head_dim, head_dim, 2 * kv_heads * head_dim, False


def _experts(cfg: Mapping[str, Any], hidden: int, num_experts: int) -> tuple[int, int, int]:
    """(params of one routed expert, of all shared experts in a layer, of the router)."""
    if num_experts <= 0:
        return 0, 0, 0
    inter = int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 0)
    expert = 3 * hidden * inter
    if cfg.get("model_type") == "gpt_oss":  # biased experts: gate_up (2*inter) and down (hidden)
        expert += 2 * inter + hidden
    shared = 0
    if cfg.get("n_shared_experts"):
        shared = int(cfg["n_shared_experts"]) * expert
    elif cfg.get("shared_expert_intermediate_size"):
        shared = 3 * hidden * int(cfg["shared_expert_intermediate_size"])
    elif cfg.get("model_type") in ("llama4_text", "llama4"):
        shared = expert
    router = hidden * num_experts + (num_experts if cfg.get("model_type") == "gpt_oss" else 0)
    return expert, shared, router


def parse_config(cfg: Mapping[str, Any], name: str, hf_id: str = "", published: Mapping[str, Any] | None = None) -> ModelSpec:
    """Build a ModelSpec from a Hugging Face config dict; errors name the missing field."""
    if not isinstance(cfg, Mapping):
        raise TokenfleetError(f"{name}: config.json must hold a JSON object")
    cfg = _text_config(cfg)
    _refuse_unmodelled_mixers(cfg, name)
    hidden = _need(cfg, "hidden_size", name)
    layers = _need(cfg, "num_hidden_layers", name)
    heads = _need(cfg, "num_attention_heads", name)
    kv_heads = int(_pick(cfg, "num_key_value_heads", heads))
    if kv_heads <= 0 or heads % kv_heads:
        raise TokenfleetError(f"{name}: num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})")
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    vocab = _need(cfg, "vocab_size", name)
    num_experts = int(_pick(cfg, "num_experts", 0) or 0)
    experts_per_token = int(_pick(cfg, "experts_per_token", 0) or 0) if num_experts else 0
    if num_experts and not 0 < experts_per_token <= num_experts:
        raise TokenfleetError(f"{name}: a MoE config needs 'num_experts_per_tok' between 1 and its {num_experts} experts")
    attn, qk_dim, v_dim, kv_elems, is_mla = _attention(cfg, hidden, heads, kv_heads, head_dim)
    expert, shared, router = _experts(cfg, hidden, num_experts)
    dense_inter = int(cfg.get("intermediate_size_mlp") or cfg.get("intermediate_size") or 0)
    if dense_inter <= 0 and num_experts < layers:
        raise TokenfleetError(f"{name}: field 'intermediate_size' is missing; give the MLP width")
    linear = _linear_layer_flags(cfg, layers)
    if all(linear):
        raise TokenfleetError(f"{name}: every layer is linear attention; tokenfleet models hybrids with at least one "
                              "softmax-attention layer (set 'layer_types' or 'full_attention_interval')")
    gdn = _gated_deltanet(cfg, hidden, name) if any(linear) else (0, 0, 0, 0)
    groups = _group_layers(_moe_layer_flags(cfg, layers, num_experts), _layer_windows(cfg, layers), linear)
    return ModelSpec(
        name=name,
        hf_id=hf_id or str(cfg.get("_name_or_path", name)),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        qk_head_dim=qk_dim,
        v_head_dim=v_dim,
        vocab_size=vocab,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        layer_groups=groups,
        attn_params_per_layer=attn,
        dense_mlp_params=3 * hidden * dense_inter,
        expert_params=expert,
        shared_expert_params=shared,
        router_params=router,
        num_experts=num_experts,
        experts_per_token=experts_per_token,
        kv_elems_per_token_layer=kv_elems,
        is_mla=is_mla,
        max_context_tokens=int(cfg.get("max_position_embeddings") or 0),
        published=dict(published or {}),
        linear_params_per_layer=gdn[0],
        linear_state_elems_per_layer=gdn[1],
        linear_flops_per_token_layer=gdn[2],
        linear_value_heads=gdn[3],
    )


#: Signs of token mixers not modelled here (Mamba in Jamba and Nemotron-H): config keys, and entries
#: of `layer_types`. Reading such layers as attention would give silently wrong parameter counts and
#: KV sizes (a state-space layer keeps a fixed-size state, not a growing cache), so they are refused.
#: Gated DeltaNet linear attention (Qwen3-Next, Qwen3.5) is modelled (`_gated_deltanet`).
LINEAR_MIXER_KEYS = ("ssm_state_size", "mamba_d_state", "hybrid_override_pattern")
LINEAR_MIXER_LAYER_TYPES = ("mamba",)


def _refuse_unmodelled_mixers(cfg: Mapping[str, Any], name: str) -> None:
    layer_types: list[Any] = cfg["layer_types"] if isinstance(cfg.get("layer_types"), list) else []
    marks = [k for k in LINEAR_MIXER_KEYS if k in cfg] + [t for t in LINEAR_MIXER_LAYER_TYPES if t in layer_types]
    if marks:
        raise TokenfleetError(
            f"{name}: state-space layers ('{marks[0]}') are not modelled yet; tokenfleet models softmax "
            "attention (full, GQA, MLA, sliding window) and Gated DeltaNet linear attention"
        )


def _group_layers(moe: list[bool], windows: list[int | None], linear: list[bool]) -> tuple[LayerGroup, ...]:
    counts: dict[tuple[bool, int | None, bool], int] = {}
    for is_moe, window, is_linear in zip(moe, windows, linear, strict=True):
        key = (is_moe, None if is_linear else window, is_linear)
        counts[key] = counts.get(key, 0) + 1
    return tuple(LayerGroup(n, is_moe, w, lin) for (is_moe, w, lin), n in counts.items())


# --- the built-in catalog ----------------------------------------------------------------

_DATA = "data/models"


@cache
def model_index() -> dict[str, dict[str, Any]]:
    """The shipped model index: short name -> hf_id, aliases, config file, published sizes."""
    text = resources.files("tokenfleet.catalog").joinpath(f"{_DATA}/index.yaml").read_text()
    index: dict[str, dict[str, Any]] = yaml.safe_load(text)
    return index


def _lookup_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for short, entry in model_index().items():
        for name in [short, entry["hf_id"], *entry.get("aliases", [])]:
            table[name.lower()] = short
            table[name.split("/")[-1].lower()] = short
    return table


@cache
def get_model(name: str) -> ModelSpec:
    """A model by short name, Hugging Face id or alias, or a path to a `config.json`."""
    path = Path(name)
    if name.endswith(".json") or path.is_file():
        return load_config_file(path)
    short = _lookup_table().get(name.strip().lower())
    if short is None:
        raise unknown_name("model", name, model_index())
    entry = model_index()[short]
    text = resources.files("tokenfleet.catalog").joinpath(f"{_DATA}/{entry['config']}").read_text()
    return parse_config(json.loads(text), short, entry["hf_id"], entry.get("published_params"))


def load_config_file(path: Path) -> ModelSpec:
    """Read a user's config.json; unreadable or malformed files get one clear line."""
    if not path.is_file():
        raise TokenfleetError(f"model config {str(path)!r} not found: give a path to a config.json or a catalog name")
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenfleetError(f"model config {str(path)!r} is not valid JSON ({exc}); fix the file") from exc
    return parse_config(cfg, path.parent.name or path.stem, str(path))


def all_models() -> list[str]:
    """Short names of every built-in model."""
    return sorted(model_index())
