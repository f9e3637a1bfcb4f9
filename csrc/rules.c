// The LRP rules of DESIGN.md §2 in modified-gradient form: one forward/backward
// pair per row of the table. Relevance of a tensor is R = x ⊙ g (relevance()).
// Forwards write (=); backwards accumulate (+=) into a buffer the caller zeroed.
//
// Speed without losing accuracy (vecmath.h): element-wise maths uses branch-free
// float exp / Φ / σ / tanh accurate to a few ulps, so the loops vectorise; row
// reductions (softmax sums, norm statistics) add short float runs into double;
// where a result cancels against its terms (softmax backward, the norms' true
// gradients) the products and sums are exact double, as before. Hot loops are
// compiled for AVX2 + FMA as well as the baseline (VM_MULTIVERSION). Element-wise
// loops take no `restrict`: callers may work in place.
#include <math.h>
#include <string.h>

#include "masklrp.h"
#include "vecmath.h"

// ----------------------------------------------------------------------------
// Two-operand products: Q·Kᵀ, A·V (AttnLRP Prop. 3.3) and a ⊙ b (SwiGLU gating).

// AttnLRP Prop. 3.3 (uniform rule): a bilinear op hands each operand half of its
// true gradient. CP-LRP holds the first operand (A, or the gate) constant, so
// the product is linear in the second, which takes the full gradient.
void product_shares(ProductRule rule, float *share_a, float *share_b) {
    *share_a = *share_b = 0.0f; // not a rule: nothing flows (and no uninitialised shares)
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
VM_MULTIVERSION
void product_forward(float *out, const float *a, const float *b, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a[i] * b[i];
}

// Element-wise product of two activations: the same Prop. 3.3 shares.
VM_MULTIVERSION
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

// A scalar activation a times a vector activation b (n): a mixture of experts' routing weight
// times its expert's output, the sigmoid gate times the shared expert's. The element-wise product
// with a broadcast, so the same Prop. 3.3 shares (DESIGN.md §2, element-wise product row).
void scale_forward(float *out, float a, const float *b, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) out[i] = a * b[i];
}

// g (n) -> *ga += share_a Σ g b, gb += share_b a g; either may be NULL when its share is 0
void scale_backward(float *ga, float *gb, const float *g, float a, const float *b, ptrdiff_t n,
                    ProductRule rule) {
    float sa, sb;
    product_shares(rule, &sa, &sb);
    if (ga != NULL && sa != 0.0f) {
        double dot = 0.0;
        for (ptrdiff_t i = 0; i < n; i++) dot += (double)g[i] * b[i];
        *ga += (float)(sa * dot);
    }
    if (gb != NULL && sb != 0.0f) {
        for (ptrdiff_t i = 0; i < n; i++) gb[i] += sb * a * g[i];
    }
}

// x (n) -> y (n) = 1 / (1 + exp(-x))
void sigmoid_forward(float *y, const float *x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

// g, x (n) -> gx (n) += g σ(x)(1 − σ(x)). The true gradient in every stream: σ(x) is the
// softmax of (x, 0), whose rule is its true gradient (AttnLRP Prop. 3.1), not the identity
// rule of the activations (σ(0) = ½: σ(x)/x has no limit at 0).
void sigmoid_backward(float *gx, const float *g, const float *x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) {
        const float y = 1.0f / (1.0f + expf(-x[i]));
        gx[i] += g[i] * y * (1.0f - y);
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
VM_MULTIVERSION
void softmax_forward(float *s, const float *x, ptrdiff_t N, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        float *si = s + i * C;
        const float max = vm_max(xi, C);
        if (max == -INFINITY) { // no visible key: attend to nothing rather than NaN
            memset(si, 0, (size_t)C * sizeof(float));
            continue;
        }
        for (ptrdiff_t j = 0; j < C; j++) si[j] = vm_exp(xi[j] - max); // -inf -> exactly 0
        const float inv = (float)(1.0 / vm_sum(si, C));
        for (ptrdiff_t j = 0; j < C; j++) si[j] *= inv;
    }
}

// g, s (N,C) -> gx (N,C) += s (g − Σ s g)
VM_MULTIVERSION
void softmax_backward(float *gx, const float *g, const float *s, ptrdiff_t N, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *si = s + i * C;
        // In double: g − Σ s g cancels for the larger g (see vm_exact_dots).
        double dot, unused;
        vm_exact_dots(si, gi, NULL, 0.0f, C, &dot, &unused);
        float *gxi = gx + i * C;
        for (ptrdiff_t j = 0; j < C; j++) gxi[j] += (float)(si[j] * ((double)gi[j] - dot));
    }
}

