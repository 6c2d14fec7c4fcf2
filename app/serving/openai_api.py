"""The OpenAI-compatible decoding endpoint: ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions``.

Requests follow OpenAI's chat and completions APIs. The grammar comes from ``response_format``
(``{"type": "json_schema", "json_schema": {"name", "schema"}}`` or ``{"type": "json_object"}``)
or from one extension field: ``regex``, ``choices``, ``lark`` (also spelt ``guided_regex``,
``guided_choice``, ``guided_grammar``, ``guided_json`` as vLLM does). ``llmqp: {"plan",
"router"}`` picks the physical plan (default ``auto``) or a router. Decoding is greedy: a
sampling request (``temperature`` > 0, ``top_p`` < 1, penalties, ``logit_bias``) is a 400
(:mod:`app.serving.openai_fields` checks every field's type and range). ``stream: true``
answers server-sent events, one chunk per token, each with its step's telemetry in
``llmqp.step``; the deltas carry whole characters (:mod:`app.serving.detok`), so joined they are
the plain answer's text byte for byte.

Chat contents are text: the chat template alone adds control tokens (a ``<|im_start|>`` typed by
a user is spelt with ordinary tokens). A request is priced before it queues
(:mod:`app.serving.budget`) and refused when it would outlast its plan's deadline; a running
decode stops at the deadline with the tokens so far (``finish_reason`` "deadline") and at the
next step boundary once its client has gone (queued, prefilling or decoding; one INFO line).

Answers carry ``usage`` and ``llmqp`` (``steps``: plan, K, forced, margin, seconds per token;
``stop``: eos, grammar, length or deadline; timing, model, versions). Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the usual statuses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from tornado.iostream import StreamClosedError

from ..measure.jobs import Busy
from .batching import Full
from .budget import deadline_for
from .decoding import (
    Cancelled,
    DecodeControl,
    EngineUnavailable,
    decode_options,
    plan_choices,
    router_choices,
    run_decode,
)
from .detok import TextStream
from .http_base import ApiError, JsonHandler, NotFound, PostHandler
from .openai_fields import bad as _bad
from .openai_fields import check_fields, check_unicode

__all__ = ["routes", "parse_request", "DecodeSpec", "OpenAIErrors", "UnknownPath"]

log = logging.getLogger("app.serving.service")

#: Fields checked by type and range (openai_fields); none changes the greedy answer.
_IGNORED = ("temperature", "top_p", "seed", "user", "metadata", "store", "frequency_penalty",
            "presence_penalty", "logit_bias", "parallel_tool_calls")  # fmt: skip
_GRAMMAR_FIELDS = {"regex": "regex", "guided_regex": "regex", "choices": "choices",
                   "guided_choice": "choices", "lark": "lark", "guided_grammar": "lark",
                   "guided_json": "schema"}  # fmt: skip
_COMMON = ("model", "max_tokens", "stream", "stream_options", "n", "stop", "logprobs",
           "response_format", "llmqp", *_GRAMMAR_FIELDS, *_IGNORED)  # fmt: skip
_FIELDS = {
    "chat": frozenset({"messages", "max_completion_tokens", "top_logprobs", *_COMMON}),
    "completion": frozenset({"prompt", "echo", "suffix", "best_of", *_COMMON}),
}
_ROLES = ("system", "user", "assistant", "developer")


class DecodeSpec:
    """A validated request, before the engine sees it."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def _text_content(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": "..."}]
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text"
                    and isinstance(part.get("text"), str)):  # fmt: skip
                raise _bad(f"'{where}' may hold text parts only ({{'type': 'text', 'text': ...}}).",
                           where)  # fmt: skip
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"'{where}' must be a string or a list of text parts.", where)


