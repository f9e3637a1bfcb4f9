// The whole-model engine (DESIGN.md §1): the blocks every architecture family
// composes (embeddings, attention, MLP, norms, head) and the batch driver.
// The blocks only compose the rule kernels of rules.c; no LRP rule lives here.
// Work is cut into chunks of consecutive sequences: each chunk runs its forward
// into a cache, then one backward sweep per requested stream; chunks run in
// parallel workers.
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

static ptrdiff_t max_p(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }

static ptrdiff_t qkv_width(const Model *m) { return (ptrdiff_t)(m->H + 2 * m->KV) * m->D; }
static ptrdiff_t fc_width(const Model *m) { return (ptrdiff_t)(m->gated ? 2 : 1) * m->F; }
bool post_norms(const Model *m) { return m->layers[0].attn_post_norm.w != NULL; }

// ----------------------------------------------------------------------------
// Workspace: one allocation, carved into the named pointers of engine.h.

typedef struct {
    float **slot;
    ptrdiff_t n;
} Carve;

// What a call trades memory for time with (attention_block_set, mlp_cache_set); a call
// reads them once (Job.limits), so a workspace is carved and used under the same ones.
typedef struct {
    ptrdiff_t block;     // query rows per attention block
    ptrdiff_t mlp_cache; // most bytes of cached MLP pre-activations
} Limits;

static _Atomic ptrdiff_t attention_block = ATTENTION_BLOCK, mlp_cache = MLP_CACHE_BYTES;

ptrdiff_t attention_block_set(ptrdiff_t rows) {
    return atomic_exchange(&attention_block, rows > 0 ? rows : ATTENTION_BLOCK);
}

ptrdiff_t mlp_cache_set(ptrdiff_t bytes) { return atomic_exchange(&mlp_cache, bytes >= 0 ? bytes : MLP_CACHE_BYTES); }

static Limits limits_now(void) { return (Limits){atomic_load(&attention_block), atomic_load(&mlp_cache)}; }

// Points w's buffers for S sequences of length T, under `limits`, into mem (64-byte
// aligned slices); returns the floats they take. With mem == NULL only counts. Nothing is (T,T): attention's scratch is (block,T) per head, and
// the head statistics keep one k* (int32) per layer, head and query.
static ptrdiff_t workspace_carve(const Model *m, Workspace *w, ptrdiff_t S, ptrdiff_t T, const Limits *limits,
                                 float *mem) {
    const ptrdiff_t L = m->L, H = m->H, KV = m->KV, D = m->D, C = m->C, F = m->F, N = S * T;
    const ptrdiff_t block = limits->block < T ? limits->block : T;
    const ptrdiff_t BT = H * block * T; // one (block,T) buffer per head
    const ptrdiff_t QKV = qkv_width(m), HD = H * D, FU = fc_width(m);
    const bool fc_cached = L * N * FU * (ptrdiff_t)sizeof(float) <= limits->mlp_cache;
    const ptrdiff_t logit_rows = m->pool == POOL_NONE ? N : S, E = m->E;
    const ptrdiff_t wide = max_p(C, FU), head = logit_rows * max_p(C, m->NO), hC = logit_rows * C;
    const bool proj = m->emb_proj.w != NULL, rel = m->rel_emb != NULL;
    const ptrdiff_t R2 = rel ? m->R2 : 0;
    const bool moe = m->X > 0, shared = moe && m->layers[0].up.w != NULL;
    const ptrdiff_t X = m->X, NK = moe ? N * m->K : 0, XF = m->XF, routes = L * NK;
    const Carve parts[] = {
        {&w->emb, N * E}, {&w->emb_normed, proj ? N * E : 0}, {&w->x, (L + 1) * N * C}, {&w->q, L * N * HD}, {&w->k, L * N * KV * D},
        {&w->v, L * N * KV * D}, {&w->qk_raw, m->qk_norm ? L * N * (H + KV) * D : 0},
        {&w->qk_rstd, m->qk_norm ? L * N * (H + KV) : 0},
        {&w->ctx, L * N * HD}, {&w->mid, L * N * C},
        {&w->res2, m->family == FAMILY_ENCODER ? L * N * C : 0}, {&w->fc, fc_cached ? L * N * FU : N * FU},
        {&w->mlp_in, fc_cached ? 0 : L * N * C},
        {&w->stats, (L + 1) * 8 * N}, {&w->xf, N * C},
        {&w->pooled, hC}, {&w->dense, hC}, {&w->activated, hC}, {&w->head_normed, m->head_norm.w != NULL ? hC : 0},
        {&w->cos, m->rope ? N * D : 0},
        {&w->sin, m->rope ? N * D : 0},
        {&w->cos_local, m->inv_freq_local != NULL ? N * D : 0}, {&w->sin_local, m->inv_freq_local != NULL ? N * D : 0},
        {&w->branch_out, post_norms(m) ? L * 2 * N * C : 0}, {&w->gpost, post_norms(m) ? N * C : 0},
        {&w->raw_logits, m->final_softcap > 0.0f ? logit_rows * m->NO : 0},
        {&w->gseed, m->final_softcap > 0.0f ? logit_rows * m->NO : 0},
        {&w->key_bias, N}, {&w->rel_normed, rel ? R2 * C : 0}, {&w->rel_mean, rel ? R2 : 0},
        {&w->rel_rstd, rel ? R2 : 0}, {&w->pos_k, rel ? L * H * R2 * D : 0}, {&w->pos_q, rel ? L * H * R2 * D : 0},
        {&w->c2p, rel ? H * block * R2 : 0}, {&w->p2c, rel ? H * T * R2 : 0},
        {&w->gc2p, rel ? H * block * R2 : 0}, {&w->gp2c, rel ? H * T * R2 : 0}, {&w->gpos_k, rel ? H * R2 * D : 0}, {&w->gpos_q, rel ? H * R2 * D : 0},
        {&w->pos_rows, rel ? R2 * HD : 0}, {&w->grel, rel ? S * R2 * C : 0}, {&w->grel_raw, rel ? R2 * C : 0},
        {&w->a, N * wide}, {&w->b, N * wide},
        {&w->qkv, N * QKV}, {&w->hm, T * HD}, {&w->hm2, T * HD}, {&w->kv_raw, T * KV * D},
        {&w->hidden, N * F}, {&w->probs, BT}, {&w->gx, N * C}, {&w->g1, N * C},
        {&w->g2, N * C}, {&w->gqkv, N * QKV}, {&w->gq, T * HD}, {&w->gk, T * KV * D}, {&w->gv, T * KV * D},
        {&w->gq_rot, T * HD}, {&w->gk_rot, T * KV * D}, {&w->gctx, N * HD}, {&w->gctx_hm, T * HD},
        {&w->gk_heads, H * T * D}, {&w->gv_heads, H * T * D}, {&w->gatt, BT}, {&w->gscores, BT}, {&w->gfc, N * FU}, {&w->ghid, N * F},
        {&w->ghid2, N * F}, {&w->ghead, head}, {&w->ghead2, head}, {&w->gemb, N * E}, {&w->gemb2, proj ? N * E : 0}, {&w->seed, S * m->NO}, {&w->xq, S * C},
        {&w->router_p, moe ? L * N * X : 0}, {&w->route_w, routes}, {&w->xfc, L * NK * 2 * XF},
        {&w->xgact, L * NK * XF}, {&w->xout, L * NK * C}, {&w->shared_logit, shared ? L * N : 0},
        {&w->shared_out, shared ? L * N * C : 0}, {&w->xin, NK * C}, {&w->xhid, NK * XF},
        {&w->gxout, NK * C}, {&w->gxin, NK * C}, {&w->gxhid, NK * XF}, {&w->gxhid2, NK * XF},
        {&w->gxfc, NK * 2 * XF}, {&w->groute, moe ? N * X : 0},
        {&w->grouter, moe ? N * max_p(X, 2) : 0}, {&w->route_s, moe ? X : 0},
        {&w->typed, 2 * H + S * L * H * T + (moe ? 2 * routes + L * (X + 1) : 0)},
    };
    ptrdiff_t total = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        if (mem != NULL) *parts[i].slot = parts[i].n > 0 ? mem + total : NULL;
        total += (parts[i].n + 15) & ~(ptrdiff_t)15;
    }
    if (mem != NULL) {
        // untyped memory takes the type it is used as: H doubles, then int32s (T, then the routes)
        w->head_sums = (double *)(void *)w->typed;
        w->kstar = (int32_t *)(void *)(w->typed + 2 * H);
        w->route = w->kstar + S * L * H * T;
        w->slots = w->route + routes;
        w->slot_start = w->slots + routes;
        w->S = S;
        w->T = T;
        w->N = N;
        w->block = block;
        w->fc_cached = fc_cached;
    }
    return total;
}

size_t model_workspace_bytes(const Model *m, ptrdiff_t S, ptrdiff_t T) {
    Workspace probe;
    const Limits limits = limits_now();
    return (size_t)workspace_carve(m, &probe, S, T, &limits, NULL) * sizeof(float);
}

static Workspace *workspace_new(const Model *m, ptrdiff_t S, ptrdiff_t T, const Limits *limits) {
    Workspace *w = calloc(1, sizeof *w);
    if (w == NULL) return NULL;
    w->capacity = workspace_carve(m, w, S, T, limits, NULL);
    w->max_S = S;
    w->mem = aligned_alloc(64, (size_t)w->capacity * sizeof(float));
    w->row = calloc((size_t)S, sizeof *w->row);
    if (w->mem == NULL || w->row == NULL) {
        free(w->mem);
        free(w->row);
        free(w);
        return NULL;
    }
    workspace_carve(m, w, S, T, limits, w->mem);
    return w;
}

static void workspace_free(Workspace *w) {
    if (w == NULL) return;
    free(w->mem);
    free(w->row);
    free(w);
}

// Idle workspaces kept between calls (a mutex-guarded list). A call re-carves
// any idle one that is large enough, else allocates; it gives it back after,
// and when the list is full the smallest goes. So a run over sentences of
// varying length settles on a few workspaces of the largest size seen.
#define POOL_SIZE 8

struct WorkspacePool {
    pthread_mutex_t lock;
    int n;
    Workspace *idle[POOL_SIZE];
};

WorkspacePool *workspace_pool_new(void) {
    WorkspacePool *pool = calloc(1, sizeof *pool);
    if (pool != NULL) pthread_mutex_init(&pool->lock, NULL);
    return pool;
}

void workspace_pool_free(WorkspacePool *pool) {
    if (pool == NULL) return;
    for (int i = 0; i < pool->n; i++) workspace_free(pool->idle[i]);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
}

static void pool_remove(WorkspacePool *pool, int i) {
    memmove(pool->idle + i, pool->idle + i + 1, (size_t)(pool->n - i - 1) * sizeof pool->idle[0]);
    pool->n--;
}

