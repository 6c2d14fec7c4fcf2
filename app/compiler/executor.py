"""The engine's executor hook run through the compiled, expanded step under XLA.

``Engine.decode(req, executor=XlaStepExecutor(engine))`` scores every step the engine does not
force through the module: the routing kernel picks the branch from the step's telemetry, the
branch scores, and the token comes back with its margin and plan name. The body (the
transformer) stays the engine's numpy forward.

Token identity with numpy: where the module reports more than one legal id within its rounding
bound of the best score (``close > 1``, see plans_jax), the step is rescored with numpy's own
sparse kernel, whose token is by construction numpy's. ``stats`` counts how often.

With ``policy="linucb"`` the routing kernel runs LinUCB's select over ``router``'s θ and A⁻¹ (an
:class:`app.router.linucb.LinUCB` with ``len(ARMS)`` arms and DIM features); after each step the
router is updated with the step's measured milliseconds, so the next step's operands carry the
new state.
"""

from __future__ import annotations

import time

import numpy as np

from ..engine import plans as np_plans
from .artifact import Artifact, build
from .catalog import ARMS, build_catalog
from .operands import DIM, OPERANDS
from .routing import features

__all__ = ["XlaStepExecutor", "POLICIES"]

POLICIES = ("rule", "linucb")


class XlaStepExecutor:
    """``run(h, legal, telemetry) -> (token, margin, plan_name)`` for ``engine``.

    Parameters
    ----------
    engine : app.engine.Engine
        Its ``output`` (rows, d) matrix, config (vocab, context) and weights are read.
    policy : {"rule", "linucb"}
    router : LinUCB or None
        Required shape ``(len(ARMS), DIM)``; a fresh ``LinUCB(3, 5)`` when None and
        ``policy == "linucb"``.
    hardware : str
        The cost model's profile (app.model presets) folded into the routing rule.
    amortizer : (A (d, d), B (d, d), c (d,)) or None
        The AmortizedHead map; None is the identity map (A = I, B = 0, c = 0), which makes
        AmortizedHead score the exact state.
    artifact : Artifact or None
        A prebuilt module for the same shape (skips lowering and expansion).
    """

    def __init__(
        self, engine, policy="rule", router=None, hardware="cpu", amortizer=None, artifact=None
    ):
        import jax

        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        cfg = engine.config
        cat = build_catalog(cfg.d, cfg.vocab, hardware, cfg.context)
        if engine.output.shape != (cat.rows, cat.d):
            raise ValueError(
                f"engine.output must have shape {(cat.rows, cat.d)}, got {engine.output.shape}"
            )
        if policy == "linucb" and router is None:
            from ..router.linucb import LinUCB

            router = LinUCB(len(ARMS), DIM)
        if router is not None and router.P_.shape != (len(ARMS), DIM + 1, DIM):
            raise ValueError(f"router must be LinUCB({len(ARMS)}, {DIM}), got {router.P_.shape}")
        self.engine, self.policy, self.router, self.catalog = engine, policy, router, cat
        self.artifact: Artifact = artifact if artifact is not None else build(cat)
        d = cat.d
        a, b, c = amortizer or (np.eye(d), np.zeros((d, d)), np.zeros(d))
        norms = np.sqrt(np.einsum("ij,ij->i", engine.output, engine.output, dtype=np.float64))
        dev = jax.device_put
        self._const = {
            "w": dev(engine.output),
            "wmax": np.float32(norms.max() * (1 + 1e-6)),
            "policy": np.int32(POLICIES.index(policy)),
            "alpha": np.float64(router.alpha if router is not None else 1.0),
            "amort_a": dev(np.asarray(a, np.float32)),
            "amort_b": dev(np.asarray(b, np.float32)),
            "amort_c": dev(np.asarray(c, np.float32)),
        }
        self._ids = np.empty(cat.vocab, np.int32)
        self._fresh = np.zeros((len(ARMS), DIM + 1, DIM))
        self._fresh[:, 1:] = np.eye(DIM)
        self._embd = engine.weights.tok_embd
        self._prev = None
        self.stats = {"steps": 0, "rescored": 0, "branches": {}}

    def operands(self, h, legal, telemetry) -> list:
        """The module's operands for one step (see operands.py)."""
        k = int(legal.shape[0])
        ids = self._ids
        ids.fill(self.catalog.sentinel)
        ids[:k] = legal
        margin = telemetry.get("last_margin")
        P = self.router.P_ if self.router is not None else self._fresh
        ex = self._embd[self._prev] if self._prev is not None else np.zeros_like(h)
        step = {
            **self._const,
            "h": np.asarray(h, np.float32),
            "ids": ids,
            "k": np.int32(k),
            "position": np.int32(telemetry.get("position", 0)),
            "last_margin": np.float32(np.nan if margin is None else margin),
            "theta": np.ascontiguousarray(P[:, 0]),
            "a_inv": np.ascontiguousarray(P[:, 1:]),
            "ex": np.asarray(ex, np.float32),
        }
        return [step[name] for name in OPERANDS]

    def run(self, h, legal, telemetry):
        t0 = time.perf_counter()
        ops = self.operands(h, legal, telemetry)
        token, margin, close, _tol, branch, arm = (v.item() for v in self.artifact(*ops))
        k = int(legal.shape[0])
        margin = None if k < 2 or margin != margin else float(margin)
        if k >= 2 and close > 1:  # a near-tie within rounding: numpy's kernel decides
            head = getattr(self.engine, "head", self.engine.output)  # the engine's exact head
            token, margin = np_plans.sparse_head(head, h, legal)
            self.stats["rescored"] += 1
        name = self.catalog.plans[branch].name
        self.stats["steps"] += 1
        self.stats["branches"][name] = self.stats["branches"].get(name, 0) + 1
        self._prev = token
        if self.router is not None and arm >= 0:
            x = features(
                k,
                telemetry.get("position", 0),
                telemetry.get("last_margin"),
                self.catalog.vocab,
                self.catalog.context,
            )
            self.router.update(x, arm, 1e3 * (time.perf_counter() - t0))
        return token, margin, name