// ----------------------------------------------------------------------------
// Activations. LRP: the identity rule g_x = g ⊙ f(x)/x (AttnLRP §3.3.2, DESIGN.md
// §2). Each f here is x·ratio(x) with ratio in closed form, so no division by a
// tiny x is ever needed and x = 0 gives the exact limit f'(0).

#define GELU_TANH_K 0.79788456080286535588f // sqrt(2/pi)
#define GELU_TANH_C 0.044715f
// Beyond |x| = 1e4 every ratio and derivative here is exactly 0 or 1 in float;
// clamping there keeps x³ finite, so no inf·0 can appear.
#define ACTIVATION_CLAMP 1e4f

// f(x)/x: Φ(x) for GELU, σ(2u) = ½(1 + tanh u) for the tanh GELU (the σ form
// keeps relative accuracy for x << 0), σ(x) for SiLU, step for ReLU.
VM_INLINE float activation_ratio(float x, Activation f) {
    switch (f) {
    case ACT_GELU: return vm_normal_cdf(x);
    case ACT_GELU_TANH: {
        const float xc = vm_clamp(x, -ACTIVATION_CLAMP, ACTIVATION_CLAMP);
        return vm_sigmoid(2.0f * GELU_TANH_K * xc * (1.0f + GELU_TANH_C * xc * xc));
    }
    case ACT_SILU: return vm_sigmoid(x);
    case ACT_TANH: return vm_tanh_over_x(x);
    case ACT_RELU: return vm_select(x > 0.0f, 1.0f, 0.0f);
    }
    return 0.0f;
}

// f'(x), the true-gradient stream. Written with σ and its complement σ(−x)
// (never 1 − σ) so that no term cancels or overflows for large |x|.
VM_INLINE float activation_derivative(float x, Activation f) {
    const float xc = vm_clamp(x, -ACTIVATION_CLAMP, ACTIVATION_CLAMP);
    switch (f) {
    case ACT_GELU: return vm_normal_cdf(x) + x * vm_normal_pdf(x);
    case ACT_GELU_TANH: { // d/dx x·σ(2u) = σ + x·σ·σ(−2u)·2u', u = K(x + C x³)
        float s_c;
        const float s = vm_sigmoid2(2.0f * GELU_TANH_K * xc * (1.0f + GELU_TANH_C * xc * xc), &s_c);
        return s + 2.0f * GELU_TANH_K * xc * s * s_c * (1.0f + 3.0f * GELU_TANH_C * xc * xc);
    }
    case ACT_SILU: {
        float s_c;
        const float s = vm_sigmoid2(x, &s_c);
        return s * (1.0f + xc * s_c);
    }
    case ACT_TANH: { // scalar double, as the pooler's one row needs no speed: 1 − t² in
        // double is what the float64 oracle and PyTorch compute, and for |x| > 10 its
        // rounding (1e-16 absolute) is all there is to compare against
        const double t = tanh((double)x);
        return (float)(1.0 - t * t);
    }
    case ACT_RELU: return vm_select(x > 0.0f, 1.0f, 0.0f);
    }
    return 0.0f;
}

// The loops below are written once and instantiated per activation (the switch in
// each entry point passes a constant), so every loop is straight-line and
// vectorises; a switch inside one shared loop would keep it scalar.
VM_INLINE void forward_loop(float *y, const float *x, ptrdiff_t n, Activation f) {
    if (f == ACT_TANH) { // x·(tanh(x)/x) would round twice
        for (ptrdiff_t i = 0; i < n; i++) y[i] = vm_tanh(x[i]);
    } else {
        for (ptrdiff_t i = 0; i < n; i++) y[i] = x[i] * activation_ratio(x[i], f);
    }
}