static Workspace *workspace_take(WorkspacePool *pool, const Model *m, ptrdiff_t S, ptrdiff_t T,
                                 const Limits *limits) {
    if (pool != NULL) {
        Workspace probe;
        const ptrdiff_t need = workspace_carve(m, &probe, S, T, limits, NULL);
        Workspace *found = NULL;
        pthread_mutex_lock(&pool->lock);
        for (int i = 0; i < pool->n && found == NULL; i++) {
            if (pool->idle[i]->capacity >= need && pool->idle[i]->max_S >= S) {
                found = pool->idle[i];
                pool_remove(pool, i);
            }
        }
        pthread_mutex_unlock(&pool->lock);
        if (found != NULL) {
            workspace_carve(m, found, S, T, limits, found->mem);
            return found;
        }
    }
    return workspace_new(m, S, T, limits);
}

static void workspace_give(WorkspacePool *pool, Workspace *w) {
    if (w == NULL) return;
    if (pool == NULL) {
        workspace_free(w);
        return;
    }
    pthread_mutex_lock(&pool->lock);
    if (pool->n == POOL_SIZE) { // full: the smallest goes
        int smallest = 0;
        for (int i = 1; i < pool->n; i++)
            if (pool->idle[i]->capacity < pool->idle[smallest]->capacity) smallest = i;
        workspace_free(pool->idle[smallest]);
        pool_remove(pool, smallest);
    }
    pool->idle[pool->n++] = w;
    pthread_mutex_unlock(&pool->lock);
}

static void zero(float *p, ptrdiff_t n) { memset(p, 0, (size_t)n * sizeof(float)); }

// ----------------------------------------------------------------------------
// Norms: LayerNorm or RMSNorm by the model's kind; statistics cached per slot.

static float *stat(const Workspace *w, int slot, int which, int kind) {
    return w->stats + (((ptrdiff_t)slot * 4 + which) * 2 + kind) * w->N;
}

// x (rows,width) -> y (rows,width); an absent norm (n.w NULL) is the identity
static void norm_rows_forward(const Model *m, const Workspace *w, float *y, const float *x, Affine n, int slot,
                              int which, ptrdiff_t rows, ptrdiff_t width) {
    float *mean = stat(w, slot, which, 0), *rstd = stat(w, slot, which, 1);
    if (n.w == NULL) {
        memcpy(y, x, (size_t)(rows * width) * sizeof(float));
    } else if (m->norm == NORM_LAYER) {
        layernorm_forward(y, mean, rstd, x, n.w, n.b, rows, width, m->eps);
    } else {
        rmsnorm_forward(y, rstd, x, n.w, rows, width, m->eps);
    }
}

// g (rows,width) at the norm output -> gx (rows,width) +=
static void norm_rows_backward(const Model *m, const Workspace *w, float *gx, const float *g, const float *x,
                               Affine n, int slot, int which, ptrdiff_t rows, ptrdiff_t width, UnaryRule rule) {
    const float *mean = stat(w, slot, which, 0), *rstd = stat(w, slot, which, 1);
    if (n.w == NULL) {
        for (ptrdiff_t i = 0; i < rows * width; i++) gx[i] += g[i];
    } else if (m->norm == NORM_LAYER) {
        layernorm_backward(gx, g, x, n.w, mean, rstd, rows, width, rule);
    } else {
        rmsnorm_backward(gx, g, x, n.w, rstd, rows, width, rule);
    }
}

// x (rows,C) -> y (rows,C)
void norm_forward(const Model *m, const Workspace *w, float *y, const float *x, Affine n, int slot, int which,
                  ptrdiff_t rows) {
    norm_rows_forward(m, w, y, x, n, slot, which, rows, m->C);
}

// g (rows,C) at the norm output -> gx (rows,C) +=
void norm_backward(const Model *m, const Workspace *w, float *gx, const float *g, const float *x, Affine n,
                   int slot, int which, ptrdiff_t rows, UnaryRule rule) {
    norm_rows_backward(m, w, gx, g, x, n, slot, which, rows, m->C, rule);
}

// ----------------------------------------------------------------------------
// Embeddings: a sum of table rows, crossed by the true gradient (DESIGN.md §2).

// The inverse frequencies of sequence seq: LongRoPE's long table once the sequence
// reaches rope_long_after positions. HF picks one table per batch, by its padded
// length; per sequence, an explanation does not depend on the batch it came in.
static const float *inv_freq_of(const Model *m, const Workspace *w, ptrdiff_t seq) {
    if (m->inv_freq_long == NULL) return m->inv_freq;
    int64_t longest = 0;
    for (ptrdiff_t t = seq * w->T; t < (seq + 1) * w->T; t++)
        if (w->mask[t] && w->positions[t] + 1 > longest) longest = w->positions[t] + 1;
    return longest > m->rope_long_after ? m->inv_freq_long : m->inv_freq;
}

// positions (N) -> cos, sin (N,R). HF's float32 order: angle = position · inv_freq,
// cos/sin scaled by the YaRN / LongRoPE attention factor; the two halves share frequencies.
static void rope_table(const Model *m, Workspace *w, ptrdiff_t seq, const float *inv_freq, float *cos, float *sin) {
    const ptrdiff_t R = m->rope_dim, half = R / 2;
    for (ptrdiff_t t = seq * w->T; t < (seq + 1) * w->T; t++) {
        for (ptrdiff_t j = 0; j < half; j++) {
            const float angle = (float)w->positions[t] * inv_freq[j];
            const float c = cosf(angle) * m->rope_scaling, s = sinf(angle) * m->rope_scaling;
            cos[t * R + j] = cos[t * R + j + half] = c;
            sin[t * R + j] = sin[t * R + j + half] = s;
        }
    }
}

static void rope_tables(const Model *m, Workspace *w) {
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        rope_table(m, w, seq, inv_freq_of(m, w, seq), w->cos, w->sin);
        if (m->inv_freq_local != NULL) rope_table(m, w, seq, m->inv_freq_local, w->cos_local, w->sin_local);
    }
}

// Layer l's RoPE tables (cos and sin) of sequence seq.
static void layer_rope(const Model *m, const Workspace *w, int l, ptrdiff_t seq, const float **cos, const float **sin) {
    const bool local = m->layers[l].local_rope;
    const ptrdiff_t at = seq * w->T * m->rope_dim;
    *cos = (local ? w->cos_local : w->cos) + at;
    *sin = (local ? w->sin_local : w->sin) + at;
}

// Row t's word embedding and its scale: the call's own embeds as given, or the table's
// row of ids[t] times embed_scale.
static const float *word_row(const Model *m, const Workspace *w, ptrdiff_t t, float *scale) {
    *scale = w->embeds != NULL ? 1.0f : m->embed_scale;
    return w->embeds != NULL ? w->embeds + t * m->E : m->wte + w->ids[t] * m->E;
}

// ids or embeds, positions, types (N) -> emb (N,E) -> x0 (N,C); cos/sin (N,R) for RoPE models
void embed_forward(const Model *m, Workspace *w, float *x0) {
    const ptrdiff_t C = m->E, T = w->N;
    for (ptrdiff_t t = 0; t < T; t++) {
        float *e = w->emb + t * C, scale;
        const float *word = word_row(m, w, t, &scale);
        for (ptrdiff_t c = 0; c < C; c++) e[c] = word[c] * scale; // exact when 1
        if (m->wpe != NULL) {
            const float *pos = m->wpe + w->positions[t] * C;
            for (ptrdiff_t c = 0; c < C; c++) e[c] += pos[c];
        }
        if (m->wtt != NULL) {
            const float *type = m->wtt + w->types[t] * C;
            for (ptrdiff_t c = 0; c < C; c++) e[c] += type[c];
        }
    }
    if (m->rope) rope_tables(m, w);
    // the norm (σ held constant, DESIGN.md §2), then ELECTRA's / ALBERT's E -> C linear
    float *normed = m->emb_proj.w != NULL ? w->emb_normed : x0;
    norm_rows_forward(m, w, normed, w->emb, m->emb_norm, 0, EMBED_NORM, T, C);
    if (m->emb_proj.w != NULL) linear_forward(x0, normed, m->emb_proj.w, m->emb_proj.b, T, C, m->C, false);
}

