// masklrp._core.Engine: the CPython/NumPy glue of the model engine (engine*.c).
// Engine(spec, weights) checks every canonical weight once (dtype, layout, shape,
// finiteness) and borrows it without copying; Engine.run() checks the token
// arrays, allocates the outputs, releases the GIL and runs the batch.
// The spec and weight names are documented in masklrp/spec.py.
#include "module.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    PyObject_HEAD
    Model model;
    LayerWeights *layers;
    PyObject *weights; // the dict whose arrays the model points into: kept alive
    WorkspacePool *pool;
} EngineObject;

// ----------------------------------------------------------------------------
// Spec

static const char *const FAMILY_NAMES[] = {"encoder", "decoder"};
static const char *const NORM_NAMES[] = {"layernorm", "rmsnorm"};
static const char *const POOL_NAMES[] = {"first", "last", "mean", "none"};

// Stream names and their rules (DESIGN.md §2): AttnLRP, CP-LRP (q, k and the
// gate held constant) and the true gradient.
static const char *const STREAM_NAMES[] = {"attnlrp", "cp", "gradient"};
static const StreamRules STREAM_RULES[] = {
    {PRODUCT_UNIFORM, PRODUCT_UNIFORM, RULE_LRP},
    {PRODUCT_CP, PRODUCT_CP, RULE_LRP},
    {PRODUCT_GRADIENT, PRODUCT_GRADIENT, RULE_GRADIENT},
};
// Which relevance a masked stream's taps read (MaskSemantics, DESIGN.md §3.2).
static const char *const SEMANTICS_NAMES[] = {"reference", "strict"};

static PyObject *spec_item(PyObject *spec, const char *key) {
    PyObject *v = PyDict_GetItemString(spec, key); // borrowed
    if (v == NULL) PyErr_Format(PyExc_KeyError, "spec is missing %s", key);
    return v;
}

static int spec_int(PyObject *spec, const char *key, int min, int *out) {
    PyObject *v = spec_item(spec, key);
    if (v == NULL) return 0;
    if (PyBool_Check(v) || !PyLong_Check(v)) {
        PyErr_Format(PyExc_TypeError, "spec[%s] must be an int, got %s", key, Py_TYPE(v)->tp_name);
        return 0;
    }
    const long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred()) return 0;
    if (x < min || x > (1L << 30)) {
        PyErr_Format(PyExc_ValueError, "spec[%s] must be an int in [%d, 2**30], got %ld", key, min, x);
        return 0;
    }
    *out = (int)x;
    return 1;
}

static int spec_float(PyObject *spec, const char *key, float *out) {
    PyObject *v = spec_item(spec, key);
    if (v == NULL) return 0;
    const double x = PyFloat_AsDouble(v);
    if (x == -1.0 && PyErr_Occurred()) return 0;
    if (!isfinite((float)x)) {
        PyErr_Format(PyExc_ValueError, "spec[%s] must be a finite float32, got %R", key, v);
        return 0;
    }
    *out = (float)x;
    return 1;
}

static int spec_bool(PyObject *spec, const char *key, bool *out) {
    PyObject *v = spec_item(spec, key);
    if (v == NULL) return 0;
    if (!PyBool_Check(v)) {
        PyErr_Format(PyExc_TypeError, "spec[%s] must be a bool, got %s", key, Py_TYPE(v)->tp_name);
        return 0;
    }
    *out = v == Py_True;
    return 1;
}

static int spec_choice(PyObject *spec, const char *key, const char *const *names, int n, int *out) {
    PyObject *v = spec_item(spec, key);
    return v != NULL && choice(v, key, names, n, out);
}

// ----------------------------------------------------------------------------
// Weights: borrowed, so they must already be what the engine reads.

#define ANY (-1)

// weights[name] as a float32, C-contiguous, aligned, finite array of shape
// (d0[, d1]) (ANY matches any size, reported in *n0); optional: absent -> NULL.
static int weight(PyObject *weights, const char *name, bool required, npy_intp d0, npy_intp d1,
                  const float **out, npy_intp *n0) {
    *out = NULL;
    PyObject *obj = PyDict_GetItemString(weights, name);
    if (obj == NULL) {
        if (required) PyErr_Format(PyExc_ValueError, "weights is missing %s", name);
        return !required;
    }
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_FLOAT32) {
        PyErr_Format(PyExc_TypeError, "weights[%s] must be a numpy.ndarray of dtype float32", name);
        return 0;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (!PyArray_IS_C_CONTIGUOUS(a) || !PyArray_ISALIGNED(a) || !PyArray_ISNOTSWAPPED(a)) {
        PyErr_Format(PyExc_ValueError,
                     "weights[%s] must be C-contiguous, aligned and native-endian "
                     "(the engine reads it in place; use numpy.ascontiguousarray)", name);
        return 0;
    }
    const int nd = d1 == 0 ? 1 : 2;
    const npy_intp want0 = d0 == ANY ? (PyArray_NDIM(a) > 0 ? PyArray_DIM(a, 0) : 0) : d0;
    if (PyArray_NDIM(a) != nd || want0 < 1 || PyArray_DIM(a, 0) != want0 || (nd == 2 && PyArray_DIM(a, 1) != d1)) {
        char what[96];
        if (nd == 1) snprintf(what, sizeof what, "have shape (%zd,)", (Py_ssize_t)want0);
        else if (d0 == ANY) snprintf(what, sizeof what, "have shape (n >= 1, %zd)", (Py_ssize_t)d1);
        else snprintf(what, sizeof what, "have shape (%zd, %zd)", (Py_ssize_t)d0, (Py_ssize_t)d1);
        shape_error(a, name, what);
        return 0;
    }
    const float *p = (const float *)PyArray_DATA(a);
    const npy_intp n = PyArray_SIZE(a);
    int finite = 1;
    for (npy_intp i = 0; i < n; i++) finite &= isfinite(p[i]) != 0;
    if (!finite) {
        PyErr_Format(PyExc_ValueError, "weights[%s] contains NaN or Inf", name);
        return 0;
    }
    *out = p;
    if (n0 != NULL) *n0 = PyArray_DIM(a, 0);
    return 1;
}

