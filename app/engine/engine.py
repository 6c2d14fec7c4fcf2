"""The engine: a model loaded once, decoding requests greedily under their grammars.

Each step: the grammar gives the legal set (K ids) → the policy names a plan → the plan runs
(ForcedToken defers the body: its token joins ``pending``, which the next scored step runs in one
forward) → the grammar consumes the token → the step's telemetry and seconds are recorded.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import plans
from .fetch import DEFAULT_MODEL, default_model_path, resolve_model
from .grammar import Constraint, GrammarError, compile_grammar, ll_tokenizer
from .requests import DecodeRequest
from .rule import CostRule

__all__ = ["Engine", "Step", "DecodeResult", "DEVICES", "IMPLS"]

DEVICES = ("cpu", "cuda")
IMPLS = ("numpy", "torch")  # the body's array library; the heads are numpy's (heads_numpy)


@dataclass(frozen=True)
class Step:
    """One generated token. ``margin`` is None where nothing was scored or K < 2. ``seconds``
    splits into ``mask_s`` (the grammar: legal set, forced run, consuming the token),
    ``body_s`` (the forward of ``body_tokens`` positions), ``head_s`` (scoring) and the rest
    (the policy's decision, bookkeeping)."""

    index: int
    token: int
    text: str
    plan: str
    k: int
    forced: bool
    margin: float | None
    seconds: float
    forced_run: int = 0
    body_tokens: int = 0
    mask_s: float = 0.0
    body_s: float = 0.0
    head_s: float = 0.0

    def to_json(self) -> dict:
        return {
            "plan": self.plan,
            "k": self.k,
            "forced": self.forced,
            "margin": self.margin,
            "seconds": self.seconds,
        }


@dataclass
class DecodeResult:
    id: str
    text: str
    prompt_tokens: list[int]
    tokens: list[int]
    stop: str
    steps: list[Step]
    seconds: float
    prefill_s: float
    model: str
    device: str
    versions: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "tokens": self.tokens,
            "stop": self.stop,
            "steps": [s.to_json() for s in self.steps],
            "tokens_per_s": self.tokens_per_s,
            "seconds": self.seconds,
            "prefill_seconds": self.prefill_s,
            "model": self.model,
            "device": self.device,
            "versions": self.versions,
        }


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


def _body(weights, device: str, impl: str):
    if impl == "numpy":
        from .forward_numpy import NumpyLlama

        return NumpyLlama(weights)
    try:
        import torch

        from .forward_torch import TorchLlama
    except ImportError:
        raise ValueError("--impl torch needs PyTorch (the [gpu] extra)") from None
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    return TorchLlama(weights, device=device)


