"""Request traces normalised to `arrival_s, input_tokens, output_tokens[, prefix blocks]`.

Readers: Azure LLM inference CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`), Mooncake JSONL
(`timestamp` ms, `input_length`, `output_length`, `hash_ids`), BurstGPT CSV (`Timestamp`,
`Request tokens`, `Response tokens`) and a plain `arrival_s,input_tokens,output_tokens` CSV.
The shipped traces are named by short names; see data/traces/README.md for their attribution.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from tokenfleet.errors import TokenfleetError

BUILTIN = {
    "azure-code": "azure_llm_2023_code.csv",
    "azure-conv": "azure_llm_2023_conv.csv",
    "mooncake-conv": "mooncake_conversation.jsonl",
}
MOONCAKE_BLOCK_TOKENS = 512


@dataclass(frozen=True)
class Trace:
    """Requests sorted by arrival; `prefix_blocks[i]` are hashes of 512-token prompt blocks."""

    name: str
    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    prefix_blocks: tuple[tuple[int, ...], ...] | None = None

    def __len__(self) -> int:
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    def scale_rate(self, factor: float) -> Trace:
        """Arrivals `factor` times as fast (same requests, compressed in time)."""
        if not factor > 0:
            raise TokenfleetError(f"--rate-scale must be positive, got {factor}")
        return replace(self, arrival_s=self.arrival_s / factor)

    def take(self, n: int) -> Trace:
        """The first `n` requests, tiling the trace end to end when it is shorter."""
        if n <= 0:
            raise TokenfleetError(f"--requests must be a positive integer, got {n}")
        reps = -(-n // len(self))
        gap = self.duration_s + (self.duration_s / max(len(self) - 1, 1))
        arrival = np.concatenate([self.arrival_s + r * gap for r in range(reps)])[:n]
        blocks = None
        if self.prefix_blocks is not None:  # tiles reuse the same prefixes: a repeated hour of traffic
            blocks = tuple((self.prefix_blocks * reps)[:n])
        return Trace(self.name, arrival, np.tile(self.input_tokens, reps)[:n], np.tile(self.output_tokens, reps)[:n], blocks)


def builtin_traces() -> list[str]:
    return sorted(BUILTIN)


def load_trace(name_or_path: str) -> Trace:
    """A shipped trace by short name, or a file in one of the supported formats."""
    if name_or_path in BUILTIN:
        res = resources.files("tokenfleet.workload").joinpath(f"data/traces/{BUILTIN[name_or_path]}")
        return _read(Path(str(res)), name_or_path)
    path = Path(name_or_path)
    if not path.is_file():
        raise TokenfleetError(f"trace {name_or_path!r} not found: give a file or one of: {', '.join(builtin_traces())}")
    return _read(path, path.stem)


def _read(path: Path, name: str) -> Trace:
    try:
        if path.suffix == ".jsonl":
            return _read_mooncake(path, name)
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TokenfleetError(f"trace {str(path)!r} is unreadable: {exc}") from None
    if not rows:
        raise TokenfleetError(f"trace {str(path)!r} has no requests")
    cols = set(rows[0])
    try:
        if {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} <= cols:
            return _normalise(name, [_azure_time(r["TIMESTAMP"]) for r in rows], [r["ContextTokens"] for r in rows], [r["GeneratedTokens"] for r in rows])
        if {"Timestamp", "Request tokens", "Response tokens"} <= cols:
            return _normalise(name, [r["Timestamp"] for r in rows], [r["Request tokens"] for r in rows], [r["Response tokens"] for r in rows])
        if {"arrival_s", "input_tokens", "output_tokens"} <= cols:
            return _normalise(name, [r["arrival_s"] for r in rows], [r["input_tokens"] for r in rows], [r["output_tokens"] for r in rows])
    except ValueError as exc:
        raise TokenfleetError(f"trace {str(path)!r} has a bad value ({exc}); fix the file") from None
    raise TokenfleetError(f"trace {str(path)!r}: unknown columns {sorted(cols)}; expected arrival_s,input_tokens,output_tokens (or Azure / BurstGPT / Mooncake)")


def _azure_time(text: str) -> float:
    stamp = dt.datetime.strptime(text[:26], "%Y-%m-%d %H:%M:%S.%f")
    return stamp.timestamp()


def _read_mooncake(path: Path, name: str) -> Trace:
    recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    try:
        t = _normalise(name, [r["timestamp"] / 1000 for r in recs], [r["input_length"] for r in recs], [r["output_length"] for r in recs])
    except KeyError as exc:
        raise TokenfleetError(f"trace {str(path)!r}: Mooncake records need field {exc}") from None
    except (ValueError, TypeError) as exc:
        raise TokenfleetError(f"trace {str(path)!r} has a bad value ({exc}); fix the file") from None
    order = np.argsort([r["timestamp"] for r in recs], kind="stable")
    return replace(t, prefix_blocks=tuple(tuple(recs[i].get("hash_ids", ())) for i in order))


def _normalise(name: str, arrival: list[object], inputs: list[object], outputs: list[object]) -> Trace:
    """Sorted by arrival from t = 0; a bad value raises ValueError for the reader to name the file."""
    a, i, o = (np.asarray(v, dtype=float) for v in (arrival, inputs, outputs))
    if not (np.isfinite(a).all() and np.isfinite(i).all() and np.isfinite(o).all()):
        raise ValueError("a nan or infinite value")
    if (i < 0).any() or (o < 0).any():
        raise ValueError("negative token counts")
    i, o = i.astype(np.int64), o.astype(np.int64)
    order = np.argsort(a, kind="stable")
    a = a[order] - a[order][0]
    return Trace(name, a, np.maximum(i[order], 1), np.maximum(o[order], 1))


def shared_prefixes(inputs: np.ndarray, shared_tokens: int, groups: int, rng: np.random.Generator,
                    block_tokens: int = MOONCAKE_BLOCK_TOKENS, salt: int = 0) -> tuple[tuple[int, ...], ...]:
    """Prefix-block hashes for prompts whose first `shared_tokens` are one of `groups` shared
    prefixes (a system prompt, a repository's context), picked uniformly per request; a prompt
    shorter than the prefix shares all of its whole blocks. `salt` keeps callers' hashes apart."""
    group = rng.integers(0, groups, inputs.size)
    base = (salt % 10_000) * 10**12
    return tuple(
        tuple(base + int(g) * 10**6 + j for j in range(min(shared_tokens, int(n)) // block_tokens))
        for g, n in zip(group, inputs, strict=True)
    )


def synthetic(
    n: int, rate_per_s: float, lengths: Trace, process: str = "poisson", burstiness: float = 1.0, seed: int = 0
) -> Trace:
    """`n` requests arriving by a Poisson, gamma (bursty: shape < 1 is burstier, as vllm bench
    serve's --burstiness) or constant process at `rate_per_s` (inf: all at t = 0, a saturated
    run), with (input, output) lengths and prefixes drawn from `lengths`."""
    if not rate_per_s > 0:
        raise TokenfleetError(f"--rate must be positive, got {rate_per_s}")
    if not burstiness > 0:
        raise TokenfleetError(f"--burstiness must be positive, got {burstiness}")
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(lengths), n)  # first: the same seed gives the same requests at every rate
    if rate_per_s == float("inf"):
        gaps = np.zeros(n)
    elif process == "poisson":
        gaps = rng.exponential(1 / rate_per_s, n)
    elif process == "gamma":
        gaps = rng.gamma(burstiness, 1 / (rate_per_s * burstiness), n)
    elif process == "constant":
        gaps = np.full(n, 1 / rate_per_s)
    else:
        raise TokenfleetError(f"unknown arrival process {process!r}; choose one of: poisson, gamma, constant")
    blocks = None if lengths.prefix_blocks is None else tuple(lengths.prefix_blocks[i] for i in pick)
    return Trace(f"{process}:{lengths.name}", np.cumsum(gaps) - gaps[0], lengths.input_tokens[pick], lengths.output_tokens[pick], blocks)
