"""Server mode only: decode a prompt on the backend and watch the plan of every step.

A prompt, a grammar (JSON schema, regex or choices, or none), a plan (or a router, once the
engine offers routers) and "Decode". The request goes to the backend's OpenAI-compatible
endpoint with ``stream: true``; a worker thread reads the events and a periodic callback draws
each step as it arrives: the token, the plan the step ran, K, the margin and its time. Then the
same request runs with ``plan: dense`` (always-DenseHead), and its per-step time is shown beside.
Like :mod:`.measured`, ``app.serving`` is imported only inside functions.
"""

from __future__ import annotations

import html
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import panel as pn

from .controls import hooked

__all__ = ["DecodePanel", "request_body", "GRAMMARS"]

log = logging.getLogger(__name__)

#: Grammar choices of the panel -> the request field they fill.
GRAMMARS = {"none": None, "JSON schema": "response_format", "regex": "regex", "choices": "choices"}
_PLANS = ["auto", "dense", "sparse", "forced", "full"]
_POOL: list = []


def _pool() -> ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmqp-decode"))
    return _POOL[0]


def request_body(prompt: str, grammar: str, text: str, plan: str, router: str | None,
                 max_tokens: int) -> dict:  # fmt: skip
    """The chat request of the panel's fields; ``ValueError`` (one line) on a bad grammar."""
    if not prompt.strip():
        raise ValueError("Write a prompt first.")
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": int(max_tokens),
            "llmqp": {"plan": plan}}  # fmt: skip
    if router:  # a router chooses the plan per step: it is the "router" plan
        body["llmqp"] = {"plan": "router", "router": router}
    field = GRAMMARS[grammar]
    if field == "response_format":
        try:
            schema = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"The JSON schema is not valid JSON: {exc}.") from None
        body[field] = {"type": "json_schema", "json_schema": {"name": "panel", "schema": schema}}
    elif field == "regex":
        if not text:
            raise ValueError("Write a regular expression, or pick 'none'.")
        body[field] = text
    elif field == "choices":
        choices = [c.strip() for c in text.splitlines() if c.strip()]
        if not choices:
            raise ValueError("Write one choice per line, or pick 'none'.")
        body[field] = choices
    return body


