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
    chosen: str = ""  # the plan the policy named ("" = ``plan``); an amortized one may refine
    refined: bool = False  # an amortized step whose predicted margin fell below τ
    exact_margin: float | None = None  # a verified amortized step's margin under the exact state
    rolled_back: int = 0  # tokens thrown away when this step's guess was wrong

    def to_json(self) -> dict:
        out = {
            "plan": self.plan,
            "k": self.k,
            "forced": self.forced,
            "margin": self.margin,
            "seconds": self.seconds,
        }
        if self.chosen and self.chosen != self.plan:
            out["chosen"] = self.chosen
        if self.rolled_back:
            out["rolled_back"] = self.rolled_back
        return out


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
    rollbacks: int = 0  # amortized guesses that were wrong and rolled back
    lost_s: float = 0.0  # the time those guesses cost
    policy: object = None  # the policy that chose the plans (a router keeps its log)

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

    # -- amortizer, routers ----------------------------------------------------------------
    def set_amortizer(self, amortizer) -> None:
        """Use ``amortizer`` (an :class:`~app.engine.amortized.Amortizer` or a file written by
        ``llmqp amortizer fit``) for the amortized plans."""
        from .amortized import Amortizer

        if not isinstance(amortizer, Amortizer):
            amortizer = Amortizer.load(amortizer, self.weights.tok_embd)
        if amortizer.d != self.config.d:
            raise ValueError(
                f"amortizer: fitted for d = {amortizer.d}, the model has {self.config.d}"
            )
        self.amortizer = amortizer

    def _need_amortizer(self):
        if getattr(self, "amortizer", None) is None:
            from .amortized import default_amortizer_path

            path = default_amortizer_path()
            if not path.is_file():
                raise ValueError(
                    f"the amortized plans need a fit: run llmqp amortizer fit (looked for {path})"
                )
            self.set_amortizer(path)
        return self.amortizer

    def router(self, name: str = "linucb"):
        """The engine's warm router ``name`` (created on first use, kept across requests)."""
        from .routing import ROUTER_ARMS, ROUTER_CHOICES, RouterPolicy

        if name not in ROUTER_CHOICES:
            raise ValueError(f"--router must be one of {', '.join(ROUTER_CHOICES)}, got {name!r}")
        routers = self.__dict__.setdefault("routers", {})
        if name not in routers:
            routers[name] = RouterPolicy(name, ROUTER_ARMS)
        return routers[name]

    def decode(
        self,
        req: DecodeRequest,
        plan: str = "auto",
        on_step=None,
        executor=None,
        *,
        router: str | None = None,
        tau: float = 0.0,
        lossy: bool = False,
        oracle=None,
        should_stop=None,
    ) -> DecodeResult:
        """Greedy constrained decoding of ``req``; ``plan`` is a key of
        :data:`app.engine.plans.PLAN_CHOICES`. ``on_step(step)`` is called after every token,
        once the token is verified (amortized guesses are checked before they are passed on).

        ``router`` (one of :data:`app.engine.routing.ROUTER_CHOICES`, default linucb) is the
        learned router of ``plan="router"``; ``tau`` the amortized plans' acceptance margin;
        ``lossy`` trusts accepted amortized tokens without verification; ``oracle`` the
        per-step costs ``{(request id, index): {plan: seconds}}`` of ``plan="oracle"``.
        ``should_stop()`` (None or a reason, e.g. "cancelled", "deadline") is asked between
        prefill chunks and at every step boundary; a reason ends the decode there, with the
        tokens so far and ``stop`` set to it.

        ``executor``, if given, scores the steps the policy does not force: an object with
        ``run(h, legal, telemetry) -> (token, margin, plan_name)`` for ``h`` (d,) float32, ``legal``
        (K,) ascending int64 and ``telemetry`` ``{"k", "position", "last_margin"}`` — a compiled
        step (app.compiler) that routes and scores in one call. The body stays the engine's.
        """
        from .loop import DecodeLoop
        from .routing import FixedPolicy, OraclePolicy

        if plan not in plans.PLAN_CHOICES:
            raise ValueError(f"--plan must be one of {', '.join(plans.PLAN_CHOICES)}, got {plan!r}")
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0 <= tau < 1e6:
            raise ValueError(f"--tau must be a number >= 0, got {tau!r}")
        if router is not None and plan != "router":
            raise ValueError(f"--router needs --plan router, got --plan {plan}")
        amortizer = None
        if plan in ("amortized", "rerank"):
            amortizer = self._need_amortizer()
        if plan == "router":  # without a fit, its amortized arms run exact (as SparseHead)
            try:
                amortizer = self._need_amortizer()
            except ValueError:
                amortizer = None
            policy = self.router(router or "linucb")
        elif plan == "oracle":
            if not isinstance(oracle, dict):
                raise ValueError(
                    "--plan oracle needs recorded per-plan costs (llmqp traces collect)"
                )
            policy = OraclePolicy(oracle, self.rule)
            amortizer = getattr(self, "amortizer", None)
        else:
            policy = FixedPolicy(plans.PLAN_CHOICES[plan], self.rule)
        prompt = self.prompt_ids(req)
        constraint = self.constraint(req)
        options = {"tau": float(tau), "lossy": bool(lossy), "amortizer": amortizer,
                   "should_stop": should_stop}  # fmt: skip
        loop = DecodeLoop(self, req, prompt, constraint, policy, on_step, executor, options)
        tokens, stop, steps, prefill, start = loop.run()
        text_ids = tokens[:-1] if stop == "eos" else tokens
        result = DecodeResult(
            req.id,
            self.tokenizer.decode(text_ids),
            prompt,
            tokens,
            stop,
            steps,
            time.perf_counter() - start,
            prefill,
            self.name,
            self.device,
            self.versions,
        )
        result.rollbacks, result.lost_s, result.policy = loop.rollbacks, loop.lost_s, policy
        return result
