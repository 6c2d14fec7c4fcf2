"""Hardware profiles: the handful of rates the roofline cost model needs.

A profile is plain data. The backend's calibration produces a new profile through
:meth:`Hardware.replace`, so measured rates enter the model through the same door as the presets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .validate import check_choice, check_float

__all__ = ["DTYPES", "DTYPE_BYTES", "Hardware", "PRESETS", "get_hardware"]

#: Element sizes in bytes of the dtypes the model knows.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPES = tuple(DTYPE_BYTES)


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
    """

    name: str
    peak_flops: dict = field(hash=False)
    bandwidth: float
    overhead: float
    gather_efficiency: float

    def __post_init__(self):
        check_float("bandwidth", self.bandwidth, 0.0, None, lo_open=True)
        check_float("overhead", self.overhead, 0.0, None)
        check_float("gather_efficiency", self.gather_efficiency, 0.0, 1.0, lo_open=True)
        for dtype in DTYPES:
            if dtype not in self.peak_flops:
                raise ValueError(f"The 'peak_flops' parameter must have a rate for {dtype!r}.")
            check_float(f"peak_flops[{dtype!r}]", self.peak_flops[dtype], 0.0, None, lo_open=True)

    def peak(self, dtype: str) -> float:
        """Peak dense FLOP/s for ``dtype``."""
        return self.peak_flops[check_choice("dtype", dtype, DTYPES)]

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
        return cls(**{**data, "peak_flops": dict(data["peak_flops"])})


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
