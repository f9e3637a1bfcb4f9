// Shared by the two CPython/NumPy glue files: module.c (kernels, module init)
// and module_engine.c (the Engine type). Nothing else includes Python.h.
#ifndef MASKLRP_MODULE_H
#define MASKLRP_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#define PY_ARRAY_UNIQUE_SYMBOL masklrp_ARRAY_API // one NumPy C-API table for both files
#ifndef MASKLRP_MODULE_MAIN
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>

#include "masklrp.h"

typedef enum { FINITE, FINITE_OR_NEG_INF } Finiteness;

extern const char *const ACTIVATION_NAMES[]; // indexed by Activation

PyObject *shape_of(PyArrayObject *a);
// Sets ValueError "<name> must <what>, got shape (...)".
void shape_error(PyArrayObject *a, const char *name, const char *what);
// A new reference to an aligned, C-contiguous float32 copy or view of obj with
// ndim in [min_ndim, max_ndim], non-empty and finite; NULL with an error naming `name`.
PyArrayObject *float_array(PyObject *obj, const char *name, int min_ndim, int max_ndim, Finiteness finiteness);
// 1 if n is a valid thread count, else 0 with a ValueError naming `threads`.
int valid_threads(long n);
// Looks up a str option among `names`; TypeError / ValueError naming `arg`.
int choice(PyObject *obj, const char *arg, const char *const *names, int n, int *out);

// module_headstats.c: checks queries, keys (B,T) and arcs (n,5) for R relations, adds
// zeroed "positional" (L,H,2T-1) and "syntactic" (L,H,R) counters to `result` and
// fills *hs; held[0..2] get references to release (also on error). 0 or -1.
int head_stats_args(PyObject *queries, PyObject *keys, PyObject *arcs, int R, npy_intp B, npy_intp T, int L, int H,
                    HeadStats *hs, PyObject *result, PyArrayObject **held);
// masklrp._core.head_counts(attentions, queries, keys, arcs, n_relations) -> dict
PyObject *py_head_counts(PyObject *self, PyObject *args, PyObject *kw);

// module_engine.c: adds masklrp._core.Engine to the module; -1 on error.
int engine_type_add(PyObject *module);

#endif // MASKLRP_MODULE_H
