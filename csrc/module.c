// masklrp._core: the CPython/NumPy glue of the rule kernels and the module
// (module_engine.c glues the engine). Each entry point parses its arguments,
// checks every array (type, dtype, shape, finiteness) with a message naming the
// argument, releases the GIL, calls the pure C kernel and returns new arrays. Input policy (documented in masklrp/kernels.py): float32 ndarrays
// only; non-contiguous, misaligned or byte-swapped float32 input is copied.
#define MASKLRP_MODULE_MAIN // this file calls import_array()
#include "module.h"

#include <math.h>
#include <sched.h> // sched_getaffinity (Python.h defines _GNU_SOURCE)
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// ----------------------------------------------------------------------------
// Argument checking

#define FLOAT_EXPONENT_BITS 0x7f800000u
#define FLOAT_NEG_INF_BITS 0xff800000u

// 1 if x is finite (or -inf when allowed), read from its bits so the scan below
// has no branch and the compiler vectorises it.
static inline int finite_bits(float x, int allow_neg_inf) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return ((u & FLOAT_EXPONENT_BITS) != FLOAT_EXPONENT_BITS) | (allow_neg_inf & (u == FLOAT_NEG_INF_BITS));
}

static int all_finite(const float *p, npy_intp n, int allow_neg_inf) {
    int ok = 1;
    for (npy_intp i = 0; i < n; i++) ok &= finite_bits(p[i], allow_neg_inf);
    return ok;
}

PyObject *shape_of(PyArrayObject *a) {
    PyObject *t = PyTuple_New(PyArray_NDIM(a));
    if (t == NULL) return NULL;
    for (int i = 0; i < PyArray_NDIM(a); i++) {
        PyObject *d = PyLong_FromSsize_t(PyArray_DIM(a, i));
        if (d == NULL) { Py_DECREF(t); return NULL; }
        PyTuple_SET_ITEM(t, i, d);
    }
    return t;
}

// Sets ValueError "<name> must <what>, got shape (...)".
void shape_error(PyArrayObject *a, const char *name, const char *what) {
    PyObject *shape = shape_of(a);
    if (shape == NULL) return;
    PyErr_Format(PyExc_ValueError, "%s must %s, got shape %R", name, what, shape);
    Py_DECREF(shape);
}

// A new reference to an aligned, C-contiguous, native float32 copy or view of
// obj with ndim in [min_ndim, max_ndim] (max_ndim < 0: unbounded), non-empty,
// and finite as asked; NULL with TypeError/ValueError naming `name` otherwise.
PyArrayObject *float_array(PyObject *obj, const char *name, int min_ndim, int max_ndim,
                                  Finiteness finiteness) {
    if (!PyArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray of dtype float32, got %s", name,
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *in = (PyArrayObject *)obj;
    if (PyArray_TYPE(in) != NPY_FLOAT32) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype float32, got %R", name,
                     (PyObject *)PyArray_DESCR(in));
        return NULL;
    }
    const int nd = PyArray_NDIM(in);
    if (nd < min_ndim || (max_ndim >= 0 && nd > max_ndim)) {
        char what[64];
        if (max_ndim < 0) snprintf(what, sizeof what, "have at least %d dimension(s)", min_ndim);
        else if (min_ndim == max_ndim) snprintf(what, sizeof what, "have %d dimension(s)", min_ndim);
        else snprintf(what, sizeof what, "have %d to %d dimensions", min_ndim, max_ndim);
        shape_error(in, name, what);
        return NULL;
    }
    if (PyArray_SIZE(in) == 0) {
        shape_error(in, name, "not be empty");
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_FLOAT32, NPY_ARRAY_IN_ARRAY);
    if (a == NULL) return NULL;
    const float *p = (const float *)PyArray_DATA(a);
    const npy_intp n = PyArray_SIZE(a);
    const int allow_neg_inf = finiteness == FINITE_OR_NEG_INF;
    if (!all_finite(p, n, allow_neg_inf)) {
        npy_intp i = 0; // the slow search runs only on the error path
        while (finite_bits(p[i], allow_neg_inf)) i++;
        const char *found = isnan(p[i]) ? "nan" : p[i] > 0 ? "inf" : "-inf";
        PyErr_Format(PyExc_ValueError, "%s must be %s, found %s at flat index %zd", name,
                     allow_neg_inf ? "finite or -inf" : "finite", found, (Py_ssize_t)i);
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

// As float_array with ndim fixed, but None (or absent) gives *out = NULL; 0 on error.
static int optional_float_array(PyObject *obj, const char *name, int ndim, PyArrayObject **out) {
    *out = NULL;
    if (obj == NULL || obj == Py_None) return 1;
    *out = float_array(obj, name, ndim, ndim, FINITE);
    return *out != NULL;
}

static int same_shape(PyArrayObject *a, const char *an, PyArrayObject *b, const char *bn) {
    if (PyArray_NDIM(a) == PyArray_NDIM(b) &&
        memcmp(PyArray_DIMS(a), PyArray_DIMS(b), sizeof(npy_intp) * (size_t)PyArray_NDIM(a)) == 0) {
        return 1;
    }
    PyObject *sa = shape_of(a), *sb = shape_of(b);
    if (sa != NULL && sb != NULL) {
        PyErr_Format(PyExc_ValueError, "%s must have the same shape as %s: got %R and %R", bn, an,
                     sb, sa);
    }
    Py_XDECREF(sa);
    Py_XDECREF(sb);
    return 0;
}

// 1 if a's shape is exactly `dims` (nd of them); ValueError naming `what` otherwise.
static int has_shape(PyArrayObject *a, const char *name, int nd, const npy_intp *dims,
                     const char *what) {
    if (PyArray_NDIM(a) == nd &&
        (nd == 0 || memcmp(PyArray_DIMS(a), dims, sizeof(npy_intp) * (size_t)nd) == 0)) {
        return 1;
    }
    shape_error(a, name, what);
    return 0;
}

static npy_intp last_dim(PyArrayObject *a) { return PyArray_DIM(a, PyArray_NDIM(a) - 1); }

static int fits_blas(npy_intp n, const char *name) {
    if (n <= MLRP_BLAS_MAX_DIM) return 1;
    PyErr_Format(PyExc_ValueError, "%s has a dimension of %zd, above the BLAS limit %d", name,
                 (Py_ssize_t)n, MLRP_BLAS_MAX_DIM);
    return 0;
}

// Looks up a keyword option among `names`; TypeError / ValueError naming `arg`.
int choice(PyObject *obj, const char *arg, const char *const *names, int n, int *out) {
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str, got %s", arg, Py_TYPE(obj)->tp_name);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (PyUnicode_CompareWithASCIIString(obj, names[i]) == 0) { *out = i; return 1; }
    }
    PyObject *valid = PyUnicode_FromString(names[0]);
    for (int i = 1; i < n && valid != NULL; i++) {
        PyObject *next = PyUnicode_FromFormat("%U, %s", valid, names[i]);
        Py_DECREF(valid);
        valid = next;
    }
    if (valid != NULL) {
        PyErr_Format(PyExc_ValueError, "%s must be one of %U; got %R", arg, valid, obj);
        Py_DECREF(valid);
    }
    return 0;
}

