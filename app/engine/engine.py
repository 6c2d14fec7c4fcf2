"""The engine: a model loaded once — the immutable artifact (weights, tokenizer, body, the cost
rule of its shape) that decoding sessions share.

Each step: the grammar gives the legal set (K ids) → the policy names a plan → the plan's kernel
runs (ForcedToken defers the body: its token joins ``pending``, which the next scored step runs
in one forward) → the grammar consumes the token → the step's telemetry and seconds are recorded
(app.engine.loop). What changes while requests decode — warm routers, the amortizer, a
recalibrated rule — lives in a :class:`~app.engine.session.Session`.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from ..model.validate import check_choice
from . import plans
from .fetch import DEFAULT_MODEL, default_model_path, resolve_model
from .grammar import Constraint, GrammarError, compile_grammar, ll_tokenizer
from .head import output_head
from .options import DecodeOptions
from .requests import DecodeRequest
from .results import DecodeResult, Step, Telemetry
from .rule import CostRule
from .session import Session

__all__ = ["Engine", "Step", "DecodeResult", "Telemetry", "DecodeOptions", "Session", "DEVICES",
           "IMPLS"]  # fmt: skip

DEVICES = ("cpu", "cuda")
IMPLS = ("numpy", "torch")  # the body's array library; the heads run on the CPU (app.engine.head)


def _versions() -> dict:
    from importlib.metadata import version

    import gguf  # noqa: F401  (imported for its version)
    import llguidance
    import tokenizers

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "llguidance": llguidance.get_version() if hasattr(llguidance, "get_version") else "",
        "tokenizers": tokenizers.__version__,
        "gguf": version("gguf"),
    }


def _one_blas_thread() -> None:
    """One BLAS thread, process-wide: a threaded GEMV splits rows by thread count, which would
    change the rounding that plans.py keeps equal across plans (and on a busy 2-core machine
    threads mostly contend)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def _body(weights, device: str, impl: str, kernel: str | None = None):
    if impl == "numpy":
        from .forward_numpy import NumpyLlama

        return NumpyLlama(weights, kernel=kernel or "q")
    try:
        import torch

        from .forward_torch import TorchLlama
    except ImportError:
        raise ValueError("The 'impl' parameter 'torch' needs PyTorch (the [gpu] extra).") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"The 'device' parameter 'cuda': torch {torch.__version__} sees no CUDA.")
    return TorchLlama(weights, device=device, kernel=kernel or "blas")


