"""The plan registry: every physical plan of a ``DecodeStep``, defined once.

A :class:`PlanSpec` holds a plan's name, whether it is exact, its operator tree, its error share,
where it applies (and what runs instead elsewhere), whether the real engine's router picks it, and
the text README's plan table is generated from. The tree *is* the cost recipe: each leaf names a
kernel term of :data:`TERMS` (a function of the :class:`Setting` and the step's telemetry,
:class:`Step`, giving a :class:`~.costs.Cost`); an inner node costs the sum of its children, and a
``Refine`` node runs with the refine probability. Everything that prices a plan composes it here:

* the plan IR (:mod:`.plans`: ``expand``/``annotate``, and so EXPLAIN) walks the trees with the
  model's costs and the refine probability p(τ);
* the synthetic environment (``app.router.environment.model_latency``) takes
  :func:`plan_seconds` over arrays of steps, refine probability 0 (its router makes that call);
* the backend prices its sweep kernels with :func:`plan_cost` / :data:`TERMS` and, for measured
  latencies, passes measured seconds for some terms (``prices``) to :func:`plan_seconds`;
* the engine runs a plan through its kernel table, keyed by the same names
  (``app.engine.kernels.KERNELS``; a test checks the two match, and ``app/model`` never imports
  the engine).

Adding a plan means adding one :class:`PlanSpec` to :data:`PLANS` (and a term to :data:`TERMS`
if it runs a new kind of kernel) plus its engine kernel (docs/ARCHITECTURE.md has the example).
The functions take ``plans=`` so a caller (or a test) can use another registry tuple.

Physical plans, in arm order:

0. ``DenseHead``       exact decoder state, logits over all of V, mask, argmax
1. ``SparseHead``      exact decoder state, score only the K legal rows, argmax
2. ``AmortizedHead``   amortized state + sparse scoring; refine (exact state + sparse) if m < τ
3. ``AmortizedRerank`` amortized state + sparse scoring, then rerank the top-r with an exactly
                       recomputed last layer; a share ``rerank_factor`` of amortized errors remain
                       (the paper's plan: ``tree``). The real engine has no last-layer-only
                       pass, so its kernel of this name runs the body, shortlists with the
                       predicted state, rescores the shortlist with the exact state and refines
                       where the shortlist is not certified: its ``engine_tree``, priced with
                       ``engine=True``; app.engine.kernels)
4. ``FullRecompute``   recompute the state over the whole context without the KV cache, sparse
5. ``ForcedToken``     K = 1 (the grammar forces the token, or a run of n tokens): score nothing,
                       one body forward over the n positions (a short prefill), 1/n per token.
                       Where K > 1 it does not apply and runs (and is priced as) ``DenseHead``,
                       as the engine's ``--plan forced`` does.
6. ``PromptLookup``    draft L tokens by prompt lookup (n-gram continuation), verify them in one
                       forward over 1 + L rows (a prefill of 1 + L) shared by the accepted
                       tokens; exact by verification (a wrong draft is rolled back)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .costs import Cost, dense_head_cost, sparse_head_cost
from .hardware import Hardware
from .transformer import TransformerShape, amortized_update_cost, decode_step_cost, prefill_cost

__all__ = [
    "Operator",
    "Setting",
    "Step",
    "PlanSpec",
    "TERMS",
    "PLANS",
    "PLAN_NAMES",
    "EXACT_PLANS",
    "arm_index",
    "routed_plans",
    "plan_table",
    "check_plans",
    "get_plan",
    "effective_plan",
    "plan_tree",
    "price_tree",
    "plan_cost",
    "plan_seconds",
    "plan_quality",
]


@dataclass(frozen=True)
class Operator:
    """One physical operator; ``cost`` is filled in by :func:`price_tree`.

    ``probability`` is how often the operator runs per step (below 1 only under ``Refine``).
    """

    op: str
    detail: str = ""
    children: tuple[Operator, ...] = ()
    probability: float = 1.0
    cost: Cost | None = None


@dataclass(frozen=True)
class Setting:
    """What a kernel's price depends on besides the step: the body, batch, dtype, hardware and
    the plans' own parameters (the rerank's ``rerank_r``, the refine threshold ``tau``)."""

    shape: TransformerShape
    batch: int
    dtype: str
    hw: Hardware
    rerank_r: int = 8
    tau: float = 0.0

    @classmethod
    def of(cls, s) -> Setting:
        """The setting of a :class:`~.scenario.Scenario`."""
        return cls(s.shape, s.batch, s.dtype, s.hw, s.rerank_r, s.tau)


@dataclass(frozen=True)
class Step:
    """A step's telemetry, scalars or equally long ``(T,)`` arrays: legal-set size ``k``, decode
    position ``context``, KV-cache ``missing`` positions and the ``forced`` run length (tokens
    the grammar forces in a row; 1 when nothing is forced beyond this one), the ``draft``
    length a drafting plan verifies with it and the drafted tokens ``accepted`` (expected)."""

    k: np.ndarray | float
    context: np.ndarray | float
    missing: np.ndarray | float = 0.0
    forced: np.ndarray | float = 1.0
    draft: np.ndarray | float = 0.0
    accepted: np.ndarray | float = 0.0

    @classmethod
    def of(cls, s) -> Step:
        """The one step a :class:`~.scenario.Scenario` describes (a warm KV cache)."""
        return cls(s.k, s.context, 0.0, s.forced_run)


def _args(c: Setting) -> tuple:
    return (c.batch, c.dtype, c.hw)


def _rerank(c: Setting, x: Step) -> Cost:
    one_layer = dataclasses.replace(c.shape, layers=1)
    r = np.minimum(x.k, c.rerank_r)
    return decode_step_cost(one_layer, x.context, *_args(c)) + sparse_head_cost(
        c.shape.d, c.shape.vocab, r, *_args(c)
    )


#: The kernel terms, keyed by the leaf operator that runs them: ``term(setting, step) -> Cost``.
TERMS: dict[str, Callable[[Setting, Step], Cost]] = {
    "DecodeStep": lambda c, x: decode_step_cost(c.shape, x.context, *_args(c)),
    "CacheMiss": lambda c, x: prefill_cost(c.shape, x.missing, x.context - x.missing, *_args(c)),
    "DenseScore": lambda c, x: dense_head_cost(c.shape.d, c.shape.vocab, *_args(c)),
    "SparseScore": lambda c, x: sparse_head_cost(c.shape.d, c.shape.vocab, x.k, *_args(c)),
    "AmortizedUpdate": lambda c, x: amortized_update_cost(c.shape, *_args(c)),
    "Rerank": _rerank,
    # The engine's rerank: the top-r of the K legal rows rescored (the shortlist's r rows only).
    "ShortlistScore": lambda c, x: sparse_head_cost(
        c.shape.d, c.shape.vocab, np.minimum(x.k, c.rerank_r), *_args(c)
    ),
    "Prefill": lambda c, x: prefill_cost(c.shape, x.context + 1, 0, *_args(c)),
    # A run of n forced tokens: one forward over n positions after the context, 1/n per token.
    "ForcedPrefill": lambda c, x: prefill_cost(c.shape, x.forced, x.context, *_args(c)).scale(
        1.0 / np.asarray(x.forced, dtype=np.float64)
    ),
    # A draft of L tokens verified with its token: one forward over 1 + L positions after the
    # context, shared by the 1 + accepted tokens it yields.
    "DraftVerify": lambda c, x: prefill_cost(c.shape, 1 + x.draft, x.context, *_args(c)).scale(
        1.0 / (1.0 + np.asarray(x.accepted, dtype=np.float64))
    ),
}


def _n(v) -> str:
    """A count for an operator's detail: the number for one step, ``"per-step"`` for many."""
    return f"{int(v)}" if np.ndim(v) == 0 else "per-step"