static double dot(const float *a, const float *b, ptrdiff_t n) {
    double s = 0.0;
    for (ptrdiff_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

// g (N,C) at x0 -> the stream's embedding outputs (=)
void embed_backward(const Model *m, Workspace *w, const float *g, const ChunkStream *s) {
    const ptrdiff_t C = m->E, T = w->N;
    if (m->emb_proj.w != NULL) {
        zero(w->gemb2, T * C);
        linear_backward(w->gemb2, g, m->emb_proj.w, T, C, m->C, false);
        g = w->gemb2;
    }
    zero(w->gemb, T * C);
    norm_rows_backward(m, w, w->gemb, g, w->emb, m->emb_norm, 0, EMBED_NORM, T, C, s->rules.unary);
    g = w->gemb; // g at the embedding sum
    if (s->embed_grad != NULL) memcpy(s->embed_grad, g, (size_t)(T * C) * sizeof(float));
    for (ptrdiff_t t = 0; t < T; t++) {
        const float *gt = g + t * C;
        // Input relevance of token t: Σ_d e_td g_td at the (scaled) word embeddings (DESIGN.md §2);
        // the position and type tables take their own shares.
        float scale;
        const float *word = word_row(m, w, t, &scale);
        if (s->tokens != NULL) s->tokens[t] = (float)(scale * dot(word, gt, C));
        if (s->positions != NULL) s->positions[t] = (float)dot(m->wpe + w->positions[t] * C, gt, C);
        if (s->types != NULL) s->types[t] = (float)dot(m->wtt + w->types[t] * C, gt, C);
    }
}

// ----------------------------------------------------------------------------
// Attention: QKV projection, RoPE, per-head softmax(scale·Q Kᵀ + mask) V,
// output projection. Grouped-query heads share key/value head h / (H / KV).

// Keys [*k0, *k1) that some query of [i0, i1) may see in layer l: every other key is
// masked for all of them (causal, sliding window), so a block of queries computes no
// score for it. A causal block thus skips the upper triangle.
static void visible_keys(const Model *m, const Workspace *w, int l, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t *k0,
                         ptrdiff_t *k1) {
    const ptrdiff_t T = w->T, window = m->layers[l].window;
    *k0 = window > 0 && i0 - window + 1 > 0 ? i0 - window + 1 : 0;
    *k1 = m->causal ? i1 : window > 0 && i1 - 1 + window < T ? i1 - 1 + window : T;
}

// scores (nq,nk) of queries [q0, q0 + nq), keys [k0, k0 + nk) of sequence `seq`: -inf
// where query i may not see key j (padding, causal, sliding window)
static void mask_scores(const Model *m, const Workspace *w, int l, ptrdiff_t seq, ptrdiff_t q0, ptrdiff_t nq,
                        ptrdiff_t k0, ptrdiff_t nk, float *scores) {
    const ptrdiff_t T = w->T, window = m->layers[l].window, k1 = k0 + nk;
    const float *key_bias = w->key_bias + seq * T;
    for (ptrdiff_t i = q0; i < q0 + nq; i++) {
        float *row = scores + (i - q0) * nk;
        // visible keys: [lo, hi); a bidirectional window reaches as far after q as before it
        ptrdiff_t hi = m->causal ? i + 1 : window > 0 && i + window < T ? i + window : T;
        ptrdiff_t lo = window > 0 && i - window + 1 > 0 ? i - window + 1 : 0;
        lo = lo < k0 ? k0 : lo;
        hi = hi > k1 ? k1 : hi < lo ? lo : hi;
        for (ptrdiff_t j = k0; j < lo; j++) row[j - k0] = -INFINITY;
        for (ptrdiff_t j = lo; j < hi; j++) row[j - k0] += key_bias[j];
        for (ptrdiff_t j = hi; j < k1; j++) row[j - k0] = -INFINITY;
    }
}

// scores (nq,nk) of head h, queries [q0, q0 + nq), keys [k0, k0 + nk) += the bias of each
// key's offset j - i
static void relative_bias_add(const Model *m, ptrdiff_t h, ptrdiff_t q0, ptrdiff_t nq, ptrdiff_t k0, ptrdiff_t nk,
                              float *scores) {
    const float *bias = m->rel_bias + h * (2 * (ptrdiff_t)m->rel_span - 1) + m->rel_span - 1; // offset 0
    for (ptrdiff_t i = q0; i < q0 + nq; i++) {
        float *row = scores + (i - q0) * nk;
        for (ptrdiff_t j = k0; j < k0 + nk; j++) row[j - k0] += bias[j - i];
    }
}

// (T, row) token-major columns [off, off + n·D) <-> (n,T,D) head-major
static void to_heads(float *hm, const float *tm, ptrdiff_t T, ptrdiff_t n, ptrdiff_t D, ptrdiff_t row,
                     ptrdiff_t off) {
    for (ptrdiff_t h = 0; h < n; h++)
        for (ptrdiff_t t = 0; t < T; t++)
            memcpy(hm + (h * T + t) * D, tm + t * row + off + h * D, (size_t)D * sizeof(float));
}
static void from_heads(float *tm, const float *hm, ptrdiff_t T, ptrdiff_t n, ptrdiff_t D, ptrdiff_t row,
                       ptrdiff_t off) {
    for (ptrdiff_t h = 0; h < n; h++)
        for (ptrdiff_t t = 0; t < T; t++)
            memcpy(tm + t * row + off + h * D, hm + (h * T + t) * D, (size_t)D * sizeof(float));
}

// DeBERTa's relative embeddings: one table for every layer, LayerNorm-ed once per chunk
// (σ held constant in the backward, DESIGN.md §2); each layer projects it to its pk and pq.

// The relative embedding rows the layers project: normed, or the table itself.
static const float *relative_rows(const Model *m, const Workspace *w) {
    return m->rel_norm.w != NULL ? w->rel_normed : m->rel_emb;
}

void relative_forward(const Model *m, Workspace *w) {
    if (m->rel_emb == NULL || m->rel_norm.w == NULL) return;
    layernorm_forward(w->rel_normed, w->rel_mean, w->rel_rstd, m->rel_emb, m->rel_norm.w, m->rel_norm.b, m->R2,
                      m->C, m->eps);
}

// w->grel (S,R2,C), g at the rows the layers projected -> the stream's relative (S,R2): the
// relevance Σ_c e_rc g_rc of each raw row, per sequence (as the tokens' at the word table)
void relative_backward(const Model *m, Workspace *w, const ChunkStream *s) {
    if (m->rel_emb == NULL || s->relative == NULL) return;
    const ptrdiff_t R2 = m->R2, C = m->C;
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        const float *g = w->grel + seq * R2 * C;
        if (m->rel_norm.w != NULL) {
            zero(w->grel_raw, R2 * C);
            layernorm_backward(w->grel_raw, g, m->rel_emb, m->rel_norm.w, w->rel_mean, w->rel_rstd, R2, C,
                               s->rules.unary);
            g = w->grel_raw;
        }
        for (ptrdiff_t r = 0; r < R2; r++) s->relative[seq * R2 + r] = (float)dot(m->rel_emb + r * C, g + r * C, C);
    }
}

// Layer l's pk and pq (H,R2,D) head-major, projected from the relative rows.
static float *layer_pos(const Model *m, const Workspace *w, int l, bool query) {
    return (query ? w->pos_q : w->pos_k) + (ptrdiff_t)l * m->H * m->R2 * m->D;
}

static void relative_project(const Model *m, Workspace *w, int l) {
    const LayerWeights *lw = &m->layers[l];
    const ptrdiff_t HD = (ptrdiff_t)m->H * m->D;
    for (int query = 0; query < 2; query++) {
        const Affine p = query ? lw->pos_query : lw->pos_key;
        if (p.w == NULL) continue;
        linear_forward(w->pos_rows, relative_rows(m, w), p.w, p.b, m->R2, m->C, HD, false);
        to_heads(layer_pos(m, w, l, query), w->pos_rows, m->R2, m->H, m->D, HD, 0);
    }
}

// The relative embedding row of query i and key j.
static ptrdiff_t relative_row(const Model *m, ptrdiff_t i, ptrdiff_t j) {
    return (ptrdiff_t)m->rel_index[i - j + m->rel_positions - 1];
}

// The row of sequence seq that a first/last pool reads, in the (N,C) layout of
// every layer but a pruned last one.
static ptrdiff_t pooled_row(const Model *m, const Workspace *w, ptrdiff_t seq) {
    return seq * w->T + w->row[seq];
}

// The row the head reads from xf: a pruned last layer keeps one row per sequence.
static ptrdiff_t head_row(const Model *m, const Workspace *w, ptrdiff_t seq) {
    return w->pruned ? seq : pooled_row(m, w, seq);
}

// Cache slices of layer l, sequence seq.
static float *seq_q(const Model *m, const Workspace *w, int l, ptrdiff_t seq) {
    return w->q + ((ptrdiff_t)l * w->S + seq) * m->H * w->T * m->D;
}
static float *seq_k(const Model *m, const Workspace *w, int l, ptrdiff_t seq) {
    return w->k + ((ptrdiff_t)l * w->S + seq) * m->KV * w->T * m->D;
}
static float *seq_v(const Model *m, const Workspace *w, int l, ptrdiff_t seq) {
    return w->v + ((ptrdiff_t)l * w->S + seq) * m->KV * w->T * m->D;
}
static float *seq_qk_raw(const Model *m, const Workspace *w, int l, ptrdiff_t seq) {
    return w->qk_raw + ((ptrdiff_t)l * w->S + seq) * (m->H + m->KV) * w->T * m->D;
}
static float *seq_qk_rstd(const Model *m, const Workspace *w, int l, ptrdiff_t seq) {
    return w->qk_rstd + ((ptrdiff_t)l * w->S + seq) * (m->H + m->KV) * w->T;
}

// qkv (T,QKV) of one sequence -> q (H,T,D), k (KV,T,D) head-major; with qk_norm each
// head is RMSNorm-ed over D first (Qwen3), its input and rstd cached for the backward.
static void qk_heads_forward(const Model *m, Workspace *w, int l, ptrdiff_t seq, const float *qkv, float *q,
                             float *k) {
    const ptrdiff_t T = w->T, H = m->H, KV = m->KV, D = m->D, QKV = qkv_width(m);
    if (!m->qk_norm) {
        to_heads(q, qkv, T, H, D, QKV, 0);
        to_heads(k, qkv, T, KV, D, QKV, H * D);
        return;
    }
    const LayerWeights *lw = &m->layers[l];
    float *raw = seq_qk_raw(m, w, l, seq), *rstd = seq_qk_rstd(m, w, l, seq);
    to_heads(raw, qkv, T, H, D, QKV, 0);
    to_heads(raw + H * T * D, qkv, T, KV, D, QKV, H * D);
    rmsnorm_forward(q, rstd, raw, lw->q_norm.w, H * T, D, m->eps);
    rmsnorm_forward(k, rstd + H * T, raw + H * T * D, lw->k_norm.w, KV * T, D, m->eps);
}

// *gq (H,T,D), *gk (KV,T,D) at the normed heads -> at their input, written into the
// other buffer of each pair (gq / gq_rot, gk / gk_rot); the RMSNorm rule of DESIGN.md §2.
static void qk_heads_backward(const Model *m, Workspace *w, int l, ptrdiff_t seq, const float **gq,
                              const float **gk, UnaryRule rule) {
    if (!m->qk_norm) return;
    const ptrdiff_t T = w->T, H = m->H, KV = m->KV, D = m->D;
    const LayerWeights *lw = &m->layers[l];
    const float *raw = seq_qk_raw(m, w, l, seq), *rstd = seq_qk_rstd(m, w, l, seq);
    float *nq = *gq == w->gq ? w->gq_rot : w->gq, *nk = *gk == w->gk ? w->gk_rot : w->gk;
    zero(nq, H * T * D);
    zero(nk, KV * T * D);
    rmsnorm_backward(nq, *gq, raw, lw->q_norm.w, rstd, H * T, D, rule);
    rmsnorm_backward(nk, *gk, raw + H * T * D, lw->k_norm.w, rstd + H * T, KV * T, D, rule);
    *gq = nq;
    *gk = nk;
}

// The last layer of a pooled head only needs the rows the head reads: the query
// rows of its attention, its residual, norms and MLP (see Workspace.pruned).
ptrdiff_t layer_rows(const Model *m, const Workspace *w, int l) {
    return w->pruned && l == m->L - 1 ? w->S : w->N;
}

// The query rows [q0, q0 + nq) of sequence seq that layer l computes.
static void query_rows(const Model *m, const Workspace *w, int l, ptrdiff_t seq, ptrdiff_t *q0, ptrdiff_t *nq) {
    const bool one = layer_rows(m, w, l) != w->N;
    *q0 = one ? pooled_row(m, w, seq) - seq * w->T : 0;
    *nq = one ? 1 : w->T;
}

// x (N,C) -> xq (rows,C): the residual rows layer l keeps (x itself when it keeps all).
const float *residual_rows(const Model *m, Workspace *w, int l, const float *x) {
    if (layer_rows(m, w, l) == w->N) return x;
    for (ptrdiff_t seq = 0; seq < w->S; seq++)
        memcpy(w->xq + seq * m->C, x + pooled_row(m, w, seq) * m->C,
               (size_t)m->C * sizeof(float));
    return w->xq;
}

// g (rows,C) -> gx (N,C) +=: the residual rows back to their places.
void residual_rows_backward(const Model *m, const Workspace *w, int l, float *gx, const float *g) {
    const ptrdiff_t C = m->C;
    if (layer_rows(m, w, l) == w->N) {
        for (ptrdiff_t i = 0; i < w->N * C; i++) gx[i] += g[i];
        return;
    }
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        float *row = gx + pooled_row(m, w, seq) * C;
        for (ptrdiff_t c = 0; c < C; c++) row[c] += g[seq * C + c];
    }
}

