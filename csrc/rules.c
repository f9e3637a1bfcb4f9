// The LRP rules of DESIGN.md §2 in modified-gradient form: one forward/backward
// pair per row of the table. Relevance of a tensor is R = x ⊙ g (relevance()).
// Forwards write (=); backwards accumulate (+=) into a buffer the caller zeroed.
// Reductions (softmax sums, norm statistics) run in double: float32 sums over a
// 4096-wide row lose the last digits the oracle tests look at.
#include <math.h>
#include <string.h>

#include "masklrp.h"

// ----------------------------------------------------------------------------
// Two-operand products: Q·Kᵀ, A·V (AttnLRP Prop. 3.3) and a ⊙ b (SwiGLU gating).

// AttnLRP Prop. 3.3 (uniform rule): a bilinear op hands each operand half of its
// true gradient. CP-LRP holds the first operand (A, or the gate) constant, so
// the product is linear in the second, which takes the full gradient.
void product_shares(ProductRule rule, float *share_a, float *share_b) {
    switch (rule) {
    case PRODUCT_UNIFORM: *share_a = 0.5f; *share_b = 0.5f; return;
    case PRODUCT_CP: *share_a = 0.0f; *share_b = 1.0f; return;
    case PRODUCT_GRADIENT: *share_a = 1.0f; *share_b = 1.0f; return;
    }
}

// a (B,M,K), b (B,K,N) or (B,N,K) if tb -> out (B,M,N) = scale a b
void matmul_forward(float *out, const float *a, const float *b, ptrdiff_t B,
                    ptrdiff_t M, ptrdiff_t K, ptrdiff_t N, bool tb, float scale) {
    for (ptrdiff_t i = 0; i < B; i++) {
        gemm(false, tb, M, N, K, scale, a + i * M * K, b + i * K * N, 0.0f, out + i * M * N);
    }
}

// g (B,M,N) -> ga (B,M,K) += sa·scale·g bᵀ, gb += sb·scale·aᵀ g (transposed when tb)
void matmul_backward(float *ga, float *gb, const float *g, const float *a, const float *b,
                     ptrdiff_t B, ptrdiff_t M, ptrdiff_t K, ptrdiff_t N, bool tb,
                     float scale, ProductRule rule) {
    float sa, sb;
    product_shares(rule, &sa, &sb);
    for (ptrdiff_t i = 0; i < B; i++) {
        const float *gi = g + i * M * N, *ai = a + i * M * K, *bi = b + i * K * N;
        if (ga != NULL && sa != 0.0f) {
            gemm(false, !tb, M, K, N, sa * scale, gi, bi, 1.0f, ga + i * M * K);
        }
        if (gb != NULL && sb != 0.0f) {
            if (tb) { // gb (N,K) += gᵀ a
                gemm(true, false, N, K, M, sb * scale, gi, ai, 1.0f, gb + i * K * N);
            } else { // gb (K,N) += aᵀ g
                gemm(true, false, K, N, M, sb * scale, ai, gi, 1.0f, gb + i * K * N);
            }
        }
    }
}

