"""Build the native LRU store; the project metadata lives in pyproject.toml.

The extension is built against the full C API, not the limited API (abi3):
native/lru.c compiles and passes its tests with Py_LIMITED_API=0x030B0000,
but that build measured 2-8% slower per get() (no inline read of the cached
str hash, function calls instead of macros for bytes equality), and get()
is the hot path of every cache hit.
"""

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
