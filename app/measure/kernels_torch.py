"""Kernels in PyTorch on the CPU or a CUDA device (the optional ``[gpu]`` extra).

This is the only module of ``app.measure`` that imports ``torch`` (with the engine's torch body,
:mod:`app.engine.forward_torch`, which it times); :func:`app.measure.kernels.get_kernels` imports
it when ``impl='torch'`` is asked for. The body is the engine's Llama body in torch at the
requested shape and dtype, through the same adapter as the numpy backend's
(:mod:`app.measure.llama`). On CUDA the clock records events around each sample and
synchronises on the end event; caches are flushed by zeroing a scratch buffer (as Triton's
``do_bench`` does).
"""

from __future__ import annotations

import platform

import numpy as np
import torch

from ..model.validate import check_choice
from . import llama
from .kernels_numpy import cpu_name
from .timing import Clock, PerfCounterClock

__all__ = ["TorchKernels", "CudaEventClock"]

# 2: the body is the engine's torch Llama body (app/measure/llama.py), no longer a one-layer ReLU
# stand-in.
VERSION = "torch-2"
CHUNK_BYTES = 256 << 20  # gathered rows materialised at once by the sparse head
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CudaEventClock(Clock):
    """CUDA events around the sample; ``stop`` synchronises on the end event."""

    def start(self):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        return start, end

    def stop(self, token) -> float:
        start, end = token
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3  # ms -> s


class TorchKernels:
    """The PyTorch implementation of the primitives in :mod:`app.measure.kernels`."""

    impl = "torch"
    version = VERSION
    dtypes = tuple(_DTYPES)

    def __init__(self, device: str = "cpu"):
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                "The 'device' parameter 'cuda' needs a CUDA device, and torch sees none "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda}). Use device='cpu'."
            )
        self.device = device
        self.torch_device = torch.device(device)
        self.device_name = torch.cuda.get_device_name() if device == "cuda" else cpu_name()
        self._bodies = llama.LlamaModels(self._build)

    # -- facts and tools ------------------------------------------------------------------
    def info(self) -> dict:
        out = {
            "device": self.device,
            "device_name": self.device_name,
            "impl": self.impl,
            "kernel_version": self.version,
            "dtypes": list(self.dtypes),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
        }
        if self.device == "cuda":
            props = torch.cuda.get_device_properties(self.torch_device)
            out.update(
                cuda=torch.version.cuda,
                total_memory_bytes=int(props.total_memory),
                multiprocessors=int(props.multi_processor_count),
                capability=f"{props.major}.{props.minor}",
            )
        return out

    def clock(self):
        return CudaEventClock() if self.device == "cuda" else PerfCounterClock()

    def flusher(self, nbytes: int):
        if nbytes <= 0:
            return None
        scratch = torch.empty(nbytes // 4, dtype=torch.int32, device=self.torch_device)
        return scratch.zero_

    def _dtype(self, dtype):
        return _DTYPES[check_choice("dtype", dtype, self.dtypes)]

    def _generator(self, seed):
        return torch.Generator(device=self.torch_device).manual_seed(int(seed))

    # -- tensors --------------------------------------------------------------------------
    def random(self, shape, dtype, seed, scale=1.0):
        g = self._generator(seed)
        x = torch.randn(tuple(shape), generator=g, device=self.torch_device, dtype=torch.float32)
        return (x * scale).to(self._dtype(dtype))

    def asarray(self, array, dtype):
        t = torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.torch_device)
        return t.to(self._dtype(dtype)).contiguous()

    def asids(self, array):
        return torch.as_tensor(np.asarray(array, dtype=np.int64), device=self.torch_device)

    def to_numpy(self, x) -> np.ndarray:
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.detach().cpu().numpy()

    def legal_ids(self, vocab, batch, k, seed):
        g = self._generator(seed)
        rows = [
            torch.randperm(vocab, generator=g, device=self.torch_device)[:k].sort().values
            for _ in range(batch)
        ]
        return torch.stack(rows)

    def blocked(self, ids, vocab):
        out = torch.ones((ids.shape[0], vocab), dtype=torch.bool, device=self.torch_device)
        return out.scatter_(1, torch.as_tensor(ids, device=self.torch_device), False)

    # -- head kernels ---------------------------------------------------------------------
    def dense_head(self, W, h, blocked):
        """(V, d), (B, d), (B, V) -> (B,): GEMV/GEMM over the vocabulary, mask, argmax."""
        logits = h @ W.T
        return logits.masked_fill_(blocked, float("-inf")).argmax(dim=1)

    def sparse_scores(self, W, h, ids):
        """(V, d), (B, d), (B, K) -> (B, K): gathered rows times the state, in chunks of K."""
        batch, k = ids.shape
        d = W.shape[1]
        rows = max(1, min(k, CHUNK_BYTES // (batch * d * W.element_size())))
        if rows >= k:
            gathered = W.index_select(0, ids.reshape(-1)).view(batch, k, d)
            return torch.bmm(gathered, h.unsqueeze(2)).squeeze(2)
        scores = torch.empty((batch, k), dtype=W.dtype, device=W.device)
        for lo in range(0, k, rows):
            part = ids[:, lo : lo + rows]
            gathered = W.index_select(0, part.reshape(-1)).view(batch, part.shape[1], d)
            scores[:, lo : lo + rows] = torch.bmm(gathered, h.unsqueeze(2)).squeeze(2)
        return scores

    def sparse_head(self, W, h, ids):
        """(V, d), (B, d), (B, K) ascending -> (B,): ``argmax`` returns the first maximum."""
        j = self.sparse_scores(W, h, ids).argmax(dim=1, keepdim=True)
        return ids.gather(1, j).squeeze(1)

    def top_ids(self, scores, ids, r):
        r = min(r, scores.shape[1])
        idx = torch.topk(scores, r, dim=1).indices
        return ids.gather(1, idx).sort(dim=1).values

    def release(self) -> None:
        """Drop the body (a sweep's model must not outlive it)."""
        self._bodies.clear()

    def body(self, d, layers, batch, dtype, context, seed, weights=None):
        """The engine's torch Llama body (:class:`app.measure.llama.LlamaBody` over
        :class:`app.engine.forward_torch.TorchLlama` on this device, in ``dtype``): on
        ``weights`` when given (the served model's), else random weights at the Llama shape of
        ``(d, layers)``."""
        self._dtype(dtype)
        models = self._bodies.get(d, layers, seed, weights, dtype)  # one build for every context
        return llama.LlamaBody(
            models, batch, context, seed + 1, native=lambda x: self.asarray(x, dtype)
        )

    def _build(self, weights, dtype):
        from ..engine.forward_torch import TorchLlama

        return TorchLlama(weights, device=self.device, dtype=dtype)
