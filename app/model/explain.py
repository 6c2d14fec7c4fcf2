"""EXPLAIN for a decode step: the plan trees with their estimated costs, as text or JSON."""

from __future__ import annotations

from .plans import Plan, choose, plan_costs
from .registry import PLANS, Operator
from .scenario import Scenario

__all__ = ["explain", "explain_dict", "explain_text", "format_seconds", "format_bytes"]


def format_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def format_bytes(b: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            return f"{b / scale:.3g} {unit}"
    return f"{b:.0f} B"


def explain(s: Scenario, plans=PLANS) -> tuple[tuple[Plan, ...], Plan]:
    """All annotated plans of the registry ``plans`` and the one the rewrite rule chooses under
    ``s.error_budget``."""
    annotated = plan_costs(s, plans)
    return annotated, choose(annotated, s.error_budget)


def _op_dict(op: Operator) -> dict:
    c = op.cost
    return {
        "op": op.op,
        "detail": op.detail,
        "probability": op.probability,
        "seconds": float(c.seconds),
        "flops": float(c.flops),
        "bytes": float(c.bytes),
        "kernels": float(c.kernels),
        "regime": str(c.regime),
        "children": [_op_dict(k) for k in op.children],
    }


def explain_dict(s: Scenario, plans=PLANS) -> dict:
    """Stable JSON form: ``{"scenario", "chosen", "plans": [{name, latency_s, …, "tree"}]}``."""
    plans, chosen = explain(s, plans)
    return {
        "scenario": s.to_dict(),
        "chosen": chosen.name,
        "plans": [
            {
                "name": p.name,
                "latency_s": p.latency_s,
                "bytes": p.bytes,
                "flops": p.flops,
                "refine_prob": p.refine_prob,
                "error_rate": p.error_rate,
                "utilisation": p.utilisation,
                "regime": p.regime,
                "exact": p.exact,
                "tree": _op_dict(p.root),
            }
            for p in plans
        ],
    }


def _op_lines(op: Operator, prefix: str, last: bool) -> list[str]:
    branch = "└─ " if last else "├─ "
    c = op.cost
    prob = f" p={op.probability:.3f}" if op.probability < 1.0 else ""
    head = f"{prefix}{branch}{op.op}"
    detail = f" ({op.detail})" if op.detail else ""
    lines = [
        f"{head:<34}{format_seconds(float(c.seconds)):>10}  {format_bytes(float(c.bytes)):>9}"
        f"  {c.regime}{prob}{detail}"
    ]
    child_prefix = prefix + ("   " if last else "│  ")
    for i, kid in enumerate(op.children):
        lines += _op_lines(kid, child_prefix, i == len(op.children) - 1)
    return lines


def explain_text(s: Scenario, plans=PLANS) -> str:
    """The plan trees as an indented table, the chosen plan marked with ``*``."""
    plans, chosen = explain(s, plans)
    hw = s.hw.name
    forced = f", forced run {s.forced_run}" if s.k == 1 else ""
    lines = [
        f"DecodeStep(d={s.d}, |V|={s.vocab}, K={s.k}{forced}, batch={s.batch}, {s.dtype}, {hw}, "
        f"t={s.context}, τ={s.tau:g}, ε={s.eps:g})",
        f"{'plan / operator':<34}{'latency':>10}  {'bytes':>9}  regime",
    ]
    for p in plans:
        mark = "*" if p is chosen else " "
        lines.append(
            f"{mark} {p.name:<32}{format_seconds(p.latency_s):>10}  {format_bytes(p.bytes):>9}"
            f"  {p.regime}  err={p.error_rate:.2e}  refine={p.refine_prob:.3f}"
            f"  util={p.utilisation:.2f}"
        )
        for i, kid in enumerate(p.root.children):
            lines += _op_lines(kid, "  ", i == len(p.root.children) - 1)
    budget = f"error ≤ {s.error_budget:g}"
    lines.append(f"chosen: {chosen.name} (fastest plan with {budget})")
    return "\n".join(lines)