class DecodePanel(pn.viewable.Viewer):
    """Hooks: ``decode_prompt``, ``decode_grammar``, ``decode_grammar_text``, ``decode_plan``,
    ``decode_router``, ``decode_button``, ``decode_status``, ``decode_steps``."""

    def __init__(self, measured, client=None):
        super().__init__()
        self.measured, self._client = measured, client
        self.steps: list = []
        self.dense: list | None = None
        self.answer = None
        self.error = None
        self._future = self._poller = None
        self.prompt = hooked(pn.widgets.TextAreaInput, "decode_prompt", label="Prompt",
                             value="Pick a colour and a small number.", height=70)  # fmt: skip
        self.grammar = hooked(pn.widgets.Select, "decode_grammar", label="Grammar",
                              options=list(GRAMMARS), value="JSON schema")  # fmt: skip
        example = {"type": "object", "required": ["colour", "n"],
                   "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                  "n": {"type": "integer"}}}  # fmt: skip
        self.grammar_text = hooked(pn.widgets.TextAreaInput, "decode_grammar_text",
                                   label="Schema / regex / choices (one a line)",
                                   value=json.dumps(example), height=90)  # fmt: skip
        self.plan = hooked(pn.widgets.Select, "decode_plan", label="Plan", options=_PLANS,
                           value="auto")  # fmt: skip
        self.router = hooked(pn.widgets.Select, "decode_router", label="Router",
                             options=["none"], value="none", disabled=True)  # fmt: skip
        self.max_tokens = pn.widgets.IntInput(label="Max tokens", value=32, start=1, end=256)
        self.button = hooked(pn.widgets.Button, "decode_button", label="Decode",
                             color="primary")  # fmt: skip
        self.status = hooked(pn.pane.HTML, "decode_status", object="")
        self.table = hooked(pn.pane.HTML, "decode_steps", object="", sizing_mode="stretch_width")
        self.button.on_click(self.decode)

    @property
    def client(self):
        return self._client or self.measured.client

    def offer(self) -> None:
        """Plans and routers from the backend's ``/v1/models`` (kept as they are if it fails)."""
        try:
            card = (self.client.models() or [{}])[0].get("llmqp") or {}
        except Exception as exc:  # the panel still works with the default lists
            log.info("decode panel: no model list (%s)", exc)
            return
        if card.get("plans"):
            self.plan.options = list(card["plans"])
        routers = list(card.get("routers") or [])
        self.router.options = ["none", *routers]
        self.router.disabled = not routers

    def decode(self, event=None) -> bool:
        """Start a streamed decode and its always-DenseHead twin; False if none can start."""
        if self._future is not None:
            return False
        if self.client is None:
            self._say("No backend: connect one under Measurements first.")
            return False
        router = None if self.router.value == "none" else self.router.value
        try:
            body = request_body(self.prompt.value, self.grammar.value, self.grammar_text.value,
                                self.plan.value, router, self.max_tokens.value)  # fmt: skip
        except ValueError as exc:
            self._say(str(exc))
            return False
        self.steps, self.dense, self.answer, self.error = [], None, None, None
        self.button.disabled = True
        self._say("Decoding… (the model loads on the first decode)")
        self._future = _pool().submit(self._run, body)
        if pn.state.curdoc is not None:
            self._poller = pn.state.add_periodic_callback(self.poll, 200)
        return True

    def _run(self, body: dict) -> None:  # worker thread: only append, the loop draws
        try:
            for chunk in self.client.chat_stream(body):
                ext = chunk.get("llmqp") or {}
                if "step" in ext:
                    self.steps.append(ext["step"])
                if chunk.get("choices") and chunk["choices"][0].get("finish_reason"):
                    self.answer = ext
                elif "steps" in ext:
                    self.answer = ext
            dense = self.client.chat({**body, "llmqp": {"plan": "dense"}})
            self.dense = [s["seconds"] for s in dense["llmqp"]["steps"]]
        except Exception as exc:  # shown in the panel; the app keeps working
            self.error = str(exc)

    def poll(self) -> bool:
        """Draw the steps so far; True once the decode (and its twin) are over."""
        self.render()
        future = self._future
        if future is None or not future.done():
            return future is None
        self._future = None
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        self.button.disabled = False
        self.render()
        return True

    def render(self) -> None:
        rows = []
        for i, s in enumerate(self.steps):
            dense = self.dense[i] if self.dense and i < len(self.dense) else None
            margin = "" if s.get("margin") is None else f"{s['margin']:.3g}"
            rows.append(
                f"<tr><td>{s['index']}</td><td><code>{html.escape(repr(s['text']))}</code></td>"
                f"<td>{html.escape(s['plan'])}</td><td>{s['k']}</td><td>{margin}</td>"
                f"<td>{1e3 * s['seconds']:.2f}</td>"
                f"<td>{'' if dense is None else f'{1e3 * dense:.2f}'}</td></tr>"
            )
        head = ("<tr><th>step</th><th>token</th><th>plan</th><th>K</th><th>margin</th>"
                "<th>ms</th><th>ms, always-DenseHead</th></tr>")  # fmt: skip
        self.table.object = f"<table class='decode-steps'>{head}{''.join(rows)}</table>"
        if self.error:
            self._say(f"Decode failed: {self.error}")
        elif self.answer is not None:
            total = sum(s["seconds"] for s in self.steps)
            line = (
                f"{len(self.steps)} tokens, stop: {self.answer.get('stop')}, {1e3 * total:.1f} ms"
            )
            if self.dense:
                line += f"; always-DenseHead {1e3 * sum(self.dense):.1f} ms"
            self._say(line)

    def _say(self, text: str) -> None:
        self.status.object = f"<small>{html.escape(text)}</small>"

    def __panel__(self):
        return pn.Column(
            pn.Row(self.prompt, pn.Column(self.grammar, self.plan, self.router)),
            pn.Row(self.grammar_text, pn.Column(self.max_tokens, self.button)),
            self.status,
            self.table,
            sizing_mode="stretch_width",
        )