static const char *const PRODUCT_RULE_NAMES[] = {"uniform", "cp", "gradient"};
static const char *const UNARY_RULE_NAMES[] = {"lrp", "gradient"};
const char *const ACTIVATION_NAMES[] = {"gelu", "gelu_tanh", "silu", "tanh", "relu"};
static const char *const WEIGHT_LAYOUT_NAMES[] = {"out_in", "in_out"};

static int product_rule(PyObject *obj, ProductRule *rule) {
    int i = PRODUCT_UNIFORM;
    if (obj != NULL && !choice(obj, "rule", PRODUCT_RULE_NAMES, 3, &i)) return 0;
    *rule = (ProductRule)i;
    return 1;
}

static int unary_rule(PyObject *obj, UnaryRule *rule) {
    int i = RULE_LRP;
    if (obj != NULL && !choice(obj, "rule", UNARY_RULE_NAMES, 2, &i)) return 0;
    *rule = (UnaryRule)i;
    return 1;
}

// A finite float32 scalar; with `positive`, also > 0 after rounding to float32.
static int float_scalar(PyObject *obj, const char *name, int positive, float *out) {
    if (obj == NULL) return 1;
    if (PyBool_Check(obj) || !(PyFloat_Check(obj) || PyLong_Check(obj))) {
        PyErr_Format(PyExc_TypeError, "%s must be a float, got %s", name, Py_TYPE(obj)->tp_name);
        return 0;
    }
    const double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred()) return 0;
    const float f = (float)v;
    if (!isfinite(v) || !isfinite(f) || (positive && !(f > 0.0f))) {
        PyErr_Format(PyExc_ValueError, "%s must be a %sfinite float32 value, got %R", name,
                     positive ? "positive " : "", obj);
        return 0;
    }
    *out = f;
    return 1;
}

static PyArrayObject *new_array(int nd, const npy_intp *dims) {
    return (PyArrayObject *)PyArray_SimpleNew(nd, (npy_intp *)dims, NPY_FLOAT32);
}

// Backward outputs start at zero: the kernels accumulate.
static PyArrayObject *zeros_like(PyArrayObject *a) {
    return (PyArrayObject *)PyArray_ZEROS(PyArray_NDIM(a), PyArray_DIMS(a), NPY_FLOAT32, 0);
}

#define F(a) ((float *)PyArray_DATA(a))
#define OPT(a) ((a) != NULL ? F(a) : NULL)

// ----------------------------------------------------------------------------
// Linear

// weight (OUT, IN), or (IN, OUT) for weight_layout='in_out'; `a` must end in
// `expected` features and fit one sgemm.
static int linear_sizes(PyArrayObject *a, const char *aname, PyArrayObject *w, int in_out,
                        npy_intp *in, npy_intp *out, int a_is_input) {
    *in = PyArray_DIM(w, in_out ? 0 : 1);
    *out = PyArray_DIM(w, in_out ? 1 : 0);
    const npy_intp expected = a_is_input ? *in : *out;
    if (last_dim(a) != expected) {
        PyErr_Format(PyExc_ValueError, "%s.shape[-1] (%zd) must equal weight's %s (%zd) for weight_layout='%s'",
                     aname, (Py_ssize_t)last_dim(a), a_is_input ? "in_features" : "out_features",
                     (Py_ssize_t)expected, WEIGHT_LAYOUT_NAMES[in_out]);
        return 0;
    }
    return fits_blas(PyArray_SIZE(a) / expected, aname) && fits_blas(*in, "weight") &&
           fits_blas(*out, "weight");
}

// a.shape[:-1] + (last,)
static PyArrayObject *new_with_last_dim(PyArrayObject *a, npy_intp last, int zeroed) {
    npy_intp dims[NPY_MAXDIMS];
    const int nd = PyArray_NDIM(a);
    memcpy(dims, PyArray_DIMS(a), sizeof(npy_intp) * (size_t)nd);
    dims[nd - 1] = last;
    return zeroed ? (PyArrayObject *)PyArray_ZEROS(nd, dims, NPY_FLOAT32, 0) : new_array(nd, dims);
}

PyDoc_STRVAR(linear_forward_doc,
             "linear_forward(x, weight, bias=None, *, weight_layout='out_in', threads=1) -> z\n\n"
             "z (..., OUT) = x Wᵀ + b for x (..., IN), weight (OUT, IN) or (IN, OUT) with\n"
             "weight_layout='in_out' (GPT-2 Conv1D). One sgemm, split over `threads` threads\n"
             "as the engine's teams split theirs. See masklrp.kernels.");

