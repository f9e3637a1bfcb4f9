"""One table describing every entry point of ``masklrp.kernels`` (csrc/module.c).

test_module.py and test_property.py derive all their input-policy tests from
``CASES``: a new kernel, or a new way to call one, is one more row here.

A row (:class:`Case`) says how to build valid arguments for any leading
dimensions and sizes, which positional arguments are arrays (and which ndims
they accept), which arguments are option strings or scalars (with valid and
invalid values), how shapes can be made to disagree, and the documented output
shapes. The policy itself is the docstring of ``masklrp/kernels.py``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from masklrp import kernels

Args = dict  # argument name -> value, positional ones first, in call order

DEFAULT_LEAD = (2, 3)
DEFAULT_SIZES = (3, 4, 5)

# Bad values shared by every option of a kind. An option string that is not a
# str is a TypeError; a float option that is not a real number is a TypeError.
NON_STR_OPTIONS = (1, None, b"lrp", 1.5)
NON_FLOAT_SCALARS = ("1e-5", None, [1e-5])


@dataclass(frozen=True)
class ArraySpec:
    """A positional array argument.

    ``lead_min`` is None when the argument's ndim is fixed by the other
    arguments (a weight, or ``g`` that must match ``x``); otherwise the argument
    takes any number of leading dimensions and needs at least ``lead_min`` dims.
    """

    name: str
    lead_min: int | None = None
    optional: bool = False  # None is accepted in its place


@dataclass(frozen=True)
class Option:
    """A non-array argument: an option string or a float scalar."""

    name: str
    valid: tuple  # values that work with the row's arrays
    invalid: tuple  # right type, rejected value -> ValueError
    wrong_type: tuple  # -> TypeError


@dataclass(frozen=True)
class Mismatch:
    """Arguments whose shapes disagree; the message must name one of ``names``."""

    label: str
    mutate: Callable[[Args, np.random.Generator], Args]
    names: tuple


@dataclass(frozen=True, repr=False)
class Case:
    id: str
    fn_name: str
    make: Callable[[np.random.Generator, tuple, tuple], Args]
    positional: tuple  # names passed positionally, in order
    arrays: tuple  # ArraySpec for each positional array argument
    out_shapes: Callable[[Args], tuple]  # documented shape of each returned array
    options: tuple = ()
    mismatches: tuple = ()
    allow_neg_inf: tuple = ()  # array names where -inf is valid

    @property
    def fn(self) -> Callable:
        return getattr(kernels, self.fn_name)

    @property
    def array_names(self) -> tuple:
        return tuple(a.name for a in self.arrays)

    def spec(self, name: str) -> ArraySpec:
        return next(a for a in self.arrays if a.name == name)

    def args(self, seed: int = 0, lead: tuple = DEFAULT_LEAD, sizes: tuple = DEFAULT_SIZES) -> Args:
        return self.make(np.random.default_rng(seed), tuple(lead), tuple(sizes))

    def call(self, args: Args) -> Any:
        pos = [args[n] for n in self.positional]
        kw = {k: v for k, v in args.items() if k not in self.positional}
        return self.fn(*pos, **kw)

    def __repr__(self) -> str:  # keeps pytest ids and failure messages short
        return f"Case({self.id})"

    def _repr_pretty_(self, printer, cycle) -> None:  # the same for hypothesis' reports
        printer.text(repr(self))


# ----------------------------------------------------------------------------
# helpers


def rand(rng: np.random.Generator, shape, lo: float = -2.0, hi: float = 2.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def positive(rng: np.random.Generator, shape) -> np.ndarray:
    return rand(rng, shape, 0.5, 2.0)


def replace(args: Args, **changes) -> Args:
    out = dict(args)
    out.update(changes)
    return out


def as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def name_pattern(*names: str) -> str:
    """Regex that finds any of ``names`` used as an argument name in a message.

    ``a`` is also the English article, so for it the usual article contexts
    ("must be a float32 array", "got a list") do not count.
    """
    parts = []
    for n in names:
        p = rf"(?<!\w)(?<!\w'){re.escape(n)}(?!\w)"
        if n == "a":
            articles = ("be", "is", "not", "got", "expected", "with", "of", "for",
                        "need", "needs", "requires", "takes", "and", "or", "in", "to",
                        "like", "pass", "passed", "received", "from", "Expected", "Got")
            p = "".join(rf"(?<!\b{w} )" for w in articles) + p
        parts.append(p)
    return "|".join(parts)


# ----------------------------------------------------------------------------
# rows


def _linear_fwd(layout: str, with_bias: bool):
    def make(rng, lead, sizes):
        n_in, n_out, _ = sizes
        w_shape = (n_out, n_in) if layout == "out_in" else (n_in, n_out)
        return {
            "x": rand(rng, lead + (n_in,)),
            "weight": rand(rng, w_shape),
            "bias": rand(rng, (n_out,)) if with_bias else None,
            "weight_layout": layout,
        }

    def out(a):
        n_out = a["weight"].shape[0 if layout == "out_in" else 1]
        return (a["x"].shape[:-1] + (n_out,),)

    w_in_axis = 1 if layout == "out_in" else 0
    mism = [
        Mismatch("x_last_dim_vs_weight",
                 lambda a, r: replace(a, x=rand(r, a["x"].shape[:-1] + (a["x"].shape[-1] + 1,))),
                 ("x", "weight")),
        Mismatch("weight_in_dim_vs_x",
                 lambda a, r: replace(a, weight=rand(r, tuple(
                     d + 2 if i == w_in_axis else d for i, d in enumerate(a["weight"].shape)))),
                 ("x", "weight")),
    ]
    if with_bias:
        mism.append(Mismatch("bias_len_vs_weight",
                             lambda a, r: replace(a, bias=rand(r, (a["bias"].shape[0] + 1,))),
                             ("bias", "weight")))
    other = "in_out" if layout == "out_in" else "out_in"
    return Case(
        id=f"linear_forward[{layout}{'' if with_bias else ',no_bias'}]",
        fn_name="linear_forward",
        make=make,
        positional=("x", "weight", "bias"),
        arrays=(ArraySpec("x", lead_min=1), ArraySpec("weight"), ArraySpec("bias", optional=True)),
        out_shapes=out,
        options=(Option("weight_layout", (layout,), ("", "OUT_IN", "out-in", "inout", other.upper()),
                        NON_STR_OPTIONS),),
        mismatches=tuple(mism),
    )


def _linear_bwd(layout: str):
    def make(rng, lead, sizes):
        n_in, n_out, _ = sizes
        w_shape = (n_out, n_in) if layout == "out_in" else (n_in, n_out)
        return {"g": rand(rng, lead + (n_out,)), "weight": rand(rng, w_shape), "weight_layout": layout}

    def out(a):
        n_in = a["weight"].shape[1 if layout == "out_in" else 0]
        return (a["g"].shape[:-1] + (n_in,),)

    return Case(
        id=f"linear_backward[{layout}]",
        fn_name="linear_backward",
        make=make,
        positional=("g", "weight"),
        arrays=(ArraySpec("g", lead_min=1), ArraySpec("weight")),
        out_shapes=out,
        options=(Option("weight_layout", (layout,), ("", "OUT_IN", "out-in"), NON_STR_OPTIONS),),
        mismatches=(
            Mismatch("g_last_dim_vs_weight",
                     lambda a, r: replace(a, g=rand(r, a["g"].shape[:-1] + (a["g"].shape[-1] + 1,))),
                     ("g", "weight")),
        ),
    )


def _softmax_probs(rng, shape):
    z = rng.standard_normal(shape)
    if z.size == 0:
        return z.astype(np.float32)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


def _same_size_other_shape(shape: tuple) -> tuple:
    """A shape with the same number of elements but different dims (or ndim)."""
    if len(shape) >= 2 and shape[0] != shape[-1]:
        return (shape[-1],) + shape[1:-1] + (shape[0],)
    return (int(np.prod(shape)),) if len(shape) >= 2 else (1, shape[0])


def _bump_first(shape: tuple) -> tuple:
    return (shape[0] + 1,) + shape[1:]


def _bump_last(shape: tuple) -> tuple:
    return shape[:-1] + (shape[-1] + 1,)


def _pair_mismatches(fixed: str, moving: str) -> tuple:
    """``moving`` must have exactly the shape of ``fixed``."""
    return (
        Mismatch(f"{moving}_last_dim_vs_{fixed}",
                 lambda a, r: replace(a, **{moving: rand(r, _bump_last(a[moving].shape))}),
                 (moving, fixed)),
        Mismatch(f"{moving}_lead_dim_vs_{fixed}",
                 lambda a, r: replace(a, **{moving: rand(r, _bump_first(a[moving].shape))}),
                 (moving, fixed)),
        Mismatch(f"{moving}_same_size_other_shape_vs_{fixed}",
                 lambda a, r: replace(a, **{moving: rand(r, _same_size_other_shape(a[moving].shape))}),
                 (moving, fixed)),
    )


def _matmul_make(transpose_b: bool, backward: bool, rule: str | None = None):
    def make(rng, lead, sizes):
        m, k, n = sizes
        args = {}
        if backward:
            args["g"] = rand(rng, lead + (m, n))
        args["a"] = rand(rng, lead + (m, k))
        args["b"] = rand(rng, lead + ((n, k) if transpose_b else (k, n)))
        args["transpose_b"] = transpose_b
        args["scale"] = 0.5
        if backward:
            args["rule"] = rule
        return args

    return make


def _matmul_fwd(transpose_b: bool):
    def out(a):
        n = a["b"].shape[-2] if transpose_b else a["b"].shape[-1]
        return (a["a"].shape[:-1] + (n,),)

    k_axis_b = -1 if transpose_b else -2
    return Case(
        id=f"matmul_forward[{'transpose_b' if transpose_b else 'plain'}]",
        fn_name="matmul_forward",
        make=_matmul_make(transpose_b, backward=False),
        positional=("a", "b"),
        arrays=(ArraySpec("a"), ArraySpec("b")),
        out_shapes=out,
        options=(_SCALE,),
        mismatches=(
            Mismatch("a_inner_dim_vs_b",
                     lambda a, r: replace(a, a=rand(r, _bump_last(a["a"].shape))), ("a", "b")),
            Mismatch("b_inner_dim_vs_a",
                     lambda a, r: replace(a, b=rand(r, tuple(
                         d + 1 if i == a["b"].ndim + k_axis_b else d
                         for i, d in enumerate(a["b"].shape)))), ("a", "b")),
            Mismatch("b_lead_dims_vs_a",
                     lambda a, r: replace(a, b=rand(r, _bump_first(a["b"].shape))), ("a", "b")),
            Mismatch("b_fewer_lead_dims_no_broadcast",
                     lambda a, r: replace(a, b=np.ascontiguousarray(a["b"][0])), ("a", "b")),
        ),
    )


def _matmul_bwd(transpose_b: bool):
    def out(a):
        return (a["a"].shape, a["b"].shape)

    return Case(
        id=f"matmul_backward[{'transpose_b' if transpose_b else 'plain'}]",
        fn_name="matmul_backward",
        make=_matmul_make(transpose_b, backward=True, rule="uniform"),
        positional=("g", "a", "b"),
        arrays=(ArraySpec("g"), ArraySpec("a"), ArraySpec("b")),
        out_shapes=out,
        options=(_PRODUCT_RULE, _SCALE),
        mismatches=(
            Mismatch("g_rows_vs_a",
                     lambda a, r: replace(a, g=rand(r, a["g"].shape[:-2] + (a["g"].shape[-2] + 1,
                                                                             a["g"].shape[-1]))),
                     ("g", "a")),
            Mismatch("g_cols_vs_b",
                     lambda a, r: replace(a, g=rand(r, _bump_last(a["g"].shape))), ("g", "b")),
            Mismatch("a_inner_dim_vs_b",
                     lambda a, r: replace(a, a=rand(r, _bump_last(a["a"].shape))), ("a", "b")),
            Mismatch("g_lead_dims_vs_a",
                     lambda a, r: replace(a, g=rand(r, _bump_first(a["g"].shape))), ("g", "a", "b")),
            Mismatch("b_lead_dims_vs_a",
                     lambda a, r: replace(a, b=rand(r, _bump_first(a["b"].shape))), ("a", "b")),
        ),
    )


_PRODUCT_RULE = Option("rule", ("uniform", "cp", "gradient"),
                       ("", "lrp", "Uniform", "CP", "grad", "uniform "), NON_STR_OPTIONS)
_UNARY_RULE = Option("rule", ("lrp", "gradient"),
                     ("", "LRP", "uniform", "cp", "grad", "lrp "), NON_STR_OPTIONS)
_KIND = Option("kind", kernels.ACTIVATIONS,
               ("", "GELU", "gelu_new", "softmax", "sigmoid", "relu "), NON_STR_OPTIONS)
_SCALE = Option("scale", (1.0, 0.125, -2.0, 0.0),
                (math.nan, math.inf, -math.inf), NON_FLOAT_SCALARS)
_EPS = Option("eps", (1e-5, 1e-12, 0.5),
              (0.0, -0.0, -1e-5, math.nan, math.inf, -math.inf), NON_FLOAT_SCALARS)


def _product(backward: bool):
    def make(rng, lead, sizes):
        shape = lead + (sizes[0],)
        args = {}
        if backward:
            args["g"] = rand(rng, shape)
        args["a"] = rand(rng, shape)
        args["b"] = rand(rng, shape)
        if backward:
            args["rule"] = "uniform"
        return args

    if backward:
        return Case(
            id="product_backward", fn_name="product_backward", make=make,
            positional=("g", "a", "b"),
            arrays=(ArraySpec("g"), ArraySpec("a"), ArraySpec("b")),
            out_shapes=lambda a: (a["a"].shape, a["b"].shape),
            options=(_PRODUCT_RULE,),
            mismatches=_pair_mismatches("a", "b") + _pair_mismatches("a", "g"),
        )
    return Case(
        id="product_forward", fn_name="product_forward", make=make,
        positional=("a", "b"),
        arrays=(ArraySpec("a"), ArraySpec("b")),
        out_shapes=lambda a: (a["a"].shape,),
        mismatches=_pair_mismatches("a", "b"),
    )


def _activation(backward: bool):
    def make(rng, lead, sizes):
        shape = lead + (sizes[0],)
        args = {}
        if backward:
            args["g"] = rand(rng, shape)
        x = rand(rng, shape, -4.0, 4.0)
        if x.size:
            x.flat[0] = 0.0  # the f(x)/x limit must be taken, not divided
        args["x"] = x
        args["kind"] = "gelu"
        if backward:
            args["rule"] = "lrp"
        return args

    if backward:
        return Case(
            id="activation_backward", fn_name="activation_backward", make=make,
            positional=("g", "x", "kind"),
            arrays=(ArraySpec("g"), ArraySpec("x")),
            out_shapes=lambda a: (a["x"].shape,),
            options=(_KIND, _UNARY_RULE),
            mismatches=_pair_mismatches("x", "g"),
        )
    return Case(
        id="activation_forward", fn_name="activation_forward", make=make,
        positional=("x", "kind"),
        arrays=(ArraySpec("x", lead_min=0),),
        out_shapes=lambda a: (a["x"].shape,),
        options=(_KIND,),
    )


def _layernorm_fwd(with_bias: bool):
    def make(rng, lead, sizes):
        c = sizes[0]
        return {
            "x": rand(rng, lead + (c,)),
            "weight": positive(rng, (c,)),
            "bias": rand(rng, (c,)) if with_bias else None,
            "eps": 1e-5,
        }

    mism = [Mismatch("weight_len_vs_x", lambda a, r: replace(a, weight=positive(r, (a["x"].shape[-1] + 1,))),
                     ("weight", "x"))]
    if with_bias:
        mism.append(Mismatch("bias_len_vs_x", lambda a, r: replace(a, bias=rand(r, (a["x"].shape[-1] + 1,))),
                             ("bias", "x")))
    return Case(
        id=f"layernorm_forward[{'bias' if with_bias else 'no_bias'}]",
        fn_name="layernorm_forward", make=make,
        positional=("x", "weight", "bias", "eps"),
        arrays=(ArraySpec("x", lead_min=1), ArraySpec("weight"), ArraySpec("bias", optional=True)),
        out_shapes=lambda a: (a["x"].shape, a["x"].shape[:-1], a["x"].shape[:-1]),
        options=(_EPS,),
        mismatches=tuple(mism),
    )


def _stat_mismatches(stat: str) -> tuple:
    """A statistic must have shape x.shape[:-1] exactly (not merely its size)."""
    return (
        Mismatch(f"{stat}_lead_dim_vs_x",
                 lambda a, r: replace(a, **{stat: positive(r, _bump_first(a[stat].shape))}), (stat, "x")),
        Mismatch(f"{stat}_flattened_vs_x",
                 lambda a, r: replace(a, **{stat: positive(r, (a[stat].size,))}), (stat, "x")),
        Mismatch(f"{stat}_keepdims_vs_x",
                 lambda a, r: replace(a, **{stat: positive(r, a[stat].shape + (1,))}), (stat, "x")),
    )


def _layernorm_bwd():
    def make(rng, lead, sizes):
        c = sizes[0]
        return {
            "g": rand(rng, lead + (c,)),
            "x": rand(rng, lead + (c,)),
            "weight": positive(rng, (c,)),
            "mean": rand(rng, lead, -0.5, 0.5),
            "rstd": positive(rng, lead),
            "rule": "lrp",
        }

    return Case(
        id="layernorm_backward", fn_name="layernorm_backward", make=make,
        positional=("g", "x", "weight", "mean", "rstd"),
        arrays=(ArraySpec("g"), ArraySpec("x"), ArraySpec("weight"), ArraySpec("mean"), ArraySpec("rstd")),
        out_shapes=lambda a: (a["x"].shape,),
        options=(_UNARY_RULE,),
        mismatches=_pair_mismatches("x", "g")
        + (Mismatch("weight_len_vs_x", lambda a, r: replace(a, weight=positive(r, (a["x"].shape[-1] + 1,))),
                    ("weight", "x")),)
        + _stat_mismatches("mean") + _stat_mismatches("rstd"),
    )


def _rmsnorm(backward: bool):
    def make(rng, lead, sizes):
        c = sizes[0]
        args = {}
        if backward:
            args["g"] = rand(rng, lead + (c,))
        args["x"] = rand(rng, lead + (c,))
        args["weight"] = positive(rng, (c,))
        if backward:
            args["rstd"] = positive(rng, lead)
            args["rule"] = "lrp"
        else:
            args["eps"] = 1e-6
        return args

    weight_mismatch = Mismatch("weight_len_vs_x",
                               lambda a, r: replace(a, weight=positive(r, (a["x"].shape[-1] + 1,))),
                               ("weight", "x"))
    if backward:
        return Case(
            id="rmsnorm_backward", fn_name="rmsnorm_backward", make=make,
            positional=("g", "x", "weight", "rstd"),
            arrays=(ArraySpec("g"), ArraySpec("x"), ArraySpec("weight"), ArraySpec("rstd")),
            out_shapes=lambda a: (a["x"].shape,),
            options=(_UNARY_RULE,),
            mismatches=_pair_mismatches("x", "g") + (weight_mismatch,) + _stat_mismatches("rstd"),
        )
    return Case(
        id="rmsnorm_forward", fn_name="rmsnorm_forward", make=make,
        positional=("x", "weight", "eps"),
        arrays=(ArraySpec("x", lead_min=1), ArraySpec("weight")),
        out_shapes=lambda a: (a["x"].shape, a["x"].shape[:-1]),
        options=(_EPS,),
        mismatches=(weight_mismatch,),
    )


def _rope(backward: bool):
    first = "g" if backward else "x"

    def make(rng, lead, sizes):
        t, half = sizes[0], sizes[1]
        d = 2 * half
        theta = rng.uniform(0, 2 * np.pi, size=(t, d))
        return {
            first: rand(rng, lead + (t, d)),
            "cos": np.cos(theta).astype(np.float32),
            "sin": np.sin(theta).astype(np.float32),
        }

    def odd_d(a, r):
        t, d = a["cos"].shape
        theta = r.uniform(0, 2 * np.pi, size=(t, d - 1))
        return replace(a, **{first: rand(r, a[first].shape[:-1] + (d - 1,)),
                             "cos": np.cos(theta).astype(np.float32),
                             "sin": np.sin(theta).astype(np.float32)})

    return Case(
        id="rope_backward" if backward else "rope_forward",
        fn_name="rope_backward" if backward else "rope_forward",
        make=make,
        positional=(first, "cos", "sin"),
        arrays=(ArraySpec(first, lead_min=2), ArraySpec("cos"), ArraySpec("sin")),
        out_shapes=lambda a: (a[first].shape,),
        mismatches=(
            Mismatch("cos_rows_vs_T", lambda a, r: replace(a, cos=rand(r, _bump_first(a["cos"].shape))),
                     ("cos", first)),
            Mismatch("sin_cols_vs_D", lambda a, r: replace(a, sin=rand(r, a["sin"].shape[:-1]
                                                                        + (a["sin"].shape[-1] + 2,))),
                     ("sin", "cos", first)),
            Mismatch(f"{first}_D_vs_cos", lambda a, r: replace(a, **{first: rand(r, a[first].shape[:-1]
                                                                                 + (a[first].shape[-1] + 2,))}),
                     (first, "cos", "sin")),
            Mismatch("odd_D", odd_d, (first, "cos", "sin")),
        ),
    )


def _softmax(backward: bool):
    if backward:
        def make(rng, lead, sizes):
            shape = lead + (sizes[0],)
            return {"g": rand(rng, shape), "s": _softmax_probs(rng, shape)}

        return Case(
            id="softmax_backward", fn_name="softmax_backward", make=make,
            positional=("g", "s"),
            arrays=(ArraySpec("g"), ArraySpec("s")),
            out_shapes=lambda a: (a["g"].shape,),
            mismatches=_pair_mismatches("s", "g"),
        )

    def make(rng, lead, sizes):
        return {"x": rand(rng, lead + (sizes[0],), -5.0, 5.0)}

    return Case(
        id="softmax_forward", fn_name="softmax_forward", make=make,
        positional=("x",),
        arrays=(ArraySpec("x", lead_min=1),),
        out_shapes=lambda a: (a["x"].shape,),
        allow_neg_inf=("x",),
    )


def _relevance():
    def make(rng, lead, sizes):
        shape = lead + (sizes[0],)
        return {"x": rand(rng, shape), "g": rand(rng, shape)}

    return Case(
        id="relevance", fn_name="relevance", make=make,
        positional=("x", "g"),
        arrays=(ArraySpec("x"), ArraySpec("g")),
        out_shapes=lambda a: (a["x"].shape,),
        mismatches=_pair_mismatches("x", "g"),
    )


CASES: tuple[Case, ...] = (
    _linear_fwd("out_in", with_bias=True),
    _linear_fwd("in_out", with_bias=True),
    _linear_fwd("out_in", with_bias=False),
    _linear_bwd("out_in"),
    _linear_bwd("in_out"),
    _softmax(backward=False),
    _softmax(backward=True),
    _matmul_fwd(transpose_b=False),
    _matmul_fwd(transpose_b=True),
    _matmul_bwd(transpose_b=False),
    _matmul_bwd(transpose_b=True),
    _product(backward=False),
    _product(backward=True),
    _activation(backward=False),
    _activation(backward=True),
    _layernorm_fwd(with_bias=True),
    _layernorm_fwd(with_bias=False),
    _layernorm_bwd(),
    _rmsnorm(backward=False),
    _rmsnorm(backward=True),
    _rope(backward=False),
    _rope(backward=True),
    _relevance(),
)

CASE_IDS = [c.id for c in CASES]

# Every public float32 kernel has at least one row: a kernel added to kernels.__all__
# without a row here fails test_module.test_table_covers_every_kernel. head_counts
# takes flags and arcs, not float32 operands: test_headstats.py and
# test_engine_inputs.py cover it.
KERNEL_NAMES = tuple(name for name in kernels.__all__ if name != "head_counts")


# ----------------------------------------------------------------------------
# layouts: the same float32 values, stored so that the C glue must copy them


def _strided(arr: np.ndarray) -> np.ndarray:
    """A view with a step of 2 along the last axis (and 3 along the first)."""
    if arr.ndim == 0:
        return arr
    big = np.zeros((max(arr.shape[0] * 3 - 2, 0),) + arr.shape[1:-1] + (arr.shape[-1] * 2,)
                   if arr.ndim > 1 else (arr.shape[0] * 2,), np.float32)
    view = big[::3, ..., ::2] if arr.ndim > 1 else big[::2]
    view[...] = arr
    return view


def _reversed(arr: np.ndarray) -> np.ndarray:
    """A view with a negative stride along the first axis."""
    if arr.ndim == 0:
        return arr
    base = np.ascontiguousarray(arr[::-1])
    return base[::-1]


def _fortran(arr: np.ndarray) -> np.ndarray:
    """A transposed copy made F-order (so a C-contiguous kernel must copy it)."""
    if arr.ndim == 0:  # asfortranarray would make it 1-D
        return arr.copy()
    return np.asfortranarray(arr)


def _transposed_view(arr: np.ndarray) -> np.ndarray:
    """The transpose of a C-contiguous array of the reversed shape."""
    if arr.ndim == 0:  # ascontiguousarray would make it 1-D
        return arr.copy()
    return np.ascontiguousarray(arr.T).T


def _misaligned(arr: np.ndarray) -> np.ndarray:
    """A float32 view at byte offset 1 of a uint8 buffer."""
    buf = np.zeros(arr.size * 4 + 1, np.uint8)
    view = buf[1:].view(np.float32).reshape(arr.shape)
    view[...] = arr
    return view


def _byteswapped(arr: np.ndarray) -> np.ndarray:
    """Big-endian float32 ('>f4') holding the same values."""
    return arr.astype(np.dtype(np.float32).newbyteorder(">" if np.little_endian else "<"))


def _readonly(arr: np.ndarray) -> np.ndarray:
    out = arr.copy()
    out.flags.writeable = False
    return out


def _broadcast(arr: np.ndarray) -> np.ndarray:
    """A zero-stride view repeating the first slice (changes the values)."""
    if arr.ndim == 0:
        return arr
    return np.broadcast_to(arr[:1], arr.shape)


def _same_shape(layout: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def wrapped(arr: np.ndarray) -> np.ndarray:
        out = layout(arr)
        assert out.shape == arr.shape and out.dtype.kind == "f" and out.itemsize == 4, (
            f"test bug: layout {layout.__name__} turned {arr.shape} into {out.shape} {out.dtype}")
        return out

    return wrapped


LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {name: _same_shape(fn) for name, fn in {
    "strided": _strided,
    "negative_stride": _reversed,
    "fortran": _fortran,
    "transposed_view": _transposed_view,
    "misaligned": _misaligned,
    "byteswapped": _byteswapped,
    "readonly": _readonly,
    "broadcast": _broadcast,
}.items()}


def layout_is_real(name: str, arr: np.ndarray) -> bool:
    """Whether ``LAYOUTS[name](arr)`` really has the property it is named for."""
    if name in ("strided", "negative_stride", "broadcast"):
        return arr.ndim > 0 and not arr.flags.c_contiguous
    if name in ("fortran", "transposed_view"):
        return arr.ndim > 1 and not arr.flags.c_contiguous and arr.flags.f_contiguous
    if name == "misaligned":
        return not arr.flags.aligned
    if name == "byteswapped":
        return not arr.dtype.isnative
    if name == "readonly":
        return not arr.flags.writeable
    raise KeyError(name)


def contiguous(args: Args) -> Args:
    """The same arguments with every array native-endian, aligned, C-contiguous, fresh."""
    return {k: (np.array(v, dtype=np.float32, order="C", copy=True) if isinstance(v, np.ndarray) else v)
            for k, v in args.items()}
