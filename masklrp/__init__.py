"""masklrp: faithful token attributions for Hugging Face transformers (AttnLRP, Mask-LRP).

>>> import masklrp
>>> model = masklrp.load("path/to/model")      # or a transformers torch module
>>> masklrp.attnlrp(model, "a gripping, funny film", target=1)

The numerical work happens in the C core ``masklrp._core`` (see ``csrc/``); this
package is the thin Python layer around it.
"""
from ._core import blas_info, get_num_threads, set_num_threads
from . import kernels
from .explain import AttnLRP, Explanation, attnlrp
from .model import Inputs, Model, load
from .spec import ModelSpec

__version__ = "0.1.0"

__all__ = ["AttnLRP", "Explanation", "Inputs", "Model", "ModelSpec", "attnlrp", "blas_info",
           "get_num_threads", "kernels", "load", "set_num_threads", "__version__"]
