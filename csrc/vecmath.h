// Branch-free float32 exp, normal CDF/PDF, sigmoid and tanh for the element-wise
// loops of rules.c, plus the multiversioning attribute those loops carry.
//
// Why not libm: expf / erfcf / tanhf are scalar calls, so a loop over them never
// vectorises and costs 10-20x what PyTorch's vectorised kernels do. Everything
// here is a short straight-line sequence of float and uint32 operations on one
// lane: no tables, no branches (a piecewise choice computes both sides and
// selects), no calls. GCC turns a loop over these functions into SIMD code.
//
// Accuracy: the figures at each function are the max errors against float64
// references over every 5th float of the whole range the function accepts
// (~10^8 points each), for the baseline build; the AVX2/FMA clone measures the
// same within 0.05 ulp, or better (Φ). Finite inputs are assumed; a NaN comes back as NaN or an arbitrary value,
// never as undefined behaviour (no float -> int conversion is ever made).
#ifndef VECMATH_H
#define VECMATH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

// Hot loops are compiled twice, for x86-64-v3 (AVX2, FMA) and for the baseline,
// and the loader picks one by CPU (GNU ifunc): the build stays portable, with no
// -march=native. Elsewhere the attribute is empty and the baseline build is used.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) && \
    defined(__linux__)
#define VM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VM_MULTIVERSION
#endif

// Everything below is inlined even where GCC would not choose to: a call would
// leave the caller's AVX2 clone for a baseline copy and break its vectorised loop.
#if defined(__GNUC__)
#define VM_INLINE static inline __attribute__((always_inline))
#else
#define VM_INLINE static inline
#endif

VM_INLINE uint32_t vm_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

VM_INLINE float vm_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// cond ? a : b as bit operations on both computed values. Written as `?:`, GCC
// (with the default -ftrapping-math) may sink the computation of a and b, or a
// later comparison, into branches (jump threading) and then refuses to vectorise
// the loop ("control flow in loop"); a mask select stays straight-line.
VM_INLINE float vm_select(int cond, float a, float b) {
    const uint32_t mask = -(uint32_t)(cond != 0);
    return vm_from_bits((vm_bits(a) & mask) | (vm_bits(b) & ~mask));
}

// a·b rounded to float even where the compiler fuses a multiply into a following
// add or subtract (-ffp-contract=fast): x + 0 is no identity in IEEE arithmetic
// (−0 + 0 = +0), so it stays, and a product fused into it is rounded exactly once.
// For `a·b − m` that must cancel exactly when m is the float a·b.
VM_INLINE float vm_mul_rounded(float a, float b) {
    return a * b + 0.0f;
}

// x limited to [lo, hi]; NaN stays NaN.
VM_INLINE float vm_clamp(float x, float lo, float hi) {
    x = vm_select(x < lo, lo, x);
    return vm_select(x > hi, hi, x);
}

// ----------------------------------------------------------------------------
// exp, for the arguments the rules need: x <= 0 (softmax's x − max, σ's e^{−|x|},
// tanh's e^{−2|x|}, the normal's e^{−x²/2}). On that domain nothing overflows,
// and the scaling below is exact for every result, subnormals included, at the
// cost of four instructions; a full-range exp would need twice that.
//
// Cody-Waite: n = round(x/ln2), r = x − n·ln2 in [−ln2/2, ln2/2],
// e^x = 2^n·e^r. n is rounded without any float -> int conversion: adding
// 1.5·2^23 leaves no fraction bits, so the sum t rounds x/ln2 to an integer
// and holds it in its low mantissa bits (valid for |x/ln2| < 2^22).

#define VM_ROUND_MAGIC 0x1.8p23f
#define VM_LOG2E 0x1.715476p+0f
// ln 2 split: LN2_HI has 15 significant bits, so n·LN2_HI is exact for |n| <= 255
// and x − n·LN2_HI loses nothing.
#define VM_LN2_HI 0x1.62e4p-1f
#define VM_LN2_LO 0x1.7f7d1cp-20f
// Below this, e^x < 2^-150 rounds to 0 (also keeps n >= −150 for the scaling).
#define VM_EXP_MIN -104.0f

