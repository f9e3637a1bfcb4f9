// Head statistics (DESIGN.md §3.1): integer counters of where each attention
// head looks. Only what depends on the model is counted here (k* per query);
// query and arc totals and the fixed-offset baseline λ_r come from the arcs
// alone and are counted in masklrp/headstats.py.
#include "masklrp.h"

// The most attended key among the candidates: ties go to the lowest index; -1 when
// there is no candidate. Never changes the forward to hide special tokens (§3.3).
static int32_t argmax_key(const float *row, const uint8_t *keys, ptrdiff_t T) {
    int32_t best = -1;
    for (ptrdiff_t k = 0; k < T; k++)
        if (keys[k] && (best < 0 || row[k] > row[best])) best = (int32_t)k;
    return best;
}

void head_counts(const HeadStats *hs, const float *att, ptrdiff_t layer_stride, int L, int H, ptrdiff_t T,
                 ptrdiff_t seq, const int64_t *arcs, ptrdiff_t n_arcs, int32_t *kstar) {
    const uint8_t *queries = hs->queries + seq * T, *keys = hs->keys + seq * T;
    const ptrdiff_t offsets = 2 * T - 1;
    for (int l = 0; l < L; l++) {
        for (int h = 0; h < H; h++) {
            const float *a = att + l * layer_stride + (ptrdiff_t)h * T * T;
            int64_t *pos = hs->positional + ((ptrdiff_t)l * H + h) * offsets;
            for (ptrdiff_t q = 0; q < T; q++) {
                kstar[q] = queries[q] ? argmax_key(a + q * T, keys, T) : -1;
                if (kstar[q] >= 0) pos[kstar[q] - q + T - 1]++;
            }
            int64_t *hits = hs->syntactic + ((ptrdiff_t)l * H + h) * hs->R;
            for (ptrdiff_t i = 0; i < n_arcs; i++) {
                const int64_t *arc = arcs + i * 5;
                const int32_t k = kstar[arc[1]];
                hits[arc[4]] += k >= arc[2] && k < arc[3];
            }
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
