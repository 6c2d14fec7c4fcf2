"""The dependency rule of docs/ARCHITECTURE.md, read from the imports (app/layers.py)."""

import subprocess
import sys

from app.layers import ALLOWED, cycles, module_imports, package_edges, violations


def test_every_package_is_in_the_rule():
    edges = package_edges(module_imports())
    assert set(edges) <= set(ALLOWED)


def test_no_upward_import():
    assert violations(package_edges(module_imports())) == []


def test_no_circle_between_modules():
    assert cycles(module_imports()) == []


def test_the_check_catches_an_upward_import_and_a_circle():
    imports = {"app.model.a": {"app.engine.b"}, "app.engine.b": {"app.model.a"}}
    assert violations(package_edges(imports)) == ["model -> engine"]
    assert cycles(imports) == [["app.engine.b", "app.model.a"]]


def test_command_prints_the_graph_and_passes():
    run = subprocess.run([sys.executable, "-m", "app.layers"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout
    assert "engine        -> model" in run.stdout