def _exact_state(c: Setting, x: Step) -> tuple[Operator, ...]:
    ops = (Operator("DecodeStep", f"exact, KV cache of {_n(x.context)} positions"),)
    return ops + _cache_miss(x)


def _cache_miss(x: Step) -> tuple[Operator, ...]:
    if not np.any(np.asarray(x.missing) > 0):
        return ()
    return (Operator("CacheMiss", f"recompute {_n(x.missing)} positions missing from the cache"),)


def _sparse(c: Setting, x: Step) -> Operator:
    return Operator("SparseScore", f"gather {_n(x.k)} rows + GEMV + argmax")


def _amortized() -> Operator:
    return Operator("AmortizedUpdate", "h = h_stable + Δh (one d×d map)")


def _dense_head(c, x):
    dense = Operator("DenseScore", f"GEMV over |V|={c.shape.vocab} + mask + argmax")
    return (*_exact_state(c, x), dense)


def _sparse_head(c, x):
    return (*_exact_state(c, x), _sparse(c, x))


def _amortized_head(c, x):
    refine = Operator("Refine", f"if margin < τ={c.tau:g}", (*_exact_state(c, x), _sparse(c, x)))
    return (_amortized(), _sparse(c, x), refine)


def _amortized_rerank(c, x):
    rerank = Operator("Rerank", f"last layer exact + top-{c.rerank_r} rescore")
    return (_amortized(), _sparse(c, x), rerank)


