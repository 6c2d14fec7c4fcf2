"""What a decode will cost, priced before it runs, and the bound it must fit.

The recipe is the plans' own (``app.model.registry``): every plan but ``FullRecompute`` runs the
prompt through the body once (a prefill: ``n_prompt`` positions) and then one body position and
one head a token; ``FullRecompute`` recomputes the state over the whole context at every step,
so step ``i`` costs a prefill of ``n_prompt + i`` positions. The two rates are measured on the
running engine: seconds per prefill position and seconds per decode step, first by a short probe
(a 32-position prefill and four steps, the best of two), then refined by every finished decode
(an exponential average), so they follow the device the engine actually runs on.

A request whose estimate exceeds its plan's deadline (``decode_deadline_s``; ``full_deadline_s``
for the experiment-only ``full`` plan) is refused before it queues: it would only be cut off.
"""

from __future__ import annotations

import threading
import time

__all__ = ["DecodeBudget", "deadline_for"]

#: Weight of a new observation in the rates' running average.
_ALPHA = 0.3


def deadline_for(plan: str, limits) -> tuple[float, str]:
    """``(seconds, limit name)``: how long a running decode of ``plan`` may hold the device."""
    if plan == "full":
        return float(limits.full_deadline_s), "full_deadline_s"
    return float(limits.decode_deadline_s), "decode_deadline_s"


class DecodeBudget:
    """Measured rates of one engine and the estimate of a request's seconds."""

    def __init__(self):
        self.prefill_s: float | None = None  # seconds per prompt position in a prefill
        self.step_s: float | None = None  # seconds per generated token (body, head, grammar)
        self._lock = threading.Lock()
        self._probed = False

    def probe(self, engine) -> None:
        """Measure both rates once on ``engine`` (blocking: call it on a worker thread). An
        engine without a body (a test double) is priced from finished decodes only."""
        with self._lock:
            if self._probed:
                return
            self._probed = True
            body = getattr(engine, "body", None)
            if body is None or not hasattr(body, "new_cache"):
                return
            ids = [int(i) % int(engine.config.vocab) for i in range(100, 132)]
            best_p = best_s = float("inf")
            for _ in range(2):
                cache = body.new_cache(64)
                t0 = time.perf_counter()
                body.forward(ids, cache)
                t1 = time.perf_counter()
                for i in range(4):
                    body.forward([ids[i]], cache)
                t2 = time.perf_counter()
                best_p, best_s = min(best_p, (t1 - t0) / len(ids)), min(best_s, (t2 - t1) / 4)
            self.prefill_s, self.step_s = best_p, best_s

    def observe(self, result, n_prompt: int, plan: str) -> None:
        """Refine the rates from a finished decode (its prefill and its steps' seconds)."""
        with self._lock:
            prefill = getattr(result, "prefill_s", None)
            if prefill and n_prompt >= 16:
                self.prefill_s = _average(self.prefill_s, prefill / n_prompt)
            steps = [s.seconds for s in getattr(result, "steps", ()) if not s.forced]
            if steps and plan != "full":
                self.step_s = _average(self.step_s, sum(steps) / len(steps))

    def estimate(self, n_prompt: int, max_tokens: int, plan: str) -> float | None:
        """Seconds ``n_prompt`` prompt tokens and ``max_tokens`` steps of ``plan`` would take;
        None until a rate is known."""
        p, s = self.prefill_s, self.step_s
        if plan == "full":
            if p is None:
                return None
            # step i recomputes n_prompt + i positions: sum over i < max_tokens
            positions = max_tokens * n_prompt + max_tokens * (max_tokens - 1) / 2
            return p * (n_prompt + positions)
        if p is None or s is None:
            return None
        return p * n_prompt + s * max_tokens

    def refusal(self, n_prompt: int, max_tokens: int, plan: str, limits) -> str | None:
        """Why this request may not run (a one-line message), or None when it fits."""
        seconds = self.estimate(n_prompt, max_tokens, plan)
        bound, name = deadline_for(plan, limits)
        if seconds is None or seconds <= bound:
            return None
        first = self.prefill_s * (n_prompt + (n_prompt if plan == "full" else 0))
        return (
            f"This request would hold the device for about {seconds:,.1f} s on this engine "
            f"({n_prompt} prompt tokens at {1e3 * self.prefill_s:.2f} ms each, then up to "
            f"{max_tokens} tokens of plan {plan!r}; the prompt alone about {first:,.1f} s); one "
            f"request may take at most {bound:g} s ({name}). Shorten the prompt, lower "
            "max_tokens" + (" or use another plan." if plan == "full" else ".")
        )


def _average(old: float | None, new: float) -> float:
    return new if old is None else (1 - _ALPHA) * old + _ALPHA * new