class Engine:
    """A loaded model: weights, tokenizer, llguidance tokenizer, body, and the ``auto`` rule of
    its shape (a frozen :class:`~app.engine.rule.CostRule`). Nothing here changes after
    loading; decode through a :class:`~app.engine.session.Session` (or :meth:`decode`)."""

    def __init__(self, path: Path, fields: dict, weights, device="cpu", impl="numpy", kernel=None):
        from .tokenizer import tokenizer_from_gguf

        _one_blas_thread()
        self.path, self.weights, self.config = path, weights, weights.config
        self.device = device
        self.tokenizer = tokenizer_from_gguf(fields)
        self.ll_tokenizer = ll_tokenizer(self.tokenizer, self.config.vocab)
        self.impl = impl
        self.body = _body(weights, device, impl, kernel)  # kernel: app.engine.linear.KERNELS
        v, d = self.config.vocab, self.config.d
        pad = (-v) % plans.PAD_ROWS  # heads score whole blocks of rows (see plans.py)
        out = weights.output
        self.output = out if not pad else np.concatenate([out, np.zeros((pad, d), out.dtype)])
        # the plans score through the head (the body's kernel); ``output`` stays the float32
        # matrix for what needs its values (the amortizer's fit, the compiled step)
        packed = getattr(getattr(self.body, "out_head", None), "packed", None)
        self.head = output_head(weights, self.output, self.body.kernel, packed)
        self.rule = CostRule(d, v, "cpu")
        self.all_ids = np.arange(v)
        self.versions = _versions()
        self.name = str(fields.get("general.name") or path.stem)

    @classmethod
    def load(cls, model: str | Path | None = None, device="cpu", impl=None, kernel=None) -> Engine:
        """Load ``model`` (a Llama-family GGUF; default: the fetched SmolLM2-135M-Instruct).

        ``impl`` is the body's library: numpy (the default on the CPU) or torch (the default,
        and the only choice, on CUDA). Raises ``ValueError`` with one line: model missing (and
        how to get it), not GGUF, not Llama-family, unknown or unavailable device or impl.
        """
        check_choice("device", device, DEVICES)
        impl = check_choice("impl", impl or ("torch" if device == "cuda" else "numpy"), IMPLS)
        if device == "cuda" and impl != "torch":
            raise ValueError("The 'device' parameter 'cuda' runs the torch body: impl='torch'.")
        from .weights import load_gguf

        path = resolve_model(model)
        fields, weights = load_gguf(path)
        return cls(path, fields, weights, device, impl, kernel)

    @property
    def context(self) -> int:
        return self.config.context

    def info(self) -> dict:
        source = (
            {
                "package": f"{DEFAULT_MODEL['package']}=={DEFAULT_MODEL['version']}",
                "sha256": DEFAULT_MODEL["gguf_sha256"],
                "license": DEFAULT_MODEL["license"],
            }
            if self.path == default_model_path()
            else {"file": str(self.path)}
        )
        return {
            "model": self.name,
            "path": str(self.path),
            "source": source,
            "config": self.config.as_dict(),
            "vocab": self.config.vocab,
            "context": self.context,
            "eos": self.tokenizer.eos,
            "bos": self.tokenizer.bos,
            "weights_bytes": self.weights.nbytes,
            "device": self.device,
            "impl": self.impl,
            "rule": self.rule.to_dict(),
        }

    # -- one request ------------------------------------------------------------------------
    def prompt_ids(self, req: DecodeRequest) -> list[int]:
        """The prompt's ids; chat contents are text (only the template adds control tokens)."""
        if req.messages is not None:
            ids = self.tokenizer.chat_ids(req.messages)
        elif req.chat:
            ids = self.tokenizer.chat_ids([{"role": "user", "content": req.prompt}])
        else:
            ids = self.tokenizer.encode(req.prompt)
        if len(ids) >= self.context:
            raise ValueError(
                f"request {req.id}: the prompt is {len(ids):,} tokens; the model's context is "
                f"{self.context:,}"
            )
        return ids

    def constraint(self, req: DecodeRequest) -> Constraint | None:
        if req.grammar is None:
            return None
        kind, value = req.grammar
        try:
            text = compile_grammar(kind, value, self.ll_tokenizer)
        except GrammarError as exc:
            raise GrammarError(f"request {req.id}: {exc}") from None
        return Constraint(self.ll_tokenizer, text, self.config.vocab)

    # -- one-off decoding -------------------------------------------------------------------
    def decode(
        self,
        req: DecodeRequest,
        plan="auto",
        on_step=None,
        executor=None,
        should_stop=None,
        **options,
    ) -> DecodeResult:
        """Decode ``req`` in a fresh :class:`~app.engine.session.Session` (no warm router; the
        default amortizer): ``Session(engine).decode(req, DecodeOptions(plan=plan, **options),
        on_step, executor)``; ``plan`` may also be a :class:`DecodeOptions`. Keep a session
        (:meth:`session`) to keep routers and a chosen amortizer across requests.
        ``should_stop()`` (None or a reason, e.g. "cancelled", "deadline") is asked between
        prefill chunks and at every step boundary; a reason ends the decode there, with the
        verified tokens so far and ``stop`` set to it."""
        if not isinstance(plan, DecodeOptions):
            plan = DecodeOptions(plan=plan, **options)
        elif options:
            raise ValueError("Pass DecodeOptions or keyword options, not both.")
        return Session(self).decode(req, plan, on_step, executor, should_stop)

    def session(self, **kwargs) -> Session:
        """A new :class:`~app.engine.session.Session` on this engine (``kwargs``: its own)."""
        return Session(self, **kwargs)