VM_INLINE void backward_loop(float *gx, const float *g, const float *x, ptrdiff_t n, Activation f,
                             UnaryRule rule) {
    if (rule == RULE_LRP) {
        for (ptrdiff_t i = 0; i < n; i++) gx[i] += g[i] * activation_ratio(x[i], f);
    } else {
        for (ptrdiff_t i = 0; i < n; i++) gx[i] += g[i] * activation_derivative(x[i], f);
    }
}

// x (n) -> y (n) = f(x)
VM_MULTIVERSION
void activation_forward(float *y, const float *x, ptrdiff_t n, Activation f) {
    switch (f) {
    case ACT_GELU: forward_loop(y, x, n, ACT_GELU); return;
    case ACT_GELU_TANH: forward_loop(y, x, n, ACT_GELU_TANH); return;
    case ACT_SILU: forward_loop(y, x, n, ACT_SILU); return;
    case ACT_TANH: forward_loop(y, x, n, ACT_TANH); return;
    case ACT_RELU: forward_loop(y, x, n, ACT_RELU); return;
    }
}

// g, x (n) -> gx (n) += g f(x)/x (RULE_LRP) or g f'(x) (RULE_GRADIENT)
VM_MULTIVERSION
void activation_backward(float *gx, const float *g, const float *x, ptrdiff_t n,
                         Activation f, UnaryRule rule) {
    switch (f) {
    case ACT_GELU: backward_loop(gx, g, x, n, ACT_GELU, rule); return;
    case ACT_GELU_TANH: backward_loop(gx, g, x, n, ACT_GELU_TANH, rule); return;
    case ACT_SILU: backward_loop(gx, g, x, n, ACT_SILU, rule); return;
    case ACT_TANH: backward_loop(gx, g, x, n, ACT_TANH, rule); return;
    case ACT_RELU: backward_loop(gx, g, x, n, ACT_RELU, rule); return;
    }
}

// ----------------------------------------------------------------------------
// LayerNorm, identity on the scale (AttnLRP §3.3.2, DESIGN.md §2): σ is held
// constant, so the map is linear: g_x = h − mean(h), h = γ ⊙ g / σ. The
// centering keeps its gradient; β absorbs its share.

// x (N,C), w (C), b (C) or NULL -> y (N,C), mean (N), rstd (N)
VM_MULTIVERSION
void layernorm_forward(float *y, float *mean, float *rstd, const float *x, const float *w,
                       const float *b, ptrdiff_t N, ptrdiff_t C, float eps) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        float *yi = y + i * C;
        // Two passes: a float estimate c of the mean, then the deviations from it,
        // which give the exact-enough correction `shift` and the variance. On a row
        // 1e3 + U(−1, 1) a one-pass mean would be off by far more than the spread allows.
        const float c = (float)(vm_sum(xi, C) / (double)C);
        double dev, sq;
        vm_centred_moments(xi, c, C, &dev, &sq);
        const double shift = dev / (double)C;
        const double var = sq / (double)C - shift * shift;
        const double rs = 1.0 / sqrt((var > 0.0 ? var : 0.0) + eps);
        const float sh = (float)shift, r = (float)rs;
        if (b != NULL) {
            for (ptrdiff_t j = 0; j < C; j++) yi[j] = ((xi[j] - c) - sh) * r * w[j] + b[j];
        } else {
            for (ptrdiff_t j = 0; j < C; j++) yi[j] = ((xi[j] - c) - sh) * r * w[j];
        }
        mean[i] = (float)(c + shift);
        rstd[i] = r;
    }
}

