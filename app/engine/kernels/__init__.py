"""The engine's kernel table: how each plan of the registry (``app.model.registry.PLANS``) runs
on the real model, keyed by the plan's name — one entry per plan, one file per array library
(:mod:`.numpy`: the numpy heads; the compiled step's JAX plans are ``app.compiler.plans_jax``).

The decode loop, the trace collector and ``llmqp decode --plan`` dispatch through
:data:`KERNELS`; a test checks that its keys are the registry's ``PLAN_NAMES``. Adding a plan the
engine runs is one :class:`~.base.Kernel` here plus one ``PlanSpec`` there
(docs/ARCHITECTURE.md, "Adding a plan").
"""

from __future__ import annotations

from .base import Guess, Kernel, TraceProbe
from .numpy import NUMPY_KERNELS

__all__ = ["KERNELS", "Guess", "Kernel", "TraceProbe", "get_kernel"]

#: Plan name -> its kernel (the numpy file's entries; a plan is one entry there).
KERNELS: dict[str, Kernel] = {k.name: k for k in NUMPY_KERNELS}


def get_kernel(name: str, kernels: dict | None = None) -> Kernel:
    """The kernel of plan ``name``; ``ValueError`` naming the plans otherwise."""
    table = KERNELS if kernels is None else kernels
    if name not in table:
        raise ValueError(f"The 'plan' parameter must be one of {', '.join(table)}. Got {name!r}.")
    return table[name]
