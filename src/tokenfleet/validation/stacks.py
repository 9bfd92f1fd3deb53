"""Which software stack a published row ran, for kinds whose stacks are fitted apart.

`data/stacks.yaml` names the stacks, the rule that recognises a row of each (a regular
expression over its software, source and notes) and the hardware kinds fitted per stack. A row
of another kind, or of no named stack, belongs to its kind's own fit ("").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import yaml

if TYPE_CHECKING:
    from tokenfleet.validation.cases import Case


@dataclass(frozen=True)
class Stack:
    name: str
    description: str
    match: re.Pattern[str]
    kinds: tuple[str, ...]


@functools.cache
def stacks() -> tuple[Stack, ...]:
    data = yaml.safe_load(resources.files("tokenfleet.validation").joinpath("data/stacks.yaml").read_text())
    return tuple(Stack(name, " ".join(s["description"].split()), re.compile(s["match"]), tuple(s["kinds"]))
                 for name, s in data["stacks"].items())


def stack_of(case: Case, kind: str) -> str:
    """The fitted stack this row of a chip of `kind` ran, or "" (its kind's own fit)."""
    text = " ".join((case.software, case.source, case.notes))
    return next((s.name for s in stacks() if kind in s.kinds and s.match.search(text)), "")
