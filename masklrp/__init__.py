"""masklrp: faithful token attributions for Hugging Face transformers (AttnLRP, Mask-LRP).

The numerical work happens in the C core ``masklrp._core`` (see ``csrc/``); this
package is the thin Python layer around it.
"""
from ._core import blas_info, get_num_threads, set_num_threads
from . import kernels

__version__ = "0.1.0"

__all__ = ["blas_info", "get_num_threads", "kernels", "set_num_threads", "__version__"]
