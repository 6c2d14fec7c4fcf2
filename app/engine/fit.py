"""``llmqp amortizer fit``: exact traces of a workload's training split -> an amortizer file.

The workload splits in half by a hash of the request id (:func:`app.engine.amortized.split_of`);
the training half splits again — a quarter of its requests, drawn by ``seed`` — into fit and
validation requests, on which λ is chosen. The file records the requests file's sha256, every id
of each split, the seed, λ and ε (the largest logit gap over the whole vocabulary between
predicted and exact states on the validation pairs, before the refit on both).

:func:`default_amortizer` is the fit the amortized plans use when none is given: the project's
workload (``bench/workload/requests.jsonl``), seed 0, 48 tokens per request — fitted once, on
first use, into ``<cache>/amortizer.npz`` (``llmqp amortizer fit`` with the defaults writes the
same file). The fit is deterministic (a hash split, a seeded draw, an exact solve), so every
machine with the same BLAS gets the same predictor.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np

from .amortized import Amortizer, default_amortizer_path, fit_amortizer, split_of, state_pairs

__all__ = ["decode_traces", "fit_workload", "vocab_gap", "default_amortizer", "DEFAULT_WORKLOAD"]

#: The workload the default fit is made on (a clone of the repository has it).
DEFAULT_WORKLOAD = Path(__file__).resolve().parents[2] / "bench" / "workload" / "requests.jsonl"
DEFAULT_FIT_TOKENS = 48


def decode_traces(engine, requests, max_tokens: int | None = None, progress=None) -> list[dict]:
    """Decode ``requests`` (cost rule: same tokens as DenseHead) and return per request the exact
    (H, X, Y) state pairs of prompt and output, with the ids and tokens."""
    out = []
    for n, req in enumerate(requests, 1):
        if max_tokens is not None:
            req = dataclasses.replace(req, max_tokens=min(req.max_tokens, max_tokens))
        res = engine.decode(req, plan="auto")
        H, X, Y = state_pairs(engine.body, res.prompt_tokens, res.tokens)
        out.append({"id": req.id, "tokens": res.tokens, "H": H, "X": X, "Y": Y})
        if progress is not None:
            progress(n, len(requests), req.id)
    return out


def _stack(traces):
    if not traces:
        return (np.zeros((0, 0), np.float32), np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    return tuple(np.concatenate([t[key] for t in traces]) for key in ("H", "X", "Y"))


def vocab_gap(amortizer: Amortizer, output: np.ndarray, H, X, Y) -> np.ndarray:
    """Per pair, max over the vocabulary of |predicted logit − exact logit| (float64)."""
    gaps = np.empty(len(H))
    for i in range(len(H)):
        diff = amortizer.predict(H[i], int(X[i])) - Y[i]
        gaps[i] = float(np.abs(output @ diff).max())
    return gaps


def fit_workload(engine, requests, requests_path, seed: int = 0, max_tokens=None, progress=None):
    """Fit an amortizer on the training split of ``requests``; return it (meta filled in)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"The 'seed' parameter must be an integer in [0, 2**32). Got {seed!r}.")
    train_ids = [r.id for r in requests if split_of(r.id) == "train"]
    test_ids = [r.id for r in requests if split_of(r.id) == "test"]
    if len(train_ids) < 2:
        raise ValueError(f"amortizer fit: the training split has {len(train_ids)} requests; need 2")
    rng = np.random.Generator(np.random.PCG64(seed))
    order = rng.permutation(len(train_ids))
    n_valid = max(1, len(train_ids) // 4)
    valid_ids = sorted(train_ids[i] for i in order[:n_valid])
    fit_ids = [i for i in train_ids if i not in valid_ids]
    by_id = {r.id: r for r in requests}
    traces = decode_traces(engine, [by_id[i] for i in train_ids], max_tokens, progress)
    fit_part = _stack([t for t in traces if t["id"] in fit_ids])
    valid_part = _stack([t for t in traces if t["id"] in valid_ids])
    meta = {
        "requests_sha256": hashlib.sha256(Path(requests_path).read_bytes()).hexdigest(),
        "seed": seed,
        "split": "sha256('llmqp-amortizer:' + id)[0] even -> train",
        "train_ids": fit_ids,
        "valid_ids": valid_ids,
        "test_ids": test_ids,
        "max_tokens": max_tokens,
        "model": engine.name,
    }
    first = fit_amortizer(fit_part, valid_part, engine.weights.tok_embd, meta=meta)
    gaps = vocab_gap(first, engine.output[: engine.config.vocab], *valid_part)
    both = tuple(np.concatenate([a, b]) for a, b in zip(fit_part, valid_part))
    final = fit_amortizer(
        both, valid_part, engine.weights.tok_embd, lambdas=(first.meta["lambda"],), meta=meta
    )
    final.meta.update(
        {
            "validation_mse": first.meta["validation_mse"],
            "validation_mse_persist": first.meta["validation_mse_persist"],
            "eps_p99": float(np.percentile(gaps, 99)),
            "eps_max": float(gaps.max()),
            "eps_over": "all |V| logits, validation pairs, fit on the fit requests only",
        }
    )
    return final


def default_amortizer(engine, progress=None) -> Path:
    """The default fit's file, fitted now (once; ``progress(line)`` reports it) if missing.

    ``ValueError`` (one line) when there is no fit and no workload to fit on."""
    path = default_amortizer_path()
    if path.is_file():
        return path
    if not DEFAULT_WORKLOAD.is_file():
        raise ValueError(
            f"the amortized plans need a fit: run llmqp amortizer fit --requests FILE "
            f"(looked for {path})"
        )
    from .requests import load_requests

    say = progress or (lambda line: None)
    say(f"amortizer: no fit at {path}; fitting the default one once on {DEFAULT_WORKLOAD.name}")
    requests = load_requests(DEFAULT_WORKLOAD)
    fit = fit_workload(
        engine, requests, DEFAULT_WORKLOAD, seed=0, max_tokens=DEFAULT_FIT_TOKENS,
        progress=lambda n, total, rid: say(f"  amortizer fit [{n}/{total}] {rid}"),
    )  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fit.save(tmp)
    os.replace(tmp, path)  # atomic: a concurrent reader sees no fit or the whole one
    say(f"amortizer: wrote {path}")
    return path
