"""Cached downloads from the package registries (npm and PyPI), through their own clients.

Every artefact lands in a cache folder once; later builds reuse it and work offline.
A failed download raises :class:`BuildError` with a one-line message.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


class BuildError(RuntimeError):
    """A build step failed; the message is meant for a person, on one line."""


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith("WARNING: Location")]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise BuildError(f"could not download {what}: {last}")


def npm_pack(name: str, version: str, cache: Path) -> Path:
    """Return the cached ``npm pack`` tarball of ``name@version``."""
    target = cache / "npm" / f"{name}-{version}.tgz"
    if target.is_file():
        return target
    if shutil.which("npm") is None:
        raise BuildError(f"npm is needed once to fetch {name}@{version} (apt-get install npm)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _run(
            ["npm", "pack", "--silent", f"{name}@{version}", "--pack-destination", tmp],
            f"{name}@{version} from npm",
        )
        (packed,) = Path(tmp).glob("*.tgz")
        shutil.move(str(packed), target)
    return target


def _canon(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _find(folder: Path, name: str, version: str, suffixes: tuple[str, ...]) -> Path | None:
    """The file in ``folder`` named ``<name>-<version>-...`` or ``<name>-<version>.<ext>``."""
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        if not path.name.endswith(suffixes):
            continue
        stem = path.name
        for suffix in suffixes:
            stem = stem.removesuffix(suffix)
        parts = stem.split("-")
        if len(parts) >= 2 and _canon(parts[0]) == _canon(name) and parts[1] == version:
            return path
    return None


def pip_wheel(name: str, version: str, cache: Path, *, pure: bool = True) -> Path:
    """Return the cached wheel ``name==version``.

    ``pure=True`` asks pip for a wheel that installs on any platform with Python 3.12
    (the Pyodide interpreter); otherwise the wheel is taken as published (``--no-deps``).
    """
    folder = cache / "wheels"
    found = _find(folder, name, version, (".whl",))
    if found:
        return found
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder)]
    if pure:
        cmd += [
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--platform",
            "any",
            "--implementation",
            "py",
        ]
    _run(cmd + [f"{name}=={version}"], f"{name}=={version} from PyPI")
    found = _find(folder, name, version, (".whl",))
    if found is None:
        raise BuildError(f"pip downloaded no wheel for {name}=={version}")
    return found


def pip_sdist(name: str, version: str, cache: Path) -> Path:
    """Return the cached source distribution ``name==version``."""
    folder = cache / "sdists"
    found = _find(folder, name, version, (".tar.gz", ".zip"))
    if found:
        return found
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--no-binary=:all:",
        "-d",
        str(folder),
        f"{name}=={version}",
    ]
    _run(cmd, f"the {name}=={version} sources from PyPI")
    found = _find(folder, name, version, (".tar.gz", ".zip"))
    if found is None:
        raise BuildError(f"pip downloaded no source archive for {name}=={version}")
    return found
