"""Ahead-of-time bytecode for the browser, compiled by Pyodide's own interpreter under node.

Python in the browser otherwise compiles every module it imports on every page load. The
site ships ``.pyc`` files instead (unchecked hash-based, PEP 552): third-party packages and
the standard library as bytecode only, like Pyodide's own "pyc" distribution; the app keeps
its sources beside ``__pycache__`` so its tracebacks show code lines. Results are cached by
content, so a rebuild with unchanged inputs does not start node.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from app.web.fetch import BuildError

SITE = "/lib/python3.12/site-packages/"
STDLIB = "/lib/python312.zip/"
NODE_SCRIPT = Path(__file__).with_name("pyc_node.js")
CACHE_TAG = "cpython-312"


def node_available() -> bool:
    return shutil.which("node") is not None


def compile_sources(
    pyodide_dir: Path, lock_info: dict, sources: dict[str, bytes], cache: Path
) -> dict[str, bytes]:
    """``{path: source}`` -> ``{path + "c": pyc}``; files that do not compile are left out.

    ``pyodide_dir`` holds the Pyodide core; ``lock_info`` is the ``info`` of its lock file.
    Each result is cached under ``cache/pyc`` by a hash of (Pyodide, path, source).
    """
    salt = hashlib.sha256((pyodide_dir / "pyodide.js").read_bytes()).digest()
    keys = {
        name: hashlib.sha256(salt + name.encode() + b"\0" + data).hexdigest()[:40]
        for name, data in sources.items()
    }
    folder = cache / "pyc"
    todo = {n: d for n, d in sources.items() if not (folder / f"{keys[n]}.pyc").exists()}
    todo = {n: d for n, d in todo.items() if not (folder / f"{keys[n]}.failed").exists()}
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        for name, pyc in _run_node(pyodide_dir, lock_info, todo).items():
            (folder / f"{keys[name]}.{'pyc' if pyc else 'failed'}").write_bytes(pyc)
    out = {}
    for name in sources:
        path = folder / f"{keys[name]}.pyc"
        if path.exists():
            out[name + "c"] = path.read_bytes()
    return out


def _run_node(pyodide_dir: Path, lock_info: dict, sources: dict[str, bytes]) -> dict[str, bytes]:
    """Compile ``sources`` in one node run; ``b""`` marks a file that did not compile."""
    if not node_available():
        raise BuildError("node is needed to pre-compile Python (or pass --no-pyc)")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lock.json").write_text(json.dumps({"info": lock_info, "packages": {}}))
        with zipfile.ZipFile(Path(tmp) / "in.zip", "w") as zf:
            for name, data in sorted(sources.items()):
                zf.writestr(name, data)
        proc = subprocess.run(
            ["node", str(NODE_SCRIPT), str(pyodide_dir), tmp], capture_output=True, text=True
        )
        if proc.returncode != 0:
            errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln]
            tail = (errors or proc.stderr.strip().splitlines() or ["no output"])[0]
            raise BuildError(f"pre-compiling Python under node failed: {tail[:300]}")
        with zipfile.ZipFile(Path(tmp) / "out.zip") as zf:
            done = {n[:-1]: zf.read(n) for n in zf.namelist()}
    return {name: done.get(name, b"") for name in sources}


def wheel_sources(files: dict[str, bytes]) -> dict[str, bytes]:
    """Python sources of an unpacked wheel, keyed by their install path in Pyodide."""
    return {SITE + n: d for n, d in files.items() if n.endswith(".py") and ".dist-info/" not in n}


def wheel_to_pyc(files: dict[str, bytes], compiled: dict[str, bytes], keep_source: bool):
    """Swap each compiled ``.py`` for its ``.pyc``; with ``keep_source`` add ``__pycache__``."""
    out = {}
    for name, data in files.items():
        pyc = compiled.get(SITE + name + "c") if name.endswith(".py") else None
        if pyc is None:
            out[name] = data
        elif keep_source:
            folder, _, stem = name.rpartition("/")
            cached = f"{folder}/__pycache__/{stem[:-3]}.{CACHE_TAG}.pyc".lstrip("/")
            out[name], out[cached] = data, pyc
        else:
            out[name + "c"] = pyc
    return out


def stdlib_sources(stdlib_zip: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(stdlib_zip)) as zf:
        return {STDLIB + n: zf.read(n) for n in zf.namelist() if n.endswith(".py")}


def stdlib_to_pyc(stdlib_zip: bytes, compiled: dict[str, bytes]) -> bytes:
    """The standard library zip with bytecode in place of every module that compiled."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(stdlib_zip)) as src,
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as dst,
    ):
        for info in src.infolist():
            pyc = compiled.get(STDLIB + info.filename + "c")
            if pyc is None:
                dst.writestr(info, src.read(info))
            else:
                entry = zipfile.ZipInfo(info.filename + "c", date_time=info.date_time)
                entry.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(entry, pyc)
    return buf.getvalue()
