"""Random inputs at every kernel: a clean result or TypeError/ValueError, never anything else.

Each example starts from a valid call of a row of ``kernel_cases.CASES`` with
random leading dims (0 to 2 of them, so up to 4-D arrays) and sizes, then
spoils some arguments at random: another dtype or a non-array, a random shape
(0-size dims and 0-D to 4-D included), NaN/±inf values, an empty array, an
invalid option or scalar; or stores them in a layout the glue must copy
(strides, transposes, misaligned, byte-swapped, zero-stride). What each spoil
means is known, so the expected outcome is too:

* only copied layouts (and valid options) -> success, equal to the contiguous call;
* only type spoils -> TypeError; only value spoils -> ValueError;
* a random shape -> ValueError, or success with the documented output shape;
* a mix -> TypeError or ValueError.

A success must return finite float32 arrays of the documented shapes. Any other
exception fails the test, and a crash takes pytest down with it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_cases import CASE_IDS, CASES, LAYOUTS, as_tuple, contiguous

MAX_EXAMPLES = 200

BAD_DTYPES = ("float64", "float16", "int32", "int64", "uint8", "bool", "object", "complex64")
NON_ARRAYS = {
    "list": lambda a: a.tolist(),
    "float": lambda a: 1.0,
    "none": lambda a: None,
    "string": lambda a: "x",
}
SPOILS = ("layout", "dtype", "non_array", "shape", "nonfinite", "empty")

OK, TYPE, VALUE, SHAPE = "ok", "type", "value", "shape"


def _random_shape(draw) -> tuple:
    ndim = draw(st.integers(0, 4))
    return tuple(draw(st.lists(st.integers(0, 4), min_size=ndim, max_size=ndim)))


@st.composite
def spoiled_calls(draw, case):
    """(args, effects, label): a call of ``case`` and what each change to it should cause."""
    lead = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    sizes = tuple(draw(st.lists(st.integers(1, 6), min_size=3, max_size=3)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    args = case.args(seed=seed, lead=lead, sizes=sizes)
    effects, label = [], [f"lead={lead} sizes={sizes} seed={seed}"]

    for spec in case.arrays:
        arr = args[spec.name]
        if arr is None or not draw(st.booleans()):
            continue
        spoil = draw(st.sampled_from(SPOILS))
        if spoil == "layout":
            layout = draw(st.sampled_from(sorted(LAYOUTS)))
            args[spec.name] = LAYOUTS[layout](arr)
            effects.append(OK)
            label.append(f"{spec.name}:{layout}")
        elif spoil == "dtype":
            dtype = draw(st.sampled_from(BAD_DTYPES))
            args[spec.name] = arr.astype(dtype)
            effects.append(TYPE)
            label.append(f"{spec.name}:{dtype}")
        elif spoil == "non_array":
            kind = draw(st.sampled_from(sorted(NON_ARRAYS)))
            if kind == "none" and spec.optional:
                effects.append(OK)
            else:
                effects.append(TYPE)
            args[spec.name] = NON_ARRAYS[kind](arr)
            label.append(f"{spec.name}:{kind}")
        elif spoil == "shape":
            shape = _random_shape(draw)
            new = rng.uniform(-3, 3, size=shape).astype(np.float32)
            if draw(st.booleans()) and new.ndim:  # and strided or transposed on top
                new = LAYOUTS[draw(st.sampled_from(["strided", "transposed_view", "negative_stride"]))](new)
            args[spec.name] = new
            effects.append(VALUE if new.size == 0 else SHAPE)
            label.append(f"{spec.name}:shape{shape}")
        elif spoil == "nonfinite":
            value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
            bad = arr.copy()
            count = draw(st.integers(1, bad.size))
            bad.flat[rng.choice(bad.size, size=count, replace=False)] = value
            args[spec.name] = bad
            effects.append(OK if value == -math.inf and spec.name in case.allow_neg_inf else VALUE)
            label.append(f"{spec.name}:{count}x{value}")
        else:  # empty
            shape = list(arr.shape) or [1]
            shape[draw(st.integers(0, len(shape) - 1))] = 0
            args[spec.name] = np.zeros(shape, np.float32)
            effects.append(VALUE)
            label.append(f"{spec.name}:empty{tuple(shape)}")

    for opt in case.options:
        pick = draw(st.sampled_from(["keep", "valid", "invalid", "wrong_type"]))
        if pick == "keep":
            continue
        pool = {"valid": opt.valid, "invalid": opt.invalid, "wrong_type": opt.wrong_type}[pick]
        args[opt.name] = draw(st.sampled_from(pool))
        effects.append({"valid": OK, "invalid": VALUE, "wrong_type": TYPE}[pick])
        label.append(f"{opt.name}={args[opt.name]!r}")
    return args, effects, " ".join(label)


def _allowed(effects: list) -> set:
    """The outcomes a call with these spoils may have: 'ok', TypeError, ValueError."""
    kinds = set(effects) - {OK}
    if not kinds:
        return {OK}
    if kinds == {TYPE}:
        return {TypeError}
    if kinds <= {VALUE, SHAPE}:
        return {ValueError} if VALUE in kinds else {OK, ValueError}
    return {TypeError, ValueError}


def _check_clean(case, args, result, where: str) -> tuple:
    want = case.out_shapes(args)
    outs = as_tuple(result)
    assert len(outs) == len(want), f"{where}: {len(outs)} outputs, documented {len(want)}"
    for i, (out, shape) in enumerate(zip(outs, want)):
        assert isinstance(out, np.ndarray) and out.dtype == np.float32, f"{where}: output {i} {type(out)}"
        assert out.shape == tuple(shape), f"{where}: output {i} shape {out.shape}, documented {tuple(shape)}"
        assert np.isfinite(out).all(), f"{where}: output {i} has non-finite values"
    return outs


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_random_inputs_give_a_clean_result_or_a_clean_error(case):
    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(spoiled_calls(case))
    def run(call):
        args, effects, label = call
        allowed = _allowed(effects)
        where = f"{case.id} [{label}]"
        try:
            result = case.call(args)
        except (TypeError, ValueError) as exc:
            assert type(exc) in allowed, f"{where}: raised {type(exc).__name__}({exc}), expected {allowed}"
            return
        assert OK in allowed, f"{where}: returned, expected {allowed}"
        outs = _check_clean(case, args, result, where)
        if SHAPE not in effects:  # all arrays valid: copies must not change the numbers
            want = as_tuple(case.call(contiguous(args)))
            for i, (g, w) in enumerate(zip(outs, want)):
                assert np.array_equal(g, w), f"{where}: output {i} differs from the contiguous call"

    run()
