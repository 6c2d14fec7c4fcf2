"""The start-up packages as one archive that the worker unpacks from JavaScript.

Pyodide installs each wheel by unzipping it in Python, inside WebAssembly: with ~20 start-up
packages and ~1,600 files that is a few hundred milliseconds of every page load, warm or cold.
The site therefore also carries ``startup-packages.bin``: the files of every pure-Python
start-up package (their bytecode, as in the wheels, plus the ``INSTALLER`` and
``PYODIDE_SOURCE`` records Pyodide would write), gzip'd as one stream. The worker inflates it
with the browser's own ``DecompressionStream`` and writes the files into site-packages from
JavaScript (``templates/worker.js``). Packages with compiled extensions (numpy) still go
through Pyodide's ``loadPackage``, which also loads their WebAssembly libraries; so does
everything when the browser lacks ``DecompressionStream`` (the wheels stay on the site).

Format, before gzip: ``MAGIC``, the little-endian u32 length of a UTF-8 JSON index
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


def bundled(files: dict[str, bytes]) -> bool:
    """Whether a wheel's files can be installed by copying them: no compiled libraries for
    Pyodide to load."""
    return not any(name.endswith(".so") or ".so." in name for name in files)


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


def split(names: list[str], packages: dict[str, dict], pyodide_dir: Path):
    """(bundled, loaded by Pyodide) package names, and the bundled ones' files by name."""
    inside, outside, contents = [], [], {}
    for name in names:
        entry = packages[name]
        files = wheels.read_wheel(pyodide_dir / entry["file_name"])
        if entry.get("install_dir", "site") == "site" and bundled(files):
            inside.append(name)
            contents[name] = files
        else:
            outside.append(name)
    return inside, outside, contents


def write(dest: Path, contents: dict[str, dict[str, bytes]]) -> bytes:
    """Write the archive of the packages' files to ``dest``; return its bytes."""
    files: dict[str, bytes] = {}
    for name, wheel_files in sorted(contents.items()):
        dist_info = wheels.dist_info_of(wheel_files)
        extra = {f"{dist_info}/INSTALLER": INSTALLER, f"{dist_info}/PYODIDE_SOURCE": "pyodide"}
        extra = {path: text.encode() for path, text in extra.items()}
        for path, data in [*wheel_files.items(), *extra.items(), *data_files(wheel_files).items()]:
            if path in files:
                raise BuildError(f"{path} is in two start-up packages ({name})")
            files[path] = data
    order = sorted(files)
    index = json.dumps([[path, len(files[path])] for path in order], separators=(",", ":"))
    raw = b"".join(
        [MAGIC, struct.pack("<I", len(index.encode())), index.encode(), *(files[p] for p in order)]
    )
    data = gzip.compress(raw, compresslevel=9, mtime=0)
    dest.write_bytes(data)
    return data


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
