"""LinUCB over many independent streams at once, bit-for-bit equal to the step-by-step router.

Exactness rests on running, per stream, the very same floating-point operations as
:meth:`LinUCB.select` / :meth:`LinUCB.update`:

* the two matrix-vector products per decision, ``R = P.reshape(n*(d+1), d) x`` and
  ``var = R[:, 1:] x``, run here as stacked products ``(S, n*(d+1), d) @ (S, d, 1)`` and
  ``(S, n, d) @ (S, d, 1)``: the same BLAS gemv on blocks of the same shape and strides, so each
  stream gets the same bits (checked by ``tests/test_router_batch.py``; a product with other
  block shapes, e.g. ``einsum`` or one big GEMM over all streams, is not guaranteed to);
* everything else is elementwise (``sqrt``, ``*``, ``-``, ``/``), exact in IEEE arithmetic
  whatever the array shape, and ``argmin`` keeps the first minimum in both paths.

Inputs are copied to C-contiguous float64 once, as :func:`~app.router.simulate.simulate` does.
"""

from __future__ import annotations

import numpy as np

from app.model.validate import check_array, check_float

__all__ = ["linucb_batch"]


def linucb_batch(X, observed, alpha=1.0, reg=1.0, return_state=False):
    """Run ``S`` independent LinUCB routers over ``S`` streams in lock-step.

    Parameters
    ----------
    X : array_like, shape (S, T, dim)
        Contexts of every stream.
    observed : array_like, shape (S, T, n_arms)
        Noisy losses; stream ``s`` learns from ``observed[s, t, arms[s, t]]``.
    alpha, reg : float
        As in :class:`~app.router.linucb.LinUCB` (shared by all streams).
    return_state : bool
        Also return the final packed state.

    Returns
    -------
    arms : ndarray of int64, shape (S, T)
        Equal to ``simulate(LinUCB(n_arms, dim, alpha, reg), X[s], observed[s])`` for every ``s``.
    P : ndarray, shape (S, n_arms, dim + 1, dim)
        Only with ``return_state``: ``P[s]`` equals that router's ``P_`` (``[theta; A^-1]``).
    """
    X = np.ascontiguousarray(check_array("X", X, shape=(None, None, None)))
    S, T, d = X.shape
    observed = np.ascontiguousarray(check_array("observed", observed, shape=(S, T, None)))
    n = observed.shape[2]
    if n < 1 or d < 1:
        raise ValueError(
            f"The 'observed' and 'X' parameters need n_arms >= 1 and dim >= 1. Got {n} and {d}."
        )
    alpha = check_float("alpha", alpha, 0.0)
    reg = check_float("reg", reg, 0.0, lo_open=True)

    P = np.zeros((S, n, d + 1, d))
    P[:, :, 1:] = np.eye(d) / reg
    Pf = P.reshape(S * n, d + 1, d)  # view: block s * n + a is stream s, arm a
    Ps = P.reshape(S, n * (d + 1), d)  # view: one gemv per stream
    srange = np.arange(S)
    arms = np.empty((S, T), dtype=np.int64)
    for t in range(T):
        x = X[:, t]  # (S, d)
        xc = x[:, :, None]  # (S, d, 1)
        R = (Ps @ xc).reshape(S, n, d + 1)  # per stream as LinUCB.select's R
        var = (R[..., 1:] @ xc)[..., 0]  # (S, n), per stream as R[:, 1:] x
        a = (R[..., 0] - alpha * np.sqrt(var)).argmin(axis=1)  # (S,)
        idx = srange * n + a
        r = R.reshape(S * n, d + 1)[idx]  # (S, d + 1)
        v = var.reshape(S * n)[idx]  # (S,)
        loss = observed[srange, t, a]  # (S,)
        k = 1.0 / (1.0 + v)
        w = r * k[:, None]
        w[:, 0] = (r[:, 0] - loss) * k
        Pf[idx] -= w[:, :, None] * r[:, None, 1:]  # idx are distinct: one arm per stream
        arms[:, t] = a
    return (arms, P) if return_state else arms
