"""The entry-point contract of csrc/module.c: what every kernel accepts and refuses.

The policy is the docstring of ``masklrp/kernels.py``; the kernels and how to
call them are the table in ``tests/kernel_cases.py``. Every test here is
parametrized over that table, so each rule is checked for every entry point and
every array argument. Numerical correctness is tested elsewhere (the oracles);
here a result only has to be the documented shape, finite, and exactly what the
contiguous call returns.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from kernel_cases import (
    CASE_IDS,
    CASES,
    DEFAULT_LEAD,
    KERNEL_NAMES,
    LAYOUTS,
    as_tuple,
    contiguous,
    layout_is_real,
    name_pattern,
    replace,
)

from masklrp import _core, kernels


# ----------------------------------------------------------------------------
# helpers


def _param(case, *rest, label=""):
    return pytest.param(case, *rest, id="-".join([case.id, *[str(r) for r in rest if isinstance(r, str)],
                                                    label]).rstrip("-"))


def _arrays(args) -> dict:
    return {k: v for k, v in args.items() if isinstance(v, np.ndarray)}


def _snapshot(args) -> dict:
    return {k: np.array(v, copy=True) for k, v in _arrays(args).items()}


def check_unchanged(before: dict, args, where: str) -> None:
    for name, old in before.items():
        np.testing.assert_array_equal(args[name], old, err_msg=f"{where}: the call wrote into input {name!r}")


def check_result(case, args, result, where: str) -> tuple:
    """The documented return: one array or a tuple, of the documented shapes, float32, finite."""
    want = case.out_shapes(args)
    if len(want) == 1:
        assert isinstance(result, np.ndarray), f"{where}: expected one ndarray, got {type(result).__name__}"
    else:
        assert isinstance(result, tuple) and len(result) == len(want), (
            f"{where}: expected a tuple of {len(want)} arrays, got {type(result).__name__}"
            f" of length {len(result) if isinstance(result, tuple) else '-'}")
    outs = as_tuple(result)
    for i, (out, shape) in enumerate(zip(outs, want)):
        assert isinstance(out, np.ndarray), f"{where}: output {i} is {type(out).__name__}"
        assert out.dtype == np.float32 and out.dtype.isnative, f"{where}: output {i} dtype {out.dtype}"
        assert out.shape == tuple(shape), f"{where}: output {i} shape {out.shape}, documented {tuple(shape)}"
        bad = ~np.isfinite(out)
        assert not bad.any(), (f"{where}: output {i} has {int(bad.sum())} non-finite values, first at "
                               f"{np.unravel_index(int(np.argmax(bad)), out.shape)}")
    return outs


def check_same(got: tuple, want: tuple, where: str) -> None:
    """Bitwise equality, reporting the largest difference and where it is."""
    assert len(got) == len(want), where
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{where}: output {i} shape {g.shape} != {w.shape}"
        if not np.array_equal(g, w):
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
            at = np.unravel_index(int(np.argmax(diff)), diff.shape)
            pytest.fail(f"{where}: output {i} differs from the contiguous call in {int((g != w).sum())} "
                        f"places; max |diff| {diff[at]:.3g} at {at} ({g[at]!r} vs {w[at]!r})")


def _array_params(*extra_axes, where=lambda case, spec: True):
    """(case, array name, *extra) for every row and every array argument of it."""
    out = []
    for case in CASES:
        defaults = case.args()
        for spec in case.arrays:
            if defaults[spec.name] is None or not where(case, spec):  # a row that passes None
                continue
            if not extra_axes:
                out.append(_param(case, spec.name))
                continue
            for extra in extra_axes[0](case, spec):
                out.append(_param(case, spec.name, *extra))
    return out


# ----------------------------------------------------------------------------
# the table itself


def test_table_covers_every_kernel():
    covered = {c.fn_name for c in CASES}
    assert covered == set(KERNEL_NAMES), (
        f"kernels without a row in kernel_cases.CASES: {sorted(set(KERNEL_NAMES) - covered)}; "
        f"rows for unknown kernels: {sorted(covered - set(KERNEL_NAMES))}")
    assert len(set(CASE_IDS)) == len(CASE_IDS), "duplicate row ids"


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kernels_come_straight_from_the_c_core(name):
    # kernels.py promises no Python between the caller and the C loop.
    fn = getattr(kernels, name)
    assert type(fn).__name__ == "builtin_function_or_method", f"{name} is {type(fn)}"
    assert fn is getattr(_core, name)


# ----------------------------------------------------------------------------
# valid calls


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_valid_call_returns_documented_shapes_and_leaves_inputs_alone(case):
    args = case.args()
    before = _snapshot(args)
    result = case.call(args)
    outs = check_result(case, args, result, case.id)
    check_unchanged(before, args, case.id)
    for i, out in enumerate(outs):
        for name, arr in _arrays(args).items():
            assert not np.shares_memory(out, arr), f"{case.id}: output {i} shares memory with input {name!r}"
        for j in range(i):
            assert not np.shares_memory(out, outs[j]), f"{case.id}: outputs {j} and {i} share memory"
    check_same(as_tuple(case.call(args)), outs, f"{case.id}: second identical call")


@pytest.mark.parametrize("lead", [(), (1,), DEFAULT_LEAD, (2, 1, 3)], ids=lambda l: f"lead{l}")
@pytest.mark.parametrize("sizes", [(1, 1, 1), (17, 33, 9)], ids=lambda s: f"sizes{s}")
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_any_leading_dims_and_sizes(case, lead, sizes):
    """``...`` is any number of leading dimensions, including none; sizes of 1 and odd sizes work."""
    args = case.args(seed=1, lead=lead, sizes=sizes)
    before = _snapshot(args)
    check_result(case, args, case.call(args), f"{case.id} lead={lead} sizes={sizes}")
    check_unchanged(before, args, case.id)


# ----------------------------------------------------------------------------
# TypeError: not a float32 ndarray


@pytest.mark.parametrize(
    "case,arg,dtype",
    _array_params(lambda case, spec: [(d,) for d in ("float64", "float16", "int32", "bool", "object")]),
)
def test_wrong_dtype_is_a_type_error_naming_the_argument(case, arg, dtype):
    args = case.args()
    args[arg] = args[arg].astype(dtype)
    with pytest.raises(TypeError, match=name_pattern(arg)):
        case.call(args)


_NON_ARRAYS = {
    "list": lambda a: a.tolist(),
    "tuple_of_floats": lambda a: tuple(a.ravel().tolist()),
    "python_float": lambda a: 1.0,
    "numpy_scalar": lambda a: np.float32(1.0),
    "none": lambda a: None,
    "memoryview": lambda a: memoryview(np.ascontiguousarray(a)),
}


@pytest.mark.parametrize(
    "case,arg,kind",
    _array_params(lambda case, spec: [(k,) for k in _NON_ARRAYS if not (k == "none" and spec.optional)]),
)
def test_non_array_is_a_type_error_naming_the_argument(case, arg, kind):
    args = case.args()
    args[arg] = _NON_ARRAYS[kind](args[arg])
    with pytest.raises(TypeError, match=name_pattern(arg)):
        case.call(args)


@pytest.mark.parametrize("case,arg", _array_params())
def test_torch_tensor_is_a_type_error_naming_the_argument(case, arg):
    torch = pytest.importorskip("torch", reason="torch is only needed to build the tensor this test passes")
    args = case.args()
    args[arg] = torch.from_numpy(args[arg])
    with pytest.raises(TypeError, match=name_pattern(arg)):
        case.call(args)


@pytest.mark.parametrize("case,arg", _array_params(where=lambda case, spec: spec.optional))
def test_optional_array_accepts_none(case, arg):
    args = replace(case.args(), **{arg: None})
    check_result(case, args, case.call(args), f"{case.id} {arg}=None")


# ----------------------------------------------------------------------------
# ValueError: wrong ndim, empty, mismatched, non-finite


def _wrong_ndims(case, spec):
    ndim = case.args()[spec.name].ndim
    if spec.lead_min is not None:  # any leading dims: only too few is wrong
        return [(spec.lead_min - 1,)] if spec.lead_min >= 1 else []
    return [(n,) for n in (ndim - 1, ndim + 1) if n >= 0]


def _with_ndim(arr: np.ndarray, ndim: int) -> np.ndarray:
    if ndim > arr.ndim:
        return np.ascontiguousarray(arr[(np.newaxis,) * (ndim - arr.ndim)])
    return arr[(0,) * (arr.ndim - ndim) + (Ellipsis,)].copy()


@pytest.mark.parametrize("case,arg,ndim", [
    pytest.param(*p.values, id=f"{p.id}-ndim{p.values[2]}")
    for p in _array_params(lambda case, spec: _wrong_ndims(case, spec))
])
def test_wrong_ndim_is_a_value_error_naming_the_argument(case, arg, ndim):
    args = case.args()
    args[arg] = _with_ndim(args[arg], ndim)
    assert args[arg].ndim == ndim
    with pytest.raises(ValueError, match=name_pattern(arg)):
        case.call(args)


def _empty_axes(case, spec):
    ndim = case.args()[spec.name].ndim
    return [(f"axis{ax}",) for ax in sorted({0, ndim - 1})] if ndim else []


@pytest.mark.parametrize("case,arg,axis", _array_params(_empty_axes))
def test_empty_array_is_a_value_error_naming_the_argument(case, arg, axis):
    args = case.args()
    shape = list(args[arg].shape)
    shape[int(axis[4:])] = 0
    args[arg] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=name_pattern(arg)):
        case.call(args)


@pytest.mark.parametrize("where", ["lead", "size"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_consistently_empty_call_is_a_value_error(case, where):
    """Zero-size but mutually consistent shapes (an empty batch, a zero width) are refused too."""
    if where == "lead":
        args = case.args(lead=(0,) + DEFAULT_LEAD[1:])
    else:
        args = case.args(sizes=(0, 0, 0))
    assert any(a.size == 0 for a in _arrays(args).values())
    with pytest.raises(ValueError, match=name_pattern(*case.array_names)):
        case.call(args)


@pytest.mark.parametrize("case,mismatch", [
    pytest.param(case, m, id=f"{case.id}-{m.label}") for case in CASES for m in case.mismatches
])
def test_mismatched_shapes_are_a_value_error_naming_an_argument(case, mismatch):
    args = mismatch.mutate(case.args(), np.random.default_rng(7))
    with pytest.raises(ValueError, match=name_pattern(*mismatch.names)):
        case.call(args)


_NONFINITE = {"nan": math.nan, "+inf": math.inf, "-inf": -math.inf}


@pytest.mark.parametrize("case,arg,value,pos", _array_params(
    lambda case, spec: [(v, p) for v in _NONFINITE for p in ("first", "last")]))
def test_non_finite_input(case, arg, value, pos):
    """NaN and ±Inf are a ValueError naming the argument, except -inf in softmax_forward's x."""
    args = case.args()
    arr = args[arg].copy()
    arr.flat[0 if pos == "first" else -1] = _NONFINITE[value]
    args[arg] = arr
    if value == "-inf" and arg in case.allow_neg_inf:
        outs = check_result(case, args, case.call(args), f"{case.id} {arg} with -inf")
        assert outs[0].flat[0 if pos == "first" else -1] == 0.0, "a -inf score must get probability exactly 0"
        return
    with pytest.raises(ValueError, match=name_pattern(arg)):
        case.call(args)


