"""The plan-expansion pass: ``DecodeStep`` → ``stablehlo.case`` over the physical plans.

A rewrite of the StableHLO module with the MLIR Python bindings jaxlib ships (they have no
Python pattern-rewrite driver, so the pass is a walk):

1. every plan and the routing kernel is lowered on its own and its functions are moved into the
   module under a private ``llmqp.plan.<name>`` / ``llmqp.route`` symbol (helpers renamed with
   the same prefix, every use updated through the symbol table);
2. the walk finds the one ``stablehlo.composite "llmqp.decode_step"``; at its place it builds
   ``func.call @llmqp.route`` on the composite's operands and a ``stablehlo.case`` on the branch
   index with one region per plan, each calling its plan and returning its results;
3. the composite's results are replaced (the LinUCB arm comes from the routing call), the
   composite is erased, the module is verified, then ``inline``, ``canonicalize`` and
   ``symbol-dce`` run (the last drops the dense decomposition the placeholder pointed at);
4. the catalog is attached as module attributes (``llmqp.plans``: one dictionary per branch with
   its cost-model annotations; ``llmqp.routing``: the rule's folded constants), and each plan
   function carries its own ``llmqp.cost``.
"""

from __future__ import annotations

from functools import partial

from .catalog import Catalog
from .lowering import PLACEHOLDER, lower_function
from .plans_jax import plan_functions
from .routing import route

__all__ = ["expand", "ExpansionError", "context", "count_cases"]

PIPELINE = "builtin.module(inline,canonicalize,symbol-dce)"


class ExpansionError(RuntimeError):
    """The module does not have the shape the pass rewrites (exactly one placeholder)."""


def context():
    """An MLIR context with every dialect JAX emits (jaxlib exposes no public constructor)."""
    from jax._src.interpreters.mlir import make_ir_context

    return make_ir_context()


def _sym(op) -> str:
    from jaxlib.mlir import ir

    return ir.StringAttr(op.attributes["sym_name"]).value


def _import_functions(module, text: str, prefix: str) -> str:
    """Parse ``text`` (a lowered module) and move its functions into ``module`` renamed under
    ``prefix``; return the symbol of its entry point."""
    from jaxlib.mlir import ir

    other = ir.Module.parse(text)
    ops = list(other.body.operations)
    for op in ops:
        old = _sym(op)
        new = prefix if old == "main" else f"{prefix}.{old}"
        ir.SymbolTable.replace_all_symbol_uses(old, new, other.operation)
        op.attributes["sym_name"] = ir.StringAttr.get(new)
        op.attributes["sym_visibility"] = ir.StringAttr.get("private")
    for op in ops:
        op.detach_from_parent()
        module.body.append(op)
    return prefix


def _placeholder(module):
    from jaxlib.mlir import ir

    found = []

    def visit(op):
        if op.name == "stablehlo.composite":
            if ir.StringAttr(op.attributes["name"]).value == PLACEHOLDER:
                found.append(op)
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    if len(found) != 1:
        raise ExpansionError(f"expected one {PLACEHOLDER} composite, got {len(found)}")
    return found[0]


def _attr(value):
    """A Python value (dict, list, str, int, float, None) as an MLIR attribute."""
    from jaxlib.mlir import ir

    if isinstance(value, dict):
        return ir.DictAttr.get({k: _attr(v) for k, v in value.items() if v is not None})
    if isinstance(value, list | tuple):
        return ir.ArrayAttr.get([_attr(v) for v in value])
    if isinstance(value, bool):
        return ir.BoolAttr.get(value)
    if isinstance(value, int):
        return ir.IntegerAttr.get(ir.IntegerType.get_signless(64), value)
    if isinstance(value, float):
        return ir.FloatAttr.get_f64(value)
    return ir.StringAttr.get(str(value))


def _rewrite(module, cat: Catalog) -> None:
    from jaxlib.mlir import ir
    from jaxlib.mlir.dialects import func, stablehlo

    entries = []
    for plan, (name, fn) in zip(cat.plans, plan_functions(cat)):
        sym = _import_functions(module, lower_function(fn, cat), f"llmqp.plan.{name}")
        entries.append((plan, sym))
    kernel = lower_function(partial(route, cat=cat), cat)
    route_sym = _import_functions(module, kernel, "llmqp.route")
    table = ir.SymbolTable(module.operation)
    for plan, sym in entries:
        table[sym].attributes["llmqp.cost"] = _attr(plan.to_dict())

    comp = _placeholder(module)
    operands, results = list(comp.operands), list(comp.results)
    case_types = [r.type for r in results[:-1]]  # the arm comes from the router, not a plan
    with ir.InsertionPoint(comp), comp.location:
        i32 = ir.RankedTensorType.get([], ir.IntegerType.get_signless(32))
        routed = func.CallOp([i32, i32], ir.FlatSymbolRefAttr.get(route_sym), operands)
        branch, arm = routed.results
        case = stablehlo.CaseOp(case_types, branch, len(entries))
        for region, (_, sym) in zip(case.regions, entries):
            with ir.InsertionPoint(region.blocks.append()):
                call = func.CallOp(case_types, ir.FlatSymbolRefAttr.get(sym), operands)
                stablehlo.ReturnOp(list(call.results))
    for old, new in zip(results, [*case.results, arm]):
        old.replace_all_uses_with(new)
    comp.erase()


def expand(text: str, cat: Catalog):
    """Expand the logical module ``text`` for ``cat``; return ``(context, module)``.

    Raises :class:`ExpansionError` unless the module holds exactly one placeholder, and
    ``RuntimeError`` (from MLIR) if the rewritten module does not verify.
    """
    from jaxlib.mlir import ir, passmanager

    ctx = context()
    with ctx, ir.Location.unknown():
        module = ir.Module.parse(text)
        _rewrite(module, cat)
        if not module.operation.verify():
            raise ExpansionError("the expanded module does not verify")
        passmanager.PassManager.parse(PIPELINE).run(module.operation)
        module.operation.attributes["llmqp.plans"] = _attr([p.to_dict() for p in cat.plans])
        routing = cat.to_dict()
        routing.pop("plans")
        module.operation.attributes["llmqp.routing"] = _attr(routing)
        module.operation.verify()
    return ctx, module


def count_cases(module) -> list[int]:
    """The region count of every ``stablehlo.case`` in ``module``."""
    from jaxlib.mlir import ir

    counts = []

    def visit(op):
        if op.name == "stablehlo.case":
            counts.append(len(op.regions))
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    return counts