// a, b (n) -> out (n) = a ⊙ b
void product_forward(float *out, const float *a, const float *b, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

// Element-wise product of two activations: the same Prop. 3.3 shares.
void product_backward(float *ga, float *gb, const float *g, const float *a, const float *b,
                      ptrdiff_t n, ProductRule rule) {
    float sa, sb;
    product_shares(rule, &sa, &sb);
    if (ga != NULL && sa != 0.0f) {
        for (ptrdiff_t i = 0; i < n; i++) ga[i] += sa * g[i] * b[i];
    }
    if (gb != NULL && sb != 0.0f) {
        for (ptrdiff_t i = 0; i < n; i++) gb[i] += sb * g[i] * a[i];
    }
}

// ----------------------------------------------------------------------------
// Linear maps (linear, Conv1D, classifier, LM head): true gradient, the bias
// absorbs b ⊙ g (DESIGN.md §2, first row).

// x (N,IN), w (OUT,IN) or (IN,OUT) if w_in_out, b (OUT) or NULL -> z (N,OUT)
void linear_forward(float *z, const float *x, const float *w, const float *b,
                    ptrdiff_t N, ptrdiff_t IN, ptrdiff_t OUT, bool w_in_out) {
    float beta = 0.0f;
    if (b != NULL) { // preload the bias so one sgemm with beta = 1 adds x Wᵀ to it
        for (ptrdiff_t i = 0; i < N; i++) memcpy(z + i * OUT, b, (size_t)OUT * sizeof(float));
        beta = 1.0f;
    }
    gemm(false, !w_in_out, N, OUT, IN, 1.0f, x, w, beta, z);
}

// g (N,OUT) -> gx (N,IN) += g W
void linear_backward(float *gx, const float *g, const float *w,
                     ptrdiff_t N, ptrdiff_t IN, ptrdiff_t OUT, bool w_in_out) {
    gemm(false, w_in_out, N, IN, OUT, 1.0f, g, w, 1.0f, gx);
}

// ----------------------------------------------------------------------------
// Softmax (AttnLRP Prop. 3.1): the true gradient g_x = s ⊙ (g − Σ s ⊙ g), which
// gives R_x = x ⊙ (R_s − s ΣR_s). The additive mask is a constant: masked
// scores (−inf) get s = 0 and hence receive nothing.

// x (N,C) -> s (N,C)
void softmax_forward(float *s, const float *x, ptrdiff_t N, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        float *si = s + i * C;
        float max = -INFINITY;
        for (ptrdiff_t j = 0; j < C; j++) max = xi[j] > max ? xi[j] : max;
        if (max == -INFINITY) { // no visible key: attend to nothing rather than NaN
            memset(si, 0, (size_t)C * sizeof(float));
            continue;
        }
        double sum = 0.0;
        for (ptrdiff_t j = 0; j < C; j++) {
            si[j] = expf(xi[j] - max);
            sum += si[j];
        }
        const float inv = (float)(1.0 / sum);
        for (ptrdiff_t j = 0; j < C; j++) si[j] *= inv;
    }
}

// g, s (N,C) -> gx (N,C) += s (g − Σ s g)
void softmax_backward(float *gx, const float *g, const float *s, ptrdiff_t N, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *si = s + i * C;
        double dot = 0.0;
        for (ptrdiff_t j = 0; j < C; j++) dot += (double)si[j] * gi[j];
        float *gxi = gx + i * C;
        for (ptrdiff_t j = 0; j < C; j++) gxi[j] += (float)(si[j] * (gi[j] - dot));
    }
}

// ----------------------------------------------------------------------------
// Activations. LRP: the identity rule g_x = g ⊙ f(x)/x (AttnLRP §3.3.2, DESIGN.md
// §2). Each f here is x·ratio(x) with ratio in closed form, so no division by a
// tiny x is ever needed and x = 0 gives the exact limit f'(0).

#define SQRT1_2 0.70710678118654752440
#define GELU_TANH_K 0.79788456080286535588 // sqrt(2/pi)
#define GELU_TANH_C 0.044715

// f(x)/x in float: Φ(x) for GELU, σ(x) for SiLU, step for ReLU.
static inline float activation_ratio(float x, Activation f) {
    switch (f) {
    case ACT_GELU: return 0.5f * erfcf(-x * (float)SQRT1_2);
    case ACT_GELU_TANH:
        return 0.5f * (1.0f + tanhf((float)GELU_TANH_K * (x + (float)GELU_TANH_C * x * x * x)));
    case ACT_SILU: return 1.0f / (1.0f + expf(-x));
    case ACT_TANH: // tanh(x)/x = 1 − x²/3 + O(x⁴): the series is exact in float below 1e-4
        return fabsf(x) < 1e-4f ? 1.0f - x * x / 3.0f : tanhf(x) / x;
    case ACT_RELU: return x > 0.0f ? 1.0f : 0.0f;
    }
    return 0.0f;
}