// e^r for |r| <= ln2/2 as 1 + r + r²·Q(r), Q our degree-4 minimax fit of
// (e^r − 1 − r)/r² with float coefficients: relative error 3.2e-9 before rounding.
VM_INLINE float vm_exp_reduced(float r) {
    const float q = 0x1.fffffcp-2f +
                    r * (0x1.555492p-3f + r * (0x1.5558b4p-5f + r * (0x1.12399ap-7f + r * 0x1.6a48ccp-10f)));
    return 1.0f + (r + r * r * q);
}

// p·2^n, n the integer held by t = n + 1.5·2^23, for n in [−190, 63]: 2^(n+64)
// is built in the exponent field (shifting t's bits by 23 drops the magic
// number's own bits above bit 31) and is always a normal float, so p·2^(n+64)
// is exact and the final ·2^-64 rounds once: subnormal results get their
// correct gradual underflow with no special case.
VM_INLINE float vm_exp_scale(float p, float t) {
    return p * vm_from_bits((vm_bits(t) << 23) + ((127u + 64u) << 23)) * 0x1p-64f;
}

// e^x for x <= 0 (exact scaling up to x = 43; larger x is outside the contract).
// -inf -> 0. Max error 0.97 ulp, subnormal results included.
VM_INLINE float vm_exp(float x) {
    x = vm_select(x < VM_EXP_MIN, VM_EXP_MIN, x);
    const float t = x * VM_LOG2E + VM_ROUND_MAGIC;
    const float n = t - VM_ROUND_MAGIC;
    const float r = (x - n * VM_LN2_HI) - n * VM_LN2_LO;
    return vm_exp_scale(vm_exp_reduced(r), t);
}

// e^(hi + lo) without rounding hi + lo to float first, for −131 <= hi + lo <= 0:
// hi must be exact and n·LN2_HI-reducible (−ah²/2 with ah of 12 significant bits,
// |ah| <= 16), |lo| <= 2. The argument of e^{−x²/2} at x = 14 is −98, whose float
// rounding alone would cost 2.5e-6 relative; the split keeps it at ulps.
VM_INLINE float vm_exp_split(float hi, float lo) {
    const float t = (hi + lo) * VM_LOG2E + VM_ROUND_MAGIC;
    const float n = t - VM_ROUND_MAGIC;
    const float r = ((hi - n * VM_LN2_HI) + lo) - n * VM_LN2_LO;
    return vm_exp_scale(vm_exp_reduced(r), t);
}

// ----------------------------------------------------------------------------
// Standard normal distribution (exact GELU)

#define VM_NORMAL_PDF_0 0.39894228040143267794f // 1/sqrt(2 pi)
// |x| beyond which Φ(−|x|) and φ(x) round to 0 (they underflow below 2^-150 near
// 14.1); clamping there keeps −x²/2 >= −105 for vm_exp_split.
#define VM_NORMAL_TAIL 14.5f

// −a²/2 as an unevaluated sum hi + lo, hi exact: ah keeps the top 12 significant
// bits of a, so ah² fits a float exactly and a² = ah² + (a − ah)(a + ah).
VM_INLINE void vm_neg_half_square(float a, float *hi, float *lo) {
    const float ah = vm_from_bits(vm_bits(a) & 0xfffff000u);
    *hi = -0.5f * (ah * ah);
    *lo = -0.5f * ((a - ah) * (a + ah));
}