static PyObject *py_linear_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "weight", "bias", "weight_layout", "threads", NULL};
    PyObject *xo, *wo, *bo = NULL, *layout = NULL, *result = NULL;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *z = NULL;
    int in_out = 0, threads = 1;
    npy_intp in, out;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O$Oi", kwlist, &xo, &wo, &bo, &layout, &threads)) return NULL;
    if (!valid_threads(threads)) goto fail;
    if (layout != NULL && !choice(layout, "weight_layout", WEIGHT_LAYOUT_NAMES, 2, &in_out)) goto fail;
    if (!(x = float_array(xo, "x", 1, -1, FINITE))) goto fail;
    if (!(w = float_array(wo, "weight", 2, 2, FINITE))) goto fail;
    if (!optional_float_array(bo, "bias", 1, &b)) goto fail;
    if (!linear_sizes(x, "x", w, in_out, &in, &out, 1)) goto fail;
    if (b != NULL && !has_shape(b, "bias", 1, &out, "have shape (out_features,)")) goto fail;
    if (!(z = new_with_last_dim(x, out, 0))) goto fail;
    Py_BEGIN_ALLOW_THREADS
    Team *team = threads > 1 ? team_new(threads) : NULL;
    team_set_current(team);
    linear_forward(F(z), F(x), F(w), OPT(b), PyArray_SIZE(x) / in, in, out, in_out);
    team_set_current(NULL);
    team_free(team);
    Py_END_ALLOW_THREADS
    result = (PyObject *)z;
    z = NULL;
fail:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(z);
    return result;
}

PyDoc_STRVAR(linear_backward_doc,
             "linear_backward(g, weight, *, weight_layout='out_in') -> g_x\n\n"
             "True gradient of a linear map: g_x (..., IN) = g W for g (..., OUT).");

static PyObject *py_linear_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "weight", "weight_layout", NULL};
    PyObject *go, *wo, *layout = NULL, *result = NULL;
    PyArrayObject *g = NULL, *w = NULL, *gx = NULL;
    int in_out = 0;
    npy_intp in, out;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$O", kwlist, &go, &wo, &layout)) return NULL;
    if (layout != NULL && !choice(layout, "weight_layout", WEIGHT_LAYOUT_NAMES, 2, &in_out)) goto fail;
    if (!(g = float_array(go, "g", 1, -1, FINITE))) goto fail;
    if (!(w = float_array(wo, "weight", 2, 2, FINITE))) goto fail;
    if (!linear_sizes(g, "g", w, in_out, &in, &out, 0)) goto fail;
    if (!(gx = new_with_last_dim(g, in, 1))) goto fail;
    Py_BEGIN_ALLOW_THREADS
    linear_backward(F(gx), F(g), F(w), PyArray_SIZE(g) / out, in, out, in_out);
    Py_END_ALLOW_THREADS
    result = (PyObject *)gx;
    gx = NULL;
fail:
    Py_XDECREF(g);
    Py_XDECREF(w);
    Py_XDECREF(gx);
    return result;
}

// ----------------------------------------------------------------------------
// Softmax

PyDoc_STRVAR(softmax_forward_doc,
             "softmax_forward(x) -> s\n\n"
             "Softmax over the last axis. -inf (masked) scores get 0; an all -inf row\n"
             "gives zeros. NaN and +inf raise ValueError.");

static PyObject *py_softmax_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", NULL};
    PyObject *xo;
    PyArrayObject *x, *s;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O", kwlist, &xo)) return NULL;
    if (!(x = float_array(xo, "x", 1, -1, FINITE_OR_NEG_INF))) return NULL;
    if (!(s = new_array(PyArray_NDIM(x), PyArray_DIMS(x)))) { Py_DECREF(x); return NULL; }
    const npy_intp c = last_dim(x), n = PyArray_SIZE(x) / c;
    Py_BEGIN_ALLOW_THREADS
    softmax_forward(F(s), F(x), n, c);
    Py_END_ALLOW_THREADS
    Py_DECREF(x);
    return (PyObject *)s;
}

PyDoc_STRVAR(softmax_backward_doc,
             "softmax_backward(g, s) -> g_x\n\n"
             "g_x = s ⊙ (g − Σ s ⊙ g) over the last axis (AttnLRP Prop. 3.1).");

static PyObject *py_softmax_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "s", NULL};
    PyObject *go, *so, *result = NULL;
    PyArrayObject *g = NULL, *s = NULL, *gx = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO", kwlist, &go, &so)) return NULL;
    if (!(g = float_array(go, "g", 1, -1, FINITE))) goto fail;
    if (!(s = float_array(so, "s", 1, -1, FINITE))) goto fail;
    if (!same_shape(s, "s", g, "g")) goto fail;
    if (!(gx = zeros_like(g))) goto fail;
    {
        const npy_intp c = last_dim(g), n = PyArray_SIZE(g) / c;
        Py_BEGIN_ALLOW_THREADS
        softmax_backward(F(gx), F(g), F(s), n, c);
        Py_END_ALLOW_THREADS
    }
    result = (PyObject *)gx;
    gx = NULL;
fail:
    Py_XDECREF(g);
    Py_XDECREF(s);
    Py_XDECREF(gx);
    return result;
}

// ----------------------------------------------------------------------------
// Batched matmul (Q·Kᵀ and A·V)

typedef struct { npy_intp batch, m, k, n; } MatmulSizes;

