// Decoders (GPT-2, LLaMA, Mistral, Qwen2): pre-norm causal layers.
//   x0 = word (+ position)
//   mid = x + attention(norm1(x));  x' = mid + mlp(norm2(mid));  xf = final_norm(x_L)
// Residual adds are the identity in both streams: each branch's backward
// accumulates (+=) straight into the residual stream's g.
#include <string.h>

#include "engine.h"

static void add(float *y, const float *a, const float *b, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void decoder_forward(const Model *m, Workspace *w) {
    const ptrdiff_t n = w->N * m->C;
    embed_forward(m, w);
    memcpy(w->x, w->emb, (size_t)n * sizeof(float));
    for (int l = 0; l < m->L; l++) {
        const LayerWeights *lw = &m->layers[l];
        const float *x = w->x + l * n;
        float *mid = w->mid + l * n;
        norm_forward(m, w, w->a, x, lw->attn_norm, 1 + l, 0);
        attention_forward(m, w, l, w->b, w->a);
        add(mid, x, w->b, n);
        norm_forward(m, w, w->a, mid, lw->mlp_norm, 1 + l, 1);
        mlp_forward(m, w, l, w->b, w->a);
        add(w->x + (l + 1) * n, mid, w->b, n);
    }
    const float *last = w->x + m->L * n;
    if (m->final_norm.w != NULL) norm_forward(m, w, w->xf, last, m->final_norm, 0, 0);
    else memcpy(w->xf, last, (size_t)n * sizeof(float));
}

// gxf (N,C): g at the head's input
void decoder_backward(const Model *m, Workspace *w, const float *gxf, const ChunkStream *s) {
    const ptrdiff_t n = w->N * m->C;
    const UnaryRule rule = s->rules.unary;
    float *g = w->gx, *branch = w->g2; // g: the residual stream's g, walking down
    memset(g, 0, (size_t)n * sizeof(float));
    if (m->final_norm.w != NULL) norm_backward(m, w, g, gxf, w->x + m->L * n, m->final_norm, 0, 0, rule);
    else memcpy(g, gxf, (size_t)n * sizeof(float));
    hidden_taps(m, w, m->L, g, s);
    for (int l = m->L - 1; l >= 0; l--) {
        const LayerWeights *lw = &m->layers[l];
        memset(branch, 0, (size_t)n * sizeof(float));
        mlp_backward(m, w, l, branch, g, s);
        norm_backward(m, w, g, branch, w->mid + l * n, lw->mlp_norm, 1 + l, 1, rule); // g at mid
        memset(branch, 0, (size_t)n * sizeof(float));
        attention_backward(m, w, l, branch, g, s);
        norm_backward(m, w, g, branch, w->x + l * n, lw->attn_norm, 1 + l, 0, rule); // g at x[l]
        hidden_taps(m, w, l, g, s);
    }
    embed_backward(m, w, g, s);
}
