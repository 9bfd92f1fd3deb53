"""A disk cache of simulation results, one JSON file per key, so reruns and interrupted plans
or sweeps recompute nothing that finished.

A key is the sha256 of a canonical JSON of everything that shapes the answer: the job's inputs,
the model's and chip's full specs, the efficiency calibration, and a fingerprint of the code
that computes it (cost model, simulator, traces, the fleet's judging code). Entries are written
to a temporary file and renamed into place, so a kill never leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

#: Bump when the meaning of a cached entry changes in a way the code fingerprint cannot see.
CACHE_SCHEMA = 1
#: Source that shapes simulated results; a change in any of it starts a fresh cache.
FINGERPRINT_PACKAGES = ("tokenfleet.perf", "tokenfleet.serve", "tokenfleet.workload")
FINGERPRINT_FILES = ("traffic.py", "capacity.py", "disagg.py", "verify.py")


def default_cache_dir() -> Path:
    """`$TOKENFLEET_CACHE`, else `~/.cache/tokenfleet`."""
    env = os.environ.get("TOKENFLEET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tokenfleet"


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


@cache
def code_fingerprint() -> str:
    """sha256 over the source and data files that decide a simulated result."""
    h = hashlib.sha256(f"schema {CACHE_SCHEMA}".encode())
    for package in FINGERPRINT_PACKAGES:
        root = resources.files(package)
        for item in sorted(root.iterdir(), key=lambda p: p.name):
            if item.name.endswith(".py"):
                h.update(item.name.encode() + item.read_bytes())
        data = root.joinpath("data")
        if data.is_dir():
            for item in sorted(data.iterdir(), key=lambda p: p.name):
                if item.name.endswith(".yaml"):
                    h.update(item.name.encode() + item.read_bytes())
    fleet = resources.files("tokenfleet.fleet")
    for name in FINGERPRINT_FILES:
        if fleet.joinpath(name).is_file():
            h.update(name.encode() + fleet.joinpath(name).read_bytes())
    return h.hexdigest()


@dataclass
class Cache:
    """JSON entries under `root/<kind>/<key[:2]>/<key>.json`; `root=None` keeps nothing."""

    root: Path | None
    hits: dict[str, int] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)

    def path(self, kind: str, key: str) -> Path:
        assert self.root is not None
        return self.root / kind / key[:2] / f"{key}.json"

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        try:
            entry = json.loads(self.path(kind, key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None
        self.hits[kind] = self.hits.get(kind, 0) + 1
        result: dict[str, Any] = entry["result"]
        return result

    def put(self, kind: str, key: str, result: dict[str, Any], about: dict[str, Any] | None = None) -> None:
        if self.root is None:
            return
        path = self.path(kind, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "schema": CACHE_SCHEMA, "about": about or {}, "result": result}, default=float))
        os.replace(tmp, path)
        self.writes[kind] = self.writes.get(kind, 0) + 1

    def entries(self, kind: str) -> list[Path]:
        """Every stored entry of one kind (tests and resumable tools count them)."""
        if self.root is None or not (self.root / kind).is_dir():
            return []
        return sorted((self.root / kind).glob("*/*.json"))