// a (..., M, K) and b (..., K, N) or (..., N, K) with identical leading dims.
static int matmul_sizes(PyArrayObject *a, PyArrayObject *b, int tb, MatmulSizes *sz) {
    const int nd = PyArray_NDIM(a);
    if (PyArray_NDIM(b) != nd ||
        memcmp(PyArray_DIMS(a), PyArray_DIMS(b), sizeof(npy_intp) * (size_t)(nd - 2)) != 0) {
        shape_error(b, "b", "have the same number of dimensions and leading (batch) dimensions as a");
        return 0;
    }
    sz->m = PyArray_DIM(a, nd - 2);
    sz->k = PyArray_DIM(a, nd - 1);
    const npy_intp bk = PyArray_DIM(b, tb ? nd - 1 : nd - 2);
    sz->n = PyArray_DIM(b, tb ? nd - 2 : nd - 1);
    if (bk != sz->k) {
        PyErr_Format(PyExc_ValueError,
                     "b's contracted dimension (%zd) must equal a.shape[-1] (%zd) with transpose_b=%s",
                     (Py_ssize_t)bk, (Py_ssize_t)sz->k, tb ? "True" : "False");
        return 0;
    }
    sz->batch = PyArray_SIZE(a) / (sz->m * sz->k);
    return fits_blas(sz->m, "a") && fits_blas(sz->k, "a") && fits_blas(sz->n, "b");
}

PyDoc_STRVAR(matmul_forward_doc,
             "matmul_forward(a, b, *, transpose_b=False, scale=1.0) -> out\n\n"
             "out (..., M, N) = scale · a b for a (..., M, K), b (..., K, N) (or (..., N, K)\n"
             "with transpose_b). Leading dimensions must be identical.");

static PyObject *py_matmul_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"a", "b", "transpose_b", "scale", NULL};
    PyObject *ao, *bo, *scaleo = NULL, *result = NULL;
    PyArrayObject *a = NULL, *b = NULL, *out = NULL;
    int tb = 0;
    float scale = 1.0f;
    MatmulSizes sz;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$pO", kwlist, &ao, &bo, &tb, &scaleo)) return NULL;
    if (!float_scalar(scaleo, "scale", 0, &scale)) goto fail;
    if (!(a = float_array(ao, "a", 2, -1, FINITE))) goto fail;
    if (!(b = float_array(bo, "b", 2, -1, FINITE))) goto fail;
    if (!matmul_sizes(a, b, tb, &sz)) goto fail;
    if (!(out = new_with_last_dim(a, sz.n, 0))) goto fail;
    Py_BEGIN_ALLOW_THREADS
    matmul_forward(F(out), F(a), F(b), sz.batch, sz.m, sz.k, sz.n, tb, scale);
    Py_END_ALLOW_THREADS
    result = (PyObject *)out;
    out = NULL;
fail:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

PyDoc_STRVAR(matmul_backward_doc,
             "matmul_backward(g, a, b, *, transpose_b=False, scale=1.0, rule='uniform') -> (g_a, g_b)\n\n"
             "Shares of the true gradient: uniform ½/½ (AttnLRP Prop. 3.3), cp 0/1\n"
             "(first operand constant), gradient 1/1.");

static PyObject *py_matmul_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "a", "b", "transpose_b", "scale", "rule", NULL};
    PyObject *go, *ao, *bo, *scaleo = NULL, *ruleo = NULL, *result = NULL;
    PyArrayObject *g = NULL, *a = NULL, *b = NULL, *ga = NULL, *gb = NULL;
    int tb = 0;
    float scale = 1.0f;
    ProductRule rule;
    MatmulSizes sz;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|$pOO", kwlist, &go, &ao, &bo, &tb, &scaleo, &ruleo)) {
        return NULL;
    }
    if (!float_scalar(scaleo, "scale", 0, &scale) || !product_rule(ruleo, &rule)) goto fail;
    if (!(g = float_array(go, "g", 2, -1, FINITE))) goto fail;
    if (!(a = float_array(ao, "a", 2, -1, FINITE))) goto fail;
    if (!(b = float_array(bo, "b", 2, -1, FINITE))) goto fail;
    if (!matmul_sizes(a, b, tb, &sz)) goto fail;
    {
        npy_intp dims[NPY_MAXDIMS];
        const int nd = PyArray_NDIM(a);
        memcpy(dims, PyArray_DIMS(a), sizeof(npy_intp) * (size_t)nd);
        dims[nd - 1] = sz.n;
        if (!has_shape(g, "g", nd, dims, "have the output's shape (..., M, N)")) goto fail;
    }
    if (!(ga = zeros_like(a)) || !(gb = zeros_like(b))) goto fail;
    Py_BEGIN_ALLOW_THREADS
    matmul_backward(F(ga), F(gb), F(g), F(a), F(b), sz.batch, sz.m, sz.k, sz.n, tb, scale, rule);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(NN)", ga, gb);
    ga = gb = NULL;
fail:
    Py_XDECREF(g);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(ga);
    Py_XDECREF(gb);
    return result;
}

// ----------------------------------------------------------------------------
// Element-wise product

typedef void (*ElementwiseKernel)(float *, const float *, const float *, ptrdiff_t);

// out = kernel(first, second) for two non-empty, finite arrays of one shape,
// named by kwlist[0] and kwlist[1]: product_forward and relevance.
static PyObject *elementwise_call(PyObject *args, PyObject *kw, char **kwlist, ElementwiseKernel kernel) {
    PyObject *ao, *bo, *result = NULL;
    PyArrayObject *a = NULL, *b = NULL, *out = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO", kwlist, &ao, &bo)) return NULL;
    if (!(a = float_array(ao, kwlist[0], 1, -1, FINITE))) goto fail;
    if (!(b = float_array(bo, kwlist[1], 1, -1, FINITE))) goto fail;
    if (!same_shape(a, kwlist[0], b, kwlist[1])) goto fail;
    if (!(out = new_array(PyArray_NDIM(a), PyArray_DIMS(a)))) goto fail;
    Py_BEGIN_ALLOW_THREADS
    kernel(F(out), F(a), F(b), PyArray_SIZE(a));
    Py_END_ALLOW_THREADS
    result = (PyObject *)out;
    out = NULL;
fail:
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(out);
    return result;
}

