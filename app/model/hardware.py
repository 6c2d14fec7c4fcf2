"""Hardware profiles: the handful of rates the roofline cost model needs.

A profile is plain data. The backend's calibration produces a new profile through
:meth:`Hardware.replace`, so measured rates enter the model through the same door as the presets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .validate import check_choice, check_float

__all__ = ["DTYPES", "DTYPE_BYTES", "LAUNCHES", "Hardware", "PRESETS", "get_hardware"]

#: Element sizes in bytes of the dtypes the model knows.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPES = tuple(DTYPE_BYTES)

#: Launches of each operation the model prices, as the model assumes them (one fused kernel per
#: operation, eight per decoder layer). An implementation that issues more calls (numpy runs a
#: decoder layer as 31 library calls) says so in :attr:`Hardware.launches`.
LAUNCHES = {
    "dense_gemm": 1,  # h @ Wᵀ over the vocabulary
    "masked_argmax": 1,  # mask the logits, argmax
    "gather_gemm": 1,  # gather the legal rows, score them
    "argmax": 1,  # choose among scored candidates
    "softmax_pass": 1,  # each of the two passes of a restricted softmax draw
    "layer": 8,  # one decoder layer: norm, qkv, attention, out-proj, norm, up, activation, down
    "step": 0,  # per decode step or prefill beyond its layers (e.g. a final norm)
    "update": 1,  # the amortized state's d×d map
    "add": 1,  # and its add
}


@dataclass(frozen=True)
class Hardware:
    """Rates of one device.

    Parameters
    ----------
    name : str
        Preset or device name.
    peak_flops : dict[str, float]
        Peak dense FLOP/s per dtype (keys from :data:`DTYPES`).
    bandwidth : float
        Streaming memory bandwidth in bytes/s.
    overhead : float
        Fixed cost of one kernel launch (or one library call on CPU) in seconds.
    gather_efficiency : float
        Fraction of streaming bandwidth reached when reading non-contiguous rows, in (0, 1].
    cache_bytes, cache_bandwidth : float
        An optional last-level cache (0, 0: none, as in every preset). An operation whose
        working set fits in ``cache_bytes`` streams at ``cache_bandwidth`` (≥ ``bandwidth``):
        that is what repeating it back to back with warm caches measures. Larger working sets,
        and every byte when there is no cache level, stream at ``bandwidth``.
    launches : dict
        Launches per operation where the implementation differs from :data:`LAUNCHES` (the
        model's fused counts); e.g. ``{"layer": 31}`` for numpy's 31 calls per decoder layer.
        ``overhead`` is then the cost of one such call.
    """

    name: str
    peak_flops: dict = field(hash=False)
    bandwidth: float
    overhead: float
    gather_efficiency: float
    cache_bytes: float = 0.0
    cache_bandwidth: float = 0.0
    launches: dict = field(default_factory=dict, hash=False)

    def __post_init__(self):
        check_float("bandwidth", self.bandwidth, 0.0, None, lo_open=True)
        check_float("overhead", self.overhead, 0.0, None)
        check_float("gather_efficiency", self.gather_efficiency, 0.0, 1.0, lo_open=True)
        for dtype in DTYPES:
            if dtype not in self.peak_flops:
                raise ValueError(f"The 'peak_flops' parameter must have a rate for {dtype!r}.")
            check_float(f"peak_flops[{dtype!r}]", self.peak_flops[dtype], 0.0, None, lo_open=True)
        check_float("cache_bytes", self.cache_bytes, 0.0, None)
        if self.cache_bytes > 0:
            check_float("cache_bandwidth", self.cache_bandwidth, self.bandwidth, None)
        elif self.cache_bandwidth != 0:
            raise ValueError(
                "The 'cache_bandwidth' parameter must be 0 when 'cache_bytes' is 0 (no cache "
                f"level). Got {self.cache_bandwidth!r} instead."
            )
        if not isinstance(self.launches, dict):
            raise ValueError(f"The 'launches' parameter must be a dict. Got {self.launches!r}.")
        for op, n in self.launches.items():
            check_choice("launches", op, tuple(LAUNCHES))
            check_float(f"launches[{op!r}]", n, 0.0, None)

    def peak(self, dtype: str) -> float:
        """Peak dense FLOP/s for ``dtype``."""
        return self.peak_flops[check_choice("dtype", dtype, DTYPES)]

    def launch(self, op: str) -> float:
        """Launches of operation ``op`` (a key of :data:`LAUNCHES`) in this implementation."""
        return self.launches.get(op, LAUNCHES[op])

    def stream_bandwidth(self, working_set):
        """Streaming rate for an operation touching ``working_set`` bytes (array allowed):
        ``cache_bandwidth`` where it fits in ``cache_bytes``, else ``bandwidth``."""
        if self.cache_bytes <= 0:
            return self.bandwidth
        fits = np.asarray(working_set, dtype=np.float64) <= self.cache_bytes
        return np.where(fits, self.cache_bandwidth, self.bandwidth)

    def replace(self, **changes) -> Hardware:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """JSON-ready dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Hardware:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(
                f"Unknown Hardware fields: {sorted(unknown)}; allowed: {sorted(fields)}."
            )
        launches = dict(data.get("launches") or {})
        return cls(**{**data, "peak_flops": dict(data["peak_flops"]), "launches": launches})


# Sources. Peak FLOP/s are dense (no structured sparsity) tensor-core figures from the vendor
# datasheets; float32 is the non-tensor-core rate. Bandwidths are datasheet HBM figures.
# Launch overheads and gather efficiencies are not on any datasheet: they are our assumptions
# (typical CUDA launch plus tail latency of a few microseconds; gathered rows of a few KB reach
# most of streaming bandwidth) and are what the backend's calibration replaces with measurements.
PRESETS = {
    # NVIDIA H100 SXM5 datasheet: 989 TFLOP/s BF16/FP16 dense, 67 TFLOP/s FP32, 3.35 TB/s HBM3.
    "h100": Hardware(
        "h100",
        {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
        bandwidth=3.35e12,
        overhead=4e-6,
        gather_efficiency=0.7,
    ),
    # NVIDIA H200 SXM datasheet: same compute as H100 SXM, 4.8 TB/s HBM3e.
    "h200": Hardware(
        "h200",
        {"bfloat16": 989e12, "float16": 989e12, "float32": 67e12},
        bandwidth=4.8e12,
        overhead=4e-6,
        gather_efficiency=0.7,
    ),
    # NVIDIA A100 SXM4 80GB datasheet: 312 TFLOP/s BF16/FP16 dense, 19.5 TFLOP/s FP32, 2.039 TB/s.
    "a100": Hardware(
        "a100",
        {"bfloat16": 312e12, "float16": 312e12, "float32": 19.5e12},
        bandwidth=2.039e12,
        overhead=5e-6,
        gather_efficiency=0.65,
    ),
    # A generic 8-core AVX2 server CPU at ~3 GHz (2 FMA units x 8 fp32 lanes x 2 flops x 8 cores
    # ~ 0.77 TFLOP/s fp32; bf16/fp16 emulated at about half), two DDR5 channels ~ 60 GB/s, and the
    # few microseconds a numpy call costs. Calibrate against a real machine for anything serious.
    "cpu": Hardware(
        "cpu",
        {"bfloat16": 0.38e12, "float16": 0.38e12, "float32": 0.77e12},
        bandwidth=60e9,
        overhead=3e-6,
        gather_efficiency=0.5,
    ),
}


def get_hardware(name) -> Hardware:
    """A preset by name (``h100``, ``h200``, ``a100``, ``cpu``), or a :class:`Hardware` as is."""
    if isinstance(name, Hardware):
        return name
    return PRESETS[check_choice("hardware", name, PRESETS)]
