"""The decode step as a compiler pass (paper §5): lowered to StableHLO with JAX, expanded into
the physical plans by a rewrite of the module, routed by a kernel inside it, run under XLA.

Needs the optional ``[compiler]`` extra (jax, jaxlib, flatbuffers); nothing here is imported by
app.model, app.router or the browser build.
"""