static int affine(PyObject *weights, const char *name, bool required, npy_intp out_dim, npy_intp in_dim,
                  Affine *a) {
    char w[96], b[96];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(b, sizeof b, "%s.bias", name);
    a->w = a->b = NULL;
    if (!weight(weights, w, required, out_dim, in_dim, &a->w, NULL)) return 0;
    if (a->w == NULL) return 1;
    return weight(weights, b, false, out_dim, 0, &a->b, NULL);
}

// weights["attn.relative_bias"], optional: (H, 2R-1) for sequences up to R tokens.
static int relative_bias(PyObject *weights, Model *m) {
    PyObject *obj = PyDict_GetItemString(weights, "attn.relative_bias");
    if (obj == NULL) return 1;
    const npy_intp width = PyArray_Check(obj) && PyArray_NDIM((PyArrayObject *)obj) == 2
                               ? PyArray_DIM((PyArrayObject *)obj, 1) : 0;
    if (width < 1 || width % 2 == 0 || width > 2 * 65536) {
        PyErr_SetString(PyExc_ValueError, "weights[attn.relative_bias] must have shape (n_heads, 2R - 1): "
                        "one column per offset key - query in [1 - R, R - 1]");
        return 0;
    }
    if (!weight(weights, "attn.relative_bias", true, m->H, width, &m->rel_bias, NULL)) return 0;
    m->rel_span = (int)((width + 1) / 2);
    return 1;
}

// DeBERTa's relative embeddings (R2,C), their norm and the (2P-1) row index of each query -
// key offset, optional together; the index must hold whole numbers in [0, R2).
static int relative_embeddings(PyObject *weights, Model *m) {
    npy_intp R2 = 0, width = 0;
    if (!weight(weights, "relative.embeddings", false, ANY, m->C, &m->rel_emb, &R2)) return 0;
    if (m->rel_emb == NULL) return 1;
    if (!affine(weights, "relative.norm", false, m->C, 0, &m->rel_norm) ||
        !weight(weights, "attn.relative_index", true, ANY, 0, &m->rel_index, &width))
        return 0;
    if (width % 2 == 0 || R2 > (1 << 24)) {
        PyErr_SetString(PyExc_ValueError, "weights[attn.relative_index] must have shape (2P - 1,): one row "
                        "per offset query - key in [1 - P, P - 1]");
        return 0;
    }
    for (npy_intp i = 0; i < width; i++) {
        const float r = m->rel_index[i];
        if (!(r >= 0.0f && r < (float)R2 && r == floorf(r))) {
            PyErr_Format(PyExc_ValueError, "weights[attn.relative_index][%zd] = %g is not a row of "
                         "relative.embeddings (a whole number in [0, %zd))", (Py_ssize_t)i, (double)r, (Py_ssize_t)R2);
            return 0;
        }
    }
    m->R2 = (int)R2;
    m->rel_positions = (int)((width + 1) / 2);
    return 1;
}

// Reads the spec and points a Model into the arrays of `weights` (the engine's own dict).
// spec["sliding_layers"]: () or L bools, the layers the sliding window applies to and
// that take the local RoPE table when there is one; () = every layer, one table.
static int layer_windows(PyObject *spec, const Model *m, LayerWeights *layers, int window) {
    PyObject *v = spec_item(spec, "sliding_layers");
    if (v == NULL) return 0;
    PyObject *seq = PySequence_Fast(v, "spec[sliding_layers] must be a sequence of bools");
    if (seq == NULL) return 0;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    bool ok = n == 0 || n == m->L;
    for (Py_ssize_t i = 0; i < n && ok; i++) ok = PyBool_Check(PySequence_Fast_GET_ITEM(seq, i));
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "spec[sliding_layers] must be () or %d bools (one per layer)", m->L);
        Py_DECREF(seq);
        return 0;
    }
    for (int l = 0; l < m->L; l++) {
        const bool sliding = n == 0 || PySequence_Fast_GET_ITEM(seq, l) == Py_True;
        layers[l].window = sliding ? window : 0;
        layers[l].local_rope = n > 0 && sliding && m->inv_freq_local != NULL;
    }
    Py_DECREF(seq);
    return 1;
}

