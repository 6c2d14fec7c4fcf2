"""The start-up packages as one archive that the worker unpacks from JavaScript.

Pyodide installs each wheel by unzipping it in Python, inside WebAssembly, then compiles the
WebAssembly libraries of compiled packages (numpy's ``.so`` files) one after the other: with
~20 start-up packages, ~1,600 files and 7.5 MB of libraries that is close to a second of every
page load, warm or cold. The site therefore also carries:

* ``startup-packages.bin``: the files of every start-up package (bytecode, as in the wheels,
  plus the ``INSTALLER`` and ``PYODIDE_SOURCE`` records Pyodide would write) except their
  libraries, gzip'd as one stream. The worker inflates it with the browser's own
  ``DecompressionStream`` and writes the files into site-packages from JavaScript.
* ``dynlib/<path in site-packages>.wasm``: each library on its own, so that the worker can
  compile them all with ``WebAssembly.compileStreaming`` while the runtime boots, in parallel,
  and so that the browser keeps their compiled code between visits (it does for streamed
  modules); the worker then hands the compiled modules to Pyodide's dynamic loader.

If the browser lacks ``DecompressionStream`` or streaming compilation, the worker installs the
wheels (still on the site) with ``loadPackage`` instead (``templates/worker.js``).

Archive format, before gzip: ``MAGIC``, the little-endian u32 length of a UTF-8 JSON index
``[[path, size], ...]`` (paths relative to site-packages, or absolute), the index, then the
files' bytes in index order. gzip with mtime 0, so the same inputs give the same bytes.
"""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterable
from pathlib import Path

from app.web import wheels
from app.web.fetch import BuildError

MAGIC = b"LLMQPSP1"
FILE_NAME = "startup-packages.bin"  # not .gz: some hosts would add Content-Encoding: gzip
INSTALLER = "pyodide.loadPackage"  # what Pyodide's loadPackage records in the dist-info


def closure(names: Iterable[str], packages: dict[str, dict]) -> list[str]:
    """``names`` and everything they depend on in the lock ``packages``, sorted."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(packages[name]["depends"])
    return sorted(seen)


def is_dynlib(name: str) -> bool:
    """A WebAssembly library for Pyodide's dynamic loader (``.so``, ``.so.1``, …)."""
    base = name.rsplit("/", 1)[-1]
    return base.endswith(".so") or ".so." in base


def data_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """A wheel's ``<name>.data/data/…`` files at their absolute paths under Pyodide's
    ``sys.prefix`` (``/``), where Pyodide's installer copies them too."""
    out = {}
    for name, data in files.items():
        top, _, rest = name.partition("/")
        scheme, _, path = rest.partition("/")
        if top.endswith(".data") and scheme == "data" and path:
            out["/" + path] = data
    return out


def contents_of(names: list[str], packages: dict[str, dict], pyodide_dir: Path):
    """``{name: {file: bytes}}`` of the wheels of ``names``; all must install into
    site-packages (as every package of this site does)."""
    out = {}
    for name in names:
        entry = packages[name]
        if entry.get("install_dir", "site") != "site":
            raise BuildError(f"{name} installs into {entry['install_dir']}, not site-packages")
        out[name] = wheels.read_wheel(pyodide_dir / entry["file_name"])
    return out


def dynlib_url(path: str) -> str:
    """Where the site serves the library ``path`` (relative to site-packages): ``.wasm`` so
    that hosts send it as ``application/wasm``, which streaming compilation requires."""
    return f"dynlib/{path}.wasm"


def write(dest: Path, contents: dict[str, dict[str, bytes]]) -> tuple[bytes, dict[str, bytes]]:
    """Write the archive of the packages' files but their libraries to ``dest``; return its
    bytes and ``{path: bytes}`` of the libraries (paths relative to site-packages)."""
    files: dict[str, bytes] = {}
    for name, wheel_files in sorted(contents.items()):
        dist_info = wheels.dist_info_of(wheel_files)
        extra = {f"{dist_info}/INSTALLER": INSTALLER, f"{dist_info}/PYODIDE_SOURCE": "pyodide"}
        extra = {path: text.encode() for path, text in extra.items()}
        for path, data in [*wheel_files.items(), *extra.items(), *data_files(wheel_files).items()]:
            if path in files:
                raise BuildError(f"{path} is in two start-up packages ({name})")
            files[path] = data
    dynlibs = {path: files.pop(path) for path in sorted(files) if is_dynlib(path)}
    order = sorted(files)
    index = json.dumps([[path, len(files[path])] for path in order], separators=(",", ":"))
    raw = b"".join(
        [MAGIC, struct.pack("<I", len(index.encode())), index.encode(), *(files[p] for p in order)]
    )
    data = gzip.compress(raw, compresslevel=9, mtime=0)
    dest.write_bytes(data)
    return data, dynlibs


def read(data: bytes) -> dict[str, bytes]:
    """``{path: bytes}`` of an archive (the inverse of :func:`write`; for tests)."""
    raw = gzip.decompress(data)
    if raw[: len(MAGIC)] != MAGIC:
        raise ValueError("not a start-up package archive")
    (n,) = struct.unpack_from("<I", raw, len(MAGIC))
    start = len(MAGIC) + 4
    index = json.loads(raw[start : start + n])
    out, offset = {}, start + n
    for path, size in index:
        out[path] = raw[offset : offset + size]
        offset += size
    return out