PyDoc_STRVAR(product_forward_doc, "product_forward(a, b) -> a ⊙ b (same shapes)");

static PyObject *py_product_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"a", "b", NULL};
    return elementwise_call(args, kw, kwlist, product_forward);
}

PyDoc_STRVAR(product_backward_doc,
             "product_backward(g, a, b, *, rule='uniform') -> (g_a, g_b)\n\n"
             "g_a = share_a g ⊙ b, g_b = share_b g ⊙ a; shares as for matmul_backward.");

static PyObject *py_product_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "a", "b", "rule", NULL};
    PyObject *go, *ao, *bo, *ruleo = NULL, *result = NULL;
    PyArrayObject *g = NULL, *a = NULL, *b = NULL, *ga = NULL, *gb = NULL;
    ProductRule rule;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|$O", kwlist, &go, &ao, &bo, &ruleo)) return NULL;
    if (!product_rule(ruleo, &rule)) goto fail;
    if (!(g = float_array(go, "g", 1, -1, FINITE))) goto fail;
    if (!(a = float_array(ao, "a", 1, -1, FINITE))) goto fail;
    if (!(b = float_array(bo, "b", 1, -1, FINITE))) goto fail;
    if (!same_shape(g, "g", a, "a") || !same_shape(g, "g", b, "b")) goto fail;
    if (!(ga = zeros_like(a)) || !(gb = zeros_like(b))) goto fail;
    Py_BEGIN_ALLOW_THREADS
    product_backward(F(ga), F(gb), F(g), F(a), F(b), PyArray_SIZE(g), rule);
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("(NN)", ga, gb);
    ga = gb = NULL;
fail:
    Py_XDECREF(g);
    Py_XDECREF(a);
    Py_XDECREF(b);
    Py_XDECREF(ga);
    Py_XDECREF(gb);
    return result;
}

// ----------------------------------------------------------------------------
// Activations

PyDoc_STRVAR(activation_forward_doc,
             "activation_forward(x, kind) -> f(x)\n\n"
             "kind: 'gelu' (erf), 'gelu_tanh', 'silu', 'tanh' or 'relu'.");

static PyObject *py_activation_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "kind", NULL};
    PyObject *xo, *kindo;
    PyArrayObject *x, *y;
    int kind;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO", kwlist, &xo, &kindo)) return NULL;
    if (!choice(kindo, "kind", ACTIVATION_NAMES, 5, &kind)) return NULL;
    if (!(x = float_array(xo, "x", 1, -1, FINITE))) return NULL;
    if (!(y = new_array(PyArray_NDIM(x), PyArray_DIMS(x)))) { Py_DECREF(x); return NULL; }
    Py_BEGIN_ALLOW_THREADS
    activation_forward(F(y), F(x), PyArray_SIZE(x), (Activation)kind);
    Py_END_ALLOW_THREADS
    Py_DECREF(x);
    return (PyObject *)y;
}

PyDoc_STRVAR(activation_backward_doc,
             "activation_backward(g, x, kind, *, rule='lrp') -> g_x\n\n"
             "'lrp': identity rule g ⊙ f(x)/x with the exact limit f'(0) at 0;\n"
             "'gradient': g ⊙ f'(x).");

static PyObject *py_activation_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "x", "kind", "rule", NULL};
    PyObject *go, *xo, *kindo, *ruleo = NULL, *result = NULL;
    PyArrayObject *g = NULL, *x = NULL, *gx = NULL;
    int kind;
    UnaryRule rule;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|$O", kwlist, &go, &xo, &kindo, &ruleo)) return NULL;
    if (!choice(kindo, "kind", ACTIVATION_NAMES, 5, &kind) || !unary_rule(ruleo, &rule)) goto fail;
    if (!(g = float_array(go, "g", 1, -1, FINITE))) goto fail;
    if (!(x = float_array(xo, "x", 1, -1, FINITE))) goto fail;
    if (!same_shape(x, "x", g, "g")) goto fail;
    if (!(gx = zeros_like(x))) goto fail;
    Py_BEGIN_ALLOW_THREADS
    activation_backward(F(gx), F(g), F(x), PyArray_SIZE(x), (Activation)kind, rule);
    Py_END_ALLOW_THREADS
    result = (PyObject *)gx;
    gx = NULL;
fail:
    Py_XDECREF(g);
    Py_XDECREF(x);
    Py_XDECREF(gx);
    return result;
}

// ----------------------------------------------------------------------------
// LayerNorm and RMSNorm

// weight (C,) for x (..., C); the statistics have shape x.shape[:-1].
static int norm_weight(PyArrayObject *x, PyArrayObject *w, const char *wname) {
    const npy_intp c = last_dim(x);
    return has_shape(w, wname, 1, &c, "have shape (x.shape[-1],)");
}

static int norm_statistic(PyArrayObject *x, PyArrayObject *stat, const char *name) {
    return has_shape(stat, name, PyArray_NDIM(x) - 1, PyArray_DIMS(x), "have shape x.shape[:-1]");
}

PyDoc_STRVAR(layernorm_forward_doc,
             "layernorm_forward(x, weight, bias, eps) -> (y, mean, rstd)\n\n"
             "y = weight ⊙ (x − mean)·rstd + bias over the last axis; bias may be None.");