// g, x (N,C) -> gx (N,C) +=
VM_MULTIVERSION
void layernorm_backward(float *gx, const float *g, const float *x, const float *w,
                        const float *mean, const float *rstd, ptrdiff_t N, ptrdiff_t C,
                        UnaryRule rule) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *xi = x + i * C;
        float *gxi = gx + i * C;
        const float rs = rstd[i], mu = mean[i];
        if (rule == RULE_LRP) { // rstd held constant: h = γ ⊙ g · rstd
            // h rounded before the centring h − mean(h) (vm_mul_rounded), so a row of
            // one feature gets exactly 0 rather than the rounding error of w·g.
            const float mean_h = (float)(vm_dot(w, gi, C) / (double)C);
            for (ptrdiff_t j = 0; j < C; j++) gxi[j] += rs * (vm_mul_rounded(w[j], gi[j]) - mean_h);
        } else { // the full Jacobian, σ depending on x too; in double, its terms cancel
            double sum_h, sum_h_xc; // Σ w g, Σ w g (x − μ)
            vm_exact_dots(w, gi, xi, mu, C, &sum_h, &sum_h_xc);
            const double mean_h = sum_h / (double)C, mean_h_xhat = sum_h_xc * rs / (double)C;
            for (ptrdiff_t j = 0; j < C; j++) {
                const double xhat = (double)(xi[j] - mu) * rs;
                gxi[j] += (float)(rs * ((double)w[j] * gi[j] - mean_h - xhat * mean_h_xhat));
            }
        }
    }
}

// RMSNorm (DESIGN.md §2): r = rsqrt(mean(x²) + eps) held constant, so
// g_x = w ⊙ r ⊙ g.

// x (N,C), w (C) -> y (N,C), rstd (N)
VM_MULTIVERSION
void rmsnorm_forward(float *y, float *rstd, const float *x, const float *w,
                     ptrdiff_t N, ptrdiff_t C, float eps) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *xi = x + i * C;
        const float rs = (float)(1.0 / sqrt(vm_dot(xi, xi, C) / (double)C + eps));
        float *yi = y + i * C;
        for (ptrdiff_t j = 0; j < C; j++) yi[j] = w[j] * (xi[j] * rs);
        rstd[i] = rs;
    }
}

// g, x (N,C) -> gx (N,C) +=
VM_MULTIVERSION
void rmsnorm_backward(float *gx, const float *g, const float *x, const float *w,
                      const float *rstd, ptrdiff_t N, ptrdiff_t C, UnaryRule rule) {
    for (ptrdiff_t i = 0; i < N; i++) {
        const float *gi = g + i * C, *xi = x + i * C;
        float *gxi = gx + i * C;
        const float rs = rstd[i];
        if (rule == RULE_LRP) {
            for (ptrdiff_t j = 0; j < C; j++) gxi[j] += rs * w[j] * gi[j];
        } else { // only the true gradient sees r depend on x; in double, its terms cancel
            double unused, sum_wgx;
            vm_exact_dots(w, gi, xi, 0.0f, C, &unused, &sum_wgx);
            const double k = sum_wgx / (double)C * rs * rs * rs;
            for (ptrdiff_t j = 0; j < C; j++) gxi[j] += (float)((double)rs * w[j] * gi[j] - xi[j] * k);
        }
    }
}

// ----------------------------------------------------------------------------
// RoPE (DESIGN.md §2, linear row): a rotation with constant cos/sin, crossed by
// its true gradient, the transposed rotation. HF convention (LLaMA):
// y = x ⊙ cos + rotate_half(x) ⊙ sin, rotate_half(x) = (−x₂, x₁). Partial RoPE
// (Phi-3's partial_rotary_factor) rotates the first R of each row's D values
// and passes the rest through: an identity, crossed by the identity.

// Copies m elements of each half of a row block (p[k], p[k + h]) before anything
// is written, so the output may be the input (in place); the copies also let GCC
// vectorise loops it would otherwise leave scalar for fear of that aliasing.
VM_INLINE void rope_load(float *first, float *second, const float *p, ptrdiff_t h, ptrdiff_t m) {
    for (ptrdiff_t k = 0; k < m; k++) {
        first[k] = p[k];
        second[k] = p[k + h];
    }
}