class Engine:
    """A loaded model: weights, tokenizer, llguidance tokenizer, body, and the ``auto`` rule."""

    def __init__(self, path: Path, fields: dict, weights, device: str = "cpu", impl="numpy"):
        from .tokenizer import tokenizer_from_gguf

        _one_blas_thread()
        self.path, self.weights, self.config = path, weights, weights.config
        self.device = device
        self.tokenizer = tokenizer_from_gguf(fields)
        self.ll_tokenizer = ll_tokenizer(self.tokenizer, self.config.vocab)
        self.impl = impl
        self.body = _body(weights, device, impl)
        v, d = self.config.vocab, self.config.d
        pad = (-v) % plans.PAD_ROWS  # heads score whole blocks of rows (see plans.py)
        out = weights.output
        self.output = out if not pad else np.concatenate([out, np.zeros((pad, d), out.dtype)])
        self.rule = CostRule(d, v, "cpu")
        self.all_ids = np.arange(v)
        self.versions = _versions()
        self.name = str(fields.get("general.name") or path.stem)

    @classmethod
    def load(
        cls, model: str | Path | None = None, device: str = "cpu", impl: str | None = None
    ) -> Engine:
        """Load ``model`` (a Llama-family GGUF; default: the fetched SmolLM2-135M-Instruct).

        ``impl`` is the body's library: numpy (the default on the CPU) or torch (the default,
        and the only choice, on CUDA). Raises ``ValueError`` with one line: model missing (and
        how to get it), not GGUF, not Llama-family, unknown or unavailable device or impl.
        """
        if device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
        impl = impl or ("torch" if device == "cuda" else "numpy")
        if impl not in IMPLS:
            raise ValueError(f"--impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        if device == "cuda" and impl != "torch":
            raise ValueError("--device cuda runs the torch body: use --impl torch")
        from .weights import load_gguf

        path = resolve_model(model)
        fields, weights = load_gguf(path)
        return cls(path, fields, weights, device, impl)

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
        text = self.tokenizer.chat(req.prompt) if req.chat else req.prompt
        ids = self.tokenizer.encode(text)
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

    def decode(
        self, req: DecodeRequest, plan: str = "auto", on_step=None, executor=None
    ) -> DecodeResult:
        """Greedy constrained decoding of ``req``; ``plan`` is a key of
        :data:`app.engine.plans.PLAN_CHOICES`. ``on_step(step)`` is called after every token.

        ``executor``, if given, scores the steps the policy does not force: an object with
        ``run(h, legal, telemetry) -> (token, margin, plan_name)`` for ``h`` (d,) float32, ``legal``
        (K,) ascending int64 and ``telemetry`` ``{"k", "position", "last_margin"}`` — a compiled
        step (app.compiler) that routes and scores in one call. The body stays the engine's.
        """
        if plan not in plans.PLAN_CHOICES:
            raise ValueError(f"--plan must be one of {', '.join(plans.PLAN_CHOICES)}, got {plan!r}")
        fixed = plans.PLAN_CHOICES[plan]
        prompt = self.prompt_ids(req)
        constraint = self.constraint(req)
        return _Decode(self, req, prompt, constraint, fixed, on_step, executor).run()


class _Decode:
    """The state of one request's decode loop."""

    def __init__(self, engine: Engine, req, prompt, constraint, fixed, on_step, executor):
        self.e, self.req, self.prompt, self.constraint = engine, req, prompt, constraint
        self.fixed, self.on_step, self.executor = fixed, on_step, executor
        self.last_margin: float | None = None
        self.tokens: list[int] = []
        self.pending: list[int] = []  # consumed by the grammar, not yet run through the body
        self.steps: list[Step] = []

    def _policy(self, k: int) -> str:
        if self.fixed is None:
            return self.e.rule.select(k)
        if self.fixed == "ForcedToken" and k != 1:
            return "DenseHead"
        return self.fixed

    def _state(self, plan: str):
        """Run whatever the plan needs through the body; return (h, tokens run)."""
        body = self.e.body
        if plan == "FullRecompute":
            self.cache = body.new_cache(len(self.prompt) + self.req.max_tokens)
            ids = self.prompt + self.tokens
            self.h = body.forward(ids, self.cache)[-1]
            self.pending = []
            return len(ids)
        n = len(self.pending)
        if n:
            self.h = body.forward(self.pending, self.cache)[-1]
            self.pending = []
        return n

    def _step(self, index: int) -> Step:
        clock = time.perf_counter
        t0 = clock()
        legal = self.constraint.legal() if self.constraint else self.e.all_ids
        k = int(legal.shape[0])
        if k == 0:
            raise GrammarError(f"request {self.req.id}: no legal token at step {index} (K = 0)")
        run = len(self.constraint.forced_run()) if self.constraint and k == 1 else 0
        t1 = clock()
        plan = self._policy(k)
        ran = 0
        tp = t2 = clock()
        if plan == "ForcedToken":
            token, margin = plans.forced_token(legal)
        else:
            ran = self._state(plan)
            t2 = clock()
            token, margin, plan = self._score(plan, legal, k, index)
        t3 = clock()
        if self.constraint:
            self.constraint.consume(token)
        self.tokens.append(token)
        self.pending.append(token)
        t4 = clock()
        text = self.e.tokenizer.decode([token])
        t5 = clock()
        grammar_s = (t1 - t0) + (t4 - t3)
        return Step(
            index,
            token,
            text,
            plan,
            k,
            k == 1,
            margin,
            t5 - t0,
            run,
            ran,
            grammar_s,
            t2 - tp,
            t3 - t2,
        )

    def _score(self, plan: str, legal, k: int, index: int):
        """(token, margin, plan that ran) from the current state ``self.h``."""
        if self.executor is not None:
            telemetry = {
                "k": k,
                "position": len(self.prompt) + index,
                "last_margin": self.last_margin,
            }
            token, margin, plan = self.executor.run(self.h, legal, telemetry)
        else:
            head = plans.dense_head if plan == "DenseHead" else plans.sparse_head
            token, margin = head(self.e.output, self.h, legal)
        if margin is not None:
            self.last_margin = margin
        return token, margin, plan

    def run(self) -> DecodeResult:
        e, req = self.e, self.req
        start = time.perf_counter()
        self.cache = e.body.new_cache(len(self.prompt) + req.max_tokens)
        self.h = e.body.forward(self.prompt, self.cache)[-1]
        prefill = time.perf_counter() - start
        budget = min(req.max_tokens, e.context - len(self.prompt))
        stop = "length"
        for index in range(budget):
            step = self._step(index)
            self.steps.append(step)
            if self.on_step is not None:
                self.on_step(step)
            if step.token == e.tokenizer.eos:
                stop = "eos"
                break
            if self.constraint and self.constraint.stopped():
                stop = "grammar"
                break
        text_ids = self.tokens[:-1] if stop == "eos" else self.tokens
        return DecodeResult(
            req.id,
            e.tokenizer.decode(text_ids),
            self.prompt,
            self.tokens,
            stop,
            self.steps,
            time.perf_counter() - start,
            prefill,
            e.name,
            e.device,
            e.versions,
        )