static int engine_setup(EngineObject *self, PyObject *spec, PyObject *weights) {
    Model m = {0};
    int family, norm, act, pool, window, embedding_size;
    bool post, first_attn_norm, head_norm;
    if (!spec_choice(spec, "family", FAMILY_NAMES, 2, &family) || !spec_choice(spec, "norm", NORM_NAMES, 2, &norm) ||
        !spec_choice(spec, "activation", ACTIVATION_NAMES, 5, &act) || !spec_choice(spec, "pool", POOL_NAMES, 4, &pool) ||
        !spec_bool(spec, "gated_mlp", &m.gated) || !spec_bool(spec, "causal", &m.causal) ||
        !spec_bool(spec, "qk_norm", &m.qk_norm) || !spec_bool(spec, "parallel_residual", &m.parallel_residual) ||
        !spec_int(spec, "n_layers", 1, &m.L) || !spec_int(spec, "n_heads", 1, &m.H) ||
        !spec_int(spec, "n_kv_heads", 1, &m.KV) || !spec_int(spec, "head_dim", 1, &m.D) ||
        !spec_int(spec, "hidden", 1, &m.C) || !spec_int(spec, "intermediate", 1, &m.F) ||
        !spec_int(spec, "vocab", 1, &m.V) || !spec_int(spec, "type_vocab", 0, &m.TT) ||
        !spec_int(spec, "sliding_window", 0, &window) || !spec_float(spec, "norm_eps", &m.eps) ||
        !spec_bool(spec, "post_norms", &post) || !spec_int(spec, "embedding_size", 0, &embedding_size) ||
        !spec_bool(spec, "first_attn_norm", &first_attn_norm) || !spec_bool(spec, "head_norm", &head_norm) || !spec_float(spec, "embed_scale", &m.embed_scale) ||
        !spec_float(spec, "final_softcap", &m.final_softcap) ||
        !spec_int(spec, "rotary_dim", 0, &m.rope_dim) || !spec_int(spec, "rope_long_after", 0, &m.rope_long_after) ||
        !spec_float(spec, "attn_scale", &m.attn_scale) ||
        !spec_float(spec, "rope_attention_scaling", &m.rope_scaling) ||
        !spec_int(spec, "n_experts", 0, &m.X) || !spec_int(spec, "experts_per_token", 0, &m.K) ||
        !spec_int(spec, "expert_intermediate", 0, &m.XF) || !spec_bool(spec, "norm_topk_prob", &m.norm_topk))
        return -1;
    PyObject *positions = spec_item(spec, "positions"), *head_act = spec_item(spec, "head_activation");
    if (positions == NULL || head_act == NULL) return -1;
    m.family = (Family)family;
    m.norm = (NormKind)norm;
    m.act = (Activation)act;
    m.pool = (Pool)pool;
    m.rope = PyUnicode_Check(positions) && PyUnicode_CompareWithASCIIString(positions, "rope") == 0;
    if (!(m.eps > 0.0f)) { // a norm divides by sqrt(var + eps)
        PyErr_Format(PyExc_ValueError, "spec[norm_eps] must be > 0, got %g", (double)m.eps);
        return -1;
    }
    if (m.H % m.KV != 0) {
        PyErr_Format(PyExc_ValueError, "spec: n_heads (%d) must be a multiple of n_kv_heads (%d)", m.H, m.KV);
        return -1;
    }
    if (!(m.embed_scale > 0.0f) || m.final_softcap < 0.0f) {
        PyErr_Format(PyExc_ValueError, "spec: embed_scale must be > 0 and final_softcap >= 0, got %g and %g",
                     (double)m.embed_scale, (double)m.final_softcap);
        return -1;
    }
    if (m.X > 0 && (m.K < 1 || m.K > m.X || m.XF < 1 || !m.gated)) {
        PyErr_Format(PyExc_ValueError, "spec: a mixture of %d experts needs 1 <= experts_per_token <= n_experts "
                     "(got %d), expert_intermediate >= 1 (got %d) and gated_mlp", m.X, m.K, m.XF);
        return -1;
    }
    if (m.rope_dim == 0) m.rope_dim = m.D; // the whole head
    if (m.rope && (m.rope_dim % 2 != 0 || m.rope_dim > m.D)) {
        PyErr_Format(PyExc_ValueError, "spec: RoPE needs an even rotary_dim <= head_dim (%d), got %d", m.D,
                     m.rope_dim);
        return -1;
    }
    m.E = embedding_size > 0 ? embedding_size : m.C;
    const npy_intp C = m.C, E = m.E, HD = (npy_intp)m.H * m.D, QKV = (npy_intp)(m.H + 2 * m.KV) * m.D;
    const npy_intp FU = (npy_intp)(m.gated ? 2 : 1) * m.F;
    npy_intp P = 0, NO = 0;
    if (!weight(weights, "embed.word", true, m.V, E, &m.wte, NULL) ||
        !weight(weights, "embed.position", false, ANY, E, &m.wpe, &P) ||
        !weight(weights, "embed.type", m.TT > 0, m.TT > 0 ? m.TT : ANY, E, &m.wtt, NULL) ||
        !affine(weights, "embed.norm", m.family == FAMILY_ENCODER, E, 0, &m.emb_norm) ||
        !affine(weights, "embed.project", embedding_size > 0, C, E, &m.emb_proj) ||
        !affine(weights, "head.norm", head_norm, C, 0, &m.head_norm) ||
        !affine(weights, "final_norm", false, C, 0, &m.final_norm) ||
        !affine(weights, "head.dense", false, C, C, &m.head_dense) ||
        !weight(weights, "head.out.weight", m.pool == POOL_NONE, ANY, C, &m.head_out.w, &NO) ||
        !weight(weights, "head.out.bias", false, NO > 0 ? NO : 1, 0, &m.head_out.b, NULL) ||
        !weight(weights, "rope.inv_freq", m.rope, m.rope_dim / 2 > 0 ? m.rope_dim / 2 : 1, 0, &m.inv_freq, NULL) ||
        !weight(weights, "rope.inv_freq_long", m.rope && m.rope_long_after > 0,
                m.rope_dim / 2 > 0 ? m.rope_dim / 2 : 1, 0, &m.inv_freq_long, NULL) ||
        !weight(weights, "rope.inv_freq_local", false, m.rope_dim / 2 > 0 ? m.rope_dim / 2 : 1, 0, &m.inv_freq_local,
                NULL) ||
        !relative_bias(weights, &m) || !relative_embeddings(weights, &m))
        return -1;
    if (m.wtt == NULL) m.TT = 0;
    if (m.rope_long_after == 0) m.inv_freq_long = NULL; // one table
    m.P = (int)P;
    m.NO = m.head_out.w != NULL ? (int)NO : m.C;
    if (m.head_dense.w != NULL) {
        int ha;
        if (!choice(head_act, "spec[head_activation]", ACTIVATION_NAMES, 5, &ha)) return -1;
        m.head_act = (Activation)ha;
    }
    if (!m.rope && m.wpe == NULL && m.rel_emb == NULL) {
        PyErr_SetString(PyExc_ValueError, "weights needs embed.position (absolute positions), relative.embeddings "
                        "or spec positions='rope'");
        return -1;
    }
    LayerWeights *layers = PyMem_Calloc((size_t)m.L, sizeof *layers);
    if (layers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (int l = 0; l < m.L; l++) {
        char name[64];
        LayerWeights *lw = &layers[l];
#define LAYER_AFFINE(field, key, required, out_dim, in_dim)                                                   \
    (snprintf(name, sizeof name, "layers.%d." key, l), affine(weights, name, required, out_dim, in_dim, &lw->field))
        if (!LAYER_AFFINE(attn_norm, "attn_norm", l > 0 || first_attn_norm, C, 0) || !LAYER_AFFINE(qkv, "qkv", true, QKV, C) ||
            !LAYER_AFFINE(out, "out", true, C, HD) || !LAYER_AFFINE(mlp_norm, "mlp_norm", true, C, 0) ||
            !LAYER_AFFINE(up, "up", m.X == 0, FU, C) ||
            !LAYER_AFFINE(down, "down", lw->up.w != NULL, C, m.F) ||
            !LAYER_AFFINE(router, "router", m.X > 0, m.X, C) ||
            !LAYER_AFFINE(shared_gate, "shared_gate", m.X > 0 && lw->up.w != NULL, 1, C) ||
            (m.X > 0 && (!weight(weights, (snprintf(name, sizeof name, "layers.%d.experts.up.weight", l), name), true,
                                 (npy_intp)m.X * 2 * m.XF, C, &lw->expert_up, NULL) ||
                         !weight(weights, (snprintf(name, sizeof name, "layers.%d.experts.down.weight", l), name),
                                 true, (npy_intp)m.X * C, m.XF, &lw->expert_down, NULL))) ||
            !LAYER_AFFINE(q_norm, "q_norm", m.qk_norm, m.D, 0) || !LAYER_AFFINE(k_norm, "k_norm", m.qk_norm, m.D, 0) ||
            !LAYER_AFFINE(pos_key, "pos_key", false, HD, C) || !LAYER_AFFINE(pos_query, "pos_query", false, HD, C) ||
            (post && (!LAYER_AFFINE(attn_post_norm, "attn_post_norm", true, C, 0) ||
                      !LAYER_AFFINE(mlp_post_norm, "mlp_post_norm", true, C, 0)))) {
            PyMem_Free(layers);
            return -1;
        }
        if (m.X > 0 && (lw->up.w != NULL) != (layers[0].up.w != NULL)) {
            PyErr_Format(PyExc_ValueError, "weights: layers.%d %s a shared expert (up) and layers.0 %s", l,
                         lw->up.w != NULL ? "has" : "has no", layers[0].up.w != NULL ? "has" : "has not");
            PyMem_Free(layers);
            return -1;
        }
        if ((lw->pos_key.w != NULL || lw->pos_query.w != NULL) && m.rel_emb == NULL) {
            PyErr_Format(PyExc_ValueError, "weights has layers.%d.pos_key / pos_query but no relative.embeddings", l);
            PyMem_Free(layers);
            return -1;
        }
#undef LAYER_AFFINE
    }
    if (!layer_windows(spec, &m, layers, window)) {
        PyMem_Free(layers);
        return -1;
    }
    if (self->pool == NULL && (self->pool = workspace_pool_new()) == NULL) {
        PyMem_Free(layers);
        PyErr_NoMemory();
        return -1;
    }
    self->layers = layers;
    m.layers = layers;
    self->model = m;
    return 0;
}

static int engine_init(EngineObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"spec", "weights", NULL};
    PyObject *spec, *given;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!:Engine", kwlist, &PyDict_Type, &spec, &PyDict_Type, &given))
        return -1;
    if (self->layers != NULL) { // a run may hold pointers into the current weights
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialised; make a new one");
        return -1;
    }
    // The engine points into these arrays for its whole life, so it keeps its own copy of the
    // mapping: replacing or deleting an entry of the caller's dict frees nothing it reads.
    PyObject *weights = PyDict_Copy(given);
    if (weights == NULL) return -1;
    if (engine_setup(self, spec, weights) < 0) {
        Py_DECREF(weights);
        return -1;
    }
    self->weights = weights;
    return 0;
}