def _grammar(body: dict, limits):
    found = []
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            raise _bad("'response_format.type' must be 'text', 'json_object' or 'json_schema'.",
                       "response_format")  # fmt: skip
        if rf["type"] == "json_object":
            found.append(("response_format", ("json_object", None)))
        elif rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("schema"), (dict, bool)):
                raise _bad("'response_format.json_schema' must be an object with 'name' and a "
                           "'schema' object.", "response_format")  # fmt: skip
            found.append(("response_format", ("schema", js["schema"])))
    for field, kind in _GRAMMAR_FIELDS.items():
        if body.get(field) is not None:
            value = body[field]
            if kind == "choices":
                if (not isinstance(value, list) or not value
                        or not all(isinstance(c, str) and c for c in value)):  # fmt: skip
                    raise _bad(f"'{field}' must be a non-empty list of non-empty strings.", field)
                if len(value) > limits.max_choices:
                    raise _bad(f"'{field}' has {len(value)} choices; the limit is "
                               f"{limits.max_choices} (max_choices).", field)  # fmt: skip
            elif kind == "schema":
                if not isinstance(value, (dict, bool, str)):
                    raise _bad(f"'{field}' must be a JSON schema (object, true, false or JSON "
                               "text).", field)  # fmt: skip
            elif not isinstance(value, str) or not value:
                raise _bad(f"'{field}' must be a non-empty string.", field)
            found.append((field, (kind, value)))
    if len(found) > 1:
        names = ", ".join(f for f, _ in found)
        raise _bad(f"Give at most one grammar; got {names}.", found[1][0])
    if not found:
        return None
    field, grammar = found[0]
    size = len(json.dumps(grammar[1]))
    if size > limits.max_grammar_bytes:
        raise _bad(f"The grammar in '{field}' has {size} bytes; the limit is "
                   f"{limits.max_grammar_bytes} (max_grammar_bytes).", field)  # fmt: skip
    return grammar


def _int_field(body, name, lo, hi, default):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(f"The '{name}' parameter must be an integer in [{lo}, {hi}]. Got {value!r} "
                   "instead.", name)  # fmt: skip
    return value


def parse_request(body, kind: str, limits) -> DecodeSpec:
    """Validate an OpenAI request object of ``kind`` ("chat" or "completion"); 400 on error."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.")
    check_unicode(body)
    unknown = sorted(set(body) - _FIELDS[kind])
    if unknown:
        raise _bad(f"Unknown parameter(s) {unknown[:5]}; allowed: "
                   f"{', '.join(sorted(_FIELDS[kind]))}.", unknown[0])  # fmt: skip
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("The 'model' parameter must be a string.", "model")
    check_fields(body, kind)
    stream = body.get("stream")
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("The 'stream' parameter must be true or false.", "stream")
    opts = body.get("stream_options")
    opts = {} if opts is None else opts
    if (not isinstance(opts, dict) or set(opts) - {"include_usage"}
            or not isinstance(opts.get("include_usage", False), bool)):  # fmt: skip
        raise _bad("'stream_options' may hold 'include_usage' (true or false) only.",
                   "stream_options")  # fmt: skip
    default = min(128, limits.max_tokens)
    max_tokens = _int_field(body, "max_tokens", 1, limits.max_tokens, default)
    if kind == "chat":
        max_tokens = _int_field(body, "max_completion_tokens", 1, limits.max_tokens, max_tokens)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("'messages' must be a non-empty list of {role, content}.", "messages")
        turns = []
        for i, m in enumerate(messages[:64]):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                raise _bad(f"'messages[{i}].role' must be one of {', '.join(_ROLES)}.", "messages")
            role = "system" if m["role"] == "developer" else m["role"]
            turns.append(
                {"role": role, "content": _text_content(m.get("content"), f"messages[{i}].content")}
            )
        if len(messages) > 64:
            raise _bad("'messages' may hold at most 64 turns.", "messages")
        if turns[-1]["role"] != "user":
            raise _bad("The last message must be the user's.", "messages")
        prompt_chars = sum(len(t["content"]) for t in turns)
        prompt = None
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt:
            raise _bad("'prompt' must be a non-empty string (one prompt per request).", "prompt")
        turns, prompt_chars = None, len(prompt)
    if prompt_chars > limits.max_prompt_chars:
        raise _bad(f"The prompt has {prompt_chars} characters; the limit is "
                   f"{limits.max_prompt_chars} (max_prompt_chars).", "messages")  # fmt: skip
    ext = body.get("llmqp") or {}
    if not isinstance(ext, dict) or set(ext) - {"plan", "router"}:
        raise _bad("'llmqp' may hold 'plan' and 'router' only.", "llmqp")
    plan, router = ext.get("plan", "auto"), ext.get("router")
    if not isinstance(plan, str) or (router is not None and not isinstance(router, str)):
        raise _bad("'llmqp.plan' and 'llmqp.router' must be strings.", "llmqp")
    return DecodeSpec(kind=kind, model=model, stream=stream,
                      include_usage=bool(opts.get("include_usage", False)),
                      max_tokens=max_tokens, turns=turns, prompt=prompt,
                      grammar=_grammar(body, limits), plan=plan, router=router)  # fmt: skip


def _chat_prompt(engine, turns) -> dict:
    """The ``DecodeRequest`` fields of a conversation: the whole of it in the model's template
    (contents kept text) where the tokenizer has one, else the single user turn for the
    engine's own template."""
    tok = getattr(engine, "tokenizer", None)
    template = getattr(tok, "chat_template", None)
    if isinstance(template, str) and template and hasattr(tok, "chat_ids"):
        return {"prompt": "", "messages": tuple(turns)}
    if len(turns) != 1:
        raise _bad("This engine's chat template takes one user message.", "messages")
    return {"prompt": turns[0]["content"], "chat": True}