def _shortlist_rerank(c, x):
    """What the engine's AmortizedRerank kernel runs (it has no last-layer-only pass): the whole
    body, the predicted state to shortlist the top-r legal rows, the exact state to rescore them,
    and SparseHead over all of K where the measured ε does not certify the winner."""
    shortlist = Operator("SparseScore", f"shortlist: {_n(x.k)} rows on the predicted state")
    rescore = Operator("ShortlistScore", f"rescore the top-{c.rerank_r} on the exact state")
    refine = Operator("Refine", "if the lead ≤ ε", (_sparse(c, x),))
    return (*_exact_state(c, x), _amortized(), shortlist, rescore, refine)


def _full_recompute(c, x):
    n = _n(x.context + 1)
    return (Operator("Prefill", f"recompute {n} positions, no KV cache"), _sparse(c, x))


def _forced_token(c, x):
    n = _n(x.forced)
    run = Operator("ForcedPrefill", f"run of {n} forced tokens: one forward over {n}, no head")
    return (*_cache_miss(x), run)


def _prompt_lookup(c, x):
    n = _n(1 + x.draft)
    verify = Operator("DraftVerify", f"one forward over {n} rows (a token + its draft), shared")
    return (*_cache_miss(x), verify, _sparse(c, x))


def _no_error(s) -> float:
    return 0.0


def _everywhere(k) -> np.ndarray:
    return np.ones(np.shape(k), dtype=bool)


@dataclass(frozen=True)
class PlanSpec:
    """One physical plan.

    ``tree(setting, step)`` gives the root's children (leaves name :data:`TERMS`);
    ``error_share(scenario)`` the share of the amortized state's wrong-token probability the plan
    keeps (0 for exact plans); ``refines`` whether a ``Refine`` node's threshold τ lowers that
    error; ``applies(k)`` (bool array of k's shape) where the plan can run, and ``fallback`` the
    plan that runs (and is priced, and errs) where it cannot; ``routed`` whether the router on the
    real engine offers it on K ≥ 2 steps (its arms; the trace collector records its cost);
    ``summary`` and ``equivalence`` the two text columns of README's plan table
    (:func:`plan_table`); ``choice`` its ``llmqp decode --plan`` name (None: not offered there);
    ``compiled`` whether the compiled step (``app.compiler``) has a branch for it (its arms).
    The engine's kernel is ``app.engine.kernels.KERNELS[name]``; ``engine_tree`` the tree of
    what that kernel runs where it is not the paper's plan (None: it runs ``tree``), priced with
    ``engine=True`` (:func:`plan_tree`, :func:`plan_cost`).
    """

    name: str
    exact: bool
    tree: Callable[[Setting, Step], tuple[Operator, ...]]
    summary: str = ""
    equivalence: str = "yes"
    error_share: Callable[[object], float] = _no_error
    refines: bool = False
    applies: Callable[[np.ndarray], np.ndarray] = _everywhere
    fallback: str | None = None
    routed: bool = False
    choice: str | None = None
    compiled: bool = False
    engine_tree: Callable[[Setting, Step], tuple[Operator, ...]] | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"The 'name' parameter must be an identifier. Got {self.name!r}.")
        if self.applies is not _everywhere and self.fallback is None:
            raise ValueError(f"Plan {self.name!r} applies to some steps only: give a 'fallback'.")


