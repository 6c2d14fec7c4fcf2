"""The kernel-backend interface, the registry of implementations, and device facts.

One file per implementation (``kernels_numpy.py``, ``kernels_torch.py``); this module only names
them and imports the chosen one on demand, so ``torch`` is imported only when asked for.

Every backend provides the same primitives on its own tensors (numpy arrays or torch tensors):

* ``random(shape, dtype, seed, scale)``, ``asarray(array, dtype)`` and ``asids(array)`` (int64
  token ids) build tensors; ``to_numpy(x)`` brings one back.
* ``legal_ids(vocab, batch, k, seed)`` -> (B, K) distinct token ids per sequence, ascending;
  ``blocked(ids, vocab)`` -> (B, V) bool, True where a token is *not* legal.
* ``dense_head(W, h, blocked)`` -> (B,) tokens: ``h @ Wᵀ`` over all of V, mask, argmax.
* ``sparse_scores(W, h, ids)`` -> (B, K) scores of the gathered rows;
  ``sparse_head(W, h, ids)`` -> (B,) tokens (argmax over them).
* ``top_ids(scores, ids, r)`` -> (B, r) ids of the ``r`` best scores, ascending.
* ``body(d, layers, batch, dtype, context, seed, weights=None)`` -> the engine's Llama body in
  this library (:class:`app.measure.llama.LlamaBody`) with a KV cache of ``context`` positions:
  ``decode()``, ``amortized()``, ``last_layer(h)`` each return (B, d).
* ``clock()`` -> a :class:`~app.measure.timing.Clock`; ``flusher(nbytes)`` -> a callable that
  evicts caches (or ``None``); ``info()`` -> device name, dtype support, library versions.

Tie-break (as in :mod:`app.model.equivalence`): among the maxima the lowest token id wins. Legal
ids are kept ascending and every argmax returns the first maximum, so each kernel obeys it.
``W`` is (V, d), ``h`` is (B, d); tokens are int64.
"""

from __future__ import annotations

import importlib

from ..model import PRESETS
from ..model.validate import check_choice

__all__ = ["IMPLS", "DEVICES", "get_kernels", "available_impls", "preset_for", "launch_counts"]

IMPLS = ("numpy", "torch")
DEVICES = ("cpu", "cuda")

_MODULES = {"numpy": ".kernels_numpy", "torch": ".kernels_torch"}
_CLASSES = {"numpy": "NumpyKernels", "torch": "TorchKernels"}


def get_kernels(impl: str = "numpy", device: str = "cpu"):
    """The kernel backend ``impl`` on ``device``.

    Raises ``ValueError`` listing the options for an unknown ``impl`` or ``device``, and when the
    pair cannot run here (numpy on CUDA; torch not installed; no CUDA device).
    """
    impl = check_choice("impl", impl, IMPLS)
    device = check_choice("device", device, DEVICES)
    try:
        module = importlib.import_module(_MODULES[impl], __package__)
    except ImportError as exc:
        raise ValueError(
            f"The 'impl' parameter {impl!r} needs a library that is not installed ({exc}); "
            "install the [gpu] extra for PyTorch, or use impl='numpy'."
        ) from None
    return getattr(module, _CLASSES[impl])(device)


def available_impls() -> dict:
    """``{impl: reason or None}``: ``None`` where the backend can be built on this machine."""
    out = {}
    for impl in IMPLS:
        try:
            importlib.import_module(_MODULES[impl], __package__)
            out[impl] = None
        except Exception as exc:  # ImportError, or a library that fails while loading
            out[impl] = f"{type(exc).__name__}: {exc}"
    return out


def launch_counts(impl: str, version: str | None = None) -> dict:
    """Launches per model operation of implementation ``impl`` at kernel ``version`` (default:
    the current one), for :attr:`app.model.Hardware.launches`; ``{}`` (the model's own fused
    counts) where they have not been counted: the torch backend, and other versions.

    Never imports torch."""
    if impl == "numpy":
        from . import kernels_numpy

        if version in (None, kernels_numpy.VERSION):
            return dict(kernels_numpy.LAUNCHES)
    return {}


#: Device-name fragments -> preset; the first match wins (H100 PCIe is slower than the preset's
#: SXM figures, which the reported name makes visible).
_NAME_TO_PRESET = (("H200", "h200"), ("H100", "h100"), ("A100", "a100"))


def preset_for(device: str, device_name: str) -> tuple[str, bool]:
    """The preset to start calibration from, and whether it describes this very device.

    CUDA devices named like a preset get it (``True``); other CUDA devices start from ``h100``
    and CPUs from the generic ``cpu`` preset (``False``: the peak figures are assumptions).
    """
    if device == "cuda":
        for fragment, name in _NAME_TO_PRESET:
            if fragment.lower() in device_name.lower():
                return name, True
        return "h100", False
    return "cpu", False


def peak_figures(device: str, device_name: str) -> dict:
    """Datasheet peak bandwidth and FLOP/s where the device is a known preset."""
    name, exact = preset_for(device, device_name)
    hw = PRESETS[name]
    return {
        "preset": name,
        "matches_device": exact,
        "bandwidth_Bps": hw.bandwidth,
        "peak_flops": dict(hw.peak_flops),
        "note": "datasheet figures"
        if exact
        else "no datasheet figures for this device; the preset is a generic assumption",
    }
