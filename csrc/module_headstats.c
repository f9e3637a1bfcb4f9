// Glue of the head statistics (headstats.c): the checks shared by the kernel
// masklrp._core.head_counts (counting given attention probabilities) and
// Engine.head_stats (counting inside the forward, module_engine.c).
#include "module.h"

// obj (bool or uint8 (B,T), values 0/1) as a C-contiguous uint8 array; NULL with an
// error naming `name`.
static PyArrayObject *flag_array(PyObject *obj, const char *name, npy_intp B, npy_intp T) {
    if (!PyArray_Check(obj) || (PyArray_TYPE((PyArrayObject *)obj) != NPY_BOOL &&
                                PyArray_TYPE((PyArrayObject *)obj) != NPY_UINT8)) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray of dtype bool or uint8", name);
        return NULL;
    }
    PyArrayObject *in = (PyArrayObject *)obj;
    if (PyArray_NDIM(in) != 2 || PyArray_DIM(in, 0) != B || PyArray_DIM(in, 1) != T) {
        char what[80];
        snprintf(what, sizeof what, "have shape (%zd, %zd) (batch, length)", (Py_ssize_t)B, (Py_ssize_t)T);
        shape_error(in, name, what);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_UINT8, NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    if (a == NULL) return NULL;
    const uint8_t *u = (const uint8_t *)PyArray_DATA(a);
    for (npy_intp i = 0; i < B * T; i++) {
        if (u[i] > 1) {
            PyErr_Format(PyExc_ValueError, "%s[%zd, %zd] must be 0 or 1", name, (Py_ssize_t)(i / T), (Py_ssize_t)(i % T));
            Py_DECREF(a);
            return NULL;
        }
    }
    return a;
}

static PyArrayObject *arc_array(PyObject *obj, const uint8_t *queries, npy_intp B, npy_intp T, int R) {
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_INT64) {
        PyErr_SetString(PyExc_TypeError, "arcs must be a numpy.ndarray of dtype int64");
        return NULL;
    }
    if (PyArray_NDIM((PyArrayObject *)obj) != 2 || PyArray_DIM((PyArrayObject *)obj, 1) != 5) {
        shape_error((PyArrayObject *)obj, "arcs", "have shape (n, 5): sequence, query, head lo, head hi, relation");
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_INT64, NPY_ARRAY_IN_ARRAY);
    if (a == NULL) return NULL;
    const int64_t *p = (const int64_t *)PyArray_DATA(a);
    for (npy_intp i = 0; i < PyArray_DIM(a, 0); i++) {
        const int64_t *arc = p + i * 5;
        const char *bad = NULL;
        if (arc[0] < 0 || arc[0] >= B) bad = "its sequence is not in the batch";
        else if (i > 0 && arc[0] < arc[-5]) bad = "arcs must be sorted by sequence";
        else if (arc[1] < 0 || arc[1] >= T || !queries[arc[0] * T + arc[1]]) bad = "its query is not a query token";
        else if (arc[2] < 0 || arc[2] >= arc[3] || arc[3] > T) bad = "its head span [lo, hi) is empty or outside the sequence";
        else if (arc[4] < 0 || arc[4] >= R) bad = "its relation is not in [0, n_relations)";
        if (bad != NULL) {
            PyErr_Format(PyExc_ValueError, "arcs[%zd] = (%lld, %lld, %lld, %lld, %lld): %s", (Py_ssize_t)i,
                         (long long)arc[0], (long long)arc[1], (long long)arc[2], (long long)arc[3],
                         (long long)arc[4], bad);
            Py_DECREF(a);
            return NULL;
        }
    }
    return a;
}

// Adds a zeroed int64 array under `key`; its data, or NULL on error.
static int64_t *add_counter(PyObject *dict, const char *key, int nd, const npy_intp *dims) {
    PyObject *a = PyArray_ZEROS(nd, (npy_intp *)dims, NPY_INT64, 0);
    if (a == NULL) return NULL;
    const int err = PyDict_SetItemString(dict, key, a);
    Py_DECREF(a);
    return err < 0 ? NULL : (int64_t *)PyArray_DATA((PyArrayObject *)a);
}

int head_stats_args(PyObject *queries, PyObject *keys, PyObject *arcs, int R, npy_intp B, npy_intp T, int L, int H,
                    HeadStats *hs, PyObject *result, PyArrayObject **held) {
    held[0] = held[1] = held[2] = NULL;
    if (R < 1 || R > 4096) {
        PyErr_Format(PyExc_ValueError, "n_relations must be in [1, 4096], got %d", R);
        return -1;
    }
    if ((held[0] = flag_array(queries, "queries", B, T)) == NULL) return -1;
    if ((held[1] = flag_array(keys, "keys", B, T)) == NULL) return -1;
    if ((held[2] = arc_array(arcs, PyArray_DATA(held[0]), B, T, R)) == NULL) return -1;
    const npy_intp positional[3] = {L, H, 2 * T - 1}, syntactic[3] = {L, H, R};
    *hs = (HeadStats){.queries = PyArray_DATA(held[0]), .keys = PyArray_DATA(held[1]),
                      .arcs = PyArray_DATA(held[2]), .n_arcs = PyArray_DIM(held[2], 0), .R = R};
    if ((hs->positional = add_counter(result, "positional", 3, positional)) == NULL ||
        (hs->syntactic = add_counter(result, "syntactic", 3, syntactic)) == NULL)
        return -1;
    return 0;
}

PyObject *py_head_counts(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"attentions", "queries", "keys", "arcs", "n_relations", NULL};
    PyObject *att_obj, *queries, *keys, *arcs;
    int R;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOi:head_counts", kwlist, &att_obj, &queries, &keys, &arcs, &R))
        return NULL;
    PyArrayObject *att = float_array(att_obj, "attentions", 5, 5, FINITE), *held[3] = {NULL, NULL, NULL};
    PyObject *result = NULL;
    if (att == NULL) return NULL;
    const npy_intp B = PyArray_DIM(att, 0), L = PyArray_DIM(att, 1), H = PyArray_DIM(att, 2), T = PyArray_DIM(att, 3);
    if (PyArray_DIM(att, 4) != T) {
        shape_error(att, "attentions", "have shape (batch, layers, heads, length, length)");
        goto fail;
    }
    if (L > (1 << 20) || H > (1 << 20)) {
        shape_error(att, "attentions", "have at most 2**20 layers and heads");
        goto fail;
    }
    HeadStats hs;
    if ((result = PyDict_New()) == NULL ||
        head_stats_args(queries, keys, arcs, R, B, T, (int)L, (int)H, &hs, result, held) < 0)
        goto fail;
    int32_t *kstar = PyMem_Malloc((size_t)T * sizeof *kstar);
    if (kstar == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    const float *a = (const float *)PyArray_DATA(att);
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp b = 0; b < B; b++) {
        const int64_t *first;
        const ptrdiff_t n = arcs_of(&hs, b, &first);
        head_counts(&hs, a + b * L * H * T * T, H * T * T, (int)L, (int)H, T, b, first, n, kstar);
    }
    Py_END_ALLOW_THREADS
    PyMem_Free(kstar);
    Py_DECREF(att);
    for (int i = 0; i < 3; i++) Py_DECREF(held[i]);
    return result;
fail:
    Py_DECREF(att);
    for (int i = 0; i < 3; i++) Py_XDECREF(held[i]);
    Py_XDECREF(result);
    return NULL;
}