// Attention is computed one block of query rows at a time (FlashAttention's tiling
// without its online softmax): a block's rows are complete, so its softmax needs no
// running statistics, and the backward recomputes exactly the forward's probabilities
// from q and k by the same code (block_probs) instead of caching (L,S,H,T,T) of them.
// Blocking the keys too would shrink the scratch from (block,T) to (block,block) per
// head, but needs each row's max and normaliser kept from the forward and, in the
// backward, a first pass over the keys for the softmax's Σ A ⊙ g_A before any g at the
// scores; at (block,T) (2 MiB a buffer at T = 8192) the scratch is already small next to
// the linear caches, and the rule kernels (softmax_forward / _backward) stay whole rows.
// A block only scores the keys some of its queries see (visible_keys): a causal block
// skips the upper triangle. Scratch is per head, so heads run in parallel (one per
// task) and give the same bits whatever the team size.

// Query rows [q0, q0 + nq) of one sequence's heads; a team runs them one head per task.
typedef struct {
    const Model *m;
    const Workspace *w;
    const ChunkStream *s;   // backward: the stream
    int l;
    ptrdiff_t seq, q0, nq;
    const float *q, *k, *v; // (H,T,D), (KV,T,D) x2
    double scale;           // backward: Mask-LRP's Eq. 9 scale (mask_heads)
} Heads;

// DeBERTa: head h's k·pqᵀ (T,R2) into its own p2c rows, once per head (every block
// gathers from it); scaled like q·kᵀ.
static void p2c_forward(const Heads *j, ptrdiff_t h) {
    const Model *m = j->m;
    const ptrdiff_t T = j->w->T, D = m->D, R2 = m->R2, g = h / (m->H / m->KV);
    if (m->rel_emb == NULL || m->layers[j->l].pos_query.w == NULL) return;
    matmul_forward(j->w->p2c + h * T * R2, j->k + g * T * D, layer_pos(m, j->w, j->l, true) + h * R2 * D, 1, T, D,
                   R2, true, m->attn_scale);
}

// scores (nq,nk) of head h, queries [q0, q0 + nq), keys [k0, k0 + nk) += DeBERTa's
// disentangled terms, each a product of two activations (scaled like q·kᵀ): q_i·pk_r
// (c2p, computed here into the head's own c2p rows) and k_j·pq_r (p2c, p2c_forward),
// r = relative_row(i, j).
static void disentangled_add(const Heads *j, ptrdiff_t h, ptrdiff_t q0, ptrdiff_t nq, ptrdiff_t k0, ptrdiff_t nk,
                             float *scores) {
    const Model *m = j->m;
    const ptrdiff_t T = j->w->T, D = m->D, R2 = m->R2;
    const LayerWeights *lw = &m->layers[j->l];
    float *c2p = j->w->c2p + h * j->w->block * R2;
    const float *p2c = j->w->p2c + h * T * R2;
    if (lw->pos_key.w != NULL) {
        matmul_forward(c2p, j->q + (h * T + q0) * D, layer_pos(m, j->w, j->l, false) + h * R2 * D, 1, nq, D, R2, true,
                       m->attn_scale);
        for (ptrdiff_t i = 0; i < nq; i++)
            for (ptrdiff_t k = 0; k < nk; k++) scores[i * nk + k] += c2p[i * R2 + relative_row(m, q0 + i, k0 + k)];
    }
    if (lw->pos_query.w != NULL) {
        for (ptrdiff_t i = 0; i < nq; i++)
            for (ptrdiff_t k = 0; k < nk; k++)
                scores[i * nk + k] += p2c[(k0 + k) * R2 + relative_row(m, q0 + i, k0 + k)];
    }
}

// a (nq,nk): head h's attention probabilities of queries [q0, q0 + nq) over keys
// [k0, k0 + nk), the forward's and the backward's alike.
static void block_probs(const Heads *j, ptrdiff_t h, ptrdiff_t q0, ptrdiff_t nq, ptrdiff_t k0, ptrdiff_t nk,
                        float *a) {
    const Model *m = j->m;
    const ptrdiff_t T = j->w->T, D = m->D, g = h / (m->H / m->KV);
    matmul_forward(a, j->q + (h * T + q0) * D, j->k + (g * T + k0) * D, 1, nq, D, nk, true, m->attn_scale);
    // The mask and MPNet's relative position bias are constants added to the scores, never
    // relevance receivers (DESIGN.md §2): the softmax's backward needs only its output.
    if (m->rel_bias != NULL) relative_bias_add(m, h, q0, nq, k0, nk, a);
    if (m->rel_emb != NULL) disentangled_add(j, h, q0, nq, k0, nk, a);
    mask_scores(m, j->w, j->l, j->seq, q0, nq, k0, nk, a);
    softmax_forward(a, a, nq, nk);
}

// A block's rows (nq,nk) of keys [k0, k0 + nk) -> full rows (nq,T) of a tap, zero elsewhere.
static void tap_rows(float *tap, const float *rows, ptrdiff_t nq, ptrdiff_t T, ptrdiff_t k0, ptrdiff_t nk) {
    zero(tap, nq * T);
    for (ptrdiff_t i = 0; i < nq; i++) memcpy(tap + i * T + k0, rows + i * nk, (size_t)nk * sizeof(float));
}

// The sequence's (L,H,T,T) slice of the call's attention tap `base` (the chunk's), rows of
// head h from query i.
static float *tap_at(const Heads *j, float *base, ptrdiff_t h, ptrdiff_t i) {
    const ptrdiff_t T = j->w->T, H = j->m->H;
    return base + ((j->seq * j->m->L + j->l) * H + h) * T * T + i * T;
}

// Head h, block by block: probabilities, A·V into w->hm2 (H,nq,D), and the forward's taps:
// the attention rows (w->att_out) and each query's most attended key (w->kstar).
static void attention_head_forward(void *ctx, ptrdiff_t h) {
    const Heads *j = ctx;
    const Model *m = j->m;
    const Workspace *w = j->w;
    const ptrdiff_t T = w->T, D = m->D, g = h / (m->H / m->KV), q1 = j->q0 + j->nq;
    float *a = w->probs + h * w->block * T;
    p2c_forward(j, h);
    for (ptrdiff_t i0 = j->q0; i0 < q1; i0 += w->block) {
        const ptrdiff_t nq = q1 - i0 < w->block ? q1 - i0 : w->block;
        ptrdiff_t k0, k1;
        visible_keys(m, w, j->l, i0, i0 + nq, &k0, &k1);
        const ptrdiff_t nk = k1 - k0;
        block_probs(j, h, i0, nq, k0, nk, a);
        matmul_forward(w->hm2 + (h * j->nq + i0 - j->q0) * D, a, j->v + (g * T + k0) * D, 1, nq, nk, D, false, 1.0f);
        if (w->att_out != NULL) tap_rows(tap_at(j, w->att_out, h, i0), a, nq, T, k0, nk);
        if (w->stat_keys != NULL) {
            int32_t *kstar = w->kstar + ((j->seq * m->L + j->l) * m->H + h) * T;
            const uint8_t *queries = w->stat_queries + j->seq * T, *keys = w->stat_keys + j->seq * T;
            for (ptrdiff_t i = 0; i < nq; i++)
                kstar[i0 + i] = queries[i0 + i] ? key_argmax(a + i * nk, keys, T, k0, nk) : -1;
        }
    }
}

// x (N,C) -> out (rows,C)
void attention_forward(const Model *m, Workspace *w, int l, float *out, const float *x) {
    const ptrdiff_t T = w->T, N = w->N, H = m->H, KV = m->KV, D = m->D, C = m->C, QKV = qkv_width(m);
    const ptrdiff_t rows = layer_rows(m, w, l);
    const LayerWeights *lw = &m->layers[l];
    float *ctx = w->ctx + l * N * H * D;
    linear_forward(w->qkv, x, lw->qkv.w, lw->qkv.b, N, C, QKV, false);
    if (m->rel_emb != NULL) relative_project(m, w, l);
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        const float *qkv = w->qkv + seq * T * QKV;
        float *q = seq_q(m, w, l, seq), *k = seq_k(m, w, l, seq), *v = seq_v(m, w, l, seq);
        to_heads(v, qkv, T, KV, D, QKV, (H + KV) * D);
        qk_heads_forward(m, w, l, seq, qkv, m->rope ? w->hm : q, m->rope ? w->kv_raw : k);
        if (m->rope) {
            const float *cos, *sin;
            layer_rope(m, w, l, seq, &cos, &sin);
            rope_forward(q, w->hm, cos, sin, H, T, D, m->rope_dim);
            rope_forward(k, w->kv_raw, cos, sin, KV, T, D, m->rope_dim);
        }
        Heads heads = {.m = m, .w = w, .l = l, .seq = seq, .q = q, .k = k, .v = v};
        query_rows(m, w, l, seq, &heads.q0, &heads.nq);
        const ptrdiff_t nq = heads.nq;
        team_for(team_current(), H, attention_head_forward, &heads);
        from_heads(ctx + seq * nq * H * D, w->hm2, nq, H, D, H * D, 0);
    }
    linear_forward(out, ctx, lw->out.w, lw->out.b, rows, H * D, C, false);
}

// DeBERTa: g at head h's scores of queries [q0, q0 + nq), keys [k0, k0 + nk) (gs, (nq,nk))
// -> g at its q rows (w->gq) and at the layer's pk (w->gpos_k) +=, and g at its k·pqᵀ
// products (w->gp2c, (T,R2)) +=, which p2c_backward crosses once the head's blocks are
// done. The gathers are linear (their g scatters back to the q·pkᵀ and k·pqᵀ products);
// each product is crossed like q·kᵀ, by the stream's rule for two activations (AttnLRP
// Prop. 3.3: ½ of the true gradient to each operand; CP-LRP never gets here, its scores
// receive nothing), with the head's Mask-LRP factor `down`.
static void disentangled_backward(const Heads *j, ptrdiff_t h, ptrdiff_t q0, ptrdiff_t nq, ptrdiff_t k0,
                                  ptrdiff_t nk, const float *gs, float down) {
    const Model *m = j->m;
    const Workspace *w = j->w;
    const ptrdiff_t T = w->T, D = m->D, R2 = m->R2;
    const LayerWeights *lw = &m->layers[j->l];
    if (lw->pos_key.w != NULL) {
        float *gc2p = w->gc2p + h * w->block * R2;
        zero(gc2p, nq * R2);
        for (ptrdiff_t i = 0; i < nq; i++)
            for (ptrdiff_t k = 0; k < nk; k++) gc2p[i * R2 + relative_row(m, q0 + i, k0 + k)] += gs[i * nk + k];
        matmul_backward(w->gq + (h * T + q0) * D, w->gpos_k + h * R2 * D, gc2p, j->q + (h * T + q0) * D,
                        layer_pos(m, w, j->l, false) + h * R2 * D, 1, nq, D, R2, true, m->attn_scale * down,
                        j->s->rules.attention);
    }
    if (lw->pos_query.w != NULL) {
        float *gp2c = w->gp2c + h * T * R2;
        for (ptrdiff_t i = 0; i < nq; i++)
            for (ptrdiff_t k = 0; k < nk; k++)
                gp2c[(k0 + k) * R2 + relative_row(m, q0 + i, k0 + k)] += gs[i * nk + k];
    }
}

