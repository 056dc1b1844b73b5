"""Builds the Cython fast path (fastpath/_forward.pyx) as lb._forward, and the TUN real server's
decapsulator loop (fastpath/_decap.pyx) as lb._decap.

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
flags = ["-O0", "-g"] if debug else ["-O3", "-fno-strict-aliasing"]
exts = [Extension(f"lb.{name}", sources=[f"fastpath/{name}.pyx"], include_dirs=["fastpath"],
                  extra_compile_args=flags) for name in ("_forward", "_decap")]
# the ENAT agent's reply path (lb/realserver/enat_agent.py runs it), a module of its own
exts.append(Extension("lb.realserver._enat_reply", sources=["lb/realserver/_enat_reply.pyx"],
                      extra_compile_args=flags))
setup(
    ext_modules=cythonize(
        exts,
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
