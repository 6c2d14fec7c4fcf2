"""The executable plan registry and the typed engine, without the model: the kernel table is the
registry's plans, README's plan table is generated from the registry, options are validated
once with errors naming the parameter, app/engine has no import circle, and no long function."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from app.engine.kernels import KERNELS, Kernel, get_kernel
from app.engine.options import PARAMETER_CONSTRAINTS, DecodeOptions
from app.engine.plans import PLAN_CHOICES
from app.model.registry import PLAN_NAMES, PLANS, plan_table

ROOT = Path(__file__).parents[2]
ENGINE = ROOT / "app" / "engine"


def test_the_kernel_table_is_the_registry():
    assert tuple(KERNELS) == PLAN_NAMES
    for name, kernel in KERNELS.items():
        assert isinstance(kernel, Kernel) and kernel.name == name
    with pytest.raises(ValueError, match="'plan' parameter"):
        get_kernel("NoSuchHead")


def test_the_compiled_steps_kernels_are_registry_plans():
    pytest.importorskip("jax")
    from app.compiler.plans_jax import KERNELS as JAX_KERNELS

    assert set(JAX_KERNELS) <= set(PLAN_NAMES)


def test_every_plan_choice_names_a_registry_plan():
    named = {p for p in PLAN_CHOICES.values() if p is not None}
    assert named == {p.name for p in PLANS if p.choice}
    assert {"auto", "router", "oracle"} <= set(PLAN_CHOICES)


def test_readme_plan_table_is_generated_from_the_registry():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert plan_table() in readme + "\n"
    start = readme.index("| plan | what it does | exact? |")
    assert readme[start:].split("\n\n")[0] + "\n" == plan_table()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"plan": "rerank", "tau": 1.0}, "The 'tau' parameter applies to plan 'amortized' or"),
        ({"plan": "dense", "lossy": True}, "The 'lossy' parameter applies"),
        ({"plan": "auto", "router": "lints"}, "The 'router' parameter applies to plan 'router'"),
        ({"plan": "oracle"}, "The 'oracle' parameter is required by plan 'oracle'"),
        ({"plan": "sparse", "recalibrate": "cpu"}, "The 'recalibrate' parameter applies"),
        ({"plan": "router", "router": "thompson"}, "The 'router' parameter must be one of"),
        ({"plan": "amortized", "tau": -1.0}, "The 'tau' parameter must be a finite number"),
        ({"plan": "amortized", "tau": True}, "The 'tau' parameter must be a finite number"),
        ({"plan": "fastest"}, "The 'plan' parameter must be one of"),
    ],
)
def test_options_are_validated_once_naming_the_parameter(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")) as exc:
        DecodeOptions(**kwargs)
    assert "--" not in str(exc.value)  # library errors name parameters, not CLI flags


def test_options_are_frozen_and_take_what_their_plan_takes():
    o = DecodeOptions(plan="router", router="lints", tau=0.5, lossy=True)
    assert (o.router_name, o.tau, o.lossy, o.rerank_value) == ("lints", 0.5, True, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.tau = 1.0
    assert DecodeOptions(plan="amortized", tau=0.0).needs_amortizer
    assert not DecodeOptions(plan="router").needs_amortizer
    assert set(PARAMETER_CONSTRAINTS) == {f.name for f in dataclasses.fields(DecodeOptions)}


def _imports(path: Path, package: str) -> set[str]:
    """The app.engine modules ``path`` imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names = [f"{mod}.{a.name}" for a in node.names] + [mod]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out.update(n for n in names if n.startswith("app.engine"))
    return out


def _engine_graph() -> dict[str, set[str]]:
    modules = {}
    for f in ENGINE.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        package = name if f.name == "__init__.py" else name.rsplit(".", 1)[0]
        modules[name] = (f, package)
    graph = {}
    for name, (f, package) in modules.items():
        graph[name] = {m for m in _imports(f, package) if m in modules and m != name}
    return graph


def test_app_engine_has_no_import_circle():
    graph = _engine_graph()
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert "app.engine.loop" in graph and "app.engine.kernels" in graph


def test_no_function_in_the_engine_is_longer_than_50_lines():
    long = []
    for f in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 50:
                    long.append(f"{f.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