// DeBERTa: head h's g at its k·pqᵀ products (w->gp2c) -> g at k (its w->gk_heads slice)
// and at the layer's pq (w->gpos_q) +=, as in disentangled_backward.
static void p2c_backward(const Heads *j, ptrdiff_t h, float down) {
    const Model *m = j->m;
    const Workspace *w = j->w;
    const ptrdiff_t T = w->T, D = m->D, R2 = m->R2, g = h / (m->H / m->KV);
    matmul_backward(w->gk_heads + h * T * D, w->gpos_q + h * R2 * D, w->gp2c + h * T * R2, j->k + g * T * D,
                    layer_pos(m, w, j->l, true) + h * R2 * D, 1, T, D, R2, true, m->attn_scale * down,
                    j->s->rules.attention);
}

// DeBERTa: sequence seq's g at layer l's pk, pq -> g at the relative rows (w->grel) +=,
// through the projections (linear: true gradient).
static void relative_project_backward(const Model *m, Workspace *w, int l, ptrdiff_t seq) {
    const LayerWeights *lw = &m->layers[l];
    const ptrdiff_t HD = (ptrdiff_t)m->H * m->D, R2 = m->R2;
    for (int query = 0; query < 2; query++) {
        const Affine p = query ? lw->pos_query : lw->pos_key;
        if (p.w == NULL) continue;
        from_heads(w->pos_rows, query ? w->gpos_q : w->gpos_k, R2, m->H, m->D, HD, 0);
        linear_backward(w->grel + seq * R2 * m->C, w->pos_rows, p.w, R2, m->C, HD, false);
    }
}

// Mask-LRP's factor for head h of layer l: M[l,h] times Eq. 9's scale.
static float head_factor(const Model *m, const ChunkStream *s, int l, ptrdiff_t h, double scale) {
    return (float)((s->head_mask != NULL ? s->head_mask[(ptrdiff_t)l * m->H + h] : 1.0) * scale);
}

// Mask-LRP at the heads of layer l, sequence seq (DESIGN.md §3.2): g_h, the
// gradient at head h's output (gctx_hm, (H,nq,D)), carries relevance
// R_h = Σ ctx_h ⊙ g_h, and the head passes down factor_h · g_h (head_factor): a
// masked head passes nothing; with renormalize, scale = Σ_h R_h / Σ_h M_h R_h so
// the kept heads pass on what all heads received before masking (paper Eq. 9; a
// kept sum of 0 leaves them unscaled). Strict semantics applies the factors to
// g_h here, so the layer's own taps read the masked g; reference semantics leaves
// g_h as it arrived and attention_backward scales what each head passes down.
// Returns scale.
static double mask_heads(const Model *m, Workspace *w, int l, ptrdiff_t seq, ptrdiff_t nq, const ChunkStream *s) {
    const ptrdiff_t H = m->H, D = m->D, HD = H * D;
    const float *ctx = w->ctx + l * w->N * HD + seq * nq * HD; // (nq,HD) token-major
    const float *mask = s->head_mask != NULL ? s->head_mask + (ptrdiff_t)l * H : NULL;
    const bool strict = s->semantics == MASK_STRICT;
    double total = 0.0, kept = 0.0;
    for (ptrdiff_t h = 0; h < H; h++) {
        const float *g = w->gctx_hm + h * nq * D;
        double r = 0.0;
        for (ptrdiff_t i = 0; i < nq; i++)
            for (ptrdiff_t d = 0; d < D; d++) r += (double)ctx[i * HD + h * D + d] * g[i * D + d];
        w->head_sums[h] = r;
        total += r;
        kept += mask != NULL ? mask[h] * r : r;
    }
    const double scale = mask != NULL && s->renormalize && kept != 0.0 ? total / kept : 1.0;
    for (ptrdiff_t h = 0; h < H; h++) {
        const float factor = strict ? head_factor(m, s, l, h, scale) : 1.0f;
        if (factor != 1.0f) {
            float *g = w->gctx_hm + h * nq * D;
            for (ptrdiff_t i = 0; i < nq * D; i++) g[i] *= factor;
        }
        if (s->head_relevance != NULL)
            s->head_relevance[(seq * m->L + l) * H + h] = (float)(factor * w->head_sums[h]);
    }
    return scale;
}

// Head h's backward, block by block: the block's probabilities recomputed (block_probs),
// A·V and q·kᵀ crossed by the stream's rule, the taps' rows written straight into the
// outputs. g at q goes to the head's own rows of w->gq; g at k and v to the head's own
// slices of w->gk_heads, w->gv_heads, which attention_backward sums over each group of
// heads sharing a key/value head in a fixed order (so no two tasks write one float).
static void attention_head_backward(void *ctx, ptrdiff_t h) {
    const Heads *j = ctx;
    const Model *m = j->m;
    const Workspace *w = j->w;
    const ChunkStream *s = j->s;
    const ptrdiff_t T = w->T, D = m->D, g = h / (m->H / m->KV), q1 = j->q0 + j->nq, B = w->block;
    const bool strict = s->semantics == MASK_STRICT;
    const bool tapped = s->attention_grad != NULL || s->attention_relevance != NULL;
    float *gk = w->gk_heads + h * T * D, *gv = w->gv_heads + h * T * D;
    zero(gk, T * D);
    zero(gv, T * D);
    const float factor = head_factor(m, s, j->l, h, j->scale);
    if (factor == 0.0f && (strict || !tapped)) return; // passes nothing, and no tap reads it
    // What the head passes down: its A·V backward is linear in g_h, so the reference
    // semantics' factor can wait until after the taps (strict's is in g_h).
    const float down = strict ? 1.0f : factor;
    float share_a, share_b;
    product_shares(s->rules.attention, &share_a, &share_b);
    const bool scores = share_a != 0.0f && down != 0.0f; // anything flows into q·kᵀ
    const bool p2c = scores && m->rel_emb != NULL && m->layers[j->l].pos_query.w != NULL;
    float *a = w->probs + h * B * T, *gatt = w->gatt + h * B * T, *gscores = w->gscores + h * B * T;
    p2c_forward(j, h);
    if (p2c) zero(w->gp2c + h * T * m->R2, T * m->R2);
    for (ptrdiff_t i0 = j->q0; i0 < q1; i0 += B) {
        const ptrdiff_t nq = q1 - i0 < B ? q1 - i0 : B;
        ptrdiff_t k0, k1;
        visible_keys(m, w, j->l, i0, i0 + nq, &k0, &k1);
        const ptrdiff_t nk = k1 - k0;
        block_probs(j, h, i0, nq, k0, nk, a);
        const float *gh = w->gctx_hm + (h * j->nq + i0 - j->q0) * D, *vh = j->v + g * T * D;
        // A·V (AttnLRP Prop. 3.3, or the stream's rule); A gets nothing under CP-LRP. The
        // g-at-A tap covers masked keys too (g·Vᵀ is not 0 there), so it takes whole rows
        // (g at A alone reads no A: `a` stands in for the (nq,T) operand unread).
        if (s->attention_grad != NULL) {
            float *tap = tap_at(j, s->attention_grad, h, i0);
            zero(tap, nq * T);
            matmul_backward(share_a != 0.0f ? tap : NULL, NULL, gh, a, vh, 1, nq, T, D, false, 1.0f,
                            s->rules.attention);
            for (ptrdiff_t i = 0; i < nq; i++) memcpy(gatt + i * nk, tap + i * T + k0, (size_t)nk * sizeof(float));
        } else {
            zero(gatt, nq * nk);
            matmul_backward(share_a != 0.0f ? gatt : NULL, NULL, gh, a, vh + k0 * D, 1, nq, nk, D, false, 1.0f,
                            s->rules.attention);
        }
        if (down != 0.0f)
            matmul_backward(NULL, gv + k0 * D, gh, a, vh + k0 * D, 1, nq, nk, D, false, down, s->rules.attention);
        if (s->attention_relevance != NULL) {
            float *tap = tap_at(j, s->attention_relevance, h, i0);
            zero(tap, nq * T);
            for (ptrdiff_t i = 0; i < nq; i++) relevance(tap + i * T + k0, a + i * nk, gatt + i * nk, nk);
        }
        if (!scores) continue;
        zero(gscores, nq * nk);
        softmax_backward(gscores, gatt, a, nq, nk);
        matmul_backward(w->gq + (h * T + i0) * D, gk + k0 * D, gscores, j->q + (h * T + i0) * D, j->k + (g * T + k0) * D,
                        1, nq, D, nk, true, m->attn_scale * down, s->rules.attention);
        if (m->rel_emb != NULL) disentangled_backward(j, h, i0, nq, k0, nk, gscores, down);
    }
    if (p2c) p2c_backward(j, h, down);
}

