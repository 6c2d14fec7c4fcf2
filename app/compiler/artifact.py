"""The expanded module as something XLA runs: a ``jax.export`` artifact carrying it.

``jax.export`` of the logical step gives an ``Exported`` whose signature (operands, results,
shardings) is the expanded module's too; its serialized module is swapped for the expanded
one (a StableHLO portable artifact), so ``Exported.call`` compiles and runs the expansion with
XLA on the default backend (CPU, or CUDA where jaxlib has it) and ``serialize()`` /
``jax.export.deserialize`` round-trip it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax

from .catalog import Catalog, build_catalog
from .expand import count_cases, expand
from .lowering import export_logical

__all__ = ["Artifact", "build", "load"]


def _portable(module) -> bytes:
    from jaxlib.mlir.dialects import stablehlo

    version = stablehlo.get_version_from_compatibility_requirement(
        stablehlo.StablehloCompatibilityRequirement.WEEK_4
    )
    return stablehlo.serialize_portable_artifact(module, version)


@dataclass
class Artifact:
    """``catalog``; ``logical`` (unexpanded StableHLO text); ``text`` (expanded); ``cases`` (the
    region count of every ``stablehlo.case``); ``exported`` (runs the expansion)."""

    catalog: Catalog
    logical: str
    text: str
    cases: list
    exported: object

    def __post_init__(self):
        with jax.enable_x64(True):
            self._call = jax.jit(self.exported.call)

    def __call__(self, *operands):
        """Run one step under XLA; operands in :data:`app.compiler.operands.OPERANDS` order."""
        with jax.enable_x64(True):
            return self._call(*operands)

    def serialize(self) -> bytes:
        return bytes(self.exported.serialize())


def build(cat: Catalog | None = None, **catalog_args) -> Artifact:
    """Lower, expand and wrap the step for ``cat`` (or ``build_catalog(**catalog_args)``)."""
    cat = cat if cat is not None else build_catalog(**catalog_args)
    logical = export_logical(cat)
    text = logical.mlir_module()
    ctx, module = expand(text, cat)
    with ctx:
        expanded = str(module)
        cases = count_cases(module)
        blob = _portable(module)  # converts the module to VHLO in place: read it first
    exported = dataclasses.replace(logical, mlir_module_serialized=blob)
    return Artifact(cat, text, expanded, cases, exported)


def load(blob: bytes):
    """A serialized artifact back as a callable ``Exported`` (``jax.export.deserialize``)."""
    return jax.export.deserialize(bytearray(blob))
