"""The real model for engine tests: fetched by ``make`` (``llmqp model fetch``) before tests run.

Without it, tests that need it skip with the one-line reason — except under CI, where a missing
model means the set-up is broken, so they fail.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def engine():
    from app.engine.engine import Engine
    from app.engine.fetch import ModelMissingError

    try:
        return Engine.load()
    except ModelMissingError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must fetch the model first: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def workload():
    from pathlib import Path

    from app.engine.requests import load_requests

    return load_requests(Path(__file__).parents[2] / "bench" / "workload" / "requests.jsonl")
