"""Build masklrp._core from csrc/*.c against the NumPy C API and OpenBLAS.

OpenBLAS is the scipy-openblas32 wheel (a build requirement in pyproject.toml and
a runtime dependency): its package says where its headers and library are, so
nothing is hand-set, nothing comes from the system and no root is needed. Its
symbols carry the prefix ``scipy_`` (csrc/linalg.c calls them so). At run time
``masklrp/_openblas.py`` loads that library before the extension; the extension
also looks for it beside itself in an installed tree (``$ORIGIN/../scipy_openblas32/lib``).

MASKLRP_SANITIZE=1 builds with -fsanitize=address,undefined (see `make asan`).
"""
import os
from pathlib import Path

import numpy
import scipy_openblas32
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

compile_args = ["-std=c11", "-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                # let a*b + c become one FMA where the target has it (rules.c's AVX2 clones):
                # one rounding instead of two, ~20-35% faster exp/erf kernels; -std=c11 alone turns it off.
                "-ffp-contract=fast"]
link_args = []
if os.environ.get("MASKLRP_SANITIZE") == "1":
    sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g"]
    compile_args = [a for a in compile_args if a != "-O3"] + ["-O1"] + sanitize
    link_args += sanitize

core = Extension(
    "masklrp._core",
    sources=sorted(str(p) for p in Path("csrc").glob("*.c")),
    depends=["csrc/masklrp.h", "csrc/engine.h", "csrc/module.h", "csrc/vecmath.h"],
    include_dirs=[numpy.get_include(), "csrc", scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    # site-packages/masklrp/_core.so -> site-packages/scipy_openblas32/lib; never an absolute
    # build-time path, which would not exist where a wheel is installed.
    runtime_library_dirs=["$ORIGIN/../scipy_openblas32/lib"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

class BuildExt(build_ext):
    """Links without the interpreter's own run path (pyenv puts ``-Wl,-rpath,<prefix>/lib`` in
    LDSHARED): the extension needs no library from there, and a wheel must carry no path of
    the machine it was built on."""

    def build_extensions(self):
        self.compiler.linker_so = [a for a in self.compiler.linker_so if not a.startswith("-Wl,-rpath")]
        super().build_extensions()


setup(ext_modules=[core], cmdclass={"build_ext": BuildExt})
