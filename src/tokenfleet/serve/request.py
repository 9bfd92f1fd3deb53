"""One request's mutable state inside an engine; `__slots__` keeps a million of them cheap."""

from __future__ import annotations


class Request:
    """Computed tokens catch up to the target: the prompt, then one (or ~E with speculation) per step.

    While a request decodes, its context and output are not written every step: they are
    `computed`/`generated` as of engine step `since_step`, plus E tokens per step after it."""

    __slots__ = ("id", "arrival_s", "prompt", "output", "prefix", "computed", "generated", "target", "first_token_s",
                 "finish_s", "preemptions", "prefix_hit_tokens", "since_step", "ticket", "admitted", "in_window")

    def __init__(self, rid: int, arrival_s: float, prompt: int, output: int, prefix: tuple[int, ...] = ()):
        self.id, self.arrival_s, self.prompt, self.output, self.prefix = rid, arrival_s, prompt, output, prefix
        self.computed: float = 0  # tokens whose KV exists (fractional under speculative decoding)
        self.generated = 0.0  # output tokens emitted (fractional under speculative decoding)
        self.target = prompt  # prefill target: the prompt, or prompt + output so far after a preemption
        self.first_token_s = -1.0
        self.finish_s = -1.0
        self.preemptions = 0
        self.prefix_hit_tokens = 0
        self.since_step = 0  # engine step at which `computed`/`generated` were last written
        self.ticket = -1  # identifies this request's live entry in the decode heaps (-1: not decoding)
        self.admitted = -1  # admission order, for newest-first preemption (-1: not admitted now)
        self.in_window = False  # decoding with a context still shorter than the attention window

    def with_resident_kv(self) -> Request:
        """This request arrives with its prompt's KV cache and first token already made (by a
        disaggregated prefill pool): it joins the decoders without computing its prompt."""
        self.computed, self.generated, self.first_token_s = self.prompt, 1.0, self.arrival_s
        return self
