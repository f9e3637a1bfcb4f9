"""Loads the OpenBLAS that ``masklrp._core`` links to, before the extension itself.

The library is the one inside the ``scipy-openblas32`` wheel (``libscipy_openblas.so``,
every symbol prefixed ``scipy_``). Loading it here by its full path lets the
dynamic linker satisfy the extension's dependency with this already loaded copy,
wherever the extension was built (an editable checkout has no fixed path to the
wheel). It is loaded once per process: a second ``CDLL`` of the same file, by
``scipy_openblas32.get_openblas_config()`` say, returns the same handle.

It stays out of the global symbol namespace (``RTLD_LOCAL``), so it never stands in
for another OpenBLAS: NumPy's wheel carries its own (``scipy_openblas64_``) and
SciPy's its own renamed copy; each keeps its own thread pool. masklrp's runs one
thread, always (see ``masklrp.set_num_threads``). torch uses MKL and OpenMP, which
share nothing with it.
"""
from __future__ import annotations

import ctypes
import os

import scipy_openblas32

LIBRARY = os.path.join(scipy_openblas32.get_lib_dir(), scipy_openblas32.get_library(fullname=True))

_library = ctypes.CDLL(LIBRARY, mode=os.RTLD_LOCAL)
