"""The amortizer: a cheap map that predicts the next final hidden state without the body.

``h_{t+1} ≈ h_t + A h_t + B e(x_t) + c`` — a ridge least-squares fit of the *change* of the
final-normed state, so a strong ridge shrinks towards "the state persists" (the paper's
``h_t = h^stable + Δh_t``) rather than towards zero. ``e(x_t)`` is the token's row of the
embedding table. The fit runs in float64 on exact traces (every position of the training
requests' prompts and decoded outputs, from one batch-invariant forward), λ is chosen on a
validation split, and the map is stored as float32 ``W`` (2d, d) and ``c`` (d,).

Two scoring functions use a predicted state; the plans that call them are the engine's kernels
``KERNELS["AmortizedHead"]`` and ``KERNELS["AmortizedRerank"]`` (app.engine.kernels), keyed by
the registry's plan names:

* :func:`amortized_head` scores every legal row with the predicted state: (token, predicted
  margin). The AmortizedHead kernel takes the token without running the body when that margin is
  at least τ; the body checks it later, and a miss is rolled back (unless ``lossy``).
* :func:`amortized_rerank`: the predicted state shortlists the top-``r`` legal tokens and the
  *exact* state — so the body still runs — scores only those ``r`` rows. It returns the winner's
  lead over the best predicted score outside the shortlist; the AmortizedRerank kernel accepts the
  shortlist's winner only when that lead exceeds the amortizer's measured ε (``eps_max``), and
  otherwise scores all of K with the exact state (SparseHead). Nothing is verified later: the
  certificate or the refine is what keeps the token exact, as far as the measured ε bounds the
  prediction's logit error (an empirical bound from the validation pairs, not a proof). It saves
  head work at large K, never body work — unlike the paper's AmortizedRerank
  (app.model.registry), which skips the body but the last layer and keeps a share of the
  amortized errors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .head import as_head
from .plans import margin_of

__all__ = [
    "Amortizer",
    "fit_amortizer",
    "split_of",
    "state_pairs",
    "amortized_head",
    "amortized_rerank",
    "LAMBDAS",
    "DEFAULT_RERANK_R",
    "default_amortizer_path",
]

LAMBDAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)
DEFAULT_RERANK_R = 8


def split_of(request_id: str, salt: str = "llmqp-amortizer") -> str:
    """``"train"`` or ``"test"`` by a hash of the request id (half each, stable across runs)."""
    digest = hashlib.sha256(f"{salt}:{request_id}".encode()).digest()
    return "train" if digest[0] % 2 == 0 else "test"


@dataclass
class Amortizer:
    """``predict(h, token) = h + [h, e(token)] @ W + c`` with float32 ``W`` (2d, d), ``c`` (d,)."""

    W: np.ndarray
    c: np.ndarray
    embed: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        d = self.c.shape[0]
        if self.W.shape != (2 * d, d) or self.embed.shape[1] != d:
            raise ValueError(
                f"amortizer: W must be (2d, d) = {(2 * d, d)} and the embedding (V, {d}); got "
                f"{self.W.shape} and {self.embed.shape}"
            )
        self.W = np.ascontiguousarray(self.W, dtype=np.float32)
        self.c = np.ascontiguousarray(self.c, dtype=np.float32)
        self._Wt = np.ascontiguousarray(self.W.T)  # (d, 2d): one GEMV per prediction
        self._x = np.empty(2 * d, np.float32)

    @property
    def d(self) -> int:
        return self.c.shape[0]

    def predict(self, h: np.ndarray, token: int) -> np.ndarray:
        """The predicted next final-normed state (d,) float32."""
        x, d = self._x, self.d
        x[:d] = h
        x[d:] = self.embed[token]
        return h + self._Wt @ x + self.c

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, W=self.W, c=self.c, meta=np.array(json.dumps(self.meta, sort_keys=True)))
        return path

    @classmethod
    def load(cls, path, embed: np.ndarray) -> Amortizer:
        """Read a fit written by :meth:`save`; ``ValueError`` (one line) if it does not fit."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"--amortizer {path}: no such file (write one: llmqp amortizer fit)")
        try:
            with np.load(path, allow_pickle=False) as z:
                W, c, meta = z["W"], z["c"], json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"amortizer {path}: not an amortizer file ({exc})") from None
        return cls(W, c, embed, meta)