// Φ(x) = ½ erfc(−x/√2), with good relative accuracy in both tails.
//
// For a = |x|: Φ(−a) = ½ e^{−a²/2} R(a), R(a) = erfcx(a/√2) = N(a)/D(a), our
// degree-(5, 6) relative minimax fit over a in [0, 15] (beyond, Φ(−a) is 0 in
// float) with float coefficients: max error 7.6e-9. Every coefficient is
// positive, so N and D lose nothing to cancellation for a >= 0, and
// N(0) = D(0) = 1 gives Φ(0) = ½ exactly (the ½ is folded into N's coefficients,
// exactly). −a²/2 is taken exactly from x (vm_neg_half_square): rounding it to
// float would cost up to 100·2^-24 relative in the tail. Φ(a) = 1 − Φ(−a).
// Measured: x >= 0 max 2.2 ulps; x < 0 max 5.5 ulps for x > −2, 7.2 ulps over the
// rest of the normal range (relative error <= 5.9e-7), almost all of it rounding
// in the degree-5/6 Horner sums (the old 0.5·erfcf(−x·(1/√2)) was 7 ulps near −2
// and 195 near −13, from rounding x/√2); subnormal results below x = −13.1,
// gradual underflow to 0 near x = −14.1.
VM_INLINE float vm_normal_cdf(float x) {
    float a = fabsf(x);
    a = vm_select(a > VM_NORMAL_TAIL, VM_NORMAL_TAIL, a);
    const float half_num =
        0.5f + a * (0x1.0402d6p-1f + a * (0x1.00d6f8p-2f + a * (0x1.247c4ap-4f +
               a * (0x1.7e3352p-7f + a * 0x1.d354fep-11f))));
    const float den =
        1.0f + a * (0x1.d04500p+0f + a * (0x1.72da74p+0f + a * (0x1.50d1fcp-1f +
               a * (0x1.7329c2p-3f + a * (0x1.df03b2p-6f + a * 0x1.24db72p-9f)))));
    float hi, lo;
    vm_neg_half_square(a, &hi, &lo);
    const float lower = vm_exp_split(hi, lo) * (half_num / den); // Φ(−a)
    return vm_select(x < 0.0f, lower, 1.0f - lower);
}

// φ(x) = e^{−x²/2}/√(2π), max 2.1 ulps (same exact −x²/2).
VM_INLINE float vm_normal_pdf(float x) {
    float a = fabsf(x);
    a = vm_select(a > VM_NORMAL_TAIL, VM_NORMAL_TAIL, a);
    float hi, lo;
    vm_neg_half_square(a, &hi, &lo);
    return VM_NORMAL_PDF_0 * vm_exp_split(hi, lo);
}

// ----------------------------------------------------------------------------
// Logistic sigmoid and tanh

// σ(x) = 1/(1 + e^{−x}), written with e = e^{−|x|} <= 1 so that nothing
// overflows and σ(x) = e/(1 + e) keeps its relative accuracy for x << 0.
// *complement = σ(−x) = 1 − σ(x), equally accurate (the SiLU derivative needs it).
// Max error 2.8 ulps for both.
VM_INLINE float vm_sigmoid2(float x, float *complement) {
    const float e = vm_exp(-fabsf(x));
    const float q = 1.0f / (1.0f + e);
    *complement = vm_select(x >= 0.0f, e * q, q);
    return vm_select(x >= 0.0f, q, e * q);
}

VM_INLINE float vm_sigmoid(float x) {
    float unused;
    return vm_sigmoid2(x, &unused);
}

// |x| below which tanh uses its odd series fit instead of (1 − e)/(1 + e),
// whose 1 − e cancels for small |x|.
#define VM_TANH_SERIES 0.625f

// tanh(x)/x: for |x| < 0.625, 1 + x²·R(x²) with R our degree-4 minimax fit
// (relative error 4.5e-9, exactly 1 at x = 0: the limit the identity rule needs);
// beyond, (1 − e)/((1 + e)|x|), e = e^{−2|x|}. Max error 2.5 ulps.
VM_INLINE float vm_tanh_over_x(float x) {
    const float a = fabsf(x);
    const float x2 = x * x;
    const float series =
        1.0f + x2 * (-0x1.555532p-2f +
               x2 * (0x1.1106f6p-3f +
               x2 * (-0x1.b835a4p-5f +
               x2 * (0x1.51f8cep-6f +
               x2 * -0x1.750ce4p-8f))));
    const float e = vm_exp(-2.0f * a);
    const float big = (1.0f - e) / ((1.0f + e) * a);
    return vm_select(a < VM_TANH_SERIES, series, big);
}

