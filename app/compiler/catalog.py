"""The physical plans of one compiled decode step, priced by the cost model (numpy only).

XLA compiles static shapes, so SparseHead comes in K buckets: a bucket of ``b`` rows gathers
``b`` legal ids (the rest padded with a masked index) and serves every step with K ≤ b. Each
bucket is its own physical plan and its own branch. The buckets are the ladder
16, 64, 256, 1,024, 4,096 cut below the rule's crossover ``K*`` plus ``K*`` itself, so "the
smallest bucket that holds K and costs no more than DenseHead" is exactly the Python rule's
"SparseHead iff K ≤ K*" (:class:`app.engine.rule.CostRule`).

Branch order: ForcedToken, DenseHead, SparseHead[b] for every bucket b (ascending),
AmortizedHead. AmortizedHead scores through the largest bucket (all of V when there is none).

LinUCB's arms (:data:`ARMS`) are the registry's plans marked ``compiled`` (``PlanSpec.compiled``),
in registry order; the branches look each arm up by name, so a plan added to the registry moves
nothing here (a plan marked ``compiled`` needs its kernel in ``plans_jax.KERNELS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine.rule import CostRule
from ..model import dense_head_cost, get_hardware, select_cost, sparse_head_cost
from ..model.registry import PLANS
from ..model.validate import check_int

__all__ = ["LADDER", "ARMS", "Catalog", "PlanEntry", "build_catalog", "compiled_arms"]

LADDER = (16, 64, 256, 1024, 4096)


def compiled_arms(plans=PLANS) -> tuple[str, ...]:
    """Names of the plans in ``plans`` marked ``compiled``, in registry order: LinUCB's arms
    (each has a kernel in :data:`app.compiler.plans_jax.KERNELS`; a test checks it)."""
    return tuple(p.name for p in plans if p.compiled)


#: LinUCB's arms: the plan families the bandit chooses between (the bucket follows from K).
ARMS = compiled_arms()


@dataclass(frozen=True)
class PlanEntry:
    """One branch: its plan family, bucket (rows gathered; None for dense/forced) and cost."""

    index: int
    plan: str
    rows: int | None
    seconds: float
    bytes: float
    flops: float
    regime: str

    @property
    def name(self) -> str:
        return self.plan if self.rows is None else f"{self.plan}[{self.rows}]"

    def to_dict(self) -> dict:
        return {
            "branch": self.index,
            "name": self.name,
            "plan": self.plan,
            "rows": self.rows,
            "seconds": self.seconds,
            "bytes": self.bytes,
            "flops": self.flops,
            "regime": self.regime,
        }


@dataclass(frozen=True)
class Catalog:
    """Everything the expansion pass and the routing kernel fold in as constants."""

    d: int
    vocab: int
    rows: int  # rows of the output matrix the module takes (vocab padded to whole blocks)
    hardware: str
    dtype: str
    k_star: int
    buckets: tuple[int, ...]
    plans: tuple[PlanEntry, ...]
    context: int

    FORCED = 0
    DENSE = 1

    @property
    def sparse0(self) -> int:
        return 2

    @property
    def amortized(self) -> int:
        return 2 + len(self.buckets)

    @property
    def amortized_rows(self) -> int:
        return self.buckets[-1] if self.buckets else self.vocab

    @property
    def sentinel(self) -> int:
        """The masked index that pads the legal ids (one past the last row)."""
        return self.rows

    def bucket_of(self, k: int) -> int | None:
        """Position of the smallest bucket holding ``k`` legal ids, None if none does."""
        for i, b in enumerate(self.buckets):
            if k <= b:
                return i
        return None

    def rule_branch(self, k: int) -> int:
        """The branch the Python rule (:class:`CostRule`) names for ``k``, as an index."""
        plan = CostRule(self.d, self.vocab, self.hardware, self.dtype).select(k)
        if plan == "ForcedToken":
            return self.FORCED
        if plan == "SparseHead":
            return self.sparse0 + self.bucket_of(k)
        return self.DENSE

    def arm_branch(self, arm: int, k: int) -> int:
        """The branch for LinUCB's ``arm`` at ``k``: K = 1 is forced; an arm whose bucket cannot
        hold K falls back to DenseHead."""
        if k == 1:
            return self.FORCED
        if ARMS[arm] == "SparseHead" and self.bucket_of(k) is not None:
            return self.sparse0 + self.bucket_of(k)
        if ARMS[arm] == "AmortizedHead" and k <= self.amortized_rows:
            return self.amortized
        return self.DENSE

    def to_dict(self) -> dict:
        return {
            "d": self.d,
            "vocab": self.vocab,
            "rows": self.rows,
            "hardware": self.hardware,
            "dtype": self.dtype,
            "k_star": self.k_star,
            "buckets": list(self.buckets),
            "context": self.context,
            "arms": list(ARMS),
            "plans": [p.to_dict() for p in self.plans],
        }


def _entry(index, plan, rows, cost) -> PlanEntry:
    return PlanEntry(
        index,
        plan,
        rows,
        float(cost.seconds),
        float(cost.bytes),
        float(cost.flops),
        str(cost.regime),
    )


def build_catalog(
    d: int, vocab: int, hardware: str = "cpu", context: int = 2048, pad_rows: int = 64
) -> Catalog:
    """The plans for a head of width ``d`` over ``vocab`` ids on the ``hardware`` profile.

    Raises ``ValueError`` for a ``d`` outside [1, 65536], a ``vocab`` outside [2, 2^24], a
    ``context`` outside [1, 2^24] or an unknown hardware name.
    """
    d = check_int("d", d, 1, 1 << 16)
    vocab = check_int("vocab", vocab, 2, 1 << 24)
    context = check_int("context", context, 1, 1 << 24)
    dtype = "float32"
    hw = get_hardware(hardware)
    k_star = CostRule(d, vocab, hardware, dtype).k_star
    buckets = tuple(b for b in LADDER if b < min(k_star, vocab)) + ((k_star,) if k_star else ())
    plans = [
        _entry(0, "ForcedToken", None, select_cost(1, 1, dtype, hw)),  # no scoring: one select
        _entry(1, "DenseHead", None, dense_head_cost(d, vocab, 1, dtype, hw)),
    ]
    for i, b in enumerate(buckets):
        plans.append(_entry(2 + i, "SparseHead", b, sparse_head_cost(d, vocab, b, 1, dtype, hw)))
    rows = buckets[-1] if buckets else vocab
    # the map's two d×d products (A h, B e(x)) priced as a dense head of 2d rows, then the rows
    amort = dense_head_cost(d, 2 * d, 1, dtype, hw) + sparse_head_cost(d, vocab, rows, 1, dtype, hw)
    plans.append(_entry(len(plans), "AmortizedHead", rows, amort))
    padded = vocab + (-vocab) % pad_rows
    return Catalog(d, vocab, padded, hardware, dtype, k_star, buckets, tuple(plans), context)
