"""The OpenAI-compatible decoding endpoint: ``/v1/models``, ``/v1/chat/completions``,
``/v1/completions``.

Requests follow OpenAI's chat and completions APIs. The grammar comes from ``response_format``
(``{"type": "json_schema", "json_schema": {"name", "schema"}}`` or ``{"type": "json_object"}``)
or from one extension field: ``regex``, ``choices``, ``lark`` (also spelt ``guided_regex``,
``guided_choice``, ``guided_grammar``, ``guided_json`` as vLLM does). ``llmqp: {"plan",
"router"}`` picks the physical plan (default ``auto``) or a router. Decoding is greedy, so
``temperature``/``top_p``/``seed`` are accepted and change nothing. ``stream: true`` answers
server-sent events, one chunk per token, each with its step's telemetry in ``llmqp.step``.

Answers carry ``usage`` and ``llmqp`` (``steps``: plan, K, forced, margin, seconds per token;
``stop``: eos, grammar or length; timing, model, versions). Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, with the usual statuses.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from tornado.iostream import StreamClosedError

from .decoding import (
    Cancelled,
    EngineUnavailable,
    decode_options,
    plan_choices,
    router_choices,
    run_decode,
)
from .http_base import ApiError, JsonHandler, PostHandler
from .jobs import Busy

__all__ = ["routes", "parse_request", "DecodeSpec"]

#: Fields accepted and ignored: decoding is greedy and one answer is produced.
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


def _bad(message: str, param: str | None = None):
    err = ApiError(400, message)
    err.param = param
    return err


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
                if not isinstance(value, (dict, str)):
                    raise _bad(f"'{field}' must be a JSON schema (object or JSON text).", field)
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
    unknown = sorted(set(body) - _FIELDS[kind])
    if unknown:
        raise _bad(f"Unknown parameter(s) {unknown[:5]}; allowed: "
                   f"{', '.join(sorted(_FIELDS[kind]))}.", unknown[0])  # fmt: skip
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("The 'model' parameter must be a string.", "model")
    if body.get("n") not in (None, 1) or body.get("best_of") not in (None, 1):
        raise _bad("Only one answer per request ('n': 1): decoding is greedy.", "n")
    if body.get("stop") not in (None, [], ""):
        raise _bad("'stop' sequences are not supported; the grammar ends the answer.", "stop")
    if body.get("logprobs") not in (None, False) or body.get("echo") not in (None, False):
        raise _bad("'logprobs' and 'echo' are not supported.", "logprobs")
    if body.get("suffix") is not None:
        raise _bad("'suffix' is not supported.", "suffix")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("The 'stream' parameter must be true or false.", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
        raise _bad("'stream_options' may hold 'include_usage' only.", "stream_options")
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


def _render_chat(engine, turns) -> tuple[str, bool]:
    """``(prompt, chat)`` for the engine: the whole conversation in the model's template where
    the tokenizer exposes one, else the single user turn for the engine's own template."""
    template = getattr(getattr(engine, "tokenizer", None), "chat_template", None)
    if isinstance(template, str) and template:
        import jinja2.sandbox

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(autoescape=False)
        text = env.from_string(template).render(messages=turns, add_generation_prompt=True)
        return text, False
    if len(turns) != 1:
        raise _bad("This engine's chat template takes one user message.", "messages")
    return turns[0]["content"], True


def build_request(engine, spec: DecodeSpec, limits, request_id: str):
    """The engine's ``DecodeRequest`` for ``spec``, prompt length checked (blocking: it
    tokenizes). Returns ``(request, prompt_tokens)``."""
    from app.engine.requests import DecodeRequest

    plans = plan_choices()
    if spec.plan not in plans:
        raise _bad(f"'llmqp.plan' must be one of {', '.join(plans)}. Got {spec.plan!r}.", "llmqp")
    if spec.router is not None:
        try:
            decode_options(spec.plan, spec.router)
        except ValueError as exc:
            raise _bad(f"'llmqp.router': {exc}", "llmqp") from None
    if spec.kind == "chat":
        prompt, chat = _render_chat(engine, spec.turns)
    else:
        prompt, chat = spec.prompt, False
    try:
        req = DecodeRequest(id=request_id, prompt=prompt, grammar=spec.grammar,
                            max_tokens=spec.max_tokens, chat=chat)  # fmt: skip
        if hasattr(engine, "prompt_ids"):
            ids = engine.prompt_ids(req)
        else:
            text = engine.tokenizer.chat(prompt) if chat else prompt
            ids = engine.tokenizer.encode(text)
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
    return "length" if stop == "length" else "stop"