// g (rows,C) at the branch output -> gx (N,C) +=
void attention_backward(const Model *m, Workspace *w, int l, float *gx, const float *g, const ChunkStream *s) {
    const ptrdiff_t T = w->T, N = w->N, H = m->H, KV = m->KV, D = m->D, C = m->C, QKV = qkv_width(m);
    const ptrdiff_t group = H / KV, rows = layer_rows(m, w, l);
    const LayerWeights *lw = &m->layers[l];
    zero(w->gctx, rows * H * D);
    linear_backward(w->gctx, g, lw->out.w, rows, H * D, C, false);
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        Heads heads = {.m = m, .w = w, .s = s, .l = l, .seq = seq, .q = seq_q(m, w, l, seq), .k = seq_k(m, w, l, seq),
                       .v = seq_v(m, w, l, seq), .scale = 1.0};
        query_rows(m, w, l, seq, &heads.q0, &heads.nq);
        const ptrdiff_t nq = heads.nq;
        to_heads(w->gctx_hm, w->gctx + seq * nq * H * D, nq, H, D, H * D, 0);
        if (m->rel_emb != NULL) {
            zero(w->gpos_k, H * m->R2 * D);
            zero(w->gpos_q, H * m->R2 * D);
        }
        if (s->head_mask != NULL || s->head_relevance != NULL) heads.scale = mask_heads(m, w, l, seq, nq, s);
        zero(w->gq, H * T * D);
        team_for(team_current(), H, attention_head_backward, &heads);
        // each key/value head's g: the sum of its group's shares, in head order
        zero(w->gk, KV * T * D);
        zero(w->gv, KV * T * D);
        for (ptrdiff_t h = 0; h < H; h++) {
            float *gk = w->gk + h / group * T * D, *gv = w->gv + h / group * T * D;
            const float *gkh = w->gk_heads + h * T * D, *gvh = w->gv_heads + h * T * D;
            for (ptrdiff_t i = 0; i < T * D; i++) {
                gk[i] += gkh[i];
                gv[i] += gvh[i];
            }
        }
        if (m->rel_emb != NULL) relative_project_backward(m, w, l, seq);
        const float *gq = w->gq, *gk = w->gk;
        if (m->rope) {
            const float *cos, *sin;
            layer_rope(m, w, l, seq, &cos, &sin);
            zero(w->gq_rot, H * T * D);
            zero(w->gk_rot, KV * T * D);
            rope_backward(w->gq_rot, w->gq, cos, sin, H, T, D, m->rope_dim);
            rope_backward(w->gk_rot, w->gk, cos, sin, KV, T, D, m->rope_dim);
            gq = w->gq_rot;
            gk = w->gk_rot;
        }
        qk_heads_backward(m, w, l, seq, &gq, &gk, s->rules.unary);
        float *gqkv = w->gqkv + seq * T * QKV;
        from_heads(gqkv, gq, T, H, D, QKV, 0);
        from_heads(gqkv, gk, T, KV, D, QKV, H * D);
        from_heads(gqkv, w->gv, T, KV, D, QKV, (H + KV) * D);
    }
    linear_backward(gx, w->gqkv, lw->qkv.w, N, C, QKV, false);
}

// ----------------------------------------------------------------------------
// MLP: down(act(up x)), or down(act(gate x) ⊙ up x) when gated (SwiGLU); or a mixture of
// experts, each a gated MLP, weighted by the router, plus a gated shared expert (Qwen2-MoE).

// fc (rows,2F) [gate | up] -> gact (rows,F) = act(gate), hidden (rows,F) = gact ⊙ up
static void gated_forward(float *gact, float *hidden, const float *fc, ptrdiff_t rows, ptrdiff_t F, Activation f) {
    for (ptrdiff_t t = 0; t < rows; t++) {
        activation_forward(gact + t * F, fc + t * 2 * F, F, f);
        product_forward(hidden + t * F, gact + t * F, fc + t * 2 * F + F, F);
    }
}

// g (rows,F) at hidden -> gfc (rows,2F) +=; gtmp (rows,F): scratch
static void gated_backward(float *gfc, float *gtmp, const float *g, const float *fc, const float *gact,
                           ptrdiff_t rows, ptrdiff_t F, Activation f, const ChunkStream *s) {
    float share_a, share_b;
    product_shares(s->rules.gate, &share_a, &share_b);
    zero(gtmp, rows * F);
    for (ptrdiff_t t = 0; t < rows; t++) {
        // act(gate) ⊙ up: Prop. 3.3 shares; under CP-LRP the gate branch is detached.
        product_backward(share_a != 0.0f ? gtmp + t * F : NULL, gfc + t * 2 * F + F, g + t * F, gact + t * F,
                         fc + t * 2 * F + F, F, s->rules.gate);
        if (share_a != 0.0f) activation_backward(gfc + t * 2 * F, gtmp + t * F, fc + t * 2 * F, F, f, s->rules.unary);
    }
}

// The dense MLP's pre-activations fc are cached unless they would pass MLP_CACHE_BYTES
// (masklrp.h); then only its input is, and the backward recomputes fc with the forward's GEMM
// (the same bits). act(gate) is always recomputed from fc: element-wise, cheap.

// Layer l's pre-activations: its slice of the cache, or the one (rows,FU) scratch.
static float *mlp_fc(const Model *m, const Workspace *w, int l) {
    return w->fc + (w->fc_cached ? l * w->N * fc_width(m) : 0);
}

// fc (rows,FU) -> act(gate) (rows,F) into w->hidden
static void gate_activations(const Model *m, Workspace *w, const float *fc, ptrdiff_t rows) {
    const ptrdiff_t F = m->F, FU = fc_width(m);
    for (ptrdiff_t t = 0; t < rows; t++) activation_forward(w->hidden + t * F, fc + t * FU, F, m->act);
}

// The dense MLP (with experts: the shared expert). x (rows,C) -> out (rows,C)
static void dense_forward(const Model *m, Workspace *w, int l, float *out, const float *x) {
    const ptrdiff_t N = layer_rows(m, w, l), C = m->C, F = m->F, FU = fc_width(m);
    const LayerWeights *lw = &m->layers[l];
    float *fc = mlp_fc(m, w, l);
    if (!w->fc_cached) memcpy(w->mlp_in + l * w->N * C, x, (size_t)(N * C) * sizeof(float));
    linear_forward(fc, x, lw->up.w, lw->up.b, N, C, FU, false);
    if (m->gated) {
        gate_activations(m, w, fc, N);
        for (ptrdiff_t t = 0; t < N; t++) product_forward(w->hidden + t * F, w->hidden + t * F, fc + t * FU + F, F);
    } else {
        activation_forward(w->hidden, fc, N * F, m->act);
    }
    linear_forward(out, w->hidden, lw->down.w, lw->down.b, N, F, C, false);
}

// g (rows,C) -> gx (rows,C) +=
static void dense_backward(const Model *m, Workspace *w, int l, float *gx, const float *g, const ChunkStream *s) {
    const ptrdiff_t N = layer_rows(m, w, l), C = m->C, F = m->F, FU = fc_width(m);
    const LayerWeights *lw = &m->layers[l];
    float *fc = mlp_fc(m, w, l);
    const float *gact = w->hidden;
    if (!w->fc_cached) linear_forward(fc, w->mlp_in + l * w->N * C, lw->up.w, lw->up.b, N, C, FU, false);
    if (m->gated) gate_activations(m, w, fc, N);
    zero(w->ghid, N * F);
    linear_backward(w->ghid, g, lw->down.w, N, F, C, false);
    zero(w->gfc, N * FU);
    if (m->gated) gated_backward(w->gfc, w->ghid2, w->ghid, fc, gact, N, F, m->act, s);
    else activation_backward(w->gfc, w->ghid, fc, N * F, m->act, s->rules.unary);
    linear_backward(gx, w->gfc, lw->up.w, N, C, FU, false);
}

// Layer l's routes: each row's K most probable experts (ties: the lower index) and their
// weights, the probabilities themselves or, with norm_topk, renormalised over the K; then
// the slots sorted by expert. The selection is a constant of every backward stream.
static void route_forward(const Model *m, Workspace *w, int l, const float *x) {
    const ptrdiff_t N = layer_rows(m, w, l), X = m->X, K = m->K;
    float *p = w->router_p + l * w->N * X, *rw = w->route_w + l * w->N * K;
    int32_t *route = w->route + l * w->N * K, *slots = w->slots + l * w->N * K;
    int32_t *start = w->slot_start + l * (X + 1);
    linear_forward(p, x, m->layers[l].router.w, m->layers[l].router.b, N, m->C, X, false);
    softmax_forward(p, p, N, X);
    memset(start, 0, (size_t)(X + 1) * sizeof *start);
    for (ptrdiff_t n = 0; n < N; n++) {
        const float *pn = p + n * X;
        float sum = 0.0f;
        for (ptrdiff_t k = 0; k < K; k++) {
            ptrdiff_t best = -1;
            for (ptrdiff_t e = 0; e < X; e++) {
                bool taken = false;
                for (ptrdiff_t j = 0; j < k; j++) taken |= route[n * K + j] == e;
                if (!taken && (best < 0 || pn[e] > pn[best])) best = e;
            }
            route[n * K + k] = (int32_t)best;
            rw[n * K + k] = pn[best];
            sum += pn[best];
            start[best + 1]++;
        }
        for (ptrdiff_t k = 0; k < K && m->norm_topk; k++) rw[n * K + k] /= sum;
    }
    for (ptrdiff_t e = 0; e < X; e++) start[e + 1] += start[e];
    for (ptrdiff_t e = 0, at = 0; e < X; e++)
        for (ptrdiff_t n = 0; n < N; n++)
            for (ptrdiff_t k = 0; k < K; k++)
                if (route[n * K + k] == e) slots[at++] = (int32_t)(n * K + k);
}
// The routed experts: x (rows,C) -> out (rows,C) = Σ_k w_k expert_{e_k}(x), each expert
// on the rows routed to it, summed in expert order (as transformers does).
static void experts_forward(const Model *m, Workspace *w, int l, float *out, const float *x) {
    const ptrdiff_t N = layer_rows(m, w, l), C = m->C, K = m->K, XF = m->XF, NK = w->N * K;
    const LayerWeights *lw = &m->layers[l];
    const int32_t *slots = w->slots + l * NK, *start = w->slot_start + l * (m->X + 1);
    const float *rw = w->route_w + l * NK;
    float *xfc = w->xfc + l * NK * 2 * XF, *xgact = w->xgact + l * NK * XF, *xout = w->xout + l * NK * C;
    route_forward(m, w, l, x);
    zero(out, N * C);
    for (ptrdiff_t e = 0; e < m->X; e++) {
        const ptrdiff_t a = start[e], n = start[e + 1] - a;
        if (n == 0) continue;
        for (ptrdiff_t i = 0; i < n; i++)
            memcpy(w->xin + i * C, x + slots[a + i] / K * C, (size_t)C * sizeof(float));
        linear_forward(xfc + a * 2 * XF, w->xin, lw->expert_up + e * 2 * XF * C, NULL, n, C, 2 * XF, false);
        gated_forward(xgact + a * XF, w->xhid, xfc + a * 2 * XF, n, XF, m->act);
        linear_forward(xout + a * C, w->xhid, lw->expert_down + e * C * XF, NULL, n, XF, C, false);
        for (ptrdiff_t i = 0; i < n; i++) {
            float *row = out + slots[a + i] / K * C, *scaled = w->xin; // xin: free again
            scale_forward(scaled, rw[slots[a + i]], xout + (a + i) * C, C);
            for (ptrdiff_t c = 0; c < C; c++) row[c] += scaled[c];
        }
    }
}

