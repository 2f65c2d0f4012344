"""Declares fastio's extension modules: every ``src/fastio/_*_c.pyx`` over the ``csrc/`` shims,
plus the shared policy ``src/fastio/_policy.py`` compiled in Cython's pure-Python mode.

``FASTIO_NO_EXTENSIONS=1`` builds the pure-Python package; ``FASTIO_DEBUG=1`` a debug build
(``-O0 -g``, C assertions and Cython's bounds checks on); ``FASTIO_FAULTS=1`` compiles the
fault-injection hook into the ``csrc/`` system call wrappers; ``FASTIO_SANITIZE=1`` adds
AddressSanitizer and UndefinedBehaviorSanitizer. Without ``FASTIO_NO_EXTENSIONS`` a failing
compiler fails the build: there is no silent pure-Python fallback.
"""

import glob
import os
import sys

from setuptools import Extension, setup


def flag(name):
    return os.environ.get(name, "") not in ("", "0")


def extensions():
    if flag("FASTIO_NO_EXTENSIONS") or sys.platform == "win32":
        # Windows has none of the fast paths; its wheel is the Python twins (see README).
        return []
    from Cython.Build import cythonize

    debug = flag("FASTIO_DEBUG")
    compile_args = ["-std=c11", "-fno-strict-aliasing"]
    link_args = []
    macros = [("_GNU_SOURCE", "1")]
    directives = {
        "language_level": 3,
        "embedsignature": True,
        "boundscheck": debug,
        "wraparound": False,
        "initializedcheck": debug,
        "cdivision": True,
    }
    if debug:
        compile_args += ["-O0", "-g3", "-UNDEBUG"]
        macros.append(("FASTIO_DEBUG", "1"))
    else:
        compile_args += ["-O2"]
        macros.append(("NDEBUG", "1"))
    if flag("FASTIO_FAULTS"):
        macros.append(("FASTIO_FAULTS", "1"))
    if flag("FASTIO_SANITIZE"):
        sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args += [*sanitize, "-g"]
        link_args += sanitize
    modules = [
        Extension(
            "fastio." + os.path.splitext(os.path.basename(path))[0],
            [path],
            include_dirs=["csrc"],
            define_macros=macros,
            extra_compile_args=compile_args,
            extra_link_args=link_args,
            depends=glob.glob("csrc/*.h") + glob.glob("src/fastio/*.pxd"),
        )
        for path in [*sorted(glob.glob("src/fastio/_*_c.pyx")), "src/fastio/_policy.py"]
    ]
    return cythonize(
        modules,
        compiler_directives=directives,
        include_path=["src"],
        build_dir="build/cython",
        quiet=True,
    )


setup(ext_modules=extensions())