class _OpenAIHandler(PostHandler):
    """Errors in OpenAI's shape; the engine fetched (loaded once) off the event loop."""

    def error_body(self, status_code: int, message: str, exc) -> dict:
        """OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""
        kind = "invalid_request_error" if status_code < 500 else "server_error"
        if status_code == 403:
            kind = "permission_error"
        error = {"message": message, "type": kind, "param": getattr(exc, "param", None),
                 "code": None}  # fmt: skip
        return {"error": error}

    async def engine(self):
        try:
            return await self.blocking(self.server.engine.get)
        except EngineUnavailable as exc:
            raise ApiError(503, f"No decoding engine: {exc}.") from None

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
        self.meta = {"id": rid, "created": int(time.time()), "model": model, "kind": kind}
        deadline = time.monotonic() + limits.max_queue_wait_s
        if spec.stream:
            return await self._stream(engine, spec, req, n_prompt, deadline)
        result = await self._decode(engine, spec, req, None, deadline)
        self.send_json(200, self._answer(result, spec, n_prompt))

    async def _decode(self, engine, spec, req, on_step, deadline):
        try:
            with self.server.device_waiter():
                return await self.blocking(run_decode, self.server.manager, engine, req,
                                           spec.plan, on_step, deadline, spec.router,
                                           pool="device")  # fmt: skip
        except Busy as exc:
            raise ApiError(503, str(exc), {"Retry-After": "1"}) from None
        except (ValueError, LookupError) as exc:  # the grammar does not compile, K = 0, ...
            raise _bad(str(exc)) from None

    def _usage(self, result, n_prompt) -> dict:
        n = len(result.tokens)
        return {"prompt_tokens": n_prompt, "completion_tokens": n, "total_tokens": n_prompt + n}

    def _telemetry(self, result, spec) -> dict:
        out = result.to_json()
        return {"steps": out["steps"], "stop": out["stop"], "tokens": out["tokens"],
                "plan": spec.plan, "router": spec.router, "seconds": out["seconds"],
                "tokens_per_s": out["tokens_per_s"], "device": out["device"],
                "versions": out["versions"]}  # fmt: skip

    def _answer(self, result, spec, n_prompt) -> dict:
        m = self.meta
        if m["kind"] == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "finish_reason": _finish(result.stop), "logprobs": None}  # fmt: skip
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": result.text, "finish_reason": _finish(result.stop),
                      "logprobs": None}  # fmt: skip
            obj = "text_completion"
        return {"id": m["id"], "object": obj, "created": m["created"], "model": m["model"],
                "choices": [choice], "usage": self._usage(result, n_prompt),
                "llmqp": self._telemetry(result, spec)}  # fmt: skip

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

    async def _stream(self, engine, spec, req, n_prompt, deadline) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        left = self._left_flag = [False]

        def on_step(step):  # device thread
            if left[0]:
                raise Cancelled()
            loop.call_soon_threadsafe(queue.put_nowait, ("step", step))

        task = asyncio.ensure_future(self._decode(engine, spec, req, on_step, deadline))
        task.add_done_callback(lambda t: queue.put_nowait(("done", None)))
        kind, item = await queue.get()
        if kind == "done":  # failed (or produced nothing) before the first token: plain answer
            result = await task  # raises ApiError -> a JSON error, no stream started
            self._start_stream()
            await self._stream_tail(result, spec, n_prompt)
            return
        self._start_stream()
        try:
            await self._send_event(self._chunk("", first=True))
            while kind == "step":
                await self._send_event(self._chunk(item.text, extra={"llmqp": {
                    "step": _step_json(item)}}))  # fmt: skip
                kind, item = await queue.get()
            try:
                result = await task
            except Cancelled:
                return
            except ApiError as exc:
                await self._send_event({"error": {"message": exc.message, "type": "server_error",
                                                  "param": None, "code": None}})  # fmt: skip
                self.finish()
                return
            await self._stream_tail(result, spec, n_prompt, header=False)
        except StreamClosedError:
            left[0] = True
            self.on_connection_close()
            try:
                await task
            except (ApiError, Cancelled):
                pass

    def _start_stream(self) -> None:
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-store")

    async def _stream_tail(self, result, spec, n_prompt, header=True) -> None:
        if header:
            await self._send_event(self._chunk("", first=True))
            for s in result.steps:
                step = {"llmqp": {"step": _step_json(s)}}
                await self._send_event(self._chunk(s.text, extra=step))
        usage = self._usage(result, n_prompt)
        tail = {"llmqp": self._telemetry(result, spec)}
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
        flag = getattr(self, "_left_flag", None)
        if flag is not None:
            flag[0] = True
        super().on_connection_close()


class Models(JsonHandler):
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
