// The one file that talks to BLAS: OpenBLAS from the scipy-openblas32 wheel,
// whose symbols carry the prefix scipy_ (setup.py links it; masklrp/_openblas.py
// loads it before the extension). It runs single-threaded: parallel GEMMs are
// split over the calling thread's team (team.c).
#include <cblas.h>

#include "masklrp.h"

#define BLAS(name) scipy_##name

// A piece of C (M,N) = alpha op(A) op(B) + beta C: rows [r0, r1), columns [c0, c1).
typedef struct {
    bool ta, tb;
    ptrdiff_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    ptrdiff_t pieces;
    bool by_rows; // pieces cut the rows, else the columns
} Gemm;

static void gemm_piece(const Gemm *g, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t c0, ptrdiff_t c1) {
    const blasint lda = (blasint)(g->ta ? g->M : g->K), ldb = (blasint)(g->tb ? g->K : g->N);
    const float *A = g->A + (g->ta ? r0 : r0 * g->K);
    const float *B = g->B + (g->tb ? c0 * g->K : c0);
    BLAS(cblas_sgemm)(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                      (blasint)(r1 - r0), (blasint)(c1 - c0), (blasint)g->K, g->alpha, A, lda, B, ldb, g->beta,
                      g->C + r0 * g->N + c0, (blasint)g->N);
}

// Piece i of `pieces`, cut at multiples of 16 so every piece keeps whole SIMD tiles.
static void gemm_task(void *ctx, ptrdiff_t i) {
    const Gemm *g = ctx;
    const ptrdiff_t extent = g->by_rows ? g->M : g->N, tiles = (extent + 15) / 16;
    ptrdiff_t lo = tiles * i / g->pieces * 16, hi = tiles * (i + 1) / g->pieces * 16;
    if (hi > extent) hi = extent;
    if (lo >= hi) return;
    if (g->by_rows) gemm_piece(g, lo, hi, 0, g->N);
    else gemm_piece(g, 0, g->M, lo, hi);
}

// Below this many multiply-adds a GEMM is not worth waking a team for.
#define TEAM_MIN_MACS (1 << 18)

// Row-major sgemm. Callers guarantee every size fits in a BLAS int (module.c
// checks against MLRP_BLAS_MAX_DIM before releasing the GIL). On a team the
// wider of the two output dimensions is cut into one piece per member.
void gemm(bool ta, bool tb, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float alpha,
          const float *A, const float *B, float beta, float *C) {
    Gemm g = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .alpha = alpha, .beta = beta, .A = A, .B = B, .C = C,
              .pieces = 1, .by_rows = M > N};
    Team *team = team_current();
    const int members = team_members(team);
    if (members > 1 && (double)M * N * K >= TEAM_MIN_MACS && (g.by_rows ? M : N) >= 32 * members) {
        g.pieces = members;
        team_for(team, g.pieces, gemm_task, &g);
        return;
    }
    gemm_piece(&g, 0, M, 0, N);
}

void blas_pin_single_thread(void) {
    if (BLAS(openblas_get_num_threads)() != 1) BLAS(openblas_set_num_threads)(1);
}

const char *blas_config(void) { return BLAS(openblas_get_config)(); }

const char *blas_core(void) { return BLAS(openblas_get_corename)(); }