def build_request(engine, spec: DecodeSpec, limits, request_id: str):
    """The engine's ``DecodeRequest`` for ``spec``, prompt length checked (blocking: it
    tokenizes). Returns ``(request, prompt_tokens)``."""
    from app.engine.requests import DecodeRequest

    plans = plan_choices()
    if spec.plan not in plans:
        raise _bad(f"'llmqp.plan' must be one of {', '.join(plans)}. Got {spec.plan!r}.", "llmqp")
    if spec.router is not None:
        routers = router_choices(engine)
        if spec.router not in routers:
            offered = ", ".join(routers) if routers else "none yet"
            raise _bad(f"'llmqp.router' must be one the engine offers ({offered}). "
                       f"Got {spec.router!r}.", "llmqp")  # fmt: skip
        try:
            decode_options(spec.plan, spec.router)
        except ValueError as exc:
            raise _bad(f"'llmqp.router': {exc}", "llmqp") from None
    fields = _chat_prompt(engine, spec.turns) if spec.kind == "chat" else {"prompt": spec.prompt}
    try:
        req = DecodeRequest(id=request_id, grammar=spec.grammar, max_tokens=spec.max_tokens,
                            **fields)  # fmt: skip
        if hasattr(engine, "prompt_ids"):
            ids = engine.prompt_ids(req)
        else:
            text = engine.tokenizer.chat(req.prompt) if req.chat else req.prompt
            ids = engine.tokenizer.encode(text)
        if req.grammar is not None and hasattr(engine, "constraint"):
            engine.constraint(req)  # an empty language or K = 0: a 400 before queueing
    except ValueError as exc:
        raise _bad(str(exc)) from None
    room = min(limits.max_prompt_tokens, int(engine.context) - spec.max_tokens)
    if len(ids) > room:
        raise _bad(f"The prompt is {len(ids)} tokens; with max_tokens={spec.max_tokens} the "
                   f"limit is {room} (max_prompt_tokens, the model's context "
                   f"{engine.context}).", "messages")  # fmt: skip
    return req, len(ids)


def _model_id(engine) -> str:
    return str(engine.info().get("model") or getattr(engine, "name", "llmqp"))


def _step_json(step) -> dict:
    return {"index": step.index, "token": step.token, "text": step.text, "plan": step.plan,
            "k": step.k, "forced": step.forced, "margin": step.margin,
            "seconds": step.seconds}  # fmt: skip


def _finish(stop: str) -> str:
    """OpenAI's ``finish_reason``: "length" (max_tokens or the context), "deadline" (the
    decode's wall-clock deadline), else "stop" (end of text, or the grammar is complete)."""
    return stop if stop in ("length", "deadline") else "stop"


