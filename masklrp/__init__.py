"""masklrp: faithful token attributions for Hugging Face transformers (AttnLRP, Mask-LRP).

>>> import masklrp
>>> model = masklrp.load("path/to/model")      # or a transformers torch module
>>> e = masklrp.attnlrp(model, "a gripping, funny film", target=1)
>>> e.save("heatmap.png")                     # or display e in a notebook (HTML heatmap)

The numerical work happens in the C core ``masklrp._core`` (see ``csrc/``); this
package is the thin Python layer around it.
"""
from . import _openblas  # noqa: F401  (first: the library _core links to)
from ._core import blas_info, get_num_threads, set_num_threads
from . import corpus, data, heatmap, kernels, metrics
from .corpus import Sentence, from_arrays, from_spacy, read_conllu
from .default_model import default_head_mask, default_model_dir, load_default
from .evaluate import Evaluation, evaluate
from .explain import AttnLRP, Explanation, attnlrp
from .generation import GenerationExplanation, attribute_generation
from .headmask import HeadMask, random_head_mask
from .headstats import head_statistics
from .methods import METHODS, MaskLRP, explain_all
from .model import Inputs, Model, Stream, load
from .spec import ModelSpec
from .vision import ImageExplanation, explain_image

__version__ = "0.1.0"

__all__ = ["AttnLRP", "Evaluation", "Explanation", "GenerationExplanation", "HeadMask", "ImageExplanation", "Inputs", "METHODS", "MaskLRP", "Model", "ModelSpec",
           "Sentence", "Stream", "attnlrp", "attribute_generation", "blas_info", "corpus", "data", "default_model_dir",
           "default_head_mask", "evaluate", "explain_all", "explain_image", "from_arrays", "from_spacy", "get_num_threads", "head_statistics", "heatmap", "kernels",
           "load", "load_default", "metrics", "random_head_mask", "read_conllu", "set_num_threads", "__version__"]