static PyObject *py_layernorm_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "weight", "bias", "eps", NULL};
    PyObject *xo, *wo, *bo, *epso, *result = NULL;
    PyArrayObject *x = NULL, *w = NULL, *b = NULL, *y = NULL, *mean = NULL, *rstd = NULL;
    float eps;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO", kwlist, &xo, &wo, &bo, &epso)) return NULL;
    if (!float_scalar(epso, "eps", 1, &eps)) goto fail;
    if (!(x = float_array(xo, "x", 1, -1, FINITE))) goto fail;
    if (!(w = float_array(wo, "weight", 1, 1, FINITE))) goto fail;
    if (!optional_float_array(bo, "bias", 1, &b)) goto fail;
    if (!norm_weight(x, w, "weight") || (b != NULL && !norm_weight(x, b, "bias"))) goto fail;
    if (!(y = new_array(PyArray_NDIM(x), PyArray_DIMS(x)))) goto fail;
    if (!(mean = new_array(PyArray_NDIM(x) - 1, PyArray_DIMS(x)))) goto fail;
    if (!(rstd = new_array(PyArray_NDIM(x) - 1, PyArray_DIMS(x)))) goto fail;
    {
        const npy_intp c = last_dim(x), n = PyArray_SIZE(x) / c;
        Py_BEGIN_ALLOW_THREADS
        layernorm_forward(F(y), F(mean), F(rstd), F(x), F(w), OPT(b), n, c, eps);
        Py_END_ALLOW_THREADS
    }
    result = Py_BuildValue("(NNN)", y, mean, rstd);
    y = mean = rstd = NULL;
fail:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(b);
    Py_XDECREF(y);
    Py_XDECREF(mean);
    Py_XDECREF(rstd);
    return result;
}

PyDoc_STRVAR(layernorm_backward_doc,
             "layernorm_backward(g, x, weight, mean, rstd, *, rule='lrp') -> g_x\n\n"
             "'lrp' (identity on the scale): g_x = h − mean(h), h = weight ⊙ g · rstd;\n"
             "'gradient': the full LayerNorm Jacobian.");

static PyObject *py_layernorm_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "x", "weight", "mean", "rstd", "rule", NULL};
    PyObject *go, *xo, *wo, *mo, *ro, *ruleo = NULL, *result = NULL;
    PyArrayObject *g = NULL, *x = NULL, *w = NULL, *mean = NULL, *rstd = NULL, *gx = NULL;
    UnaryRule rule;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOO|$O", kwlist, &go, &xo, &wo, &mo, &ro, &ruleo)) {
        return NULL;
    }
    if (!unary_rule(ruleo, &rule)) goto fail;
    if (!(g = float_array(go, "g", 1, -1, FINITE))) goto fail;
    if (!(x = float_array(xo, "x", 1, -1, FINITE))) goto fail;
    if (!(w = float_array(wo, "weight", 1, 1, FINITE))) goto fail;
    if (!(mean = float_array(mo, "mean", 0, -1, FINITE))) goto fail;
    if (!(rstd = float_array(ro, "rstd", 0, -1, FINITE))) goto fail;
    if (!same_shape(x, "x", g, "g") || !norm_weight(x, w, "weight") ||
        !norm_statistic(x, mean, "mean") || !norm_statistic(x, rstd, "rstd")) {
        goto fail;
    }
    if (!(gx = zeros_like(x))) goto fail;
    {
        const npy_intp c = last_dim(x), n = PyArray_SIZE(x) / c;
        Py_BEGIN_ALLOW_THREADS
        layernorm_backward(F(gx), F(g), F(x), F(w), F(mean), F(rstd), n, c, rule);
        Py_END_ALLOW_THREADS
    }
    result = (PyObject *)gx;
    gx = NULL;
fail:
    Py_XDECREF(g);
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(mean);
    Py_XDECREF(rstd);
    Py_XDECREF(gx);
    return result;
}

PyDoc_STRVAR(rmsnorm_forward_doc,
             "rmsnorm_forward(x, weight, eps) -> (y, rstd)\n\n"
             "y = weight ⊙ x · rstd, rstd = 1/sqrt(mean(x²) + eps) over the last axis.");

static PyObject *py_rmsnorm_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "weight", "eps", NULL};
    PyObject *xo, *wo, *epso, *result = NULL;
    PyArrayObject *x = NULL, *w = NULL, *y = NULL, *rstd = NULL;
    float eps;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO", kwlist, &xo, &wo, &epso)) return NULL;
    if (!float_scalar(epso, "eps", 1, &eps)) goto fail;
    if (!(x = float_array(xo, "x", 1, -1, FINITE))) goto fail;
    if (!(w = float_array(wo, "weight", 1, 1, FINITE))) goto fail;
    if (!norm_weight(x, w, "weight")) goto fail;
    if (!(y = new_array(PyArray_NDIM(x), PyArray_DIMS(x)))) goto fail;
    if (!(rstd = new_array(PyArray_NDIM(x) - 1, PyArray_DIMS(x)))) goto fail;
    {
        const npy_intp c = last_dim(x), n = PyArray_SIZE(x) / c;
        Py_BEGIN_ALLOW_THREADS
        rmsnorm_forward(F(y), F(rstd), F(x), F(w), n, c, eps);
        Py_END_ALLOW_THREADS
    }
    result = Py_BuildValue("(NN)", y, rstd);
    y = rstd = NULL;
fail:
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(y);
    Py_XDECREF(rstd);
    return result;
}

PyDoc_STRVAR(rmsnorm_backward_doc,
             "rmsnorm_backward(g, x, weight, rstd, *, rule='lrp') -> g_x\n\n"
             "'lrp' (rstd held constant): g_x = weight ⊙ rstd ⊙ g; 'gradient': full Jacobian.");

