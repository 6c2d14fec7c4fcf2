"""One validated bundle of every input the models, the environment and the app share."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from .amortization import MarginDistribution
from .hardware import DTYPES, Hardware, get_hardware
from .transformer import SHAPES, TransformerShape
from .validate import check_choice, check_float, check_int

__all__ = ["Scenario", "SCENARIO_LIMITS"]

#: Inclusive bounds of each numeric field; the app's sliders use exactly these.
SCENARIO_LIMITS = {
    "d": (64, 16384),
    "vocab": (2, 1 << 20),
    "layers": (1, 160),
    "batch": (1, 256),
    "context": (0, 131_072),
    "tau": (0.0, 1.0),
    "lam": (0.0, 1.0),
    "eps": (0.005, 0.5),
    "margin_a": (0.3, 10.0),
    "margin_b": (0.3, 20.0),
    "ffn_mult": (0.5, 16.0),
    "kv_share": (0.01, 1.0),
    "rerank_factor": (0.0, 1.0),
    "rerank_r": (1, 1024),
    "warmup_steps": (0, 1024),
    "decode_length": (1, 16_384),
    "forced_run": (1, 4096),
    "error_budget": (0.0, 1.0),
    "seed": (0, 2**32 - 1),
    "horizon": (10, 1_000_000),
}


@dataclass(frozen=True)
class Scenario:
    """Inputs of one decode step and of one router run.

    Widths and counts are elements, ``context`` is the decode position (KV-cache length),
    the MLP is ``ffn_mult·d`` wide and keys/values ``kv_share·d`` (grouped-query attention),
    ``tau`` and margins are normalised to [0, 1], ``eps`` bounds the amortized logit error,
    ``lam`` weighs latency against quality in the router's loss, ``rerank_factor`` is the share of
    amortized errors a rerank leaves, ``warmup_steps`` full steps fit the amortizer,
    ``forced_run`` is how many tokens the grammar forces in a row when ``k == 1`` (ForcedToken
    runs them in one forward; it is ignored where ``k > 1``).
    Defaults: Llama-3-8B's head and body on an H100, a JSON-like legal set of 64 tokens.
    """

    d: int = 4096
    vocab: int = 128_256
    k: int = 64
    layers: int = 32
    ffn_mult: float = 3.5
    kv_share: float = 0.25
    mlp_matrices: int = 3
    batch: int = 1
    dtype: str = "bfloat16"
    hardware: str | Hardware = "h100"
    context: int = 1024
    tau: float = 0.2
    lam: float = 0.1
    eps: float = 0.1
    margin_a: float = 1.2
    margin_b: float = 2.5
    rerank_factor: float = 0.25
    rerank_r: int = 8
    warmup_steps: int = 16
    decode_length: int = 512
    forced_run: int = 1
    error_budget: float = 0.0
    seed: int = 0
    horizon: int = 20_000

    def __post_init__(self):
        for name, (lo, hi) in SCENARIO_LIMITS.items():
            check = check_int if isinstance(lo, int) else check_float
            object.__setattr__(self, name, check(name, getattr(self, name), lo, hi))
        check_int("k", self.k, 1, self.vocab)
        check_choice("dtype", self.dtype, DTYPES)
        get_hardware(self.hardware)
        check_int("mlp_matrices", self.mlp_matrices, 2, 3)

    # Derived once per (immutable) scenario: every plan and curve reads them, and building them
    # anew would re-check their fields each time.
    @functools.cached_property
    def shape(self) -> TransformerShape:
        return TransformerShape(
            self.d, self.layers, self.vocab, self.ffn, self.kv_dim, self.mlp_matrices
        )

    @property
    def ffn(self) -> int:
        return max(1, round(self.ffn_mult * self.d))

    @property
    def kv_dim(self) -> int:
        return max(1, round(self.kv_share * self.d))

    @functools.cached_property
    def hw(self) -> Hardware:
        return get_hardware(self.hardware)

    @functools.cached_property
    def margins(self) -> MarginDistribution:
        return MarginDistribution(self.margin_a, self.margin_b)

    def replace(self, **changes) -> Scenario:
        """A validated copy with some fields changed."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"Unknown Scenario fields: {sorted(unknown)}.")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["hardware"] = self.hw.name if not isinstance(self.hardware, str) else self.hardware
        return out

    @classmethod
    def from_model(cls, model: str, **changes) -> Scenario:
        """Scenario on a named body shape (``'llama-3-8b'``, ``'gpt2-small'``)."""
        s = SHAPES[check_choice("model", model, SHAPES)]
        ffn_mult = (s.ffn or 4 * s.d) / s.d
        kv_share = (s.kv_dim or s.d) / s.d
        base = dict(d=s.d, layers=s.layers, vocab=s.vocab, ffn_mult=ffn_mult, kv_share=kv_share)
        return cls(**{**base, "mlp_matrices": s.mlp_matrices, **changes})
