"""The torch backend times the engine's torch Llama body (app/engine/forward_torch.py) at the
requested shape, through the same adapter as the numpy backend (app/measure/llama.py).

Skipped where torch is not installed. Both backends draw the same random weights and caches from
one seed, so their states agree to float32 rounding (the two bodies order sums differently)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from app.engine.forward_torch import TorchLlama  # noqa: E402
from app.measure.kernels import get_kernels  # noqa: E402
from app.measure.store import ResultStore  # noqa: E402
from app.measure.sweeps import AmortizedSweep, Runner  # noqa: E402

from .conftest import FAST  # noqa: E402

ATOL = 1e-4


def test_the_torch_body_is_the_engines_torch_llama_at_the_requested_shape():
    tk, nk = get_kernels("torch", "cpu"), get_kernels("numpy", "cpu")
    tb, nb = (k.body(128, 2, 2, "float32", 9, seed=3) for k in (tk, nk))
    assert isinstance(tb.model, TorchLlama) and tb.model.cfg == nb.model.cfg
    assert tb.model.cfg.n_layers == 2 and tb.model.cfg.d == 128
    h = tb.decode()
    assert isinstance(h, torch.Tensor) and h.shape == (2, 128) and h.dtype == torch.float32
    np.testing.assert_allclose(tk.to_numpy(h), nb.decode(), rtol=0, atol=ATOL)
    np.testing.assert_array_equal(tk.to_numpy(tb.decode()), tk.to_numpy(h))  # every call alike
    assert tb.caches[0].length == 10
    a = tb.amortized()
    np.testing.assert_allclose(tk.to_numpy(a), nb.amortized(), rtol=0, atol=ATOL)
    last = tb.last_layer(a)
    np.testing.assert_allclose(tk.to_numpy(last), nb.last_layer(nb.amortized()), rtol=0, atol=ATOL)
    tk.release(), nk.release()


def test_the_torch_body_in_bfloat16_runs_in_bfloat16():
    tk = get_kernels("torch", "cpu")
    body = tk.body(64, 1, 1, "bfloat16", 4, seed=0)
    assert body.model.dtype == torch.bfloat16 and body.caches[0].k.dtype == torch.bfloat16
    assert body.decode().dtype == torch.bfloat16 and torch.isfinite(body.decode().float()).all()


def test_the_torch_amortized_sweep_times_the_llama_body():
    runner = Runner(get_kernels("torch", "cpu"), ResultStore(), FAST)
    answer = runner.run(AmortizedSweep(d=64, layers=2, vocab=512, k=16, context=(0, 32)))
    for plan in ("full_step", "amortized_step", "amortized_rerank"):
        assert all(answer["plans"][plan]["tokens_match"])
        assert all(s > 0 for s in answer["plans"][plan]["median_s"])
    assert answer["device"]["kernel_version"] == "torch-2"