// tanh(x), max error 1.5 ulps; the same two pieces without rounding through tanh(x)/x.
VM_INLINE float vm_tanh(float x) {
    const float a = fabsf(x);
    const float x2 = x * x;
    const float series =
        a + a * x2 * (-0x1.555532p-2f +
                x2 * (0x1.1106f6p-3f +
                x2 * (-0x1.b835a4p-5f +
                x2 * (0x1.51f8cep-6f +
                x2 * -0x1.750ce4p-8f))));
    const float e = vm_exp(-2.0f * a);
    const float big = (1.0f - e) / (1.0f + e);
    return copysignf(vm_select(a < VM_TANH_SERIES, series, big), x);
}

// ----------------------------------------------------------------------------
// Row reductions
//
// A float32 sum over a whole row loses digits (4096 terms: ~2^12 ulps worst
// case) and a double one does not vectorise well (each term converted, half as
// many lanes). Instead each of VM_LANES float lanes sums at most VM_RUN terms,
// then the lanes are summed in double by a fixed tree and added to a double
// total. So every float partial sum has <= VM_RUN terms (error <= 16 ulps of the
// partial, ~1e-7 relative typically) and the order is fixed: results do not depend
// on alignment or thread count.

#define VM_LANES 32 // four AVX2 registers of independent adds, so the adds pipeline
#define VM_RUN 16   // float terms per lane before the lane is moved into double

// The float lanes' sum in double, by a fixed tree: the first two levels in float
// (partial sums of at most 4·VM_RUN terms), the rest in double.
VM_INLINE double vm_lanes_sum(float *lane) {
    for (int half = VM_LANES / 2; half >= VM_LANES / 4; half /= 2) {
        for (int k = 0; k < half; k++) lane[k] += lane[k + half];
    }
    double wide[VM_LANES / 4];
    for (int k = 0; k < VM_LANES / 4; k++) wide[k] = lane[k];
    for (int half = VM_LANES / 8; half > 0; half /= 2) {
        for (int k = 0; k < half; k++) wide[k] += wide[k + half];
    }
    return wide[0];
}

// End of the run of at most VM_RUN whole blocks that starts at i.
VM_INLINE ptrdiff_t vm_run_end(ptrdiff_t i, ptrdiff_t n) {
    const ptrdiff_t blocks = (n - i) / VM_LANES;
    return i + (blocks < VM_RUN ? blocks : VM_RUN) * VM_LANES;
}

// Sums TERM(i) (a float expression in i) over i < n into the double `out`: by
// blocks of VM_LANES into float lanes, moved into double after every VM_RUN
// blocks; the n % VM_LANES tail goes straight into double. A macro, because C has
// no other way to hand a loop its per-element expression and keep it inlined.
// Each run's first block initialises the lanes (no zeroing stores), and the move
// into double sits outside the block loop, so the lanes stay in registers.
#define VM_REDUCE(n, TERM, out)                                                      \
    do {                                                                             \
        double total_ = 0.0;                                                         \
        ptrdiff_t i_ = 0;                                                            \
        while (i_ + VM_LANES <= (n)) {                                               \
            const ptrdiff_t end_ = vm_run_end(i_, (n));                              \
            float lane_[VM_LANES];                                                   \
            for (int k_ = 0; k_ < VM_LANES; k_++) lane_[k_] = TERM(i_ + k_);         \
            for (i_ += VM_LANES; i_ < end_; i_ += VM_LANES) {                        \
                for (int k_ = 0; k_ < VM_LANES; k_++) lane_[k_] += TERM(i_ + k_);    \
            }                                                                        \
            total_ += vm_lanes_sum(lane_);                                           \
        }                                                                            \
        for (; i_ < (n); i_++) total_ += TERM(i_);                                   \
        out = total_;                                                                \
    } while (0)