// g (rows,C) -> gx (rows,C) +=. Each routing weight w_k times its expert's output is a product
// of two activations (DESIGN.md §2): ½ of the true gradient to each operand under AttnLRP (Prop.
// 3.3), as for act(gate) ⊙ up; under CP-LRP the weight is a constant and the expert takes the
// full gradient (as the gate branch is detached); the gradient stream takes both. What reaches
// the weights goes on by the true gradient of their computation, a softmax (Prop. 3.1): with
// norm_topk, w = p_sel / Σ p_sel is exactly the softmax of the K selected router logits; without,
// the K selected entries of the softmax over all X. The selection itself is a constant.
static void experts_backward(const Model *m, Workspace *w, int l, float *gx, const float *g, const ChunkStream *s) {
    const ptrdiff_t N = layer_rows(m, w, l), C = m->C, K = m->K, X = m->X, XF = m->XF, NK = w->N * K;
    const LayerWeights *lw = &m->layers[l];
    const int32_t *slots = w->slots + l * NK, *start = w->slot_start + l * (X + 1), *route = w->route + l * NK;
    const float *rw = w->route_w + l * NK, *p = w->router_p + l * w->N * X;
    const float *xfc = w->xfc + l * NK * 2 * XF, *xgact = w->xgact + l * NK * XF, *xout = w->xout + l * NK * C;
    float share_w, share_expert;
    product_shares(s->rules.gate, &share_w, &share_expert);
    float *gp = w->groute; // (rows,X) g at the probabilities (0 where not selected)
    zero(gp, N * X);
    for (ptrdiff_t e = 0; e < X; e++) {
        const ptrdiff_t a = start[e], n = start[e + 1] - a;
        if (n == 0) continue;
        zero(w->gxout, n * C);
        for (ptrdiff_t i = 0; i < n; i++) {
            const ptrdiff_t slot = slots[a + i], row = slot / K;
            scale_backward(share_w != 0.0f ? gp + row * X + e : NULL, w->gxout + i * C, g + row * C, rw[slot],
                           xout + (a + i) * C, C, s->rules.gate);
        }
        zero(w->gxhid, n * XF);
        linear_backward(w->gxhid, w->gxout, lw->expert_down + e * C * XF, n, XF, C, false);
        zero(w->gxfc, n * 2 * XF);
        gated_backward(w->gxfc, w->gxhid2, w->gxhid, xfc + a * 2 * XF, xgact + a * XF, n, XF, m->act, s);
        zero(w->gxin, n * C);
        linear_backward(w->gxin, w->gxfc, lw->expert_up + e * 2 * XF * C, n, C, 2 * XF, false);
        for (ptrdiff_t i = 0; i < n; i++) {
            float *row = gx + slots[a + i] / K * C;
            for (ptrdiff_t c = 0; c < C; c++) row[c] += w->gxin[i * C + c];
        }
    }
    if (share_w == 0.0f) return; // CP-LRP: the weights are constants, the router gets nothing
    zero(w->grouter, N * X);
    for (ptrdiff_t n = 0; n < N; n++) {
        const float *sn = p + n * X;
        if (m->norm_topk) { // the softmax of the selected logits: its output over all X, 0 elsewhere
            zero(w->route_s, X);
            for (ptrdiff_t k = 0; k < K; k++) w->route_s[route[n * K + k]] = rw[n * K + k];
            sn = w->route_s;
        }
        softmax_backward(w->grouter + n * X, gp + n * X, sn, 1, X);
    }
    linear_backward(gx, w->grouter, lw->router.w, N, C, X, false);
}

// x (rows,C) -> out (rows,C)
void mlp_forward(const Model *m, Workspace *w, int l, float *out, const float *x) {
    const LayerWeights *lw = &m->layers[l];
    if (lw->router.w == NULL) {
        dense_forward(m, w, l, out, x);
        return;
    }
    experts_forward(m, w, l, out, x);
    if (lw->up.w == NULL) return;
    // the shared expert, scaled by sigmoid(shared_gate x): out += σ ⊙ shared(x)
    const ptrdiff_t N = layer_rows(m, w, l), C = m->C;
    float *logit = w->shared_logit + l * w->N, *shared = w->shared_out + l * w->N * C, *gate = w->xhid;
    dense_forward(m, w, l, shared, x);
    linear_forward(logit, x, lw->shared_gate.w, lw->shared_gate.b, N, C, 1, false);
    sigmoid_forward(gate, logit, N);
    for (ptrdiff_t n = 0; n < N; n++) {
        scale_forward(w->xin, gate[n], shared + n * C, C);
        for (ptrdiff_t c = 0; c < C; c++) out[n * C + c] += w->xin[c];
    }
}

// g (rows,C) -> gx (rows,C) +=
void mlp_backward(const Model *m, Workspace *w, int l, float *gx, const float *g, const ChunkStream *s) {
    const LayerWeights *lw = &m->layers[l];
    if (lw->router.w == NULL) {
        dense_backward(m, w, l, gx, g, s);
        return;
    }
    experts_backward(m, w, l, gx, g, s);
    if (lw->up.w == NULL) return;
    // σ(gate logit) ⊙ shared(x): the product of two activations, shared like the routing weights
    // (experts_backward); σ by its true gradient (rules.c, sigmoid_backward)
    const ptrdiff_t N = layer_rows(m, w, l), C = m->C;
    const float *logit = w->shared_logit + l * w->N, *shared = w->shared_out + l * w->N * C;
    float share_gate, share_shared;
    product_shares(s->rules.gate, &share_gate, &share_shared);
    float *gshared = w->gxout, *ggate = w->grouter, *glogit = w->grouter + N, *gate = w->xhid;
    sigmoid_forward(gate, logit, N);
    zero(gshared, N * C);
    zero(ggate, 2 * N);
    for (ptrdiff_t n = 0; n < N; n++)
        scale_backward(share_gate != 0.0f ? ggate + n : NULL, gshared + n * C, g + n * C, gate[n], shared + n * C, C,
                       s->rules.gate);
    dense_backward(m, w, l, gx, gshared, s);
    if (share_gate == 0.0f) return;
    sigmoid_backward(glogit, ggate, logit, N);
    linear_backward(gx, glogit, lw->shared_gate.w, N, C, 1, false);
}

// ----------------------------------------------------------------------------
// Head: pool the rows it reads, optional dense + activation, optional output linear.

static ptrdiff_t count_real(const Workspace *w, ptrdiff_t seq) {
    ptrdiff_t n = 0;
    for (ptrdiff_t t = 0; t < w->T; t++) n += w->mask[seq * w->T + t] != 0;
    return n;
}

// Gemma 3's final soft-capping of the logits (n of them), the raw ones kept for the backward.
static void head_softcap(const Model *m, Workspace *w, float *logits, ptrdiff_t n) {
    if (m->final_softcap <= 0.0f) return;
    memcpy(w->raw_logits, logits, (size_t)n * sizeof(float));
    softcap_forward(logits, w->raw_logits, n, m->final_softcap);
}

// Rows of the head: one per sequence when pooled, every position for POOL_NONE.
static ptrdiff_t head_rows(const Model *m, const Workspace *w) { return m->pool == POOL_NONE ? w->N : w->S; }

// The input of head_norm: the activated dense output, or the pooled rows without a dense.
static const float *head_norm_input(const Model *m, const Workspace *w) {
    return m->head_dense.w != NULL ? w->activated : m->pool == POOL_NONE ? w->xf : w->pooled;
}

// xf -> pooled rows -> [dense, activation] -> [norm] -> [output linear, soft-capping]
void head_forward(const Model *m, Workspace *w, float *logits) {
    const ptrdiff_t S = w->S, T = w->T, C = m->C, rows = head_rows(m, w);
    const float *p = w->xf;
    for (ptrdiff_t seq = 0; seq < S && m->pool != POOL_NONE; seq++) {
        float *pooled = w->pooled + seq * C;
        if (m->pool == POOL_MEAN) {
            const double n = (double)count_real(w, seq);
            const float *xs = w->xf + seq * T * C;
            const int64_t *mask = w->mask + seq * T;
            for (ptrdiff_t c = 0; c < C; c++) {
                double sum = 0.0;
                for (ptrdiff_t t = 0; t < T; t++)
                    if (mask[t]) sum += xs[t * C + c];
                pooled[c] = (float)(sum / n);
            }
        } else {
            memcpy(pooled, w->xf + head_row(m, w, seq) * C, (size_t)C * sizeof(float));
        }
        p = w->pooled;
    }
    if (m->head_dense.w != NULL) {
        linear_forward(w->dense, p, m->head_dense.w, m->head_dense.b, rows, C, C, false);
        activation_forward(w->activated, w->dense, rows * C, m->head_act);
        p = w->activated;
    }
    if (m->head_norm.w != NULL) {
        norm_forward(m, w, w->head_normed, p, m->head_norm, 0, HEAD_NORM, rows);
        p = w->head_normed;
    }
    if (m->head_out.w != NULL) {
        linear_forward(logits, p, m->head_out.w, m->head_out.b, rows, C, m->NO, false);
        head_softcap(m, w, logits, rows * m->NO);
    } else {
        memcpy(logits, p, (size_t)(rows * C) * sizeof(float));
    }
}

void head_backward(const Model *m, Workspace *w, float *gxf, const float *seed, const ChunkStream *s) {
    const ptrdiff_t S = w->S, T = w->T, C = m->C, rows = head_rows(m, w);
    zero(gxf, w->N * C);
    if (m->final_softcap > 0.0f && m->head_out.w != NULL) { // the seed back through the capping
        zero(w->gseed, rows * m->NO);
        softcap_backward(w->gseed, seed, w->raw_logits, rows * m->NO, m->final_softcap, s->rules.unary);
        seed = w->gseed;
    }
    float *gp = w->ghead, *spare = w->ghead2; // g walking down the head, and scratch
    zero(gp, rows * C);
    if (m->head_out.w != NULL) linear_backward(gp, seed, m->head_out.w, rows, C, m->NO, false);
    else memcpy(gp, seed, (size_t)(rows * C) * sizeof(float));
    if (m->head_norm.w != NULL) {
        zero(spare, rows * C);
        norm_backward(m, w, spare, gp, head_norm_input(m, w), m->head_norm, 0, HEAD_NORM, rows, s->rules.unary);
        float *t = gp;
        gp = spare;
        spare = t;
    }
    if (m->head_dense.w != NULL) {
        zero(spare, rows * C);
        activation_backward(spare, gp, w->dense, rows * C, m->head_act, s->rules.unary);
        zero(gp, rows * C);
        linear_backward(gp, spare, m->head_dense.w, rows, C, C, false);
    }
    if (m->pool == POOL_NONE) {
        memcpy(gxf, gp, (size_t)(rows * C) * sizeof(float));
        return;
    }
    for (ptrdiff_t seq = 0; seq < S; seq++) {
        const float *g = gp + seq * C;
        if (m->pool == POOL_MEAN) {
            const float inv = (float)(1.0 / (double)count_real(w, seq));
            for (ptrdiff_t t = 0; t < T; t++)
                if (w->mask[seq * T + t])
                    for (ptrdiff_t c = 0; c < C; c++) gxf[(seq * T + t) * C + c] = g[c] * inv;
        } else {
            memcpy(gxf + head_row(m, w, seq) * C, g, (size_t)C * sizeof(float));
        }
    }
}

