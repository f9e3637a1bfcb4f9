"""Threads: per-call thread counts, the BLAS masklrp links, a released GIL and reentrant calls.

masklrp's OpenBLAS (the scipy-openblas32 wheel, csrc/linalg.c) always runs one thread;
a call's parallelism is its own (csrc/team.c): ``threads=`` of the call, else the
default ``masklrp.set_num_threads(n)`` sets. Kernels and engine calls release the GIL
around the C work and keep no shared state, so concurrent calls give bitwise what the
same call gives alone.
"""
from __future__ import annotations

import ctypes
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import masklrp
from masklrp import _openblas, kernels


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


def _openblas_threads() -> int:
    """OpenBLAS's own thread count in masklrp's copy of the library."""
    return ctypes.CDLL(_openblas.LIBRARY).scipy_openblas_get_num_threads()


def test_blas_info(restore_threads):
    info = masklrp.blas_info()
    assert isinstance(info, dict), type(info)
    assert {"library", "version", "core", "config", "blas_threads", "num_threads"} <= set(info), info
    assert info["library"] == "scipy-openblas32", info
    major_minor_patch = tuple(int(p) for p in info["version"].split(".")[:3])
    assert major_minor_patch >= (0, 3, 34), info
    assert info["config"].startswith(f"OpenBLAS {info['version']}"), info
    assert isinstance(info["core"], str) and info["core"].strip(), info
    assert info["blas_threads"] == 1 == _openblas_threads(), info
    for n in (1, 2):
        masklrp.set_num_threads(n)
        assert masklrp.blas_info()["num_threads"] == n == masklrp.get_num_threads()
        assert _openblas_threads() == 1, "set_num_threads must leave OpenBLAS on one thread"
    assert masklrp.blas_info() is not masklrp.blas_info(), "blas_info must return a fresh dict"


# OpenBLAS's kernel families for CPUs with AVX2 (x86-64 corenames of its DYNAMIC_ARCH builds).
AVX2_CORES = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


@pytest.mark.skipif("avx2" not in _cpu_flags(), reason="this CPU has no AVX2 (or /proc/cpuinfo is unreadable): "
                                                       "a generic OpenBLAS kernel is then the right one")
@pytest.mark.skipif("OPENBLAS_CORETYPE" in os.environ, reason="OPENBLAS_CORETYPE is set: the kernels are forced, "
                                                              "not detected")
def test_blas_core_is_not_a_generic_fallback_on_an_avx2_cpu():
    """Debian's OpenBLAS 0.3.21 fell back to Prescott on current Intel CPUs (issue H)."""
    core = masklrp.blas_info()["core"]
    assert core.lower() in AVX2_CORES, f"OpenBLAS chose the {core!r} kernels on a CPU with AVX2"


ORDERS = {
    "numpy, masklrp": "import numpy; import masklrp",
    "masklrp, numpy": "import masklrp; import numpy",
    "wheel's own loader first": "import scipy_openblas32; scipy_openblas32.get_openblas_config(); import masklrp",
    "masklrp, wheel's own loader": "import masklrp, scipy_openblas32; scipy_openblas32.get_openblas_config()",
    "scipy, masklrp": "import importlib.util as u; u.find_spec('scipy') and __import__('scipy.linalg'); "
                      "import masklrp",
}


