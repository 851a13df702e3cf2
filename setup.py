"""Build the native LRU store; the project metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edge._lru",
            sources=["native/lru.c"],
            extra_compile_args=["-Wall", "-Wextra", "-O2"],
        )
    ],
)
