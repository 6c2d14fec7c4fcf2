"""The EXPLAIN plan tree of the current scenario as a small HTML table (a Bokeh Div).

Rows come from :func:`app.model.explain_dict`: one bold row per physical plan of the registry
with its estimated latency, bytes, FLOPs, regime, refine probability, decision-error rate and
utilisation, then its operator tree indented below. The plan the rewrite rule chooses has
``class="chosen"`` and ``data-chosen="true"`` and is highlighted.

Bokeh model name (test hook): the Div ``explain_table``.
"""

from __future__ import annotations

from html import escape

from bokeh.models import Div, InlineStyleSheet

from app.model import Scenario, explain_dict
from app.model.explain import format_bytes, format_seconds

__all__ = ["ExplainTable", "explain_html"]

# The Div's own stylesheet, parsed once: a <style> inside its text was parsed again on every
# K move, and each new sheet restyles the page.
_CSS = (
    "table.explain{border-collapse:collapse;font:12px/1.35 system-ui,sans-serif;width:100%}"
    ".explain th,.explain td{padding:2px 8px;text-align:right;white-space:nowrap}"
    ".explain th:first-child,.explain td:first-child{text-align:left}"
    ".explain thead th{border-bottom:1px solid #999}"
    ".explain tr.plan td{border-top:1px solid #ddd;font-weight:600}"
    ".explain tr.op td{color:#555;font-family:ui-monospace,monospace;font-size:11px}"
    ".explain tr.chosen td{background:#fff3c4}"
)
_HEAD = ("plan / operator", "latency", "bytes", "FLOPs", "regime", "refine p", "error", "util.")


def _op_rows(op: dict, depth: int, chosen: bool) -> list[str]:
    cls = "op chosen" if chosen else "op"
    prob = f"p={op['probability']:.3f}" if op["probability"] < 1.0 else ""
    detail = f" ({op['detail']})" if op["detail"] else ""
    label = "&nbsp;" * (3 * depth) + "└ " + escape(op["op"] + detail)
    cells = (
        label,
        format_seconds(op["seconds"]),
        format_bytes(op["bytes"]),
        f"{op['flops']:.3g}",
        escape(op["regime"]),
        prob,
        "",
        "",
    )
    rows = [f'<tr class="{cls}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"]
    for kid in op["children"]:
        rows += _op_rows(kid, depth + 1, chosen)
    return rows


def explain_html(s: Scenario, ex: dict | None = None) -> str:
    """The plan table for ``s`` as an HTML ``<table>`` (styled by :class:`ExplainTable`'s
    stylesheet); ``ex`` is ``explain_dict(s)`` when the caller has it already."""
    ex = explain_dict(s) if ex is None else ex
    rows = []
    for plan in ex["plans"]:
        chosen = plan["name"] == ex["chosen"]
        attrs = ' class="plan chosen" data-chosen="true"' if chosen else ' class="plan"'
        name = escape(plan["name"]) + (" ★ chosen" if chosen else "")
        cells = (
            name,
            format_seconds(plan["latency_s"]),
            format_bytes(plan["bytes"]),
            f"{plan['flops']:.3g}",
            escape(plan["regime"]),
            f"{plan['refine_prob']:.3f}",
            f"{plan['error_rate']:.2e}",
            f"{plan['utilisation']:.2f}",
        )
        rows.append(f"<tr{attrs}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        for kid in plan["tree"]["children"]:
            rows += _op_rows(kid, 1, chosen)
    head = "".join(f"<th>{h}</th>" for h in _HEAD)
    budget = s.error_budget
    forced = f", forced run {s.forced_run}" if s.k == 1 else ""
    caption = (
        f"EXPLAIN DecodeStep(d={s.d:,}, |V|={s.vocab:,}, K={s.k:,}{forced}, batch={s.batch}, "
        f"{s.dtype}, "
        f"{escape(s.hw.name)}, τ={s.tau:g}, ε={s.eps:g}) — chosen: <b>{escape(ex['chosen'])}</b>, "
        f"the fastest plan with expected decision error ≤ {budget:g}"
    )
    return (
        f'<table class="explain" data-chosen-plan="{escape(ex["chosen"])}">'
        f"<caption style='text-align:left;padding-bottom:4px'>{caption}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


class ExplainTable:
    """The plan table as a Bokeh Div named ``explain_table``."""

    def __init__(self):
        self.div = Div(
            name="explain_table",
            sizing_mode="stretch_width",
            stylesheets=[InlineStyleSheet(css=_CSS)],
        )
        self.layout = self.div
        self.chosen = None

    def update(self, s: Scenario) -> str:
        ex = explain_dict(s)
        self.div.text = explain_html(s, ex)
        self.chosen = ex["chosen"]
        return self.chosen