// f'(x) in double: the true-gradient stream only; double keeps the products of
// huge and vanishing factors (x·φ(x), x·(1 − t²)) from becoming inf·0.
static inline float activation_derivative(float xf, Activation f) {
    const double x = xf;
    switch (f) {
    case ACT_GELU: return (float)(0.5 * erfc(-x * SQRT1_2) + x * exp(-0.5 * x * x) * 0.39894228040143267794);
    case ACT_GELU_TANH: {
        const double t = tanh(GELU_TANH_K * (x + GELU_TANH_C * x * x * x));
        return (float)(0.5 * (1.0 + t) +
                       0.5 * x * (1.0 - t * t) * GELU_TANH_K * (1.0 + 3.0 * GELU_TANH_C * x * x));
    }
    case ACT_SILU: {
        const double sig = 1.0 / (1.0 + exp(-x));
        return (float)(sig * (1.0 + x * (1.0 - sig)));
    }
    case ACT_TANH: {
        const double t = tanh(x);
        return (float)(1.0 - t * t);
    }
    case ACT_RELU: return x > 0.0 ? 1.0f : 0.0f;
    }
    return 0.0f;
}

// x (n) -> y (n) = f(x)
void activation_forward(float *y, const float *x, ptrdiff_t n, Activation f) {
    if (f == ACT_TANH) { // x·(tanh(x)/x) would round twice
        for (ptrdiff_t i = 0; i < n; i++) y[i] = tanhf(x[i]);
        return;
    }
    for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * activation_ratio(x[i], f);
}

// g, x (n) -> gx (n) += g f(x)/x (RULE_LRP) or g f'(x) (RULE_GRADIENT)
void activation_backward(float *gx, const float *g, const float *x, ptrdiff_t n,
                         Activation f, UnaryRule rule) {
    if (rule == RULE_LRP) {
        for (ptrdiff_t i = 0; i < n; i++) gx[i] += g[i] * activation_ratio(x[i], f);
    } else {
        for (ptrdiff_t i = 0; i < n; i++) gx[i] += g[i] * activation_derivative(x[i], f);
    }
}

// ----------------------------------------------------------------------------
// LayerNorm, identity on the scale (AttnLRP §3.3.2, DESIGN.md §2): σ is held
// constant, so the map is linear: g_x = h − mean(h), h = γ ⊙ g / σ. The
// centering keeps its gradient; β absorbs its share.

// x (N,C), w (C), b (C) or NULL -> y (N,C), mean (N), rstd (N)
void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, ptrdiff_t N, ptrdiff_t C, float eps) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        double mu = 0.0, var = 0.0;
        for (ptrdiff_t j = 0; j < C; j++) mu += xi[j];
        mu /= (double)C;
        for (ptrdiff_t j = 0; j < C; j++) var += (xi[j] - mu) * (xi[j] - mu);
        const double rs = 1.0 / sqrt(var / (double)C + eps);
        float *yi = y + i * C;
        for (ptrdiff_t j = 0; j < C; j++) {
            yi[j] = (float)((xi[j] - mu) * rs * w[j] + (b != NULL ? b[j] : 0.0f));
        }
        mean[i] = (float)mu;
        rstd[i] = (float)rs;
    }
}

// g, x (N,C) -> gx (N,C) +=
void layernorm_backward(float *gx, const float *g, const float *x, const float *w,
                        const float *mean, const float *rstd, ptrdiff_t N, ptrdiff_t C,
                        UnaryRule rule) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *xi = x + i * C;
        float *gxi = gx + i * C;
        const double rs = rstd[i];
        double mean_h = 0.0, mean_h_xhat = 0.0; // h = γ ⊙ g (times rstd for the LRP rule)
        for (ptrdiff_t j = 0; j < C; j++) {
            const double h = (double)w[j] * gi[j];
            mean_h += h;
            mean_h_xhat += h * (xi[j] - mean[i]) * rs;
        }
        mean_h /= (double)C;
        mean_h_xhat /= (double)C;
        if (rule == RULE_LRP) {
            for (ptrdiff_t j = 0; j < C; j++) gxi[j] += (float)(rs * ((double)w[j] * gi[j] - mean_h));
        } else { // the full Jacobian: σ depends on x as well
            for (ptrdiff_t j = 0; j < C; j++) {
                const double xhat = (xi[j] - mean[i]) * rs;
                gxi[j] += (float)(rs * ((double)w[j] * gi[j] - mean_h - xhat * mean_h_xhat));
            }
        }
    }
}

