"""Speculative decoding as the cost model and the simulator both see it: a decode step verifies
k + 1 tokens per sequence, drafting costs a share of the step, and the step yields the expected
number of accepted tokens."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SpecDecode(BaseModel):
    """Speculative decoding: a draft (or MTP head) proposes `draft_tokens`; each is accepted with
    probability `acceptance_rate`, so a step yields (1 - a^(k+1)) / (1 - a) tokens on average
    [Leviathan et al. 2023] at the cost of verifying k+1 tokens plus drafting."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    draft_tokens: int = Field(default=0, ge=0, le=16, description="k: tokens proposed per step (0 = off)")
    acceptance_rate: float = Field(default=0.7, ge=0.0, lt=1.0, description="per-token acceptance probability")
    draft_cost_ratio: float = Field(default=0.05, ge=0.0, le=1.0, description="one draft token's cost as a share of a target decode step")

    @property
    def tokens_per_step(self) -> float:
        a, k = self.acceptance_rate, self.draft_tokens
        return (1 - a ** (k + 1)) / (1 - a) if k else 1.0

    @property
    def verified_tokens(self) -> int:
        """Tokens each sequence puts through the target model per decode step."""
        return self.draft_tokens + 1

    @property
    def draft_factor(self) -> float:
        """A decode step's time and energy with drafting, over the target model's step alone."""
        return 1 + self.draft_tokens * self.draft_cost_ratio