static void engine_dealloc(EngineObject *self) {
    workspace_pool_free(self->pool);
    PyMem_Free(self->layers);
    Py_XDECREF(self->weights);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

// ----------------------------------------------------------------------------
// run()

// obj as a C-contiguous int64 (B,T) array (B, T taken from the first one checked:
// *B = 0 on entry) with values in [lo, hi); NULL with an error naming `name`.
static PyArrayObject *index_array(PyObject *obj, const char *name, npy_intp *B, npy_intp *T, int64_t lo,
                                  int64_t hi, const char *range) {
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_INT64) {
        PyErr_Format(PyExc_TypeError, "%s must be a numpy.ndarray of dtype int64, got %s", name,
                     PyArray_Check(obj) ? "another dtype" : Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *in = (PyArrayObject *)obj;
    if (PyArray_NDIM(in) != 2 || PyArray_DIM(in, 0) < 1 || PyArray_DIM(in, 1) < 1 ||
        (*B > 0 && (PyArray_DIM(in, 0) != *B || PyArray_DIM(in, 1) != *T))) {
        char what[80];
        if (*B > 0) snprintf(what, sizeof what, "have shape (%zd, %zd) like input_ids", (Py_ssize_t)*B, (Py_ssize_t)*T);
        else snprintf(what, sizeof what, "have shape (batch, length), both >= 1");
        shape_error(in, name, what);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)PyArray_FROM_OTF(obj, NPY_INT64, NPY_ARRAY_IN_ARRAY);
    if (a == NULL) return NULL;
    *B = PyArray_DIM(a, 0);
    *T = PyArray_DIM(a, 1);
    const int64_t *p = (const int64_t *)PyArray_DATA(a);
    for (npy_intp i = 0; i < *B * *T; i++) {
        if (p[i] < lo || p[i] >= hi) {
            PyErr_Format(PyExc_ValueError, "%s[%zd, %zd] = %lld is out of range: %s", name, (Py_ssize_t)(i / *T),
                         (Py_ssize_t)(i % *T), (long long)p[i], range);
            Py_DECREF(a);
            return NULL;
        }
    }
    return a;
}

static PyArrayObject *new_output(int nd, const npy_intp *dims) {
    return (PyArrayObject *)PyArray_ZEROS(nd, (npy_intp *)dims, NPY_FLOAT32, 0);
}

// Adds a new zeroed float32 array under `key` and returns its data; NULL on error.
static float *add_output(PyObject *dict, const char *key, int nd, const npy_intp *dims) {
    PyArrayObject *a = new_output(nd, dims);
    if (a == NULL) return NULL;
    int err = PyDict_SetItemString(dict, key, (PyObject *)a);
    Py_DECREF(a); // the dict holds it
    return err < 0 ? NULL : (float *)PyArray_DATA(a);
}

#define I64(a) ((const int64_t *)PyArray_DATA(a))

// The token arrays of a call, checked; `arrays` holds the references to release.
typedef struct {
    npy_intp B, T;
    PyArrayObject *arrays[4]; // ids, mask, positions, types (NULL without types)
} Tokens;

static void tokens_release(Tokens *t) {
    for (int i = 0; i < 4; i++) Py_CLEAR(t->arrays[i]);
}

// Starts a call of an initialised engine: checks the token arrays and threads into *t
// and *call (the rest of *call zeroed). -1 with an error.
static int call_begin(EngineObject *self, PyObject *ids_obj, PyObject *mask_obj, PyObject *pos_obj,
                      PyObject *types_obj, int threads, Tokens *t, EngineCall *call) {
    *t = (Tokens){0};
    const Model *m = &self->model;
    if (self->layers == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Engine was not initialised");
        return -1;
    }
    char range[96];
    snprintf(range, sizeof range, "token ids must be in [0, %d) (the vocabulary)", m->V);
    if ((t->arrays[0] = index_array(ids_obj, "input_ids", &t->B, &t->T, 0, m->V, range)) == NULL) return -1;
    if ((t->arrays[1] = index_array(mask_obj, "attention_mask", &t->B, &t->T, 0, 2, "must be 0 or 1")) == NULL)
        return -1;
    const int64_t max_pos = m->wpe != NULL ? m->P : ((int64_t)1 << 40);
    snprintf(range, sizeof range, "positions must be in [0, %lld) (the position table)", (long long)max_pos);
    if ((t->arrays[2] = index_array(pos_obj, "position_ids", &t->B, &t->T, 0, max_pos, range)) == NULL) return -1;
    if (m->TT > 0) {
        snprintf(range, sizeof range, "token types must be in [0, %d)", m->TT);
        if (types_obj == Py_None) {
            PyErr_SetString(PyExc_ValueError, "token_type_ids is required: the model has token-type embeddings");
            return -1;
        }
        if ((t->arrays[3] = index_array(types_obj, "token_type_ids", &t->B, &t->T, 0, m->TT, range)) == NULL)
            return -1;
    }
    const npy_intp B = t->B, T = t->T;
    if (m->rel_bias != NULL && T > m->rel_span) {
        PyErr_Format(PyExc_ValueError, "input_ids: length %zd is longer than the relative position bias "
                     "covers (%d tokens)", (Py_ssize_t)T, m->rel_span);
        return -1;
    }
    if (m->rel_emb != NULL && T > m->rel_positions) {
        PyErr_Format(PyExc_ValueError, "input_ids has length %zd, longer than DeBERTa's relative position index "
                     "covers (%d tokens)", (Py_ssize_t)T, m->rel_positions);
        return -1;
    }
    const int64_t *mask = I64(t->arrays[1]);
    for (npy_intp b = 0; b < B; b++) {
        int64_t real = 0;
        for (npy_intp i = 0; i < T; i++) real += mask[b * T + i];
        if (real == 0) {
            PyErr_Format(PyExc_ValueError, "attention_mask[%zd] has no real token (all zeros)", (Py_ssize_t)b);
            return -1;
        }
    }
    if (T > 65536 || (double)T * T * m->L * m->H > 1e12) {
        PyErr_Format(PyExc_ValueError, "input_ids: length %zd is too long for the attention cache", (Py_ssize_t)T);
        return -1;
    }
    if (!valid_threads(threads)) return -1;
    *call = (EngineCall){.B = B, .T = T, .ids = I64(t->arrays[0]), .mask = mask, .positions = I64(t->arrays[2]),
                         .types = t->arrays[3] != NULL ? I64(t->arrays[3]) : NULL, .K = 1, .threads = threads,
                         .pool = self->pool};
    return 0;
}

// One stream of `streams`: a rule-set name (also its key), or a tuple
// (key, rules, head_mask or None, renormalize[, semantics]). `mask` gets a reference to release.
static int stream_check(const Model *m, PyObject *item, PyObject **key, Stream *st, PyArrayObject **mask) {
    PyObject *rules = item, *mask_obj = Py_None, *semantics = NULL;
    int renormalize = 0, kind, reading = MASK_REFERENCE;
    *key = item;
    if (PyTuple_Check(item)) {
        if (!PyArg_ParseTuple(item, "UUOp|U:streams[i]", key, &rules, &mask_obj, &renormalize, &semantics)) return -1;
    } else if (!PyUnicode_Check(item)) {
        PyErr_Format(PyExc_TypeError, "streams[i] must be a rule name or a tuple (key, rules, head_mask, "
                     "renormalize[, semantics]), got %s", Py_TYPE(item)->tp_name);
        return -1;
    }
    if (!choice(rules, "streams[i] rules", STREAM_NAMES, 3, &kind)) return -1;
    if (semantics != NULL && !choice(semantics, "streams[i] semantics", SEMANTICS_NAMES, 2, &reading)) return -1;
    st->rules = STREAM_RULES[kind];
    st->renormalize = renormalize;
    st->semantics = (MaskSemantics)reading;
    if (mask_obj != Py_None) {
        if ((*mask = float_array(mask_obj, "head_mask", 2, 2, FINITE)) == NULL) return -1;
        if (PyArray_DIM(*mask, 0) != m->L || PyArray_DIM(*mask, 1) != m->H) {
            char what[64];
            snprintf(what, sizeof what, "have shape (%d, %d) (layers, heads)", m->L, m->H);
            shape_error(*mask, "head_mask", what);
            return -1;
        }
        st->head_mask = (const float *)PyArray_DATA(*mask);
    }
    return 0;
}

// The call's seeds: `seed` None or float32 of the logits' shape (one seed) or with a leading
// K axis (K seeds), and `rows` None or int64 (K,B), each a real token of its sequence, the
// row a first/last-pooled head reads for seed k. Sets call->K, seed and rows (their new
// references in *seed, *rows) and *per_seed: the call's outputs have a K axis (rows or a
// seed with one given); -1 with an error naming the argument.
static int seeds_check(const Model *m, const Tokens *tok, PyObject *seed_obj, PyObject *rows_obj, bool swept,
                       PyArrayObject **seed, PyArrayObject **rows, EngineCall *call, bool *per_seed) {
    const npy_intp B = tok->B, T = tok->T;
    const int nd = m->pool == POOL_NONE ? 3 : 2; // one seed's ndim: (B[,T],NO)
    if (rows_obj != Py_None) {
        if (m->pool != POOL_FIRST && m->pool != POOL_LAST) {
            PyErr_SetString(PyExc_ValueError, "rows: only a first- or last-pooled head reads one row per sequence; "
                            "this model's head reads every row or their mean");
            return -1;
        }
        npy_intp K = 0, rows_B = 0;
        char range[64];
        snprintf(range, sizeof range, "rows must be in [0, %zd) (the length)", (Py_ssize_t)T);
        if ((*rows = index_array(rows_obj, "rows", &K, &rows_B, 0, T, range)) == NULL) return -1;
        if (rows_B != B) {
            shape_error(*rows, "rows", "have shape (seeds, batch)");
            return -1;
        }
        const int64_t *r = I64(*rows), *mask = I64(tok->arrays[1]);
        for (npy_intp i = 0; i < K * B; i++) {
            if (!mask[(i % B) * T + r[i]]) {
                PyErr_Format(PyExc_ValueError, "rows[%zd, %zd] = %lld is padding (attention_mask 0): the head "
                             "must read a real token", (Py_ssize_t)(i / B), (Py_ssize_t)(i % B), (long long)r[i]);
                return -1;
            }
        }
        call->K = (int)K;
        call->rows = r;
    }
    if (swept && seed_obj == Py_None && m->pool == POOL_NONE) {
        PyErr_SetString(PyExc_ValueError, "seed is required for per-position outputs (question answering)");
        return -1;
    }
    *per_seed = *rows != NULL;
    if (seed_obj == Py_None) return 0;
    if ((*seed = float_array(seed_obj, "seed", nd, nd + 1, FINITE)) == NULL) return -1;
    const bool many = PyArray_NDIM(*seed) == nd + 1;
    *per_seed |= many;
    const npy_intp want[4] = {many ? PyArray_DIM(*seed, 0) : 1, B, nd == 3 ? T : m->NO, m->NO};
    bool ok = !(many && *rows != NULL && want[0] != call->K) && want[0] <= INT32_MAX;
    for (int d = 0; d < nd && ok; d++) ok = PyArray_DIM(*seed, d + many) == want[d + 1];
    if (!ok) {
        shape_error(*seed, "seed", *rows != NULL ? "have shape (seeds, batch, outputs), one seed per row of rows"
                                                 : "have the logits' shape (batch[, length], outputs), or (seeds, "
                                                   "batch[, length], outputs) for several seeds");
        return -1;
    }
    if (!many && *rows != NULL && call->K != 1) {
        shape_error(*seed, "seed", "have shape (seeds, batch, outputs), one seed per row of rows");
        return -1;
    }
    call->K = (int)want[0];
    call->seed = (const float *)PyArray_DATA(*seed);
    return 0;
}

// The forward's outputs in the result dict; no stream may use these keys.
static const char *const OUTPUT_NAMES[] = {"logits", "attentions", "hidden"};

static int run_without_gil(const Model *m, const EngineCall *call) {
    int status;
    size_t failed = 0;
    Py_BEGIN_ALLOW_THREADS
    status = model_run(m, call, &failed);
    Py_END_ALLOW_THREADS
    if (status != 0)
        PyErr_Format(PyExc_MemoryError, "out of memory: %.1f MiB for one thread's engine workspace (the forward "
                     "cache and scratch of up to %zd sequences of %zd tokens); use shorter or fewer sequences "
                     "per call", (double)failed / (1 << 20), (Py_ssize_t)call->B, (Py_ssize_t)call->T);
    return status;
}

static PyObject *engine_run(EngineObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"input_ids", "attention_mask", "position_ids", "token_type_ids", "seed",
                             "streams", "attentions", "hidden", "threads", "rows", "embeds", NULL};
    PyObject *ids_obj, *mask_obj, *pos_obj, *types_obj = Py_None, *seed_obj = Py_None, *streams_obj = NULL;
    PyObject *rows_obj = Py_None, *embeds_obj = Py_None;
    int want_att = 0, want_hidden = 0, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOO|OOOppiOO:run", kwlist, &ids_obj, &mask_obj, &pos_obj,
                                     &types_obj, &seed_obj, &streams_obj, &want_att, &want_hidden, &threads,
                                     &rows_obj, &embeds_obj))
        return NULL;
    const Model *m = &self->model;
    Tokens tok;
    EngineCall call;
    PyArrayObject *seed = NULL, *rows = NULL, *embeds = NULL, *masks[ENGINE_MAX_STREAMS] = {NULL};
    PyObject *result = NULL, *streams = NULL, *keys[ENGINE_MAX_STREAMS] = {NULL};
    if (call_begin(self, ids_obj, mask_obj, pos_obj, types_obj, threads, &tok, &call) < 0) goto fail;
    const npy_intp B = tok.B, T = tok.T;
    if (embeds_obj != Py_None) {
        if ((embeds = float_array(embeds_obj, "embeds", 3, 3, FINITE)) == NULL) goto fail;
        if (PyArray_DIM(embeds, 0) != B || PyArray_DIM(embeds, 1) != T || PyArray_DIM(embeds, 2) != m->E) {
            char what[96];
            snprintf(what, sizeof what, "have shape (%zd, %zd, %d) (input_ids' batch and length, the embedding "
                     "width)", (Py_ssize_t)B, (Py_ssize_t)T, m->E);
            shape_error(embeds, "embeds", what);
            goto fail;
        }
        call.embeds = (const float *)PyArray_DATA(embeds);
    }
    // streams: up to ENGINE_MAX_STREAMS, distinct keys
    if (streams_obj != NULL && streams_obj != Py_None) {
        streams = PySequence_Fast(streams_obj, "streams must be a sequence");
        if (streams == NULL) goto fail;
        const Py_ssize_t n = PySequence_Fast_GET_SIZE(streams);
        if (n > ENGINE_MAX_STREAMS) {
            PyErr_Format(PyExc_ValueError, "streams takes at most %d streams, got %zd", ENGINE_MAX_STREAMS, n);
            goto fail;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            if (stream_check(m, PySequence_Fast_GET_ITEM(streams, i), &keys[i], &call.streams[i], &masks[i]) < 0)
                goto fail;
            // A stream's outputs live under its key beside the forward's: a shared key would
            // replace (and free) an array the engine is about to write.
            for (size_t r = 0; r < sizeof OUTPUT_NAMES / sizeof OUTPUT_NAMES[0]; r++) {
                if (PyUnicode_CompareWithASCIIString(keys[i], OUTPUT_NAMES[r]) == 0) {
                    PyErr_Format(PyExc_ValueError, "streams: key %R is taken by the forward's output %R; "
                                 "name the stream otherwise", keys[i], keys[i]);
                    goto fail;
                }
            }
            for (Py_ssize_t j = 0; j < i; j++) {
                if (PyUnicode_Compare(keys[i], keys[j]) == 0) {
                    PyErr_Format(PyExc_ValueError, "streams must not repeat a key (%R)", keys[i]);
                    goto fail;
                }
            }
        }
        call.n_streams = (int)n;
    }
    bool per_seed;
    if (seeds_check(m, &tok, seed_obj, rows_obj, call.n_streams > 0, &seed, &rows, &call, &per_seed) < 0) goto fail;
    const npy_intp K = call.K;
    // A K-seed call's outputs gain a leading K axis: a pooled head's logits at each seed's
    // rows (K,B,NO) and each stream's outputs; per-position logits (B,T,NO) are every seed's.
    const bool per_seed_logits = per_seed && m->pool != POOL_NONE;
    const npy_intp logit_dims[4] = {K, B, m->pool == POOL_NONE ? T : m->NO, m->NO};
    const int logit_nd = (m->pool == POOL_NONE ? 3 : 2) + per_seed_logits;

    result = PyDict_New();
    if (result == NULL) goto fail;
    const npy_intp L = m->L, H = m->H, C = m->C;
    // a stream's shapes, each behind a K axis (dropped, k = 0, for a one-seed call)
    const npy_intp bt[3] = {K, B, T}, bte[4] = {K, B, T, m->E}, att[6] = {K, B, L, H, T, T};
    const npy_intp hid[5] = {K, B, L + 1, T, C}, blh[4] = {K, B, L, H}, brel[3] = {K, B, m->R2};
    const int k = per_seed ? 0 : 1;
    if ((call.logits = add_output(result, "logits", logit_nd, logit_dims + !per_seed_logits)) == NULL) goto fail;
    if (want_att && (call.attentions = add_output(result, "attentions", 5, att + 1)) == NULL) goto fail;
    if (want_hidden && (call.hidden = add_output(result, "hidden", 4, hid + 1)) == NULL) goto fail;
    for (int i = 0; i < call.n_streams; i++) {
        Stream *s = &call.streams[i];
        PyObject *out = PyDict_New();
        if (out == NULL || PyDict_SetItem(result, keys[i], out) < 0) {
            Py_XDECREF(out);
            goto fail;
        }
        Py_DECREF(out); // result holds it
        if ((s->embed_grad = add_output(out, "embed_grad", 4 - k, bte + k)) == NULL ||
            (s->tokens = add_output(out, "tokens", 3 - k, bt + k)) == NULL ||
            (s->head_relevance = add_output(out, "head_relevance", 4 - k, blh + k)) == NULL ||
            (m->wpe != NULL && (s->positions = add_output(out, "positions", 3 - k, bt + k)) == NULL) ||
            (m->wtt != NULL && (s->types = add_output(out, "types", 3 - k, bt + k)) == NULL) ||
            (m->rel_emb != NULL && (s->relative = add_output(out, "relative", 3 - k, brel + k)) == NULL) ||
            (want_att && ((s->attention_grad = add_output(out, "attention_grad", 6 - k, att + k)) == NULL ||
                          (s->attention_relevance = add_output(out, "attention_relevance", 6 - k, att + k)) == NULL)) ||
            (want_hidden && ((s->hidden_grad = add_output(out, "hidden_grad", 5 - k, hid + k)) == NULL ||
                             (s->hidden_relevance = add_output(out, "hidden_relevance", 5 - k, hid + k)) == NULL)))
            goto fail;
    }
    if (run_without_gil(m, &call) < 0) goto fail;
    goto done;
