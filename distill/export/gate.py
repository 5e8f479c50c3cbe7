"""The one export gate: an int8 graph is deployable when its quality loss against fp32 (the
task's measure: an accuracy drop, a relative perplexity increase) is within the recipe's
budget. Every task's export asks this, once per candidate."""

from __future__ import annotations

from dataclasses import dataclass

# Float noise allowance: a loss computed as a ratio of counts must not fail an equal budget.
EPSILON = 1e-9


@dataclass(frozen=True)
class Gate:
    """``key``: the recipe key of the budget (named in messages); ``budget``: its value."""

    key: str
    budget: float

    def passes(self, loss: float | None) -> bool:
        """Whether a candidate losing ``loss`` (None: it could not be measured) is deployable."""
        return loss is not None and loss <= self.budget + EPSILON

    def describe(self) -> str:
        return f"{self.key} = {self.budget:g}"
