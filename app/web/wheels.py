"""Wheels for the browser: verified Pyodide builds, slimmed pure wheels, and the app's own.

A wheel is a zip: ``pkg/...`` files plus ``<name>-<version>.dist-info/`` with METADATA,
WHEEL and RECORD. Everything here writes wheels deterministically (fixed timestamps,
sorted entries), so two builds of the same inputs give byte-identical files.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from app.web.fetch import BuildError

_EPOCH = (1980, 1, 1, 0, 0, 0)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_hash(data: bytes) -> str:
    raw = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def write_wheel(dest: Path, files: Iterable[tuple[str, bytes]], dist_info: str) -> Path:
    """Write ``files`` (archive name, bytes) plus a fresh RECORD under ``dist_info``."""
    entries = sorted((n, d) for n, d in files if n != f"{dist_info}/RECORD")
    record = [f"{n},{_record_hash(d)},{len(d)}" for n, d in entries]
    record.append(f"{dist_info}/RECORD,,")
    entries.append((f"{dist_info}/RECORD", ("\n".join(record) + "\n").encode()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return dest


def read_wheel(path: Path) -> dict[str, bytes]:
    """``{archive name: bytes}`` of the files in wheel ``path``."""
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}


def dist_info_of(names: Iterable[str]) -> str:
    infos = {n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    if len(infos) != 1:
        raise BuildError(f"expected one .dist-info folder in a wheel, found {sorted(infos)}")
    return infos.pop()


def rewrite_wheel(
    src: Path,
    dest: Path,
    keep: Callable[[str], bool] = lambda name: True,
    transform: Callable[[dict[str, bytes]], dict[str, bytes]] | None = None,
) -> Path:
    """Copy wheel ``src`` to ``dest`` keeping only the entries for which ``keep`` holds.

    ``transform`` may then replace the whole ``{name: bytes}`` map (used for .pyc).
    """
    files = read_wheel(src)
    dist_info = dist_info_of(files)
    files = {n: d for n, d in files.items() if n.startswith(dist_info + "/") or keep(n)}
    if transform is not None:
        files = transform(files)
    return write_wheel(dest, files.items(), dist_info)


def keep_slim_bokeh(name: str) -> bool:
    """Bokeh minus its JS bundles (served separately): no .js, .d.ts or bokeh.json."""
    if name.startswith("bokeh/core/_templates/"):
        return True
    if name.endswith((".js", ".d.ts", ".js.map", ".mjs")) or name.endswith("/bokeh.json"):
        return False
    return not name.startswith(("bokeh/sampledata/", "bokeh/server/static/"))


def keep_slim_panel(name: str) -> bool:
    """Panel minus tests and JS: of ``dist/`` only ``css`` and ``assets`` stay."""
    if name.startswith(("panel/tests/", "panel/examples/")):
        return False
    if name.startswith("panel/dist/"):
        return name.startswith(("panel/dist/css/", "panel/dist/assets/"))
    return not name.endswith((".js.map", ".ts"))


def wheel_from_sdist(sdist: Path, dest_dir: Path, name: str, version: str, top: str) -> Path:
    """A ``py3-none-any`` wheel from the Python files of package ``top`` in ``sdist``.

    PyYAML and MarkupSafe fall back to pure Python when their C extension is missing.
    """
    files: dict[str, bytes] = {}
    with tarfile.open(sdist) as tf:
        for member in tf.getmembers():
            parts = member.name.split("/")
            if member.isfile() and top in parts[1:-1] and parts[-1].endswith((".py", ".typed")):
                rel = "/".join(parts[parts.index(top, 1) :])
                if "tests" not in rel.split("/"):
                    files[rel] = tf.extractfile(member).read()
    if not any(n == f"{top}/__init__.py" for n in files):
        raise BuildError(f"{sdist.name} has no {top}/__init__.py")
    dist = f"{name.replace('-', '_')}-{version}"
    dist_info = f"{dist}.dist-info"
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    ).encode()
    files[f"{dist_info}/WHEEL"] = _WHEEL_TEXT
    files[f"{dist_info}/top_level.txt"] = f"{top}\n".encode()
    return write_wheel(dest_dir / f"{dist}-py3-none-any.whl", files.items(), dist_info)


_WHEEL_TEXT = (
    b"Wheel-Version: 1.0\nGenerator: llm-qp build.py\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
)


def _project_metadata(root: Path) -> dict:
    """``[project]`` of pyproject.toml (tomllib on 3.11+, the installed metadata before)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the editable install carries the same fields
        from importlib.metadata import metadata

        meta = metadata("llm-qp")
        return {
            "name": meta["Name"],
            "version": meta["Version"],
            "dependencies": meta.get_all("Requires-Dist") or [],
        }
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]