fail:
    Py_CLEAR(result);
done:
    tokens_release(&tok);
    Py_XDECREF(seed);
    Py_XDECREF(rows);
    Py_XDECREF(embeds);
    for (int i = 0; i < ENGINE_MAX_STREAMS; i++) Py_XDECREF(masks[i]);
    Py_XDECREF(streams);
    return result;
}

static PyObject *engine_head_stats(EngineObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"input_ids", "attention_mask", "position_ids", "token_type_ids", "queries", "keys",
                             "arcs", "n_relations", "threads", NULL};
    PyObject *ids_obj, *mask_obj, *pos_obj, *types_obj, *queries, *keys, *arcs;
    int R, threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOOOOOi|i:head_stats", kwlist, &ids_obj, &mask_obj, &pos_obj,
                                     &types_obj, &queries, &keys, &arcs, &R, &threads))
        return NULL;
    const Model *m = &self->model;
    Tokens tok;
    EngineCall call;
    HeadStats hs;
    PyArrayObject *held[3] = {NULL, NULL, NULL};
    PyObject *result = NULL;
    if (call_begin(self, ids_obj, mask_obj, pos_obj, types_obj, threads, &tok, &call) < 0) goto fail;
    const npy_intp logit_dims[3] = {tok.B, m->pool == POOL_NONE ? tok.T : m->NO, m->NO};
    if ((result = PyDict_New()) == NULL ||
        head_stats_args(queries, keys, arcs, R, tok.B, tok.T, m->L, m->H, &hs, result, held) < 0 ||
        (call.logits = add_output(result, "logits", m->pool == POOL_NONE ? 3 : 2, logit_dims)) == NULL)
        goto fail;
    call.head_stats = &hs;
    if (run_without_gil(m, &call) < 0) goto fail;
    goto done;
