"""Prompt prefix reuse for continuous batching: the KV rows of recent prompts, so a new prompt that
starts like one of them (the chat template's system turn, a repeated request) skips the body for
the shared positions.

Exactness: the body is batch- and chunk-invariant (app.engine.forward_numpy), so the keys and
values at positions ``0 … p-1`` depend only on the tokens ``0 … p-1`` — bit for bit, whichever
pass, batch or chunking computed them. Copying them from an earlier prompt with the same first
``p`` tokens gives the cache the new prompt's own prefill would have written; the prompt's last
token always runs through the body (its state scores the first step), so at most
``len(prompt) - 1`` positions are reused.

Prompts that arrive together: a fresh prefill that shares at least :data:`MIN_SHARED` more
positions with a prompt already running than the store gives it waits a pass for that prompt's
prefill to be stored (:func:`followers`) instead of recomputing the shared positions.

Bounded: at most ``max_bytes`` of stored keys and values (float32), least recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

__all__ = ["PrefixCache", "DEFAULT_PREFIX_BYTES", "MIN_SHARED", "followers"]

#: The stored prompts' KV memory (bytes): ~47 SmolLM2-135M prompts of 60 tokens (46 KB a
#: position); apart from the scheduler's ``kv_bytes`` budget, which bounds the running decodes.
DEFAULT_PREFIX_BYTES = 128 << 20
#: Positions a fresh prefill must stand to gain before it waits a pass for another's prefix.
MIN_SHARED = 16


def _common(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two int64 id arrays."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if len(diff) else n


class PrefixCache:
    """Recent prompts' keys and values ((layers, kv_heads, n, head_dim) float32 each), keyed by
    their ids; ``hits``/``reused`` count lookups that reused positions and those positions."""

    def __init__(self, max_bytes: int = DEFAULT_PREFIX_BYTES):
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"The 'max_bytes' parameter must be an int >= 0. Got {max_bytes!r}.")
        self.max_bytes = max_bytes
        self.entries: OrderedDict[bytes, tuple[np.ndarray, np.ndarray, np.ndarray]] = OrderedDict()
        self.nbytes = 0
        self.lookups = self.hits = self.reused = 0
        self.version = 0  # prompts stored so far: a lookup is worth repeating once it grows

    def fill(self, prompt, cache, have: int = 0) -> int:
        """Copy into ``cache`` (capacity ≥ len(prompt), its first ``have`` positions already
        ``prompt``'s) the longest stored prefix of ``prompt`` (at most len(prompt) - 1
        positions) when longer than ``have``; set its length; return the positions it holds."""
        ids = np.asarray(prompt, np.int64)
        self.lookups += 1
        best, key_best = have, None
        for key, (stored, _, _) in self.entries.items():
            n = min(_common(stored, ids), len(ids) - 1)
            if n > best:
                best, key_best = n, key
        if key_best is None:
            return have
        self.entries.move_to_end(key_best)
        _, k, v = self.entries[key_best]
        cache.k[:, :, :best] = k[:, :, :best]
        cache.v[:, :, :best] = v[:, :, :best]
        cache.length = best
        self.hits += 1
        self.reused += best - have
        return best

    def store(self, prompt, cache) -> None:
        """Keep the first len(prompt) positions of ``cache`` (the prompt's prefill)."""
        ids = np.asarray(prompt, np.int64)
        key = ids.tobytes()
        n = len(ids)
        size = 2 * cache.k[:, :, :n].nbytes
        if n == 0 or size > self.max_bytes or key in self.entries:
            if key in self.entries:
                self.entries.move_to_end(key)
            return
        while self.nbytes + size > self.max_bytes:
            _, (_, k, v) = self.entries.popitem(last=False)
            self.nbytes -= k.nbytes + v.nbytes
        k, v = cache.k[:, :, :n].copy(), cache.v[:, :, :n].copy()
        self.entries[key] = (ids, k, v)
        self.nbytes += size
        self.version += 1

    def stats(self) -> dict:
        return {"prompts": len(self.entries), "bytes": self.nbytes, "lookups": self.lookups,
                "hits": self.hits, "reused_positions": self.reused}  # fmt: skip


def followers(running, fresh) -> set[int]:
    """Which fresh prefills wait a pass: ``running`` the prompts whose prefill is under way,
    ``fresh`` (prompt, positions it already holds) in admission order. Fresh prompt i waits when
    a running prompt, or an earlier fresh one that does not wait, shares at least
    :data:`MIN_SHARED` more of its first ``len - 1`` positions (its prefix will be stored)."""
    leaders = [np.asarray(p, np.int64) for p in running]
    wait = set()
    for i, (prompt, have) in enumerate(fresh):
        ids = np.asarray(prompt, np.int64)
        if any(min(_common(lead, ids), len(ids) - 1) - have >= MIN_SHARED for lead in leaders):
            wait.add(i)
        else:
            leaders.append(ids)
    return wait