static PyObject *py_rmsnorm_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "x", "weight", "rstd", "rule", NULL};
    PyObject *go, *xo, *wo, *ro, *ruleo = NULL, *result = NULL;
    PyArrayObject *g = NULL, *x = NULL, *w = NULL, *rstd = NULL, *gx = NULL;
    UnaryRule rule;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO|$O", kwlist, &go, &xo, &wo, &ro, &ruleo)) return NULL;
    if (!unary_rule(ruleo, &rule)) goto fail;
    if (!(g = float_array(go, "g", 1, -1, FINITE))) goto fail;
    if (!(x = float_array(xo, "x", 1, -1, FINITE))) goto fail;
    if (!(w = float_array(wo, "weight", 1, 1, FINITE))) goto fail;
    if (!(rstd = float_array(ro, "rstd", 0, -1, FINITE))) goto fail;
    if (!same_shape(x, "x", g, "g") || !norm_weight(x, w, "weight") ||
        !norm_statistic(x, rstd, "rstd")) {
        goto fail;
    }
    if (!(gx = zeros_like(x))) goto fail;
    {
        const npy_intp c = last_dim(x), n = PyArray_SIZE(x) / c;
        Py_BEGIN_ALLOW_THREADS
        rmsnorm_backward(F(gx), F(g), F(x), F(w), F(rstd), n, c, rule);
        Py_END_ALLOW_THREADS
    }
    result = (PyObject *)gx;
    gx = NULL;
fail:
    Py_XDECREF(g);
    Py_XDECREF(x);
    Py_XDECREF(w);
    Py_XDECREF(rstd);
    Py_XDECREF(gx);
    return result;
}

// ----------------------------------------------------------------------------
// RoPE

// x (..., T, D), D even, with cos and sin of shape (T, D).
static int rope_check(PyArrayObject *x, const char *xname, PyArrayObject *cos, PyArrayObject *sin) {
    const int nd = PyArray_NDIM(x);
    const npy_intp *td = PyArray_DIMS(x) + nd - 2;
    if (td[1] % 2 != 0) {
        shape_error(x, xname, "have an even last dimension (head_dim) for rotate_half");
        return 0;
    }
    return has_shape(cos, "cos", 2, td, "have shape (T, D) matching the last two dimensions") &&
           has_shape(sin, "sin", 2, td, "have shape (T, D) matching the last two dimensions");
}

typedef void (*RopeKernel)(float *, const float *, const float *, const float *, ptrdiff_t,
                           ptrdiff_t, ptrdiff_t, ptrdiff_t);

// Forward and backward have the same signature and checks; only the kernel differs.
static PyObject *rope_call(PyObject *args, PyObject *kw, char **kwlist, RopeKernel kernel,
                           int zeroed) {
    PyObject *xo, *co, *so, *result = NULL;
    PyArrayObject *x = NULL, *cos = NULL, *sin = NULL, *y = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO", kwlist, &xo, &co, &so)) return NULL;
    if (!(x = float_array(xo, kwlist[0], 2, -1, FINITE))) goto fail;
    if (!(cos = float_array(co, "cos", 2, 2, FINITE))) goto fail;
    if (!(sin = float_array(so, "sin", 2, 2, FINITE))) goto fail;
    if (!rope_check(x, kwlist[0], cos, sin)) goto fail;
    if (!(y = zeroed ? zeros_like(x) : new_array(PyArray_NDIM(x), PyArray_DIMS(x)))) goto fail;
    {
        const npy_intp d = last_dim(x), t = PyArray_DIM(x, PyArray_NDIM(x) - 2);
        const npy_intp b = PyArray_SIZE(x) / (t * d);
        Py_BEGIN_ALLOW_THREADS
        kernel(F(y), F(x), F(cos), F(sin), b, t, d, d); // the whole row rotated
        Py_END_ALLOW_THREADS
    }
    result = (PyObject *)y;
    y = NULL;
fail:
    Py_XDECREF(x);
    Py_XDECREF(cos);
    Py_XDECREF(sin);
    Py_XDECREF(y);
    return result;
}

PyDoc_STRVAR(rope_forward_doc,
             "rope_forward(x, cos, sin) -> y\n\n"
             "y = x ⊙ cos + rotate_half(x) ⊙ sin for x (..., T, D), cos and sin (T, D).");

static PyObject *py_rope_forward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "cos", "sin", NULL};
    return rope_call(args, kw, kwlist, rope_forward, 0);
}

PyDoc_STRVAR(rope_backward_doc,
             "rope_backward(g, cos, sin) -> g_x\n\nThe transposed rotation (true gradient).");

static PyObject *py_rope_backward(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"g", "cos", "sin", NULL};
    return rope_call(args, kw, kwlist, rope_backward, 1);
}

// ----------------------------------------------------------------------------
// Relevance

PyDoc_STRVAR(relevance_doc, "relevance(x, g) -> R = x ⊙ g (same shapes, finite)");

static PyObject *py_relevance(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"x", "g", NULL};
    return elementwise_call(args, kw, kwlist, relevance);
}

// ----------------------------------------------------------------------------
// Threads: a default for calls that name none, and what the BLAS is

// The threads a call uses when it names none (masklrp.set_num_threads). Calls
// read it once when they start, and nothing else ever writes it.
static atomic_int default_threads;

int valid_threads(long n) {
    if (n >= 1 && n <= MLRP_MAX_THREADS) return 1;
    PyErr_Format(PyExc_ValueError, "threads must be in [1, %d], got %ld", MLRP_MAX_THREADS, n);
    return 0;
}

// The CPUs this process may run on (its affinity mask, as os.sched_getaffinity).
static int available_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)(online < MLRP_MAX_THREADS ? online : MLRP_MAX_THREADS) : 1;
}

PyDoc_STRVAR(set_num_threads_doc,
             "set_num_threads(n)\n\n"
             "Threads of every later masklrp call that does not name its own (n >= 1). A\n"
             "call's threads are its own: OpenBLAS itself always runs single-threaded, so\n"
             "this touches no library state and never changes a call already running.");

