"""Shared fixtures: one small compiled step (random shapes) and, where cached, the real model."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest

HAS_JAX = importlib.util.find_spec("jax") is not None


@pytest.fixture(scope="session")
def small():
    """A compiled step for d = 64, |V| = 1,000 (K* = 504 on the cpu profile) and a stub engine
    with random weights, padded to 1,024 rows as the engine pads its output matrix."""
    if not HAS_JAX:
        pytest.skip("jax is not installed (the [compiler] extra)")
    from app.compiler.artifact import build
    from app.compiler.catalog import build_catalog
    from app.engine.weights import LlamaConfig, random_weights

    cfg = LlamaConfig(2, 64, 128, 4, 2, 16, 1000, context=512)
    weights = random_weights(cfg, np.random.default_rng(0))
    art = build(build_catalog(cfg.d, cfg.vocab, "cpu", cfg.context))
    out = np.zeros((art.catalog.rows, cfg.d), np.float32)
    out[: cfg.vocab] = weights.output
    engine = SimpleNamespace(config=cfg, output=out, weights=weights)
    return SimpleNamespace(art=art, cat=art.catalog, engine=engine)


@pytest.fixture(scope="session")
def real():
    """The default model loaded by the engine (skipped unless it is already fetched)."""
    if not HAS_JAX:
        pytest.skip("jax is not installed (the [compiler] extra)")
    from app.engine.fetch import default_model_path

    if not default_model_path().exists():
        pytest.skip("the default model is not fetched (llmqp model fetch)")
    from app.compiler.executor import XlaStepExecutor
    from app.engine.engine import Engine

    engine = Engine.load()
    return SimpleNamespace(engine=engine, executor=XlaStepExecutor(engine))
