// The one file that talks to BLAS (OpenBLAS, found by setup.py through pkg-config).
#include <cblas.h>

#include "masklrp.h"

// Row-major sgemm. Callers guarantee every size fits in a BLAS int (module.c
// checks against MLRP_BLAS_MAX_DIM before releasing the GIL).
void gemm(bool ta, bool tb, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, float alpha,
          const float *A, const float *B, float beta, float *C) {
    const blasint lda = (blasint)(ta ? M : K);
    const blasint ldb = (blasint)(tb ? K : N);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (blasint)M, (blasint)N, (blasint)K, alpha, A, lda, B, ldb, beta, C, (blasint)N);
}

// Controls OpenBLAS's own thread pool: the one our GEMMs run on. NumPy's wheel
// carries a separate, symbol-prefixed OpenBLAS that this does not touch.
void blas_set_num_threads(int n) { openblas_set_num_threads(n); }

int blas_get_num_threads(void) { return openblas_get_num_threads(); }

const char *blas_config(void) { return openblas_get_config(); }
