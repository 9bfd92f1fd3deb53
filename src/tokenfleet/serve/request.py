"""One request's mutable state inside a replica; `__slots__` keeps a million of them cheap."""

from __future__ import annotations


class Request:
    """Computed tokens catch up to the target: the prompt, then one (or ~E with speculation) per step."""

    __slots__ = ("id", "arrival_s", "prompt", "output", "computed", "generated", "first_token_s",
                 "finish_s", "preemptions", "prefix_hit_tokens", "blocks", "prefix")

    def __init__(self, rid: int, arrival_s: float, prompt: int, output: int, prefix: tuple[int, ...] = ()):
        self.id, self.arrival_s, self.prompt, self.output, self.prefix = rid, arrival_s, prompt, output, prefix
        self.computed: float = 0  # tokens whose KV exists (fractional under speculative decoding)
        self.generated = 0.0  # output tokens emitted (fractional under speculative decoding)
        self.first_token_s = -1.0
        self.finish_s = -1.0
        self.preemptions = 0
        self.prefix_hit_tokens = 0
        self.blocks = 0

    @property
    def context(self) -> float:
        """Tokens in the KV cache after this request's latest step."""
        return self.computed + int(self.generated)

    @property
    def prefilling(self) -> bool:
        return self.computed < self.prompt

    @property
    def remaining(self) -> float:
        return self.output - self.generated
