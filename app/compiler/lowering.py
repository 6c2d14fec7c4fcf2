"""The logical step ``DecodeStep(query, constraint_state)`` lowered to StableHLO with JAX.

Its body is one placeholder op, ``stablehlo.composite "llmqp.decode_step"``, whose
decomposition is the dense plan — so the unexpanded module already runs (and decodes what
DenseHead decodes). The expansion pass (expand.py) replaces the placeholder by the physical
plans and the routing kernel.

64-bit types are needed for LinUCB's float64 state: every trace and call here runs inside
``jax.enable_x64(True)``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from .catalog import Catalog
from .operands import avals
from .plans_jax import dense_head

__all__ = ["PLACEHOLDER", "logical_step", "lower_logical", "export_logical", "lower_function"]

PLACEHOLDER = "llmqp.decode_step"


def logical_step(cat: Catalog):
    """The logical step as a JAX function of the operands (see operands.py)."""
    dense = partial(dense_head, cat=cat)

    def decomposition(*operands):  # the dense plan; no router ran, so arm = -1
        return (*dense(*operands), jnp.int32(-1))

    def decode_step(*operands):
        return lax.composite(decomposition, name=PLACEHOLDER, version=1)(*operands)

    return decode_step


def lower_logical(cat: Catalog) -> str:
    """StableHLO text of the unexpanded module."""
    with jax.enable_x64(True):
        return jax.jit(logical_step(cat), keep_unused=True).lower(*avals(cat)).as_text()


def export_logical(cat: Catalog):
    """A ``jax.export.Exported`` of the unexpanded step (the carrier of the expanded module)."""
    with jax.enable_x64(True):
        return jax.export.export(jax.jit(logical_step(cat), keep_unused=True))(*avals(cat))


def lower_function(fn, cat: Catalog) -> str:
    """StableHLO text of ``fn(*operands)`` (a plan or the routing kernel) on its own."""
    with jax.enable_x64(True):
        return jax.jit(fn, keep_unused=True).lower(*avals(cat)).as_text()