// As VM_REDUCE, two sums in one pass over the data.
#define VM_REDUCE2(n, TERM1, TERM2, out1, out2)                                      \
    do {                                                                             \
        double total1_ = 0.0, total2_ = 0.0;                                         \
        ptrdiff_t i_ = 0;                                                            \
        while (i_ + VM_LANES <= (n)) {                                               \
            const ptrdiff_t end_ = vm_run_end(i_, (n));                              \
            float lane1_[VM_LANES], lane2_[VM_LANES];                                \
            for (int k_ = 0; k_ < VM_LANES; k_++) {                                  \
                lane1_[k_] = TERM1(i_ + k_);                                         \
                lane2_[k_] = TERM2(i_ + k_);                                         \
            }                                                                        \
            for (i_ += VM_LANES; i_ < end_; i_ += VM_LANES) {                        \
                for (int k_ = 0; k_ < VM_LANES; k_++) {                              \
                    lane1_[k_] += TERM1(i_ + k_);                                    \
                    lane2_[k_] += TERM2(i_ + k_);                                    \
                }                                                                    \
            }                                                                        \
            total1_ += vm_lanes_sum(lane1_);                                         \
            total2_ += vm_lanes_sum(lane2_);                                         \
        }                                                                            \
        for (; i_ < (n); i_++) {                                                     \
            total1_ += TERM1(i_);                                                    \
            total2_ += TERM2(i_);                                                    \
        }                                                                            \
        out1 = total1_;                                                              \
        out2 = total2_;                                                              \
    } while (0)

// Σ x[i]
VM_INLINE double vm_sum(const float *x, ptrdiff_t n) {
    double sum;
#define TERM(i) x[i]
    VM_REDUCE(n, TERM, sum);
#undef TERM
    return sum;
}

// Σ a[i]·b[i]
VM_INLINE double vm_dot(const float *a, const float *b, ptrdiff_t n) {
    double sum;
#define TERM(i) (a[i] * b[i])
    VM_REDUCE(n, TERM, sum);
#undef TERM
    return sum;
}

// In double lanes, with every a·b exact: *ab = Σ a[i]·b[i] and
// *abc = Σ a[i]·b[i]·(c[i] − shift) (c may be NULL: *abc = 0). Twice the
// arithmetic of the float reductions, for callers whose result cancels against
// the terms (softmax's g − Σ s g, the norms' true gradients): there the float
// version's rounding would show, and the rows stream from memory anyway.
VM_INLINE void vm_exact_dots(const float *a, const float *b, const float *c, float shift, ptrdiff_t n,
                             double *ab, double *abc) {
    enum { L = VM_LANES / 2 }; // doubles: half as many per register
    double lane1[L] = {0}, lane2[L] = {0}, tail1 = 0.0, tail2 = 0.0;
    ptrdiff_t i = 0;
    for (; i + L <= n; i += L) {
        for (int k = 0; k < L; k++) {
            const double h = (double)a[i + k] * b[i + k];
            lane1[k] += h;
            if (c != NULL) lane2[k] += h * (c[i + k] - shift);
        }
    }
    for (; i < n; i++) {
        const double h = (double)a[i] * b[i];
        tail1 += h;
        if (c != NULL) tail2 += h * (c[i] - shift);
    }
    for (int half = L / 2; half > 0; half /= 2) {
        for (int k = 0; k < half; k++) {
            lane1[k] += lane1[k + half];
            lane2[k] += lane2[k + half];
        }
    }
    *ab = lane1[0] + tail1;
    *abc = lane2[0] + tail2;
}

// *dev = Σ (x[i] − c), *sq = Σ (x[i] − c)². With c a first estimate of the mean,
// *dev corrects it to the accuracy of the deviations rather than of the row's
// magnitude, and *sq gives the variance without cancellation.
VM_INLINE void vm_centred_moments(const float *x, float c, ptrdiff_t n, double *dev, double *sq) {
#define TERM1(i) (x[i] - c)
#define TERM2(i) ((x[i] - c) * (x[i] - c))
    VM_REDUCE2(n, TERM1, TERM2, *dev, *sq);
#undef TERM1
#undef TERM2
}

// max x[i] (-inf for a row of -inf); `x > m ? x : m` is exactly one SIMD max.
VM_INLINE float vm_max(const float *x, ptrdiff_t n) {
    float lane[VM_LANES];
    for (int k = 0; k < VM_LANES; k++) lane[k] = -INFINITY;
    ptrdiff_t i = 0;
    for (; i + VM_LANES <= n; i += VM_LANES) {
        for (int k = 0; k < VM_LANES; k++) lane[k] = x[i + k] > lane[k] ? x[i + k] : lane[k];
    }
    float m = -INFINITY;
    for (int k = 0; k < VM_LANES; k++) m = lane[k] > m ? lane[k] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

#endif // VECMATH_H
