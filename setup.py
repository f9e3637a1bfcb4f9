"""Build masklrp._core from csrc/*.c against the NumPy C API and OpenBLAS.

OpenBLAS is found with pkg-config (``pkg-config --cflags --libs openblas``; on
Debian/Ubuntu ``apt-get install libopenblas-dev pkg-config`` provides it). If
pkg-config is missing or knows no ``openblas``, the usual system locations are
tried. Nothing is hand-set: a machine where neither works gets an error that
says what to install.

MASKLRP_SANITIZE=1 builds with -fsanitize=address,undefined (see `make asan`).
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy
from setuptools import Extension, setup

# Where Debian, Ubuntu, Fedora and Homebrew put OpenBLAS when pkg-config cannot say.
KNOWN_OPENBLAS = [
    ("/usr/include/x86_64-linux-gnu/openblas-pthread", "/usr/lib/x86_64-linux-gnu/openblas-pthread"),
    ("/usr/include/aarch64-linux-gnu/openblas-pthread", "/usr/lib/aarch64-linux-gnu/openblas-pthread"),
    ("/usr/include/openblas", "/usr/lib64"),
    ("/opt/homebrew/opt/openblas/include", "/opt/homebrew/opt/openblas/lib"),
    ("/usr/local/opt/openblas/include", "/usr/local/opt/openblas/lib"),
]


def pkg_config(*args):
    if shutil.which("pkg-config") is None:
        return None
    run = subprocess.run(["pkg-config", *args, "openblas"], capture_output=True, text=True)
    return run.stdout.split() if run.returncode == 0 else None


def find_openblas():
    """include_dirs, library_dirs, libraries for OpenBLAS."""
    cflags, libs = pkg_config("--cflags"), pkg_config("--libs")
    if cflags is not None and libs is not None:
        return ([f[2:] for f in cflags if f.startswith("-I")],
                [f[2:] for f in libs if f.startswith("-L")],
                [f[2:] for f in libs if f.startswith("-l")])
    for include, lib in KNOWN_OPENBLAS:
        if Path(include, "cblas.h").exists() and any(Path(lib).glob("libopenblas.*")):
            return [include], [lib], ["openblas"]
    raise RuntimeError(
        "masklrp needs OpenBLAS with its cblas.h: install it so that "
        "`pkg-config --libs openblas` works (Debian/Ubuntu: apt-get install libopenblas-dev pkg-config)")


include_dirs, library_dirs, libraries = find_openblas()
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
    depends=["csrc/masklrp.h"],
    include_dirs=[numpy.get_include(), "csrc", *include_dirs],
    library_dirs=library_dirs,
    runtime_library_dirs=library_dirs,  # the pthread OpenBLAS is not on the default search path everywhere
    libraries=libraries,
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=[core])
