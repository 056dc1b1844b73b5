"""Builds the Cython fast path (fastpath/_forward.pyx) as lb._forward.

LB_DEBUG=1 builds without optimisation and with Cython's bounds checks, for gdb.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("LB_DEBUG") == "1"
ext = Extension(
    "lb._forward",
    sources=["fastpath/_forward.pyx"],
    include_dirs=["fastpath"],
    extra_compile_args=["-O0", "-g"] if debug else ["-O3", "-fno-strict-aliasing"],
)
setup(
    ext_modules=cythonize(
        [ext],
        language_level=3,
        include_path=["fastpath"],
        compiler_directives={
            "boundscheck": debug,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": debug,
        },
    )
)
