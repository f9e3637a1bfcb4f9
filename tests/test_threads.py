"""Threads: the OpenBLAS thread count, blas_info, a released GIL and reentrant kernels.

``masklrp.set_num_threads(n)`` controls the OpenBLAS that masklrp links to
(csrc/linalg.c), not NumPy's vendored copy. Kernels release the GIL around the
C call (csrc/module.c), so Python threads can run them concurrently; they keep
no global state, so concurrent calls give bitwise the serial results.
"""
from __future__ import annotations

import math
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import masklrp
from masklrp import kernels


@pytest.fixture
def restore_threads():
    before = masklrp.get_num_threads()
    yield before
    masklrp.set_num_threads(before)


# ----------------------------------------------------------------------------
# set_num_threads / get_num_threads / blas_info


def test_get_num_threads_is_a_positive_int():
    n = masklrp.get_num_threads()
    assert type(n) is int and n >= 1, n


@pytest.mark.parametrize("n", [1, 2, 1])
def test_set_num_threads_round_trips(restore_threads, n):
    assert masklrp.set_num_threads(n) is None
    assert masklrp.get_num_threads() == n


@pytest.mark.parametrize("bad,error", [
    (0, ValueError),
    (-1, ValueError),
    (-(2**70), (ValueError, OverflowError)),
    (2**70, (ValueError, OverflowError)),
    (1.0, TypeError),
    (2.5, TypeError),
    ("2", TypeError),
    (None, TypeError),
    ([2], TypeError),
    (np.float64(2.0), TypeError),
])
def test_set_num_threads_rejects_bad_values_and_keeps_the_old_one(restore_threads, bad, error):
    masklrp.set_num_threads(1)
    with pytest.raises(error):
        masklrp.set_num_threads(bad)
    assert masklrp.get_num_threads() == 1


def test_blas_info(restore_threads):
    info = masklrp.blas_info()
    assert isinstance(info, dict), type(info)
    assert {"library", "config", "num_threads"} <= set(info), info
    assert info["library"] == "openblas", info
    assert isinstance(info["config"], str) and info["config"].strip(), info
    for n in (1, 2):
        masklrp.set_num_threads(n)
        assert masklrp.blas_info()["num_threads"] == n == masklrp.get_num_threads()
    assert masklrp.blas_info() is not masklrp.blas_info(), "blas_info must return a fresh dict"


# ----------------------------------------------------------------------------
# the three workloads: a GEMM, a batched GEMM backward, a row-wise reduction


def _workload(name: str, seed: int, scale: int = 1):
    """(callable, description) for one kernel call on inputs drawn from ``seed``."""
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    if name == "linear_forward":
        x, w, b = r(96 * scale, 256), r(192, 256), r(192)
        return lambda: kernels.linear_forward(x, w, b)
    if name == "matmul_backward":
        g, a, bm = r(4, 24 * scale, 80), r(4, 24 * scale, 64), r(4, 80, 64)
        return lambda: kernels.matmul_backward(g, a, bm, transpose_b=True, scale=0.125, rule="gradient")
    if name == "layernorm_forward":
        x, w, b = r(256 * scale, 384), r(384), r(384)
        return lambda: kernels.layernorm_forward(x, w, b, 1e-5)
    raise KeyError(name)


WORKLOADS = ("linear_forward", "matmul_backward", "layernorm_forward")


def _tuple(result):
    return result if isinstance(result, tuple) else (result,)


def _assert_bitwise(got, want, where: str) -> None:
    for i, (g, w) in enumerate(zip(_tuple(got), _tuple(want))):
        if not np.array_equal(g, w):
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
            at = np.unravel_index(int(np.argmax(diff)), diff.shape)
            pytest.fail(f"{where}: output {i} differs from the serial call in {int((g != w).sum())} places, "
                        f"max |diff| {diff[at]:.3g} at {at}")


# ----------------------------------------------------------------------------
# the GIL is released while a kernel runs


