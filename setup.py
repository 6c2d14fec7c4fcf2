"""Builds the engine's projection kernel (app/engine/_qkernel.c); everything else is in
pyproject.toml. The SIMD paths carry per-function target attributes and are chosen at run time,
so the module is built for the baseline CPU (no -march=native) and runs anywhere."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "app.engine._qkernel",
            sources=["app/engine/_qkernel.c"],
            # no contraction or reassociation: the kernel's reduction order is its contract
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-fast-math"],
            libraries=["m"],
            optional=False,
        )
    ]
)