// RMSNorm (DESIGN.md §2): r = rsqrt(mean(x²) + eps) held constant, so
// g_x = w ⊙ r ⊙ g.

// x (N,C), w (C) -> y (N,C), rstd (N)
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                     ptrdiff_t N, ptrdiff_t C, float eps) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        double ms = 0.0;
        for (ptrdiff_t j = 0; j < C; j++) ms += (double)xi[j] * xi[j];
        const double rs = 1.0 / sqrt(ms / (double)C + eps);
        float *yi = y + i * C;
        for (ptrdiff_t j = 0; j < C; j++) yi[j] = (float)(w[j] * (xi[j] * rs));
        rstd[i] = (float)rs;
    }
}

// g, x (N,C) -> gx (N,C) +=
void rmsnorm_backward(float *gx, const float *g, const float *x, const float *w,
                      const float *rstd, ptrdiff_t N, ptrdiff_t C, UnaryRule rule) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *xi = x + i * C;
        float *gxi = gx + i * C;
        const double rs = rstd[i];
        double mean_wgx = 0.0; // only the true gradient sees r depend on x
        if (rule == RULE_GRADIENT) {
            for (ptrdiff_t j = 0; j < C; j++) mean_wgx += (double)w[j] * gi[j] * xi[j];
            mean_wgx /= (double)C;
        }
        for (ptrdiff_t j = 0; j < C; j++) {
            gxi[j] += (float)(rs * w[j] * gi[j] - xi[j] * rs * rs * rs * mean_wgx);
        }
    }
}

// ----------------------------------------------------------------------------
// RoPE (DESIGN.md §2, linear row): a rotation with constant cos/sin, crossed by
// its true gradient, the transposed rotation. HF convention (LLaMA):
// y = x ⊙ cos + rotate_half(x) ⊙ sin, rotate_half(x) = (−x₂, x₁).

// x (B,T,D), cos, sin (T,D) -> y (B,T,D)
void rope_forward(float *y, const float *x, const float *cos, const float *sin,
                  ptrdiff_t B, ptrdiff_t T, ptrdiff_t D) {
    const ptrdiff_t h = D / 2;
    for (ptrdiff_t b = 0; b < B; b++) {
        for (ptrdiff_t t = 0; t < T; t++) {
            const float *xt = x + (b * T + t) * D, *c = cos + t * D, *s = sin + t * D;
            float *yt = y + (b * T + t) * D;
            for (ptrdiff_t j = 0; j < h; j++) {
                yt[j] = xt[j] * c[j] - xt[j + h] * s[j];
                yt[j + h] = xt[j + h] * c[j + h] + xt[j] * s[j + h];
            }
        }
    }
}

// g (B,T,D) -> gx (B,T,D) += Rᵀ g
void rope_backward(float *gx, const float *g, const float *cos, const float *sin,
                   ptrdiff_t B, ptrdiff_t T, ptrdiff_t D) {
    const ptrdiff_t h = D / 2;
    for (ptrdiff_t b = 0; b < B; b++) {
        for (ptrdiff_t t = 0; t < T; t++) {
            const float *gt = g + (b * T + t) * D, *c = cos + t * D, *s = sin + t * D;
            float *gxt = gx + (b * T + t) * D;
            for (ptrdiff_t j = 0; j < h; j++) {
                gxt[j] += gt[j] * c[j] + gt[j + h] * s[j + h];
                gxt[j + h] += gt[j + h] * c[j + h] - gt[j] * s[j];
            }
        }
    }
}

// ----------------------------------------------------------------------------
// x, g (n) -> r (n) = x ⊙ g   (relevance of any tensor, DESIGN.md §2)
void relevance(float *r, const float *x, const float *g, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) r[i] = x[i] * g[i];
}