def state_pairs(body, prompt: list[int], tokens: list[int]):
    """Exact (h_t, x_t, h_{t+1}) of every position of ``prompt + tokens`` past the first.

    One forward over the whole sequence (batch-invariant, so these are the decode loop's states):
    returns ``H`` (n-1, d) the states, ``X`` (n-1,) the token run at the next position and
    ``Y`` (n-1, d) the state after it, float32.
    """
    ids = list(prompt) + list(tokens)
    cache = body.new_cache(len(ids))
    states = body.forward(ids, cache)
    return states[:-1], np.asarray(ids[1:], dtype=np.int64), states[1:]


def _design(H, X, embed):
    return np.concatenate([H, embed[X]], axis=1).astype(np.float64)


def _solve(Z, D, lam):
    """Ridge with an unpenalised intercept: centre, solve (ZᵀZ + λI) W = ZᵀD."""
    zm, dm = Z.mean(0), D.mean(0)
    Zc, Dc = Z - zm, D - dm
    G = Zc.T @ Zc
    G[np.diag_indices_from(G)] += lam * len(Z)
    W = np.linalg.solve(G, Zc.T @ Dc)
    return W, dm - zm @ W


def fit_amortizer(train, valid, embed: np.ndarray, lambdas=LAMBDAS, meta=None) -> Amortizer:
    """Fit on ``train`` = (H, X, Y) arrays, choose λ (times the sample count) by the mean
    squared error on ``valid``, refit on both; return the :class:`Amortizer`.

    Deterministic: no randomness (the split is by id hash, the solve is exact)."""
    lambdas = tuple(float(v) for v in lambdas)
    if not lambdas or min(lambdas) <= 0:
        raise ValueError(f"The 'lambdas' parameter must hold positive floats. Got {lambdas!r}.")
    (Ht, Xt, Yt), (Hv, Xv, Yv) = train, valid
    if len(Ht) < 2 or len(Hv) < 1:
        raise ValueError(
            f"amortizer fit needs >= 2 training and >= 1 validation pairs; got {len(Ht)}, {len(Hv)}"
        )
    Zt, Dt = _design(Ht, Xt, embed), (Yt - Ht).astype(np.float64)
    Zv, Dv = _design(Hv, Xv, embed), (Yv - Hv).astype(np.float64)
    scores = {}
    for lam in lambdas:
        W, c = _solve(Zt, Dt, lam)
        scores[lam] = float(((Zv @ W + c - Dv) ** 2).mean())
    persist = float((Dv**2).mean())  # predicting "no change"
    best = min(scores, key=scores.get)
    W, c = _solve(np.concatenate([Zt, Zv]), np.concatenate([Dt, Dv]), best)
    info = dict(meta or {})
    info.update(
        {
            "lambda": best,
            "validation_mse": scores,
            "validation_mse_persist": persist,
            "train_pairs": len(Ht),
            "valid_pairs": len(Hv),
            "form": "h_next = h + [h, e(x)] @ W + c",
        }
    )
    info["validation_mse"] = {str(k): v for k, v in scores.items()}
    return Amortizer(W.astype(np.float32), c.astype(np.float32), embed, info)


def _rows(output, ids, h):
    """(K,) scores of rows ``ids`` under ``h`` through the engine's head (``output``: a head or
    a float32 matrix) — the floats the exact heads give them."""
    return as_head(output).rows(h[None], ids)[0]


def amortized_head(output: np.ndarray, h_pred: np.ndarray, legal: np.ndarray):
    """Score the legal rows with the predicted state: (token, predicted margin)."""
    scores = _rows(output, legal, h_pred)
    return int(legal[scores.argmax()]), margin_of(scores)


def amortized_rerank(
    output: np.ndarray, h_pred: np.ndarray, h: np.ndarray, legal: np.ndarray, r: int
):
    """Shortlist the top-``r`` legal ids by the predicted state, score them with the exact
    state ``h``. Returns (token, exact margin among the shortlist, ``lead``): the winner's exact
    score minus the largest *predicted* score outside the shortlist (inf when all of K was
    scored) — the caller accepts when ``lead`` exceeds the amortizer's measured gap ε."""
    if legal.shape[0] <= r:
        scores = _rows(output, legal, h)
        return int(legal[scores.argmax()]), margin_of(scores), np.inf
    pred = _rows(output, legal, h_pred)
    top = np.argpartition(pred, -r)[-r:]
    inside = np.zeros(legal.shape[0], bool)
    inside[top] = True
    short = legal[inside]  # ascending: the tie-break stays the lowest id
    scores = _rows(output, short, h)
    best = int(scores.argmax())
    return int(short[best]), margin_of(scores), float(scores[best]) - float(pred[~inside].max())


def default_amortizer_path() -> Path:
    """Where ``llmqp amortizer fit`` writes by default: ``<cache>/amortizer.npz``."""
    from .fetch import cache_dir

    return cache_dir() / "amortizer.npz"
