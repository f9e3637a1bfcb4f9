// Head statistics (DESIGN.md §3.1): integer counters of where each attention
// head looks. Only what depends on the model is counted here (k* per query);
// query and arc totals and the fixed-offset baseline λ_r come from the arcs
// alone and are counted in masklrp/headstats.py.
#include "masklrp.h"

// The most attended key among the candidates: ties go to the lowest index; -1 when
// there is no candidate. Never changes the forward to hide special tokens (§3.3).
// Keys outside [k0, k0 + nk) count as probability 0, so the result is that of the
// whole row (a masked candidate before every attended one still wins a tie at 0).
int32_t key_argmax(const float *row, const uint8_t *keys, ptrdiff_t T, ptrdiff_t k0, ptrdiff_t nk) {
    int32_t best = -1;
    float top = 0.0f;
    for (ptrdiff_t k = 0; k < T; k++) {
        const float p = k >= k0 && k < k0 + nk ? row[k - k0] : 0.0f;
        if (keys[k] && (best < 0 || p > top)) {
            best = (int32_t)k;
            top = p;
        }
    }
    return best;
}

// k* (T) of layer l, head h -> the positional and syntactic counters
static void count_head(const HeadStats *hs, const int32_t *kstar, int l, int h, int H, ptrdiff_t T,
                       const int64_t *arcs, ptrdiff_t n_arcs) {
    int64_t *pos = hs->positional + ((ptrdiff_t)l * H + h) * (2 * T - 1);
    for (ptrdiff_t q = 0; q < T; q++)
        if (kstar[q] >= 0) pos[kstar[q] - q + T - 1]++;
    int64_t *hits = hs->syntactic + ((ptrdiff_t)l * H + h) * hs->R;
    for (ptrdiff_t i = 0; i < n_arcs; i++) {
        const int64_t *arc = arcs + i * 5;
        const int32_t k = kstar[arc[1]];
        hits[arc[4]] += k >= arc[2] && k < arc[3];
    }
}

void head_counts_kstar(const HeadStats *hs, const int32_t *kstar, int L, int H, ptrdiff_t T, const int64_t *arcs,
                       ptrdiff_t n_arcs) {
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h++) count_head(hs, kstar + ((ptrdiff_t)l * H + h) * T, l, h, H, T, arcs, n_arcs);
}

void head_counts(const HeadStats *hs, const float *att, ptrdiff_t layer_stride, int L, int H, ptrdiff_t T,
                 ptrdiff_t seq, const int64_t *arcs, ptrdiff_t n_arcs, int32_t *kstar) {
    const uint8_t *queries = hs->queries + seq * T, *keys = hs->keys + seq * T;
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < H; h++) {
            const float *a = att + l * layer_stride + (ptrdiff_t)h * T * T;
            for (ptrdiff_t q = 0; q < T; q++) kstar[q] = queries[q] ? key_argmax(a + q * T, keys, T, 0, T) : -1;
            count_head(hs, kstar, l, h, H, T, arcs, n_arcs);
        }
    }
}

ptrdiff_t arcs_of(const HeadStats *hs, ptrdiff_t seq, const int64_t **first) {
    ptrdiff_t lo = 0, hi = hs->n_arcs; // first arc of sequence >= seq
    while (lo < hi) {
        const ptrdiff_t mid = lo + (hi - lo) / 2;
        if (hs->arcs[mid * 5] < seq) lo = mid + 1;
        else hi = mid;
    }
    ptrdiff_t end = lo;
    while (end < hs->n_arcs && hs->arcs[end * 5] == seq) end++;
    *first = hs->arcs + lo * 5;
    return end - lo;
}