#: The registry, in arm order (the routers' arm ``a`` is ``PLANS[a]``; look arms up by name with
#: :func:`arm_index`, never by position).
PLANS: tuple[PlanSpec, ...] = (
    PlanSpec("DenseHead", True, _dense_head,
             "exact decoder state, logits over all of V, mask, argmax", routed=True,
             choice="dense", compiled=True),
    PlanSpec("SparseHead", True, _sparse_head,
             "exact decoder state, score only the K legal rows", "yes (the lemma)", routed=True,
             choice="sparse", compiled=True),
    PlanSpec("AmortizedHead", False, _amortized_head,
             "reuse a stable state, refine with a full step when the margin is below τ",
             "in the engine, yes by verification (a wrong guess is rolled back); under the "
             "paper's lossy rule once τ ≥ 2ε (the certificate)",
             error_share=lambda s: 1.0, refines=True, routed=True, choice="amortized",
             compiled=True),
    PlanSpec("AmortizedRerank", False, _amortized_rerank,
             "amortized state, rerank the top-r with an exact last layer",
             "ε-equivalent (the paper's); the engine's kernel runs the body, shortlists with the "
             "predicted state and refines where the measured ε does not certify the winner",
             error_share=lambda s: s.rerank_factor, routed=True, choice="rerank",
             engine_tree=_shortlist_rerank),
    PlanSpec("FullRecompute", True, _full_recompute,
             "recompute the state over the whole context, no KV cache", choice="full"),
    PlanSpec("ForcedToken", True, _forced_token,
             "K = 1 (one legal token, or a forced run of n): score nothing, feed the run "
             "through the body in one n-position forward; where K > 1 it runs `DenseHead`",
             applies=lambda k: np.asarray(k) == 1, fallback="DenseHead", choice="forced"),
    PlanSpec("PromptLookup", True, _prompt_lookup,
             "draft the continuation of the longest n-gram match in prompt + output (the prefix "
             "the grammar accepts), verify it in one forward of 1 + L rows, keep the agreeing "
             "prefix", "yes by verification (a wrong draft is rolled back)", routed=True,
             choice="lookup"),
)  # fmt: skip

PLAN_NAMES = tuple(p.name for p in PLANS)
EXACT_PLANS = frozenset(p.name for p in PLANS if p.exact)


def arm_index(name: str, plans=PLANS) -> int:
    """The arm (position in ``plans``) of the plan called ``name``: routers, harnesses and
    figures look arms up by name, so a plan inserted anywhere moves nothing."""
    for i, p in enumerate(plans):
        if p.name == name:
            return i
    names = ", ".join(p.name for p in plans)
    raise ValueError(f"The 'name' parameter must be one of {names}. Got {name!r} instead.")


def routed_plans(plans=PLANS) -> tuple[str, ...]:
    """Names of the plans the real engine's router chooses between on K ≥ 2 steps."""
    return tuple(p.name for p in plans if p.routed)


def plan_table(plans=PLANS) -> str:
    """README's plan table (Markdown), generated from each plan's ``summary``/``equivalence``."""
    rows = ["| plan | what it does | exact? |", "|---|---|---|"]
    rows += [f"| `{p.name}` | {p.summary} | {p.equivalence} |" for p in plans]
    return "\n".join(rows) + "\n"


def check_plans(plans) -> tuple[PlanSpec, ...]:
    """``plans`` as a tuple of :class:`PlanSpec` with unique names whose fallbacks are in it and
    apply everywhere; ``ValueError`` naming what is wrong otherwise."""
    plans = tuple(plans)
    if not plans or not all(isinstance(p, PlanSpec) for p in plans):
        raise ValueError(
            f"The 'plans' parameter must be a non-empty tuple of PlanSpec. Got {plans!r} instead."
        )
    names = [p.name for p in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"The 'plans' parameter must have unique names. Got {names}.")
    for p in plans:
        if p.fallback is not None and (
            p.fallback not in names or get_plan(p.fallback, plans).applies is not _everywhere
        ):
            raise ValueError(
                f"Plan {p.name!r} falls back to {p.fallback!r}, which must be a plan in 'plans' "
                "that applies to every step."
            )
    return plans


def get_plan(name: str, plans: tuple[PlanSpec, ...] = PLANS) -> PlanSpec:
    """The spec called ``name`` in ``plans``; ``ValueError`` listing the names otherwise."""
    for p in plans:
        if p.name == name:
            return p
    names = ", ".join(p.name for p in plans)
    raise ValueError(f"The 'name' parameter must be one of {names}. Got {name!r} instead.")


def effective_plan(spec: PlanSpec, k, plans=PLANS) -> PlanSpec:
    """The plan that runs for one step of legal-set size ``k``: ``spec`` where it applies, its
    fallback elsewhere (ForcedToken at K > 1 runs DenseHead). The engine runs its kernel."""
    return spec if bool(np.all(spec.applies(k))) else get_plan(spec.fallback, plans)


def _tree(spec: PlanSpec, engine: bool):
    return spec.engine_tree if engine and spec.engine_tree is not None else spec.tree


