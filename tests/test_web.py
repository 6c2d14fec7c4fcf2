"""Build helpers of the static site that need no browser: the start-up package archive and
the service worker's build id (the browser tests cover them end to end)."""

from __future__ import annotations

import zipfile

import pytest

from app.web import page, startup
from app.web.fetch import BuildError


def _wheel(path, files: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _lock(**depends):
    return {
        name: {"depends": list(deps), "file_name": f"{name}.whl"} for name, deps in depends.items()
    }


def test_closure_follows_depends():
    lock = _lock(app=["panel"], panel=["bokeh", "param"], bokeh=["numpy"], param=[], numpy=[])
    assert startup.closure(["app"], lock) == ["app", "bokeh", "numpy", "panel", "param"]


def test_libraries_leave_the_archive_for_their_own_files(tmp_path):
    lock = _lock(pure=[], binary=[])
    _wheel(tmp_path / "pure.whl", {"pure/__init__.py": b"", "pure-1.dist-info/METADATA": b""})
    lib = "binary/_core.cpython-312-wasm32-emscripten.so"
    _wheel(
        tmp_path / "binary.whl",
        {lib: b"\0asm", "binary/__init__.py": b"", "binary-1.dist-info/RECORD": b""},
    )
    contents = startup.contents_of(["binary", "pure"], lock, tmp_path)
    data, dynlibs = startup.write(tmp_path / startup.FILE_NAME, contents)
    assert dynlibs == {lib: b"\0asm"}
    files = startup.read(data)
    assert lib not in files and "binary/__init__.py" in files and "pure/__init__.py" in files
    assert startup.dynlib_url(lib) == f"dynlib/{lib}.wasm"  # served as application/wasm
    assert startup.is_dynlib("x/libfoo.so.1") and not startup.is_dynlib("x/so.py")


def test_contents_refuse_packages_outside_site_packages(tmp_path):
    lock = _lock(odd=[])
    lock["odd"]["install_dir"] = "dynlib"
    with pytest.raises(BuildError, match="odd"):
        startup.contents_of(["odd"], lock, tmp_path)


def test_archive_round_trip_with_records_and_data_files(tmp_path):
    contents = {
        "a": {"a/__init__.py": b"x = 1\n", "a-1.0.dist-info/METADATA": b"Name: a\n"},
        "b": {
            "b.py": b"",
            "b-2.dist-info/RECORD": b"",
            "b-2.data/data/share/b/config.json": b"{}",
        },
    }
    data, dynlibs = startup.write(tmp_path / startup.FILE_NAME, contents)
    assert data == (tmp_path / startup.FILE_NAME).read_bytes() and dynlibs == {}
    assert data[:2] == b"\x1f\x8b"  # gzip, inflated in the browser by DecompressionStream
    files = startup.read(data)
    assert files["a/__init__.py"] == b"x = 1\n"
    assert files["a-1.0.dist-info/INSTALLER"] == b"pyodide.loadPackage"
    assert files["b-2.dist-info/PYODIDE_SOURCE"] == b"pyodide"
    # as Pyodide's installer does: kept in site-packages and copied under sys.prefix ("/")
    assert files["b-2.data/data/share/b/config.json"] == b"{}"
    assert files["/share/b/config.json"] == b"{}"
    assert startup.write(tmp_path / "again.bin", contents)[0] == data  # reproducible


def test_archive_refuses_a_file_in_two_packages(tmp_path):
    contents = {
        "a": {"shared.py": b"1", "a-1.dist-info/RECORD": b""},
        "b": {"shared.py": b"2", "b-1.dist-info/RECORD": b""},
    }
    with pytest.raises(BuildError, match="shared.py"):
        startup.write(tmp_path / "x.bin", contents)


def test_read_rejects_other_gzip_data():
    import gzip

    with pytest.raises(ValueError):
        startup.read(gzip.compress(b"not an archive"))


def test_build_id_changes_with_any_file(tmp_path):
    (tmp_path / "index.html").write_text("<html>")
    (tmp_path / "pyodide").mkdir()
    (tmp_path / "pyodide" / "x.whl").write_bytes(b"1")
    first = page.build_id(tmp_path)
    assert first == page.build_id(tmp_path)
    (tmp_path / "pyodide" / "x.whl").write_bytes(b"2")
    assert page.build_id(tmp_path) != first
    sw = page.service_worker(first)
    assert f'"llmqp-" + "{first}"' in sw and "__BUILD__" not in sw
    assert not page.remote_urls(sw)


def test_browser_wheel_leaves_out_the_server_side(tmp_path):
    """The engine, compiler, measurement, serving and CLI code never enter the browser build."""
    from pathlib import Path

    import build
    from app.web.wheels import app_wheel

    wheel = app_wheel(Path(build.__file__).parent, tmp_path, build.APP_EXCLUDE)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("app/model/") for n in names)
    for server_side in build.APP_EXCLUDE:
        server_side += "/"
        assert not any(n.startswith(server_side) for n in names), server_side


def test_worker_snapshot_imports_and_key():
    """The worker imports the app's top-level modules (never ``js``) before its snapshot, and
    the snapshot key changes with the app; --no-snapshot leaves no key."""
    import json as _json

    from app.web import page

    source = "import panel as pn\nfrom js import location\nfrom app.widgets.embed import x\n"
    imports = page.startup_imports(source).splitlines()
    assert "import panel" in imports and "import app.widgets.embed" in imports
    assert not any(line.startswith("import js") for line in imports)
    config = {"bundle": {"packages": []}}

    def key(text):
        cfg = _json.loads(text.split("const CONFIG = ", 1)[1].split(";\nconst APP_CODE", 1)[0])
        return cfg["snapshot"] and cfg["snapshot"]["key"]

    one, two = page.worker_script(config, source), page.worker_script(config, source + "x = 1\n")
    assert len(key(one)) == 16 and key(one) != key(two)
    assert key(page.worker_script(config, source, snapshot=False)) is None
    assert "__SNAPSHOT" not in one
    # Modules the app build imports lazily come after, each guarded (CPython's list may name
    # one that Pyodide lacks).
    code = page.startup_imports(source, ["markdown_it.main", "no_such_module"])
    guarded = code[code.index("import importlib as") :]  # (the rest needs Pyodide's `js`)
    exec(guarded, {})
    assert "markdown_it.main" in __import__("sys").modules
    assert page.snapshot_imports(source)[0] == "panel"


def test_build_imports_lists_what_the_app_build_imports():
    """A fresh CPython runs the app as the worker does and lists the modules it imported, only
    of packages the browser has (app.web.preimport)."""
    from app.web import page, preimport

    source = "import panel as pn\npn.pane.Markdown('# *x*').servable()\n"
    names = preimport.build_imports(source, page.snapshot_imports(source))
    assert "markdown_it.main" in names
    assert all(n.split(".")[0] in preimport.PREIMPORTABLE for n in names)
