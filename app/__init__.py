"""LLM-QP: query planning for constrained LLM decoding."""

__version__ = "0.1.0"