@pytest.mark.parametrize("order", ORDERS)
def test_openblas_is_loaded_once_whichever_imports_first(order):
    code = ORDERS[order] + textwrap.dedent("""
        import masklrp._openblas as o, os
        maps = [line.split()[-1] for line in open('/proc/self/maps') if line.rstrip().endswith('.so')]
        ours = {os.path.realpath(p) for p in maps if os.path.basename(p) == 'libscipy_openblas.so'}
        print(len(ours), ours == {os.path.realpath(o.LIBRARY)})
        masklrp.kernels.linear_forward(__import__('numpy').ones((4, 4), 'float32'), __import__('numpy').ones((4, 4), 'float32'))
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "True"], f"{order}: {run.stdout!r}"


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
def test_gil_is_released_during_the_kernel(name):
    share, solo = _frozen_share(_long_call(name))
    assert share <= 0.4, (f"{name}: no other Python thread could run for most of {share:.0%} of the "
                          f"{solo * 1e3:.1f} ms calls; the GIL looks held around the C kernel")


# ----------------------------------------------------------------------------
# kernels are reentrant: concurrent calls give the serial results bitwise


@pytest.mark.parametrize("mix", [*WORKLOADS, "all_three"])
def test_concurrent_calls_equal_serial_calls_bitwise(mix):
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
        _assert_bitwise(got, serial[task], f"{task} from {n_threads} threads")


def test_linear_forward_splits_over_threads():
    """A team cuts one GEMM into pieces: each piece rounds as a GEMM of its own shape, so the
    result equals the one-thread GEMM to float32 rounding of a K = 384 dot product (K·2^-24 of
    Σ|x w|), and is bitwise repeatable for the same thread count."""
    rng = np.random.default_rng(5)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((300, 384), (1152, 384), (1152,)))
    one = kernels.linear_forward(x, w, b)
    bound = 384 * 2.0**-24 * (np.abs(x) @ np.abs(w).T + np.abs(b)) * 4
    for threads in (2, 3, 4):
        got = kernels.linear_forward(x, w, b, threads=threads)
        assert np.all(np.abs(got - one) <= bound), f"threads={threads}"
        np.testing.assert_array_equal(kernels.linear_forward(x, w, b, threads=threads), got)
    with pytest.raises(ValueError, match="threads must be in"):
        kernels.linear_forward(x, w, b, threads=0)


# ----------------------------------------------------------------------------
# engine calls: each with its own threads, none waiting for another


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return masklrp.load(minilm_dir)


def _random_inputs(model, batch: int, length: int, seed: int):
    ids = np.random.default_rng(seed).integers(1000, 20000, size=(batch, length))
    return model.prepare(ids)


# (batch, length): several chunks, one chunk, and one sequence (a team splits its GEMMs)
SHAPES = ((8, 24), (3, 40), (1, 96))


def _explain(model, inputs, **kw):
    out = model.run(inputs, None, ("attnlrp",), **kw)
    return out["logits"], out["attnlrp"]["tokens"]


def test_concurrent_engine_calls_with_default_arguments_equal_their_solo_results(minilm, restore_threads):
    """The README's claim, with default arguments (issue G.7): four Python threads explaining at
    once get bitwise what each call gets alone. A call reads the default thread count once."""
    masklrp.set_num_threads(2)
    tasks = [(shape, seed) for shape in SHAPES for seed in (0, 1)]
    inputs = {task: _random_inputs(minilm, *task[0], seed=task[1]) for task in tasks}
    solo = {task: _explain(minilm, inputs[task]) for task in tasks}
    start = threading.Barrier(4)

    def worker(my_tasks):
        start.wait()
        return [(task, _explain(minilm, inputs[task])) for _ in range(2) for task in my_tasks]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = [r for part in pool.map(worker, [tasks[i::4] for i in range(4)]) for r in part]
    assert len(results) == 2 * len(tasks)
    for task, got in results:
        for name, g, want in zip(("logits", "tokens"), got, solo[task]):
            np.testing.assert_array_equal(g, want, err_msg=f"{name} of {task} differ from the solo call")


def test_one_sequence_on_a_team_equals_one_thread_to_rounding(minilm):
    """B = 1: the threads go to a team that cuts the GEMMs. Each team size is bitwise repeatable
    and equal to one thread up to float32 rounding (1e-5 of the largest relevance, as for the
    chunked batches of test_engine.py)."""
    inputs = _random_inputs(minilm, 1, 96, seed=3)
    logits1, tokens1 = _explain(minilm, inputs, threads=1)
    for threads in (2, 3, 4):
        logits, tokens = _explain(minilm, inputs, threads=threads)
        np.testing.assert_allclose(logits, logits1, rtol=1e-5, atol=1e-5 * np.abs(logits1).max())
        np.testing.assert_allclose(tokens, tokens1, rtol=1e-5, atol=1e-5 * np.abs(tokens1).max())
        again = _explain(minilm, inputs, threads=threads)
        np.testing.assert_array_equal(again[1], tokens, err_msg=f"threads={threads} is not repeatable")


def test_set_num_threads_during_a_call_is_kept(minilm, restore_threads):
    """Nothing a call does touches the default: a change made while it runs stays."""
    masklrp.set_num_threads(2)
    inputs = _random_inputs(minilm, 8, 128, seed=4)
    started = threading.Event()

    def long_call():
        started.set()
        _explain(minilm, inputs)

    worker = threading.Thread(target=long_call)
    worker.start()
    started.wait()
    masklrp.set_num_threads(1)
    worker.join()
    assert masklrp.get_num_threads() == 1
    assert _openblas_threads() == 1


def test_engine_re_pins_openblas_to_one_thread(minilm):
    """Another library (threadpoolctl, say) may set masklrp's OpenBLAS to many threads; the next
    call pins it back to one and gives the same bits as before."""
    inputs = _random_inputs(minilm, 3, 40, seed=6)
    before = _explain(minilm, inputs, threads=2)
    ctypes.CDLL(_openblas.LIBRARY).scipy_openblas_set_num_threads(2)
    after = _explain(minilm, inputs, threads=2)
    assert _openblas_threads() == 1
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