// g (N,C) at hidden state l -> the stream's hidden taps, (S,L+1,T,C) each
void hidden_taps(const Model *m, const Workspace *w, int l, const float *g, const ChunkStream *s) {
    const ptrdiff_t TC = w->T * m->C, per_seq = (ptrdiff_t)(m->L + 1) * TC;
    const float *x = w->x + (ptrdiff_t)l * w->N * m->C;
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        const ptrdiff_t out = seq * per_seq + l * TC;
        if (s->hidden_grad != NULL) memcpy(s->hidden_grad + out, g + seq * TC, (size_t)TC * sizeof(float));
        if (s->hidden_relevance != NULL) relevance(s->hidden_relevance + out, x + seq * TC, g + seq * TC, TC);
    }
}

// ----------------------------------------------------------------------------
// Batch driver

// Rows per chunk worth aiming for: tall enough that the GEMMs run near peak.
#define CHUNK_ROWS 256

typedef struct {
    const Model *m;
    const EngineCall *call;
    ptrdiff_t chunk;         // sequences per chunk
    Limits limits;           // read once for the whole call
    int members;             // threads of each worker's team, the worker included
    atomic_ptrdiff_t next;   // first sequence of the next chunk to take
    atomic_size_t out_of_memory; // bytes of a workspace that could not be allocated, 0 if none
    pthread_mutex_t stats_lock; // guards call->head_stats
} Job;

static float *at(float *base, ptrdiff_t b, ptrdiff_t per) { return base != NULL ? base + b * per : NULL; }

// The default seed (DESIGN.md §2): one-hot on each sequence's largest output
// (the first, on ties). Pooled outputs only: logits (S,NO) -> w->seed (S,NO).
static const float *argmax_seed(const Model *m, Workspace *w, const float *logits) {
    zero(w->seed, w->S * m->NO);
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        const float *row = logits + seq * m->NO;
        ptrdiff_t best = 0;
        for (ptrdiff_t j = 1; j < m->NO; j++)
            if (row[j] > row[best]) best = j;
        w->seed[seq * m->NO + best] = 1.0f;
    }
    return w->seed;
}

// Head statistics of the chunk's sequences from the k* its forward found (w->kstar).
// A call's workers share its counters, so they take turns (job->stats_lock) adding to them.
static void count_heads(const Model *m, const EngineCall *call, Workspace *w, ptrdiff_t b0,
                        pthread_mutex_t *lock) {
    const HeadStats *hs = call->head_stats;
    const ptrdiff_t per_seq = (ptrdiff_t)m->L * m->H * w->T;
    pthread_mutex_lock(lock);
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        const int64_t *arcs;
        const ptrdiff_t n_arcs = arcs_of(hs, b0 + seq, &arcs);
        head_counts_kstar(hs, w->kstar + seq * per_seq, m->L, m->H, w->T, arcs, n_arcs);
    }
    pthread_mutex_unlock(lock);
}

// The rows the head reads for seed k: the call's, or the pool's own (the first
// token, or each sequence's last real one) when it gives none.
static void head_rows_of_seed(const Model *m, const EngineCall *call, Workspace *w, ptrdiff_t b0, ptrdiff_t k) {
    for (ptrdiff_t seq = 0; seq < w->S; seq++) {
        if (call->rows != NULL) {
            w->row[seq] = call->rows[k * call->B + b0 + seq];
            continue;
        }
        w->row[seq] = 0;
        for (ptrdiff_t t = 0; t < w->T && m->pool != POOL_FIRST; t++)
            if (w->mask[seq * w->T + t]) w->row[seq] = t;
    }
}

// Forward and backward sweeps for sequences [b0, b0 + w->S) of the call: one
// forward of the layers, then per seed k the head at k's rows and one backward
// sweep per stream from k's seed over the same cache.
static void run_chunk(Job *job, Workspace *w, ptrdiff_t b0) {
    const Model *m = job->m;
    const EngineCall *call = job->call;
    const ptrdiff_t S = w->S, T = call->T, C = m->C, L = m->L, H = m->H, B = call->B;
    const ptrdiff_t n_logits = (m->pool == POOL_NONE ? T : 1) * m->NO;
    const ptrdiff_t att_per_seq = L * H * T * T, hid_per_seq = (L + 1) * T * C;
    w->ids = call->ids + b0 * T;
    w->embeds = call->embeds != NULL ? call->embeds + b0 * T * m->E : NULL;
    w->positions = call->positions + b0 * T;
    w->types = call->types != NULL ? call->types + b0 * T : NULL;
    w->mask = call->mask + b0 * T;
    w->att_out = at(call->attentions, b0, att_per_seq);
    w->stat_queries = call->head_stats != NULL ? call->head_stats->queries + b0 * T : NULL;
    w->stat_keys = call->head_stats != NULL ? call->head_stats->keys + b0 * T : NULL;
    for (ptrdiff_t t = 0; t < S * T; t++) w->key_bias[t] = w->mask[t] ? 0.0f : -INFINITY; // padding is never attended
    head_rows_of_seed(m, call, w, b0, 0);

    // Without taps nothing reads the last layer's other rows (see Workspace.pruned).
    w->pruned = (m->pool == POOL_FIRST || m->pool == POOL_LAST) && call->attentions == NULL && call->hidden == NULL &&
                call->head_stats == NULL && call->rows == NULL;
    if (m->family == FAMILY_ENCODER) encoder_forward(m, w);
    else decoder_forward(m, w);
    for (ptrdiff_t seq = 0; seq < S; seq++) {
        for (int l = 0; l <= L && call->hidden != NULL; l++) {
            memcpy(call->hidden + (b0 + seq) * hid_per_seq + l * T * C, w->x + (l * S + seq) * T * C,
                   (size_t)(T * C) * sizeof(float));
        }
    }
    if (call->head_stats != NULL) count_heads(m, call, w, b0, &job->stats_lock);

    // Seed k's logits: a pooled head's at k's rows; per-position logits are every seed's.
    const bool pooled = m->pool != POOL_NONE;
    for (ptrdiff_t k = 0; k < call->K; k++) {
        float *logits = call->logits + ((pooled ? k * B : 0) + b0) * n_logits;
        if (k > 0 && call->rows != NULL) head_rows_of_seed(m, call, w, b0, k);
        if (k == 0 || call->rows != NULL) head_forward(m, w, logits);
        else if (pooled) memcpy(logits, call->logits + b0 * n_logits, (size_t)(S * n_logits) * sizeof(float));
        if (call->n_streams == 0) continue;
        const ptrdiff_t kb = k * B + b0; // this seed's first sequence in the (K,B,...) arrays
        const float *seed = call->seed != NULL ? call->seed + kb * n_logits : argmax_seed(m, w, logits);
        for (int i = 0; i < call->n_streams; i++) {
            const Stream *st = &call->streams[i];
            const ChunkStream s = {
                .rules = st->rules,
                .head_mask = st->head_mask,
                .renormalize = st->renormalize,
                .semantics = st->semantics,
                .head_relevance = at(st->head_relevance, kb, L * H),
                .embed_grad = at(st->embed_grad, kb, T * m->E),
                .tokens = at(st->tokens, kb, T),
                .positions = at(st->positions, kb, T),
                .types = at(st->types, kb, T),
                .relative = at(st->relative, kb, m->R2),
                .attention_grad = at(st->attention_grad, kb, att_per_seq),
                .attention_relevance = at(st->attention_relevance, kb, att_per_seq),
                .hidden_grad = at(st->hidden_grad, kb, hid_per_seq),
                .hidden_relevance = at(st->hidden_relevance, kb, hid_per_seq),
            };
            head_backward(m, w, w->g1, seed, &s);
            if (m->family == FAMILY_ENCODER) encoder_backward(m, w, w->g1, &s);
            else decoder_backward(m, w, w->g1, &s);
        }
    }
}

static void *worker(void *arg) {
    Job *job = arg;
    const ptrdiff_t B = job->call->B;
    Team *team = job->members > 1 ? team_new(job->members) : NULL; // NULL: GEMMs run on this thread alone
    team_set_current(team);
    Workspace *full = NULL, *tail = NULL; // the last chunk may be shorter
    for (ptrdiff_t b0; (b0 = atomic_fetch_add(&job->next, job->chunk)) < B;) {
        const ptrdiff_t S = B - b0 < job->chunk ? B - b0 : job->chunk;
        Workspace **w = S == job->chunk ? &full : &tail;
        if (*w == NULL && (*w = workspace_take(job->call->pool, job->m, S, job->call->T, &job->limits)) == NULL) {
            // chunk b0 is lost: the call fails, naming what it could not allocate
            Workspace probe;
            const size_t bytes =
                (size_t)workspace_carve(job->m, &probe, S, job->call->T, &job->limits, NULL) * sizeof(float);
            atomic_store(&job->out_of_memory, bytes);
            break;
        }
        run_chunk(job, *w, b0);
    }
    team_set_current(NULL);
    team_free(team);
    workspace_give(job->call->pool, full);
    workspace_give(job->call->pool, tail);
    return NULL;
}

// The call's threads go first to workers that take chunks of the batch (no
// synchronisation at all), then, when there are fewer chunks than threads, to
// each worker's team. Every worker gets the same team size, so a chunk's bits
// do not depend on which worker ran it: a call gives the same result for the
// same inputs and thread count, whatever runs beside it.
int model_run(const Model *m, const EngineCall *call, size_t *failed_bytes) {
    const ptrdiff_t B = call->B, threads = call->threads < 1 ? 1 : call->threads;
    ptrdiff_t workers = threads < B ? threads : B;
    ptrdiff_t chunk = (CHUNK_ROWS + call->T - 1) / call->T, fair = (B + workers - 1) / workers;
    if (chunk > fair) chunk = fair;
    if (chunk < 1) chunk = 1;
    workers = (B + chunk - 1) / chunk < workers ? (B + chunk - 1) / chunk : workers;
    Job job = {.m = m, .call = call, .chunk = chunk, .limits = limits_now(),
               .members = (int)(threads / workers)};
    atomic_init(&job.next, 0);
    atomic_init(&job.out_of_memory, 0);
    pthread_mutex_init(&job.stats_lock, NULL);
    blas_pin_single_thread();
    pthread_t *helpers = workers > 1 ? calloc((size_t)workers - 1, sizeof *helpers) : NULL; // none: run alone
    ptrdiff_t started = 0;
    while (helpers != NULL && started < workers - 1 && pthread_create(&helpers[started], NULL, worker, &job) == 0)
        started++;
    worker(&job); // the calling thread is a worker too
    for (ptrdiff_t i = 0; i < started; i++) pthread_join(helpers[i], NULL);
    free(helpers);
    pthread_mutex_destroy(&job.stats_lock);
    *failed_bytes = atomic_load(&job.out_of_memory);
    return *failed_bytes != 0 ? -1 : 0;
}