fail:
    Py_CLEAR(result);
done:
    tokens_release(&tok);
    for (int i = 0; i < 3; i++) Py_XDECREF(held[i]);
    return result;
}

PyDoc_STRVAR(engine_workspace_bytes_doc,
             "_workspace_bytes(batch, length) -> int\n\n"
             "Bytes of the workspace one thread's chunk of `batch` sequences of `length` tokens\n"
             "takes: the forward cache and both sweeps' scratch, outputs not included.");

static PyObject *engine_workspace_bytes(EngineObject *self, PyObject *args) {
    Py_ssize_t S, T;
    if (!PyArg_ParseTuple(args, "nn:_workspace_bytes", &S, &T)) return NULL;
    if (S < 1 || T < 1) {
        PyErr_Format(PyExc_ValueError, "batch and length must be >= 1, got %zd, %zd", S, T);
        return NULL;
    }
    return PyLong_FromSize_t(model_workspace_bytes(&self->model, S, T));
}

PyDoc_STRVAR(engine_run_doc,
             "run(input_ids, attention_mask, position_ids, token_type_ids=None, seed=None, streams=(),\n"
             "    attentions=False, hidden=False, threads=1, rows=None, embeds=None) -> dict\n\n"
             "One forward over the batch (int64 (B,T) arrays; the mask is 0/1) and one backward\n"
             "sweep per stream in `streams` (up to 4): a rule set 'attnlrp', 'cp' or 'gradient', or a\n"
             "tuple (key, rules, head_mask float32 (L,H) or None, renormalize[, semantics]) for Mask-LRP\n"
             "(semantics 'reference', the default, or 'strict': which relevance a layer's taps read),\n"
             "starting from `seed` (float32, the logits' shape; None: one-hot on each row's argmax,\n"
             "pooled heads only). Several seeds share the forward: `seed` with a leading K axis and/or\n"
             "`rows` (int64 (K,B), first/last-pooled heads: the real token the head reads for seed k;\n"
             "default the pool's own) run K sweeps per stream, and the logits of a pooled head\n"
             "(K,B,NO) and every stream output gain that leading K axis. `embeds` (float32 (B,T,E)):\n"
             "the word embeddings themselves (a vision model's patches), read in place of the table\n"
             "rows of input_ids; 'tokens' is then the relevance of those rows, 'embed_grad' g at them.\n"
             "Returns {'logits', ['attentions' (B,L,H,T,T)],\n"
             "['hidden' (B,L+1,T,C)], <key>: {'embed_grad' (B,T,E: the word table's width), 'tokens', 'head_relevance' (B,L,H), ['positions'],\n"
             "['types'], ['relative' (B,R2): DeBERTa's relative embedding rows], "
             "['attention_grad', 'attention_relevance'], ['hidden_grad', 'hidden_relevance']}}.\n"
             "Sequences run in parallel on `threads` threads; the GIL is released.");

