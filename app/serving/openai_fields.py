"""Type and range checks of the OpenAI fields that do not shape the prompt or the grammar.

Every field OpenAI defines is checked by type and range as OpenAI documents it (``null`` means
absent). Decoding is greedy and exact, so a request for sampling is refused, not silently
decoded greedily: ``temperature`` above 0, ``top_p`` below 1, a non-zero penalty or a
``logit_bias`` is a 400 that says so. ``seed`` is accepted (greedy decoding is reproducible
without one). Every string anywhere in the body must be valid Unicode: a lone surrogate
(``"\\ud800"``, which JSON can spell) is a 400 naming the field.
"""

from __future__ import annotations

from .http_base import ApiError

__all__ = ["check_fields", "check_unicode", "bad"]

_GREEDY = "decoding here is greedy (exact constrained decoding), so"
_INT64 = (-(2**63), 2**63 - 1)


def bad(message: str, param: str | None = None) -> ApiError:
    """A 400 naming ``param`` (OpenAI's ``error.param``)."""
    err = ApiError(400, message)
    err.param = param
    return err


def _number(body, name, lo, hi):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise bad(f"The '{name}' parameter must be a number in [{lo}, {hi}]. Got {value!r}.", name)
    return value


def _integer(body, name, lo, hi):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"The '{name}' parameter must be an integer in [{lo}, {hi}]. Got {value!r}.",
                  name)  # fmt: skip
    return value


def _boolean(body, name):
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad(f"The '{name}' parameter must be true or false. Got {value!r}.", name)
    return value


def _sampling(body) -> None:
    temperature = _number(body, "temperature", 0, 2)
    if temperature:
        raise bad(f"{_GREEDY} 'temperature' must be 0 or absent; got {temperature!r}.",
                  "temperature")  # fmt: skip
    top_p = _number(body, "top_p", 0, 1)
    if top_p is not None and top_p < 1:
        raise bad(f"{_GREEDY} 'top_p' must be 1 or absent; got {top_p!r}.", "top_p")
    for name in ("frequency_penalty", "presence_penalty"):
        if _number(body, name, -2, 2):
            raise bad(f"{_GREEDY} '{name}' must be 0 or absent.", name)
    bias = body.get("logit_bias")
    if bias is not None:
        if not isinstance(bias, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and -100 <= v <= 100
            for v in bias.values()
        ):
            raise bad("'logit_bias' must map token ids to numbers in [-100, 100].", "logit_bias")
        if bias:
            raise bad(f"{_GREEDY} 'logit_bias' is not supported; send it empty or not at all.",
                      "logit_bias")  # fmt: skip
    _integer(body, "seed", *_INT64)


def _metadata(body) -> None:
    meta = body.get("metadata")
    if meta is None:
        return
    if not isinstance(meta, dict) or len(meta) > 16 or not all(
        isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
        for k, v in meta.items()
    ):  # fmt: skip
        raise bad("'metadata' must be an object of at most 16 string keys (64 characters) and "
                  "string values (512 characters).", "metadata")  # fmt: skip


def _logprobs(body, kind) -> None:
    if kind == "chat":
        if _boolean(body, "logprobs"):
            raise bad("'logprobs' are not supported.", "logprobs")
        if _integer(body, "top_logprobs", 0, 20):
            raise bad("'top_logprobs' are not supported.", "top_logprobs")
    elif _integer(body, "logprobs", 0, 5):
        raise bad("'logprobs' are not supported.", "logprobs")


def _stop(body) -> None:
    stop = body.get("stop")
    if stop is None:
        return
    if not (isinstance(stop, str) or (isinstance(stop, list) and len(stop) <= 4
                                      and all(isinstance(s, str) for s in stop))):  # fmt: skip
        raise bad("'stop' must be a string or a list of at most 4 strings.", "stop")
    if stop not in ([], ""):
        raise bad("'stop' sequences are not supported; the grammar ends the answer.", "stop")


def check_fields(body: dict, kind: str) -> None:
    """400 for any OpenAI field of the wrong type or range, or asking for what greedy exact
    decoding does not do (sampling, penalties, several answers, logprobs, stop sequences)."""
    _sampling(body)
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise bad("'user' must be a string of at most 256 characters.", "user")
    _metadata(body)
    for name in ("store", "parallel_tool_calls", "echo"):
        _boolean(body, name)
    for name in ("n", "best_of"):
        if _integer(body, name, 1, 128) not in (None, 1):
            raise bad(f"Only one answer per request ('{name}': 1): decoding is greedy.", name)
    _logprobs(body, kind)
    if body.get("echo"):
        raise bad("'echo' is not supported.", "echo")
    _stop(body)
    suffix = body.get("suffix")
    if suffix is not None:
        if not isinstance(suffix, str):
            raise bad("'suffix' must be a string.", "suffix")
        raise bad("'suffix' is not supported.", "suffix")


def _has_surrogate(value, depth: int = 0) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if depth > 80:  # JSON nesting is bounded before parsing (max_json_depth)
        return False
    if isinstance(value, dict):
        return any(_has_surrogate(k, depth + 1) or _has_surrogate(v, depth + 1)
                   for k, v in value.items())  # fmt: skip
    if isinstance(value, list):
        return any(_has_surrogate(v, depth + 1) for v in value)
    return False


def check_unicode(body: dict) -> None:
    """400 naming the first field that holds a lone surrogate (not valid Unicode text)."""
    for name, value in body.items():
        if _has_surrogate(name) or _has_surrogate(value):
            raise bad(f"'{name.encode('utf-8', 'replace').decode()}' holds a lone surrogate "
                      "(an unpaired \\ud800-\\udfff escape): text must be valid Unicode.",
                      name.encode("utf-8", "replace").decode())  # fmt: skip
