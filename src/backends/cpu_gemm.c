/* The CPU backend's GEMMs in fp32 or emulated bf16 (cpu_gemm.h). */
#include <cblas.h>
#include <stdlib.h>

#include "backends/cpu_gemm.h"
#include "base/error.h"
#include "vae_math.h"

/* destination[rows, columns] (packed) = the bfloat16 values of
 * source[rows, columns] (leading dimension ld). Element-wise, so any thread
 * split gives the same values. */
static void round_operand(const float *source, int rows, int columns, int ld, float *destination) {
#pragma omp parallel for schedule(static) if ((size_t)rows * (size_t)columns > 65536)
    for (int r = 0; r < rows; ++r) {
        const float *from = source + (size_t)r * (size_t)ld;
        float *to = destination + (size_t)r * (size_t)columns;
        for (int c = 0; c < columns; ++c) to[c] = vae_round_to_bfloat16(from[c]);
    }
}

vae_status vae_cpu_gemm_run(vae_cpu_gemm *gemm, int transpose_a, int transpose_b, int m, int n, int k, const float *a,
                            int lda, const float *b, int ldb, float beta, float *c, int ldc) {
    if (gemm->precision == VAE_PRECISION_BF16) {
        /* The operands as stored: A is [m, k] or, transposed, [k, m]; B likewise. */
        const int a_rows = transpose_a ? k : m, a_columns = transpose_a ? m : k;
        const int b_rows = transpose_b ? n : k, b_columns = transpose_b ? k : n;
        const size_t a_floats = (size_t)a_rows * (size_t)a_columns, b_floats = (size_t)b_rows * (size_t)b_columns;
        if (gemm->rounded_floats < a_floats + b_floats) {
            float *grown = realloc(gemm->rounded, sizeof(float) * (a_floats + b_floats));
            if (!grown)
                return vae_error(VAE_ERROR_OUT_OF_MEMORY,
                                 "cpu backend: cannot allocate %zu floats for the bf16 GEMM operands",
                                 a_floats + b_floats);
            gemm->rounded = grown;
            gemm->rounded_floats = a_floats + b_floats;
        }
        float *a_rounded = gemm->rounded, *b_rounded = gemm->rounded + a_floats;
        round_operand(a, a_rows, a_columns, lda, a_rounded);
        round_operand(b, b_rows, b_columns, ldb, b_rounded);
        a = a_rounded, lda = a_columns;
        b = b_rounded, ldb = b_columns;
    }
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    return VAE_OK;
}

void vae_cpu_gemm_release(vae_cpu_gemm *gemm) {
    free(gemm->rounded);
    gemm->rounded = NULL;
    gemm->rounded_floats = 0;
}