@pytest.mark.parametrize("layout", ["strided", "misaligned", "byteswapped", "fortran"])
@pytest.mark.parametrize("case,arg", _array_params())
def test_nan_is_found_in_a_copied_input(case, arg, layout):
    """The finiteness check sees the values of inputs that have to be copied first."""
    args = case.args()
    arr = args[arg].copy()
    arr.flat[-1] = math.nan
    args[arg] = LAYOUTS[layout](arr)
    with pytest.raises(ValueError, match=name_pattern(arg)):
        case.call(args)


def test_softmax_masked_scores():
    """-inf scores get exactly 0; a row with every score -inf is all zeros, not NaN."""
    x = np.array([[0.0, -np.inf, 1.0, -np.inf],
                  [-np.inf, -np.inf, -np.inf, -np.inf],
                  [2.0, 2.0, 2.0, 2.0]], np.float32)
    s = kernels.softmax_forward(x)
    assert np.isfinite(s).all(), s
    np.testing.assert_array_equal(s[0, [1, 3]], 0.0)
    np.testing.assert_array_equal(s[1], 0.0)
    np.testing.assert_allclose(s[0].sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(s[2], 0.25, rtol=1e-6)


# ----------------------------------------------------------------------------
# layouts that must be copied, with results identical to the contiguous call


def _real_layouts(case, spec):
    arr = case.args()[spec.name]
    return [(name,) for name, make in LAYOUTS.items() if layout_is_real(name, make(arr))]


@pytest.mark.parametrize("case,arg,layout", _array_params(_real_layouts))
def test_copied_layout_gives_the_contiguous_result(case, arg, layout):
    args = case.args()
    args[arg] = LAYOUTS[layout](args[arg])
    assert layout_is_real(layout, args[arg])
    before = _snapshot(args)
    want = as_tuple(case.call(contiguous(args)))
    got = check_result(case, args, case.call(args), f"{case.id} {arg} {layout}")
    check_same(got, want, f"{case.id}: {arg} {layout}")
    check_unchanged(before, args, f"{case.id} {arg} {layout}")


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_every_argument_in_a_copied_layout(case, layout):
    args = case.args()
    for name in _arrays(args):
        args[name] = LAYOUTS[layout](args[name])
    before = _snapshot(args)
    want = as_tuple(case.call(contiguous(args)))
    got = check_result(case, args, case.call(args), f"{case.id} all {layout}")
    check_same(got, want, f"{case.id}: every array {layout}")
    check_unchanged(before, args, f"{case.id} all {layout}")


# ----------------------------------------------------------------------------
# option strings and float scalars


def _option_params(pick):
    return [pytest.param(case, opt.name, value, id=f"{case.id}-{opt.name}={value!r}")
            for case in CASES for opt in case.options for value in pick(opt)]


@pytest.mark.parametrize("case,option,value", _option_params(lambda o: o.valid))
def test_valid_option_value(case, option, value):
    args = replace(case.args(), **{option: value})
    check_result(case, args, case.call(args), f"{case.id} {option}={value!r}")


@pytest.mark.parametrize("case,option,value", _option_params(lambda o: o.invalid))
def test_bad_option_value_is_a_value_error_naming_it(case, option, value):
    args = replace(case.args(), **{option: value})
    with pytest.raises(ValueError, match=name_pattern(option)):
        case.call(args)


@pytest.mark.parametrize("case,option,value", _option_params(lambda o: o.wrong_type))
def test_bad_option_type_is_a_type_error_naming_it(case, option, value):
    args = replace(case.args(), **{option: value})
    with pytest.raises(TypeError, match=name_pattern(option)):
        case.call(args)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_missing_and_unknown_arguments_are_type_errors(case):
    args = case.args()
    pos = [args[n] for n in case.positional]
    kw = {k: v for k, v in args.items() if k not in case.positional}
    with pytest.raises(TypeError):  # every kernel needs at least two arguments but softmax_forward
        case.fn(*pos[:1 if len(pos) > 1 else 0], **kw)
    with pytest.raises(TypeError):
        case.fn(*pos, **kw, not_an_option=1)