static PyObject *py_set_num_threads(PyObject *self, PyObject *arg) {
    if (PyBool_Check(arg) || !PyLong_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "n must be an int, got %s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 1 || n > MLRP_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "n must be between 1 and %d, got %ld", MLRP_MAX_THREADS, n);
        return NULL;
    }
    atomic_store(&default_threads, (int)n);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(get_num_threads_doc,
             "get_num_threads() -> int: threads of a call that names none (at import: the CPUs\n"
             "this process may use).");

static PyObject *py_get_num_threads(PyObject *self, PyObject *unused) {
    return PyLong_FromLong(atomic_load(&default_threads));
}

PyDoc_STRVAR(set_attention_block_doc,
             "_set_attention_block(rows) -> int\n\n"
             "For tests: the query rows of each block the engine computes attention in, from\n"
             "the next call on, process-wide (rows <= 0: the default). Returns the previous value.\n"
             "Results do not depend on it beyond float32 rounding; small blocks let short\n"
             "sequences exercise many blocks.");

static PyObject *py_set_attention_block(PyObject *self, PyObject *arg) {
    const Py_ssize_t rows = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (rows == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(attention_block_set(rows));
}

PyDoc_STRVAR(set_mlp_cache_doc,
             "_set_mlp_cache(bytes) -> int\n\n"
             "For tests: the most bytes of MLP pre-activations a workspace caches, from the next\n"
             "call on, process-wide (bytes < 0: the default, 1 GiB); beyond, the backward recomputes\n"
             "them from the MLP's cached input. Returns the previous value.");

static PyObject *py_set_mlp_cache(PyObject *self, PyObject *arg) {
    const Py_ssize_t bytes = PyNumber_AsSsize_t(arg, PyExc_OverflowError);
    if (bytes == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromSsize_t(mlp_cache_set(bytes));
}

PyDoc_STRVAR(blas_info_doc,
             "blas_info() -> dict: 'library' ('scipy-openblas32'), 'version', 'core' (the kernel\n"
             "family OpenBLAS chose for this CPU), 'config' (openblas_get_config), 'blas_threads'\n"
             "(always 1: see set_num_threads) and 'num_threads' (get_num_threads()).");

static PyObject *py_blas_info(PyObject *self, PyObject *unused) {
    // openblas_get_config() starts "OpenBLAS <version> ..."
    const char *config = blas_config();
    char version[32] = "unknown";
    sscanf(config, "OpenBLAS %31s", version);
    return Py_BuildValue("{s:s,s:s,s:s,s:s,s:i,s:i}", "library", "scipy-openblas32", "version", version, "core",
                         blas_core(), "config", config, "blas_threads", 1, "num_threads",
                         atomic_load(&default_threads));
}

// ----------------------------------------------------------------------------

PyDoc_STRVAR(head_counts_doc,
             "head_counts(attentions, queries, keys, arcs, n_relations) -> dict\n\n"
             "Head statistics (DESIGN.md 3.1) of given attention probabilities (float32\n"
             "(B,L,H,T,T)): for each query (queries, bool/uint8 (B,T)) k* = the argmax over the\n"
             "candidate keys (keys, (B,T); ties -> lowest index). Returns int64 counters\n"
             "{'positional': (L,H,2T-1) at offset k* - q + T - 1, 'syntactic': (L,H,n_relations)\n"
             "+1 per arc (int64 (n,5): sequence, query, head span lo, hi, relation; sorted by\n"
             "sequence) whose query's k* lies in [lo, hi)}.");

#define KERNEL(name) {#name, (PyCFunction)(void (*)(void))py_##name, METH_VARARGS | METH_KEYWORDS, name##_doc}

static PyMethodDef core_methods[] = {
    KERNEL(linear_forward),
    KERNEL(linear_backward),
    KERNEL(softmax_forward),
    KERNEL(softmax_backward),
    KERNEL(matmul_forward),
    KERNEL(matmul_backward),
    KERNEL(product_forward),
    KERNEL(product_backward),
    KERNEL(activation_forward),
    KERNEL(activation_backward),
    KERNEL(layernorm_forward),
    KERNEL(layernorm_backward),
    KERNEL(rmsnorm_forward),
    KERNEL(rmsnorm_backward),
    KERNEL(rope_forward),
    KERNEL(rope_backward),
    KERNEL(relevance),
    KERNEL(head_counts),
    {"set_num_threads", py_set_num_threads, METH_O, set_num_threads_doc},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, get_num_threads_doc},
    {"blas_info", py_blas_info, METH_NOARGS, blas_info_doc},
    {"_set_attention_block", py_set_attention_block, METH_O, set_attention_block_doc},
    {"_set_mlp_cache", py_set_mlp_cache, METH_O, set_mlp_cache_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "masklrp._core",
    "masklrp's C core: LRP rule kernels (see masklrp.kernels) and the model engine (masklrp.model).", -1, core_methods,
};

// A tuple of the valid names of an option, exported so Python never restates them.
static int add_names(PyObject *module, const char *attr, const char *const *names, int n) {
    PyObject *t = PyTuple_New(n);
    if (t == NULL) return -1;
    for (int i = 0; i < n; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL) { Py_DECREF(t); return -1; }
        PyTuple_SET_ITEM(t, i, name);
    }
    if (PyModule_AddObject(module, attr, t) < 0) { Py_DECREF(t); return -1; }
    return 0;
}

PyMODINIT_FUNC PyInit__core(void) {
    import_array();
    blas_pin_single_thread();
    atomic_store(&default_threads, available_cpus());
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL) return NULL;
    if (engine_type_add(m) < 0 || add_names(m, "ACTIVATIONS", ACTIVATION_NAMES, 5) < 0 ||
        add_names(m, "SINGLE_OPERAND_RULES", UNARY_RULE_NAMES, 2) < 0 ||
        add_names(m, "PRODUCT_RULES", PRODUCT_RULE_NAMES, 3) < 0 ||
        add_names(m, "WEIGHT_LAYOUTS", WEIGHT_LAYOUT_NAMES, 2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