def app_wheel(root: Path, dest_dir: Path, exclude: tuple[str, ...]) -> Path:
    """The project's own wheel from ``pyproject.toml``: package ``app`` minus ``exclude``.

    ``exclude`` holds sub-package paths such as ``app/serving`` (server-only code). Data files
    are the ``data/*.json`` files, as ``[tool.setuptools.package-data]`` gives a regular
    install (the shipped real trace).
    """
    meta = _project_metadata(root)
    name, version = meta["name"], meta["version"]
    files: dict[str, bytes] = {}
    paths = [*(root / "app").rglob("*.py"), *(root / "app").glob("**/data/*.json")]
    for path in sorted(paths):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel or any(rel == e or rel.startswith(e + "/") for e in exclude):
            continue
        files[rel] = path.read_bytes()
    dist = f"{name.replace('-', '_')}-{version}"
    dist_info = f"{dist}.dist-info"
    requires = "".join(f"Requires-Dist: {d}\n" for d in meta.get("dependencies", []))
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{requires}"
    ).encode()
    files[f"{dist_info}/WHEEL"] = _WHEEL_TEXT
    files[f"{dist_info}/top_level.txt"] = b"app\n"
    return write_wheel(dest_dir / f"{dist}-py3-none-any.whl", files.items(), dist_info)


def extract_verified(bundle: Path, prefix: str, lock: dict, names: Iterable[str], dest: Path):
    """Copy the lock packages ``names`` out of wheel ``bundle`` into ``dest``.

    Each file must have the sha256 that Pyodide's own ``pyodide-lock.json`` gives for it;
    a mismatch or a missing file stops the build. Returns ``{name: lock entry}``.
    """
    entries = {}
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(bundle) as zf:
        available = set(zf.namelist())
        for name in names:
            entry = lock["packages"].get(name)
            if entry is None:
                raise BuildError(f"package {name!r} is not in pyodide-lock.json")
            member = prefix + entry["file_name"]
            if member not in available:
                raise BuildError(f"{bundle.name} lacks {entry['file_name']} (needed for {name})")
            data = zf.read(member)
            got = hashlib.sha256(data).hexdigest()
            if got != entry["sha256"]:
                raise BuildError(
                    f"sha256 mismatch for {entry['file_name']}: pyodide-lock.json says "
                    f"{entry['sha256']}, {bundle.name} has {got}"
                )
            (dest / entry["file_name"]).write_bytes(data)
            entries[name] = dict(entry)
    return entries


def wheel_metadata(path: Path) -> tuple[str, str, list[str], list[str]]:
    """(name, version, top-level import names, Requires-Dist names) of a wheel."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        dist_info = dist_info_of(names)
        meta = zf.read(f"{dist_info}/METADATA").decode()
        tops = set()
        for n in names:
            head = n.split("/", 1)[0]
            if head.endswith((".dist-info", ".data")):
                continue
            tops.add(head[:-3] if head.endswith(".py") else head)
    fields = [ln.split(":", 1) for ln in meta.splitlines() if ":" in ln]
    name = next(v.strip() for k, v in fields if k == "Name")
    version = next(v.strip() for k, v in fields if k == "Version")
    requires = []
    for k, v in fields:
        if k == "Requires-Dist" and "extra ==" not in v:
            req = v.strip().split(";")[0]
            for sep in "<>=!~ [(":
                req = req.split(sep)[0]
            requires.append(req.strip())
    return name, version, sorted(tops), requires


def lock_json(info: dict, packages: dict[str, dict]) -> str:
    return json.dumps({"info": info, "packages": packages}, indent=1, sort_keys=True)
