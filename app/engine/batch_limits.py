"""The bounds of continuous batching (app.engine.scheduler): how many sequences share a body pass,
how many tokens one pass runs, and how much KV-cache memory the admitted sequences may hold.

Each bound is validated once here (``ValueError`` naming the parameter, its value and the allowed
range); the scheduler refuses a request it cannot queue with :class:`Full` (the service answers
429), and one that could never fit the KV budget with ``ValueError`` (a 4xx).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..model.validate import check_int

__all__ = ["BatchLimits", "Full", "kv_bytes_per_position", "DEFAULT_LIMITS"]


class Full(RuntimeError):
    """The scheduler's queue is full: retry later (HTTP 429)."""


@dataclass(frozen=True)
class BatchLimits:
    """``max_batch`` sequences in one body pass (1 … 256); ``max_tokens`` tokens per pass, every
    sequence's new tokens together (1 … 65,536: a longer prefill runs in chunks over several
    passes); ``kv_bytes`` the KV-cache memory the admitted sequences reserve together (bytes,
    1 MiB … 1 TiB; each reserves its prompt plus ``max_tokens`` positions on admission);
    ``max_waiting`` requests queued beyond the running ones (0 … 1,000,000) before
    :class:`Full`."""

    max_batch: int = 16
    max_tokens: int = 256
    kv_bytes: int = 2 << 30
    max_waiting: int = 1024

    def __post_init__(self):
        check_int("max_batch", self.max_batch, 1, 256)
        check_int("max_tokens", self.max_tokens, 1, 1 << 16)
        check_int("kv_bytes", self.kv_bytes, 1 << 20, 1 << 40)
        check_int("max_waiting", self.max_waiting, 0, 1_000_000)

    def to_dict(self) -> dict:
        return {
            "max_batch": self.max_batch,
            "max_tokens": self.max_tokens,
            "kv_bytes": self.kv_bytes,
            "max_waiting": self.max_waiting,
        }


DEFAULT_LIMITS = BatchLimits()


def kv_bytes_per_position(config) -> int:
    """Bytes of float32 keys and values one position holds over all layers."""
    return 2 * 4 * config.n_layers * config.n_kv_heads * config.head_dim
