// Encoders (BERT, RoBERTa, XLM-R, DistilBERT, MPNet, ELECTRA, ALBERT, DeBERTa): post-norm layers.
//   x0 = LN(word + position + type), then ELECTRA's / ALBERT's E -> C projection
//   mid = x + attention(x);  h = LN1(mid);  res2 = h + mlp(h);  x' = LN2(res2)
// Residual adds are the identity in both streams, so the backward only adds.
// A layer's row-wise work runs on layer_rows() rows (all, or one per sequence for
// a pruned last layer); its attention always reads every row as keys and values.
#include <string.h>

#include "engine.h"

static void add(float *y, const float *a, const float *b, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void encoder_forward(const Model *m, Workspace *w) {
    const ptrdiff_t C = m->C, n = w->N * C;
    embed_forward(m, w, w->x);
    relative_forward(m, w);
    for (int l = 0; l < m->L; l++) {
        const LayerWeights *lw = &m->layers[l];
        const ptrdiff_t rows = layer_rows(m, w, l);
        const float *x = w->x + l * n;
        float *mid = w->mid + l * n, *res2 = w->res2 + l * n;
        attention_forward(m, w, l, w->a, x);
        add(mid, residual_rows(m, w, l, x), w->a, rows * C);
        norm_forward(m, w, w->b, mid, lw->attn_norm, 1 + l, 0, rows);
        mlp_forward(m, w, l, w->a, w->b);
        add(res2, w->b, w->a, rows * C);
        norm_forward(m, w, w->x + (l + 1) * n, res2, lw->mlp_norm, 1 + l, 1, rows);
    }
    memcpy(w->xf, w->x + m->L * n, (size_t)(layer_rows(m, w, m->L - 1) * C) * sizeof(float));
}

// gxf: g at the last hidden state, (rows of the last layer, C)
void encoder_backward(const Model *m, Workspace *w, const float *gxf, const ChunkStream *s) {
    const ptrdiff_t C = m->C, n = w->N * C;
    const UnaryRule rule = s->rules.unary;
    float *g = w->gx, *g_res2 = w->g2, *g_h = w->g1; // g: at x[l+1], then at x[l]
    memcpy(g, gxf, (size_t)(layer_rows(m, w, m->L - 1) * C) * sizeof(float));
    if (m->rel_emb != NULL) memset(w->grel, 0, (size_t)(w->S * m->R2 * C) * sizeof(float)); // layers add to it
    hidden_taps(m, w, m->L, g, s);
    for (int l = m->L - 1; l >= 0; l--) {
        const LayerWeights *lw = &m->layers[l];
        const ptrdiff_t rows = layer_rows(m, w, l), r = rows * C;
        memset(g_res2, 0, (size_t)r * sizeof(float));
        norm_backward(m, w, g_res2, g, w->res2 + l * n, lw->mlp_norm, 1 + l, 1, rows, rule);
        memcpy(g_h, g_res2, (size_t)r * sizeof(float));
        mlp_backward(m, w, l, g_h, g_res2, s);
        memset(g, 0, (size_t)r * sizeof(float));
        norm_backward(m, w, g, g_h, w->mid + l * n, lw->attn_norm, 1 + l, 0, rows, rule); // g at mid
        memset(g_res2, 0, (size_t)n * sizeof(float));
        residual_rows_backward(m, w, l, g_res2, g);
        attention_backward(m, w, l, g_res2, g, s);
        memcpy(g, g_res2, (size_t)n * sizeof(float));
        hidden_taps(m, w, l, g, s);
    }
    embed_backward(m, w, g, s);
    relative_backward(m, w, s);
}
