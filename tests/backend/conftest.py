"""Shared fixtures of the backend tests: fast timing, and every kernel backend available here."""

import importlib.util

import pytest

from app.measure.kernels import get_kernels
from app.measure.timing import TimingConfig

HAS_TORCH = importlib.util.find_spec("torch") is not None

#: Enough to exercise every code path; far too few samples for real numbers.
FAST = TimingConfig(warmup=1, min_samples=3, max_samples=5, max_time_s=0.02, min_sample_s=0.0)


@pytest.fixture
def fast_timing():
    return FAST


_BACKENDS = [
    pytest.param(("numpy", "float32"), id="numpy-float32"),
    pytest.param(
        ("torch", "float32"),
        id="torch-float32",
        marks=pytest.mark.skipif(not HAS_TORCH, reason="torch not installed"),
    ),
    pytest.param(
        ("torch", "bfloat16"),
        id="torch-bfloat16",
        marks=pytest.mark.skipif(not HAS_TORCH, reason="torch not installed"),
    ),
]


@pytest.fixture(params=_BACKENDS)
def backend(request):
    """``(kernels, dtype)`` for every implementation installed here, on the CPU."""
    impl, dtype = request.param
    return get_kernels(impl, "cpu"), dtype
