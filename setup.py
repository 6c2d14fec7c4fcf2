"""Builds the engine's C kernels (app/engine/_qkernel.c, _rowops.c); everything else is in
pyproject.toml. The SIMD paths carry per-function target attributes and are chosen at run time,
so the module is built for the baseline CPU (no -march=native) and runs anywhere."""

from setuptools import Extension, setup

# no contraction or reassociation: each kernel's order of operations is its contract; pthread:
# _qkernel splits a call's outputs between threads
FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-pthread"]

setup(
    ext_modules=[
        Extension(
            f"app.engine.{name}",
            [f"app/engine/{name}.c"],
            extra_compile_args=FLAGS,
            libraries=["m"],
            extra_link_args=["-pthread"],
        )  # fmt: skip
        for name in ("_qkernel", "_rowops")
    ]
)