def _solo_time(fn, repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _frozen_share(fn, min_seconds: float = 0.4, min_calls: int = 5) -> tuple[float, float]:
    """Share of ``fn()`` calls during which no other Python thread could run, and the solo call time.

    A ticker thread appends timestamps as fast as it can while this thread
    times calls of ``fn``. If the GIL is held across the C call, the ticker is
    frozen for all of it: some gap between its ticks inside the call's window is
    the call's whole duration, i.e. nearly the window (the ticker keeps the GIL
    for at most the 1 ms switch interval before the call starts). A call counts
    as frozen when its longest gap is >= 70% of its own window. The window, not
    a solo timing, is the yardstick: on a shared machine one call of the same
    work took 55 ms and the next 99 ms, and a solo time measured in a slow spell
    made every faster held call look free. With the GIL released only the checks
    made before releasing it (and the OS scheduler) can open a gap.
    """
    solo = _solo_time(fn)
    stamps: list[float] = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            stamps.append(time.perf_counter())

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-3)  # the ticker gets the GIL within 1 ms of its release
    ticker = threading.Thread(target=tick)
    ticker.start()
    windows = []
    try:
        time.sleep(0.01)
        deadline = time.perf_counter() + min_seconds
        while time.perf_counter() < deadline or len(windows) < min_calls:
            t0 = time.perf_counter()
            fn()
            windows.append((t0, time.perf_counter()))
    finally:
        stop.set()
        ticker.join()
        sys.setswitchinterval(old_interval)
    ts = np.asarray(stamps)
    frozen = 0
    for t0, t1 in windows:
        inside = ts[(ts > t0) & (ts < t1)]
        frozen += np.diff(np.concatenate(([t0], inside, [t1]))).max() >= 0.7 * (t1 - t0)
    return frozen / len(windows), solo


def _long_call(name: str):
    """A call of ``name`` that takes at least 40 ms alone: long against the scheduler's slices."""
    scale = 1
    while True:
        fn = _workload(name, seed=0, scale=scale)
        if _solo_time(fn, repeats=1) >= 0.04 or scale >= 1024:
            return fn
        scale *= 2


def test_ticker_sees_a_held_gil():
    """The measurement itself: a C call that keeps the GIL (bytes.count) is frozen every time."""
    data = b"a" * 10_000_000
    reps = 1
    while _solo_time(lambda: [data.count(b"b") for _ in range(reps)], repeats=1) < 0.04:
        reps *= 2
    big = data * reps  # one C call of >= 40 ms that never releases the GIL
    share, solo = _frozen_share(lambda: big.count(b"b"), min_seconds=0.2, min_calls=3)
    assert share >= 0.6, f"a {solo * 1e3:.1f} ms GIL-holding call looked frozen in only {share:.0%} of calls"


@pytest.mark.parametrize("name", WORKLOADS)
def test_gil_is_released_during_the_kernel(restore_threads, name):
    masklrp.set_num_threads(1)  # one core for the kernel, one for the ticker
    share, solo = _frozen_share(_long_call(name))
    assert share <= 0.4, (f"{name}: no other Python thread could run for most of {share:.0%} of the "
                          f"{solo * 1e3:.1f} ms calls; the GIL looks held around the C kernel")


# ----------------------------------------------------------------------------
# kernels are reentrant: concurrent calls give the serial results bitwise


@pytest.mark.parametrize("blas_threads", [1, 2])
@pytest.mark.parametrize("mix", [*WORKLOADS, "all_three"])
def test_concurrent_calls_equal_serial_calls_bitwise(restore_threads, mix, blas_threads):
    masklrp.set_num_threads(blas_threads)
    names = WORKLOADS if mix == "all_three" else (mix,)
    n_threads, per_thread, repeats = 4, 6, 3
    # each task has its own inputs, so a kernel that mixed up two calls' data is caught
    tasks = [(names[i % len(names)], 100 + i) for i in range(n_threads * per_thread)]
    fns = {task: _workload(*task) for task in tasks}
    serial = {task: fns[task]() for task in tasks}
    for task in tasks:  # the serial results themselves are repeatable
        _assert_bitwise(fns[task](), serial[task], f"{task} serial repeat")

    start = threading.Barrier(n_threads)

    def worker(my_tasks):
        start.wait()
        return [(task, fns[task]()) for _ in range(repeats) for task in my_tasks]

    chunks = [tasks[i::n_threads] for i in range(n_threads)]
    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        results = [r for chunk_results in pool.map(worker, chunks) for r in chunk_results]

    assert len(results) == len(tasks) * repeats
    for task, got in results:
        _assert_bitwise(got, serial[task], f"{task} from {n_threads} threads, {blas_threads} BLAS threads")
