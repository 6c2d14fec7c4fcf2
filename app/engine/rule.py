"""``--plan auto``: the cost model's rewrite rule, from a step's telemetry.

* K = 1 (the grammar forces the token): ``ForcedToken`` — score nothing; the token joins the
  run that the next scored step feeds through the body in one forward.
* otherwise ``SparseHead`` while K ≤ K*, the roofline crossover of the model's head on the
  hardware profile, else ``DenseHead``. ``FullRecompute`` rebuilds a state the cache already
  holds, so with a warm cache it never wins; the rule names it only for a cold cache.

K* is found once per profile (bisection in :func:`app.model.find_crossover`), so a step's
decision is two comparisons. In a batched pass (app.engine.scheduler) K* is the crossover at the
pass's batch size B (:meth:`CostRule.at_batch`): the dense head reads the weights once for B
rows while each sequence gathers its own legal rows, so K* falls as B grows.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..model import find_crossover, get_hardware

__all__ = ["CostRule", "rule_plan"]


def rule_plan(k: int, k_star: int, cached: bool = True) -> str:
    """The rewrite rule itself, for a step with ``k`` legal tokens and the crossover ``k_star``."""
    if k == 1:
        return "ForcedToken"
    if not cached:
        return "FullRecompute"
    return "SparseHead" if k <= k_star else "DenseHead"


@dataclass(frozen=True)
class CostRule:
    """The rewrite rule for one model shape on one hardware profile."""

    d: int
    vocab: int
    hardware: str = "cpu"
    dtype: str = "float32"
    batch: int = 1

    def __post_init__(self):
        hw = get_hardware(self.hardware)
        k_star = find_crossover(self.d, self.vocab, self.batch, self.dtype, hw).k_roofline
        object.__setattr__(self, "k_star", 0 if k_star is None else int(k_star))

    def select(self, k: int, cached: bool = True) -> str:
        """The plan for a step with ``k`` legal tokens; ``cached``: the KV cache is warm."""
        return rule_plan(k, self.k_star, cached)

    def at_batch(self, batch: int) -> CostRule:
        """The same rule priced at batch size ``batch`` (≥ 1; found once per size)."""
        return self if batch == self.batch else _at_batch(self, int(batch))

    def to_dict(self) -> dict:
        return {
            "rule": "cost",
            "hardware": self.hardware,
            "dtype": self.dtype,
            "k_star": self.k_star,
            "vocab": self.vocab,
            "d": self.d,
            "batch": self.batch,
        }


@lru_cache(maxsize=64)
def _at_batch(rule: CostRule, batch: int) -> CostRule:
    return CostRule(rule.d, rule.vocab, rule.hardware, rule.dtype, batch)
