"""Builds the Cython fast path (fastpath/_forward.pyx) as lb._forward, and the ENAT agent's reply
path (lb/realserver/_enat_reply.pyx) as lb.realserver._enat_reply.

First it writes fastpath/_names.pxi from fastpath/names.py (the C enums of reasons, states,
verdicts and forwarding methods with their Python names), only when the text changes so that
an unchanged tree is not rebuilt.

LB_DEBUG=1 builds without optimisation and with Cython's bounds checks, for gdb.
"""
import os
import runpy
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

FASTPATH = Path(__file__).resolve().parent / "fastpath"


def write_names():
    text = runpy.run_path(str(FASTPATH / "names.py"))["render"]()
    target = FASTPATH / "_names.pxi"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


write_names()
debug = os.environ.get("LB_DEBUG") == "1"
ext = Extension(
    "lb._forward",
    sources=["fastpath/_forward.pyx"],
    include_dirs=["fastpath"],
    extra_compile_args=["-O0", "-g"] if debug else ["-O3", "-fno-strict-aliasing"],
)
# the ENAT agent's reply path (lb/realserver/enat_agent.py runs it), a module of its own
enat_reply = Extension(
    "lb.realserver._enat_reply",
    sources=["lb/realserver/_enat_reply.pyx"],
    extra_compile_args=ext.extra_compile_args,
)
setup(
    ext_modules=cythonize(
        [ext, enat_reply],
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
