"""Number formats: bytes per stored element and the compute format each weight format runs in."""

from __future__ import annotations

from tokenfleet.errors import TokenfleetError

#: Bytes per element as stored, block scales included (MXFP4/NVFP4: 4 bits + one 8-bit scale per
#: 32 or 16 values; llama.cpp q4_0: 4 bits + an fp16 scale per 32 values, 4.5 bits).
BYTES_PER_ELEM: dict[str, float] = {
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5 + 1 / 32,
    "mxfp4": 0.5 + 1 / 32,
    "int4": 4.5 / 8,
}

#: The tensor-core format a weight format computes in, when the chip supports it natively.
COMPUTE_FORMAT: dict[str, str] = {
    "bf16": "bf16",
    "fp16": "bf16",
    "fp8": "fp8",
    "int8": "int8",
    "fp4": "fp4",
    "mxfp4": "fp4",
    "int4": "bf16",  # weight-only quantisation: dequantised to 16-bit before the matmul
}


def check_precision(name: str, field: str = "precision") -> str:
    """Normalise a precision name, or fail with the list of known ones."""
    key = name.strip().lower()
    if key not in BYTES_PER_ELEM:
        raise TokenfleetError(f"unknown {field} {name!r}: choose one of: {', '.join(BYTES_PER_ELEM)}")
    return key


def bytes_per_elem(name: str) -> float:
    return BYTES_PER_ELEM[check_precision(name)]


def default_kv_precision(weight_precision: str) -> str:
    """KV cache in fp8 when weights are 8-bit or narrower, else 16-bit: what a deployment that
    quantises its weights usually does to its cache too (vLLM `--kv-cache-dtype fp8`, TensorRT-LLM
    FP8 KV with FP8/FP4 checkpoints); `--kv-precision` overrides it."""
    return "fp8" if bytes_per_elem(weight_precision) <= 1 else "bf16"


def formats_label(weight_precision: str, kv_precision: str) -> str:
    """The weight format, and the KV-cache format where it is not the weights' default."""
    return weight_precision if kv_precision == default_kv_precision(weight_precision) else f"{weight_precision} KV {kv_precision}"