// x (B,T,D), cos, sin (T,R), R <= D even -> y (B,T,D)
VM_MULTIVERSION
void rope_forward(float *y, const float *x, const float *cos, const float *sin,
                  ptrdiff_t B, ptrdiff_t T, ptrdiff_t D, ptrdiff_t R) {
    const ptrdiff_t h = R / 2;
    for (ptrdiff_t b = 0; b < B; b++) {
        for (ptrdiff_t t = 0; t < T; t++) {
            const float *xt = x + (b * T + t) * D, *c = cos + t * R, *s = sin + t * R;
            float *yt = y + (b * T + t) * D;
            for (ptrdiff_t j0 = 0; j0 < h; j0 += VM_LANES) {
                const ptrdiff_t m = h - j0 < VM_LANES ? h - j0 : VM_LANES;
                float x1[VM_LANES], x2[VM_LANES];
                rope_load(x1, x2, xt + j0, h, m);
                for (ptrdiff_t k = 0; k < m; k++) yt[j0 + k] = x1[k] * c[j0 + k] - x2[k] * s[j0 + k];
                for (ptrdiff_t k = 0; k < m; k++) {
                    yt[j0 + k + h] = x2[k] * c[j0 + k + h] + x1[k] * s[j0 + k + h];
                }
            }
            for (ptrdiff_t j = R; j < D; j++) yt[j] = xt[j];
        }
    }
}

// g (B,T,D) -> gx (B,T,D) += Rᵀ g
VM_MULTIVERSION
void rope_backward(float *gx, const float *g, const float *cos, const float *sin,
                   ptrdiff_t B, ptrdiff_t T, ptrdiff_t D, ptrdiff_t R) {
    const ptrdiff_t h = R / 2;
    for (ptrdiff_t b = 0; b < B; b++) {
        for (ptrdiff_t t = 0; t < T; t++) {
            const float *gt = g + (b * T + t) * D, *c = cos + t * R, *s = sin + t * R;
            float *gxt = gx + (b * T + t) * D;
            for (ptrdiff_t j0 = 0; j0 < h; j0 += VM_LANES) {
                const ptrdiff_t m = h - j0 < VM_LANES ? h - j0 : VM_LANES;
                float g1[VM_LANES], g2[VM_LANES];
                rope_load(g1, g2, gt + j0, h, m);
                for (ptrdiff_t k = 0; k < m; k++) gxt[j0 + k] += g1[k] * c[j0 + k] + g2[k] * s[j0 + k + h];
                for (ptrdiff_t k = 0; k < m; k++) gxt[j0 + k + h] += g2[k] * c[j0 + k + h] - g1[k] * s[j0 + k];
            }
            for (ptrdiff_t j = R; j < D; j++) gxt[j] += gt[j];
        }
    }
}

// ----------------------------------------------------------------------------
// Soft-capping y = c·tanh(x/c) (Gemma's final logits): an element-wise non-linearity,
// so the identity rule of DESIGN.md §2 (tanh row): g_x = g ⊙ y/x, relevance passes
// unchanged (R_x = x g_x = y g = R_y); the gradient stream takes 1 − tanh²(x/c).

// x (n) -> y (n) = c tanh(x / c)
void softcap_forward(float *y, const float *x, ptrdiff_t n, float c) {
    for (ptrdiff_t i = 0; i < n; i++) y[i] = (float)(c * tanh((double)x[i] / c));
}

// g, x (n) -> gx (n) += g y/x (RULE_LRP; 1 at x = 0) or g (1 − tanh²(x/c)) (RULE_GRADIENT)
void softcap_backward(float *gx, const float *g, const float *x, ptrdiff_t n, float c, UnaryRule rule) {
    for (ptrdiff_t i = 0; i < n; i++) {
        const double u = (double)x[i] / c, t = tanh(u);
        const double factor = rule == RULE_LRP ? (u == 0.0 ? 1.0 : t / u) : 1.0 - t * t;
        gx[i] += (float)(g[i] * factor);
    }
}

// ----------------------------------------------------------------------------
// x, g (n) -> r (n) = x ⊙ g   (relevance of any tensor, DESIGN.md §2)
VM_MULTIVERSION
void relevance(float *r, const float *x, const float *g, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; i++) r[i] = x[i] * g[i];
}