def plan_tree(spec: PlanSpec, c: Setting, x: Step, plans=PLANS, engine=False) -> Operator:
    """The plan's unpriced root for one step (``engine``: what the engine's kernel runs). Where
    ``spec`` does not apply at ``x.k`` its only child is a ``Fallback`` node over the fallback
    plan's tree."""
    if bool(np.all(spec.applies(x.k))):
        return Operator(spec.name, children=_tree(spec, engine)(c, x))
    fb = get_plan(spec.fallback, plans)
    note = f"not applicable at K={_n(x.k)}: runs {fb.name}"
    return Operator(spec.name, children=(Operator("Fallback", note, fb.tree(c, x)),))


Prices = Mapping[str, Callable[[Setting, Step], object]]


def price_tree(op: Operator, c: Setting, x: Step, refine=0.0, prices: Prices | None = None):
    """``op`` with every node's cost: a leaf's from ``prices[op]`` when given (e.g. measured
    seconds), else from :data:`TERMS`; an inner node's the sum of its children; under a
    ``Refine`` node everything runs with probability ``refine``."""

    def price(name):
        if prices is not None and name in prices:
            return prices[name](c, x)
        return TERMS[name](c, x)

    return _walk(op, price, refine, 1.0)


def _walk(op, price, refine, probability):
    if op.op == "Refine":
        probability = probability * refine
    if not op.children:
        v = price(op.op)
        total = v.scale(probability) if isinstance(v, Cost) else v * probability
        return Operator(op.op, op.detail, (), probability, total)
    kids = tuple(_walk(k, price, refine, probability) for k in op.children)
    total = kids[0].cost
    for kid in kids[1:]:
        total = total + kid.cost
    return Operator(op.op, op.detail, kids, probability, total)


def plan_cost(spec: PlanSpec, c: Setting, x: Step, refine=0.0, plans=PLANS, engine=False) -> Cost:
    """The plan's :class:`~.costs.Cost` for the step(s) ``x`` (scalars or arrays); ``engine``:
    of what the engine's kernel runs (its ``engine_tree``), not the paper's plan."""
    own = price_tree(Operator(spec.name, children=_tree(spec, engine)(c, x)), c, x, refine).cost
    where = spec.applies(x.k)
    if bool(np.all(where)):
        return own
    fb = get_plan(spec.fallback, plans)
    other = price_tree(Operator(fb.name, children=fb.tree(c, x)), c, x, refine).cost
    return Cost(*(np.where(where, getattr(own, f), getattr(other, f)) for f in _COST_FIELDS))


_COST_FIELDS = tuple(f.name for f in dataclasses.fields(Cost))


def plan_seconds(c: Setting, x: Step, prices: Prices | None = None, plans=PLANS) -> np.ndarray:
    """``(T, A)`` seconds of every plan in ``plans`` over the ``T`` steps of ``x`` (no refines).

    ``prices`` maps term names to ``f(setting, step) -> (T,) seconds`` that replace the model's
    (measured kernels); the other terms come from :data:`TERMS`.
    """
    source = {n: (lambda c, x, n=n: TERMS[n](c, x).seconds) for n in TERMS}
    source.update(prices or {})
    memo: dict = {}  # each term once per call, however many plans share it

    def once(name):
        def term(c, x):
            if name not in memo:
                memo[name] = np.asarray(source[name](c, x), dtype=np.float64)
            return memo[name]

        return term

    seconds = {n: once(n) for n in source}
    T = np.shape(np.broadcast_arrays(x.k, x.context, x.missing, x.forced)[0])

    def total(spec):
        root = Operator(spec.name, children=spec.tree(c, x))
        return np.asarray(price_tree(root, c, x, 0.0, seconds).cost, dtype=np.float64)

    cols = []
    for spec in plans:
        col = total(spec)
        where = spec.applies(x.k)
        if not np.all(where):
            col = np.where(where, col, total(get_plan(spec.fallback, plans)))
        cols.append(np.broadcast_to(col, T))
    return np.stack(cols, axis=-1)


def plan_quality(s, k, err, plans=PLANS) -> np.ndarray:
    """``(T, A)`` wrong-token probability of every plan given the amortized state's ``err``
    ``(T,)`` (no refines): ``error_share(s)·err``, the fallback's where a plan does not apply."""
    err = np.asarray(err, dtype=np.float64)
    cols = []
    for spec in plans:
        col = spec.error_share(s) * err
        where = spec.applies(k)
        if not np.all(where):
            col = np.where(where, col, get_plan(spec.fallback, plans).error_share(s) * err)
        cols.append(col)
    return np.stack(cols, axis=-1)
