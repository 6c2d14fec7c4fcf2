"""The embed's Python side: figure list -> roots, parameters, shared groups."""

import panel as pn
import pytest
from bokeh.document import Document

from app.widgets.embed import FIGURES, build_embed, parse_params
from app.widgets.state import ScenarioState


def test_params_by_name_or_url_key_typed():
    values, rejected = parse_params(ScenarioState(), "k=64&V=50257&tau=0.3&drift=true&x=1&seed=a")
    assert values == {"k": 64, "vocab": 50257, "tau": 0.3, "drift": True}
    assert rejected == ["x", "seed"]


def test_each_element_gets_a_root_with_its_figure():
    roots = build_embed([{"figure": name, "params": ""} for name in FIGURES])
    assert len(roots) == 4
    names = {
        "crossover": "crossover_figure",
        "amortization": "amortization_tau_figure",
        "router": "regret_figure",
        "explain": "explain_table",
    }
    for root, name in zip(roots, FIGURES):
        assert root.get_root(Document()).select_one({"name": names[name]}) is not None


def test_params_apply_and_groups_share_one_state():
    specs = [
        {"figure": "crossover", "params": "k=64&vocab=128256", "group": "a"},
        {"figure": "amortization", "params": "", "group": "a"},
        {"figure": "crossover", "params": "k=300"},
    ]
    roots = build_embed(specs)
    docs = [Document() for _ in roots]
    models = [r.get_root(d) for r, d in zip(roots, docs)]
    k_inputs = [m.select_one({"name": "k_input"}) for m in models]
    assert k_inputs[0].value == 64 and k_inputs[2].value == 300
    assert k_inputs[1] is None  # the amortization figure shows τ, ε, N only


def test_unknown_figure_is_refused():
    with pytest.raises(ValueError, match="'data-llmqp-figure' attribute must be one of"):
        build_embed([{"figure": "histogram"}])


def test_a_group_moves_together():
    specs = [
        {"figure": "crossover", "params": "k=77", "group": "g"},
        {"figure": "explain", "params": "", "group": "g"},
        {"figure": "crossover", "params": ""},
    ]
    roots = build_embed(specs)
    tables = [r.get_root(Document()) for r in roots]
    first, alone = (tables[i].select_one({"name": "k_input"}) for i in (0, 2))
    assert first.value == 77 and alone.value != 77
    explain = tables[1].select_one({"name": "explain_table"})
    boxes = roots[0].select(pn.widgets.IntInput)
    (k_box,) = [w for w in boxes if getattr(w, "hook", None) == "k_input"]
    before = explain.text
    k_box.value = 5000
    assert explain.text != before and alone.value != 5000


def test_a_figure_twice_in_one_group_is_refused():
    with pytest.raises(ValueError, match="appears twice in data-llmqp-group 'g'"):
        build_embed([{"figure": "router", "group": "g"}, {"figure": "router", "group": "g"}])


def test_article_and_embed_build_without_nh3(monkeypatch):
    """The browser build carries no nh3 (Panel's ReactiveHTML sanitiser): neither page uses it."""
    import sys

    from app.widgets.article import build_article

    monkeypatch.setitem(sys.modules, "nh3", None)
    build_article().get_root(Document())
    for root in build_embed([{"figure": name} for name in FIGURES]):
        root.get_root(Document())
