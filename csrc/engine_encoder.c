// Encoders (BERT, RoBERTa, DistilBERT): post-norm layers.
//   x0 = LN(word + position + type)
//   mid = x + attention(x);  h = LN1(mid);  res2 = h + mlp(h);  x' = LN2(res2)
// Residual adds are the identity in both streams, so the backward only adds.
#include <string.h>

#include "engine.h"

static void add(float *y, const float *a, const float *b, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void encoder_forward(const Model *m, Workspace *w) {
    const ptrdiff_t n = w->N * m->C;
    embed_forward(m, w);
    norm_forward(m, w, w->x, w->emb, m->emb_norm, 0, 0);
    for (int l = 0; l < m->L; l++) {
        const LayerWeights *lw = &m->layers[l];
        const float *x = w->x + l * n;
        float *mid = w->mid + l * n, *res2 = w->res2 + l * n;
        attention_forward(m, w, l, w->a, x);
        add(mid, x, w->a, n);
        norm_forward(m, w, w->b, mid, lw->attn_norm, 1 + l, 0);
        mlp_forward(m, w, l, w->a, w->b);
        add(res2, w->b, w->a, n);
        norm_forward(m, w, w->x + (l + 1) * n, res2, lw->mlp_norm, 1 + l, 1);
    }
    memcpy(w->xf, w->x + m->L * n, (size_t)n * sizeof(float));
}

// gxf (N,C): g at the last hidden state (consumed as scratch)
void encoder_backward(const Model *m, Workspace *w, const float *gxf, const ChunkStream *s) {
    const ptrdiff_t n = w->N * m->C;
    const UnaryRule rule = s->rules.unary;
    float *g = w->gx, *g_res2 = w->g2, *g_h = w->g1; // g: at x[l+1], then at x[l]
    memcpy(g, gxf, (size_t)n * sizeof(float));
    hidden_taps(m, w, m->L, g, s);
    for (int l = m->L - 1; l >= 0; l--) {
        const LayerWeights *lw = &m->layers[l];
        memset(g_res2, 0, (size_t)n * sizeof(float));
        norm_backward(m, w, g_res2, g, w->res2 + l * n, lw->mlp_norm, 1 + l, 1, rule);
        memcpy(g_h, g_res2, (size_t)n * sizeof(float));
        mlp_backward(m, w, l, g_h, g_res2, s);
        memset(g, 0, (size_t)n * sizeof(float));
        norm_backward(m, w, g, g_h, w->mid + l * n, lw->attn_norm, 1 + l, 0, rule); // g at mid
        memcpy(g_res2, g, (size_t)n * sizeof(float));
        attention_backward(m, w, l, g_res2, g, s);
        memcpy(g, g_res2, (size_t)n * sizeof(float));
        hidden_taps(m, w, l, g, s);
    }
    memset(g_h, 0, (size_t)n * sizeof(float));
    norm_backward(m, w, g_h, g, w->emb, m->emb_norm, 0, 0, rule);
    embed_backward(m, w, g_h, s);
}
