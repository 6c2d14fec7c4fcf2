"""Kernels in PyTorch on the CPU or a CUDA device (the optional ``[gpu]`` extra).

This is the only module that imports ``torch``; :func:`app.measure.kernels.get_kernels` imports it
when ``impl='torch'`` is asked for. On CUDA the clock records events around each sample and
synchronises on the end event; caches are flushed by zeroing a scratch buffer (as Triton's
``do_bench`` does).
"""

from __future__ import annotations

import platform

import numpy as np
import torch

from ..model.validate import check_choice
from .kernels_numpy import cpu_name
from .timing import Clock, PerfCounterClock

__all__ = ["TorchKernels", "TorchBody", "CudaEventClock"]

VERSION = "torch-1"
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


def _rmsnorm(x, g, eps=1e-6):
    """(B, d) -> (B, d), computed in float32 and cast back."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * g


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

    def body(self, d, layers, batch, dtype, context, seed):
        return TorchBody(self, d, layers, batch, self._dtype(dtype), context, seed)


class TorchBody:
    """The same decoder as :class:`app.measure.kernels_numpy.NumpyBody`, in torch."""

    def __init__(self, kernels, d, layers, batch, dtype, context, seed):
        self.d, self.context = d, context
        self.hd = 64 if d % 64 == 0 else d
        self.heads = d // self.hd
        dev, t = kernels.torch_device, context + 1
        g = kernels._generator(seed)

        def w(*shape, scale=1.0):
            x = torch.randn(shape, generator=g, device=dev, dtype=torch.float32)
            return (x * scale).to(dtype)

        s = d**-0.5
        self.layers = [
            {
                "g1": torch.ones(d, dtype=dtype, device=dev),
                "wqkv": w(d, 3 * d, scale=s),
                "wo": w(d, d, scale=s),
                "g2": torch.ones(d, dtype=dtype, device=dev),
                "w1": w(d, 4 * d, scale=s),
                "w2": w(4 * d, d, scale=0.5 * s),
                "kc": w(batch, self.heads, self.hd, t),
                "vc": w(batch, self.heads, t, self.hd),
            }
            for _ in range(layers)
        ]
        self.gf = torch.ones(d, dtype=dtype, device=dev)
        self.x0, self.h_stable, self.e = w(batch, d), w(batch, d), w(batch, d)
        self.U = w(d, d, scale=0.1 * s)

    def _layer(self, p, x):
        batch, t = x.shape[0], self.context
        qkv = _rmsnorm(x, p["g1"]) @ p["wqkv"]
        q, k, v = (a.reshape(batch, self.heads, self.hd) for a in qkv.split(self.d, dim=1))
        p["kc"][:, :, :, t] = k
        p["vc"][:, :, t, :] = v
        s = torch.matmul(q.unsqueeze(2), p["kc"]) * (self.hd**-0.5)  # (B, H, 1, T)
        s = torch.softmax(s.float(), dim=-1).to(x.dtype)
        o = torch.matmul(s, p["vc"]).reshape(batch, self.d)
        x = x + o @ p["wo"]
        m = torch.relu(_rmsnorm(x, p["g2"]) @ p["w1"])
        return x + m @ p["w2"]

    def decode(self):
        x = self.x0
        for p in self.layers:
            x = self._layer(p, x)
        return _rmsnorm(x, self.gf)

    def amortized(self):
        return self.h_stable + self.e @ self.U

    def last_layer(self, h):
        return _rmsnorm(self._layer(self.layers[-1], h), self.gf)
