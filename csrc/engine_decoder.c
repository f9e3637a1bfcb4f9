// Pre-norm layers: decoders (GPT-2, LLaMA family, Gemma 3), causal, and ModernBERT, an
// encoder (bidirectional) that norms its embeddings and has no norm before layer 0's attention.
//   x0 = word (+ position), or ModernBERT's LN(word)
//   mid = x + attention(norm1(x));  x' = mid + mlp(norm2(mid));  xf = final_norm(x_L)
// Gemma 3 also norms each branch's output before the add (post_norms):
//   mid = x + norm3(attention(norm1(x)));  x' = mid + norm4(mlp(norm2(mid)))
// GPT-NeoX's parallel residual (parallel_residual) feeds both branches the layer's input:
//   mid = x + attention(norm1(x));  x' = mid + mlp(norm2(x))
// Residual adds are the identity in both streams: each branch's backward
// accumulates (+=) straight into the residual stream's g. A layer's row-wise work
// runs on layer_rows() rows (all, or one per sequence for a pruned last layer);
// norm1 always covers every row, since attention reads them all as keys and values.
#include <string.h>

#include "engine.h"

static void add(float *y, const float *a, const float *b, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

// Norm slots of a layer (engine.h, Workspace.stats) and each branch's post-norm.
enum { PRE_ATTENTION, PRE_MLP, POST_ATTENTION, POST_MLP };

// The cached output of layer l's attention (POST_ATTENTION) or MLP (POST_MLP) branch.
static float *branch_out(const Model *m, const Workspace *w, int l, int which) {
    return w->branch_out + ((ptrdiff_t)l * 2 + which - POST_ATTENTION) * w->N * m->C;
}

// out (rows,C), a branch's output -> its post-norm, in place (Gemma 3); nothing otherwise
static void post_norm_forward(const Model *m, Workspace *w, int l, int which, float *out, ptrdiff_t rows) {
    if (!post_norms(m)) return;
    const LayerWeights *lw = &m->layers[l];
    float *raw = branch_out(m, w, l, which);
    memcpy(raw, out, (size_t)(rows * m->C) * sizeof(float));
    norm_forward(m, w, out, raw, which == POST_ATTENTION ? lw->attn_post_norm : lw->mlp_post_norm, 1 + l, which,
                 rows);
}

// g (rows,C) at a branch's post-norm output -> g at the branch output: w->gpost, or g itself
static const float *post_norm_backward(const Model *m, Workspace *w, int l, int which, const float *g, ptrdiff_t rows,
                                       UnaryRule rule) {
    if (!post_norms(m)) return g;
    const LayerWeights *lw = &m->layers[l];
    memset(w->gpost, 0, (size_t)(rows * m->C) * sizeof(float));
    norm_backward(m, w, w->gpost, g, branch_out(m, w, l, which),
                  which == POST_ATTENTION ? lw->attn_post_norm : lw->mlp_post_norm, 1 + l, which, rows, rule);
    return w->gpost;
}

void decoder_forward(const Model *m, Workspace *w) {
    const ptrdiff_t C = m->C, n = w->N * C;
    embed_forward(m, w, w->x);
    for (int l = 0; l < m->L; l++) {
        const LayerWeights *lw = &m->layers[l];
        const ptrdiff_t rows = layer_rows(m, w, l);
        const float *x = w->x + l * n;
        float *mid = w->mid + l * n;
        norm_forward(m, w, w->a, x, lw->attn_norm, 1 + l, PRE_ATTENTION, w->N);
        attention_forward(m, w, l, w->b, w->a);
        post_norm_forward(m, w, l, POST_ATTENTION, w->b, rows);
        const float *kept = residual_rows(m, w, l, x);
        add(mid, kept, w->b, rows * C);
        norm_forward(m, w, w->a, m->parallel_residual ? kept : mid, lw->mlp_norm, 1 + l, PRE_MLP, rows);
        mlp_forward(m, w, l, w->b, w->a);
        post_norm_forward(m, w, l, POST_MLP, w->b, rows);
        add(w->x + (l + 1) * n, mid, w->b, rows * C);
    }
    const ptrdiff_t rows = layer_rows(m, w, m->L - 1);
    const float *last = w->x + m->L * n;
    norm_forward(m, w, w->xf, last, m->final_norm, 0, FINAL_NORM, rows);
}

// g (rows,C) at the output of layer l's MLP branch's residual add -> g at the MLP's
// norm input (`in`, (rows,C)) accumulated into gx (rows,C); gx may be g itself.
static void mlp_branch_backward(const Model *m, Workspace *w, int l, float *gx, const float *g, const float *in,
                                const ChunkStream *s) {
    const ptrdiff_t rows = layer_rows(m, w, l);
    float *branch = w->g2;
    memset(branch, 0, (size_t)(rows * m->C) * sizeof(float));
    mlp_backward(m, w, l, branch, post_norm_backward(m, w, l, POST_MLP, g, rows, s->rules.unary), s);
    norm_backward(m, w, gx, branch, in, m->layers[l].mlp_norm, 1 + l, PRE_MLP, rows, s->rules.unary);
}

// g (rows,C) at the attention branch's residual add -> gx (N,C) += g at layer l's input x.
static void attention_branch_backward(const Model *m, Workspace *w, int l, float *gx, const float *g,
                                      const ChunkStream *s) {
    const ptrdiff_t n = w->N * m->C, rows = layer_rows(m, w, l);
    float *branch = w->g2;
    memset(branch, 0, (size_t)n * sizeof(float));
    attention_backward(m, w, l, branch, post_norm_backward(m, w, l, POST_ATTENTION, g, rows, s->rules.unary), s);
    norm_backward(m, w, gx, branch, w->x + l * n, m->layers[l].attn_norm, 1 + l, PRE_ATTENTION, w->N,
                  s->rules.unary);
}

// gxf: g at the head's input, (rows of the last layer, C)
void decoder_backward(const Model *m, Workspace *w, const float *gxf, const ChunkStream *s) {
    const ptrdiff_t C = m->C, n = w->N * C, last_rows = layer_rows(m, w, m->L - 1);
    float *g = w->gx, *below = w->g1; // g: the residual stream's g, walking down
    memset(g, 0, (size_t)(last_rows * C) * sizeof(float));
    norm_backward(m, w, g, gxf, w->x + m->L * n, m->final_norm, 0, FINAL_NORM, last_rows, s->rules.unary);
    hidden_taps(m, w, m->L, g, s);
    for (int l = m->L - 1; l >= 0; l--) {
        const float *x = w->x + l * n;
        memset(below, 0, (size_t)n * sizeof(float));
        if (m->parallel_residual) {
            // both branches read x: the attention's g goes first, as the MLP's is then added to g
            attention_branch_backward(m, w, l, below, g, s);
            mlp_branch_backward(m, w, l, g, g, residual_rows(m, w, l, x), s); // g at x's kept rows
        } else {
            mlp_branch_backward(m, w, l, g, g, w->mid + l * n, s); // g at mid
            attention_branch_backward(m, w, l, below, g, s);
        }
        residual_rows_backward(m, w, l, below, g);
        float *t = g; // below becomes the stream's g
        g = below;
        below = t;
        hidden_taps(m, w, l, g, s);
    }
    embed_backward(m, w, g, s);
}
