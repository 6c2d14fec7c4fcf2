"""Step-by-step simulation driver and a factory of routers by name."""

from __future__ import annotations

import numpy as np

from app.model.validate import check_array

from .registry import REGISTRY, spec

__all__ = ["ROUTERS", "make_router", "simulate", "run_router"]

#: name -> (class, fixed keyword arguments), read from :data:`~app.router.registry.REGISTRY`.
ROUTERS = {name: (s.cls, s.fixed) for name, s in REGISTRY.items()}


def make_router(name: str, n_arms: int, dim: int, seed=None, **params):
    """Build the router called ``name`` (one of :data:`ROUTERS`) with ``params``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the options) or invalid parameters.
    """
    entry = spec(name)
    return entry.cls(n_arms, dim, seed=seed, **entry.fixed, **params)


def simulate(router, X, observed, losses_full=None, progress=None) -> np.ndarray:
    """Run ``router`` over a stream, one ``select``/``update`` pair per step.

    Parameters
    ----------
    router : Router
        Any router of this package (or an object with the same ``select``/``update`` contract).
    X : array_like, shape (T, dim)
        Contexts.
    observed : array_like, shape (T, n_arms)
        Noisy losses; the played arm's entry is the bandit feedback.
    losses_full : array_like, shape (T, n_arms), optional
        Rows passed as ``losses=`` (full information); defaults to ``observed``.
    progress : callable, optional
        ``progress(t, T)`` after every ~1% of the steps and at the end.

    Returns
    -------
    arms : ndarray of int64, shape (T,)
        The arm played at every step.
    """
    X = np.ascontiguousarray(check_array("X", X, shape=(None, router.dim)))
    T = X.shape[0]
    observed = check_array("observed", observed, shape=(T, router.n_arms))
    full = (
        observed
        if losses_full is None
        else check_array("losses_full", losses_full, shape=(T, router.n_arms))
    )
    if progress is not None and not callable(progress):
        raise ValueError(f"The 'progress' parameter must be callable or None. Got {progress!r}.")
    every = max(T // 100, 1)
    obs_rows = observed.tolist()  # Python floats: cheaper to index than numpy scalars
    arms = np.empty(T, dtype=np.int64)
    select, update = router.select, router.update
    for t in range(T):
        x = X[t]
        a = select(x)
        update(x, a, obs_rows[t][a], losses=full[t])
        arms[t] = a
        if progress is not None and ((t + 1) % every == 0 or t + 1 == T):
            progress(t + 1, T)
    return arms


def run_router(name: str, n_arms: int, dim: int, X, observed, seed=None, progress=None, **params):
    """Build ``name`` with :func:`make_router` and :func:`simulate` it; return ``arms`` (T,)."""
    router = make_router(name, n_arms, dim, seed=seed, **params)
    return simulate(router, X, observed, progress=progress)