class OpenAIErrors:
    """Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def error_body(self, status_code: int, message: str, exc) -> dict:
        kind = "invalid_request_error" if status_code < 500 else "server_error"
        if status_code == 403:
            kind = "permission_error"
        if status_code == 404:
            kind = "not_found_error"
        error = {"message": message, "type": kind, "param": getattr(exc, "param", None),
                 "code": None}  # fmt: skip
        return {"error": error}


class _OpenAIHandler(OpenAIErrors, PostHandler):
    """A decode: validated, priced, queued, run, streamed or answered; stopped when the
    client leaves. The engine is fetched (loaded once) off the event loop."""

    control: DecodeControl | None = None

    async def engine(self):
        try:
            engine = await self.blocking(self.server.engine.get)
        except EngineUnavailable as exc:
            raise ApiError(503, f"No decoding engine: {exc}.") from None
        await self.blocking(self.server.budget.probe, engine)  # once per engine
        return engine

    async def post(self) -> None:
        chat = self.request.path.rstrip("/").endswith("chat/completions")
        kind = "chat" if chat else "completion"
        limits = self.server.limits
        spec = parse_request(self.read_json(), kind, limits)
        engine = await self.engine()
        model = _model_id(engine)
        if spec.model not in (None, "", model, "llmqp", "default"):
            raise ApiError(404, f"The model {spec.model!r} is not served here; this service "
                                f"serves {model!r} (GET /v1/models).")  # fmt: skip
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        req, n_prompt = await self.blocking(build_request, engine, spec, limits, rid)
        refusal = self.server.budget.refusal(n_prompt, spec.max_tokens, spec.plan, limits)
        if refusal is not None:
            raise _bad(refusal, "max_tokens")
        self.control = DecodeControl(deadline_for(spec.plan, limits)[0])
        if self.left:
            self.control.cancel()
        eos = getattr(engine.tokenizer, "eos", None)
        self.meta = {"id": rid, "created": int(time.time()), "model": model, "kind": kind,
                     "n_prompt": n_prompt, "eos": eos}  # fmt: skip
        deadline = time.monotonic() + limits.max_queue_wait_s
        try:
            if spec.stream:
                return await self._stream(engine, spec, req, deadline)
            result = await self._decode(engine, spec, req, None, deadline)
            self.send_json(200, self._answer(engine, result, spec))
        except Cancelled:  # its client has gone: on_connection_close logged the one line
            log.debug("decode %s cancelled: its client left", rid)

    async def _decode(self, engine, spec, req, on_step, deadline):
        batcher = self.server.batcher(engine)
        try:
            if batcher is not None:  # the shared batch (app.serving.batching)
                result = await batcher.decode(req, spec.plan, spec.router, on_step, deadline,
                                              self.control, self.server.pools["io"])  # fmt: skip
            else:
                with self.server.device_waiter():
                    result = await self.blocking(run_decode, self.server.manager, engine, req,
                                                 spec.plan, on_step, deadline, spec.router,
                                                 self.control, pool="device")  # fmt: skip
        except Busy as exc:
            raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
        except Full as exc:
            raise ApiError(429, str(exc), {"Retry-After": "1"}) from None
        except (ValueError, LookupError) as exc:  # the grammar does not compile, K = 0, ...
            raise _bad(str(exc)) from None
        self.server.budget.observe(result, self.meta["n_prompt"], spec.plan)
        return result

    def _usage(self, result) -> dict:
        n, n_prompt = len(result.tokens), self.meta["n_prompt"]
        return {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}

    def _telemetry(self, result, spec, held: int) -> dict:
        out = result.to_json()
        return {"steps": out["steps"], "stop": out["stop"], "tokens": out["tokens"],
                "plan": spec.plan, "router": spec.router, "seconds": out["seconds"],
                "tokens_per_s": out["tokens_per_s"], "device": out["device"],
                "versions": out["versions"], "incomplete_bytes": held}  # fmt: skip

    def _text(self, engine, result) -> tuple[str, int]:
        """The answer's text as the stream gives it: whole characters, an incomplete one at
        the end dropped (``(text, bytes dropped)``)."""
        texts = [s.text for s in result.steps] if len(result.steps) == len(result.tokens) else None
        return TextStream.of(engine.tokenizer, result.tokens, texts, self.meta["eos"])

    def _answer(self, engine, result, spec) -> dict:
        m = self.meta
        text, held = self._text(engine, result)
        finish = _finish(result.stop)
        if m["kind"] == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": finish, "logprobs": None}  # fmt: skip
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
            obj = "text_completion"
        return {"id": m["id"], "object": obj, "created": m["created"], "model": m["model"],
                "choices": [choice], "usage": self._usage(result),
                "llmqp": self._telemetry(result, spec, held)}  # fmt: skip

    def _chunk(self, delta_text, finish=None, first=False, extra=None) -> dict:
        m = self.meta
        if m["kind"] == "chat":
            delta = {"role": "assistant", "content": ""} if first else {"content": delta_text}
            if finish is not None:
                delta = {}
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": 0, "text": delta_text or "", "finish_reason": finish,
                      "logprobs": None}  # fmt: skip
            obj = "text_completion"
        out = {"id": m["id"], "object": obj, "created": m["created"], "model": m["model"],
               "choices": [choice]}  # fmt: skip
        if extra:
            out.update(extra)
        return out

    async def _send_event(self, payload) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload, allow_nan=False)
        self.write(f"data: {data}\n\n")
        await self.flush()

    async def _send_step(self, stream: TextStream, step) -> None:
        piece = stream.push(step.token, step.text)
        await self._send_event(self._chunk(piece, extra={"llmqp": {"step": _step_json(step)}}))

    async def _stream(self, engine, spec, req, deadline) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_step(step):  # device thread
            loop.call_soon_threadsafe(queue.put_nowait, ("step", step))

        task = asyncio.ensure_future(self._decode(engine, spec, req, on_step, deadline))
        task.add_done_callback(lambda t: queue.put_nowait(("done", None)))
        kind, item = await queue.get()
        if kind == "done":  # failed (or produced nothing) before the first token: plain answer
            result = await task  # raises ApiError -> a JSON error, no stream started
            self._start_stream()
            await self._stream_tail(engine, result, spec)
            return
        self._start_stream()
        stream = TextStream(engine.tokenizer, self.meta["eos"])
        try:
            await self._send_event(self._chunk("", first=True))
            while kind == "step":
                await self._send_step(stream, item)
                kind, item = await queue.get()
            try:
                result = await task
            except ApiError as exc:  # found only while decoding (a grammar dead end)
                await self._stream_error(exc)
                return
            await self._stream_tail(engine, result, spec, stream)
        except StreamClosedError:
            self.control.cancel()
            try:
                await task
            except (ApiError, Cancelled):
                pass
            raise Cancelled() from None

    async def _stream_error(self, exc: ApiError) -> None:
        """The error event, then a last chunk with ``finish_reason`` "error"."""
        await self._send_event({"error": {"message": exc.message, "type": "server_error",
                                          "param": None, "code": None}})  # fmt: skip
        await self._send_event(self._chunk("", finish="error"))
        await self._send_event("[DONE]")
        self.finish()

    def _start_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")

    async def _stream_tail(self, engine, result, spec, stream=None) -> None:
        if stream is None:  # nothing streamed yet: every step now
            stream = TextStream(engine.tokenizer, self.meta["eos"])
            await self._send_event(self._chunk("", first=True))
            for s in result.steps:
                await self._send_step(stream, s)
        usage = self._usage(result)
        tail = {"llmqp": self._telemetry(result, spec, stream.held())}
        if not spec.include_usage:
            tail["usage"] = usage
        await self._send_event(self._chunk("", finish=_finish(result.stop), extra=tail))
        if spec.include_usage:
            usage_chunk = self._chunk("", extra={"usage": usage})
            usage_chunk["choices"] = []
            await self._send_event(usage_chunk)
        await self._send_event("[DONE]")
        self.finish()

    def on_connection_close(self) -> None:
        if self.control is not None:
            self.control.cancel()
        super().on_connection_close()


class UnknownPath(OpenAIErrors, NotFound):
    """A 404 for every path no handler serves: OpenAI's error shape under ``/v1/`` (where
    OpenAI clients look), the service's own ``{"error": "..."}`` elsewhere."""

    def error_body(self, status_code: int, message: str, exc) -> dict:
        if self.request.path.startswith("/v1/"):
            return super().error_body(status_code, message, exc)
        return {"error": message}


class Models(OpenAIErrors, JsonHandler):
    async def get(self) -> None:
        slot = self.server.engine
        if not slot.enabled:
            return self.send_json(200, {"object": "list", "data": []})
        try:
            engine = await self.blocking(slot.get)
        except EngineUnavailable as exc:
            raise ApiError(503, f"No decoding engine: {exc}.") from None
        info = engine.info()
        card = {"id": _model_id(engine), "object": "model", "created": 0, "owned_by": "llmqp",
                "llmqp": {"plans": list(plan_choices()), "routers": list(router_choices(engine)),
                          "context": info.get("context"), "vocab": info.get("vocab"),
                          "source": info.get("source"), "device": info.get("device")}}  # fmt: skip
        self.send_json(200, {"object": "list", "data": [card]})


def routes(kw: dict) -> list:
    return [
        (r"/v1/models/?", Models, kw),
        (r"/v1/chat/completions/?", _OpenAIHandler, kw),
        (r"/v1/completions/?", _OpenAIHandler, kw),
    ]
