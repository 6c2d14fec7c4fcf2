"""Static assets of the site: the Pyodide core, Bokeh's and Panel's JS/CSS, size report."""

from __future__ import annotations

import ast
import base64
import re
import shutil
import tarfile
from pathlib import Path

from app.web.fetch import BuildError

PYODIDE_CORE = ("pyodide.js", "pyodide.asm.js", "pyodide.asm.wasm", "python_stdlib.zip")


def unpack_pyodide(tgz: Path, dest: Path) -> dict[str, bytes]:
    """Copy the Pyodide core files from the npm tarball; return {name: bytes} of all files."""
    files = {}
    with tarfile.open(tgz) as tf:
        for member in tf.getmembers():
            if member.isfile() and member.name.startswith("package/"):
                files[member.name.removeprefix("package/")] = tf.extractfile(member).read()
    missing = [n for n in (*PYODIDE_CORE, "pyodide-lock.json") if n not in files]
    if missing:
        raise BuildError(f"{tgz.name} lacks {', '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PYODIDE_CORE:
        (dest / name).write_bytes(files[name])
    return files


def copy_bokeh_js(dest: Path, version: str, names: tuple[str, ...]) -> None:
    """Bokeh's minified bundles under the names its CDN uses (``bokeh-3.9.2.min.js``)."""
    import bokeh

    src = Path(bokeh.__file__).parent / "server" / "static" / "js"
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = src / f"{name}.min.js"
        if not path.is_file():
            raise BuildError(f"the installed bokeh has no {path.name}")
        shutil.copyfile(path, dest / f"{name}-{version}.min.js")


def copy_panel_dist(dest: Path, bundled: set[str]) -> None:
    """Panel's ``dist``: panel.min.js, css, assets, images and the named bundled folders."""
    from panel.io.resources import DIST_DIR

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DIST_DIR / "panel.min.js", dest / "panel.min.js")
    for sub in ("css", "assets", "images"):
        shutil.copytree(DIST_DIR / sub, dest / sub, dirs_exist_ok=True)
    inline_spinners(dest / "css" / "loading.css", DIST_DIR / "assets")
    for name in sorted(bundled):
        src = DIST_DIR / "bundled" / name
        if not src.is_dir():
            raise BuildError(f"the page asks for panel/dist/bundled/{name}, which Panel lacks")
        shutil.copytree(src, dest / "bundled" / name, dirs_exist_ok=True)


def inline_spinners(css: Path, assets_dir: Path) -> None:
    """Spinner SVGs as data URIs: CSS masks need CORS, which a file:// page cannot give."""
    text = css.read_text(encoding="utf-8")

    def data_uri(match: re.Match) -> str:
        svg = (assets_dir / match.group(1)).read_bytes()
        return f"url('data:image/svg+xml;base64,{base64.b64encode(svg).decode()}')"

    css.write_text(re.sub(r"url\('\.\./assets/([\w-]+\.svg)'\)", data_uri, text), encoding="utf-8")


def imported_modules(paths: list[Path]) -> set[str]:
    """Top-level module names imported anywhere in ``paths`` (static scan)."""
    names: set[str] = set()
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def folder_size(path: Path) -> dict[str, int]:
    """Bytes per top-level entry of ``path`` plus a ``total``."""
    sizes: dict[str, int] = {}
    for child in sorted(path.iterdir()):
        files = [child] if child.is_file() else [p for p in child.rglob("*") if p.is_file()]
        sizes[child.name] = sum(p.stat().st_size for p in files)
    sizes["total"] = sum(sizes.values())
    return sizes