PyDoc_STRVAR(engine_head_stats_doc,
             "head_stats(input_ids, attention_mask, position_ids, token_type_ids, queries, keys, arcs,\n"
             "           n_relations, threads=1) -> dict\n\n"
             "A forward over the batch that counts, from its attention probabilities, what\n"
             "masklrp._core.head_counts counts from given ones: {'positional', 'syntactic',\n"
             "'logits'}. Nothing of the attention is copied out.");

static PyMethodDef engine_methods[] = {
    {"run", (PyCFunction)(void (*)(void))engine_run, METH_VARARGS | METH_KEYWORDS, engine_run_doc},
    {"head_stats", (PyCFunction)(void (*)(void))engine_head_stats, METH_VARARGS | METH_KEYWORDS,
     engine_head_stats_doc},
    {"_workspace_bytes", (PyCFunction)engine_workspace_bytes, METH_VARARGS, engine_workspace_bytes_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(engine_doc,
             "Engine(spec: dict, weights: dict[str, numpy.ndarray])\n\n"
             "The C engine over borrowed weights (float32, C-contiguous, canonical names of\n"
             "masklrp.spec). Use masklrp.load() rather than building one by hand.");

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "masklrp._core.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = engine_doc,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)engine_init,
    .tp_dealloc = (destructor)engine_dealloc,
    .tp_methods = engine_methods,
};

int engine_type_add(PyObject *module) {
    if (PyType_Ready(&EngineType) < 0) return -1;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(module, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        return -1;
    }
    return 0;
}
