/* The CPU backend's GEMMs in fp32 or emulated bf16 (cpu_gemm.h). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef VAE_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include "backends/blas_select.h"
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
#ifdef VAE_HAVE_ONEDNN
    /* A product without terms (k = 0) or without values is left to OpenBLAS,
     * which scales C by beta as BLAS defines. */
    if (gemm->library == VAE_CPU_GEMM_ONEDNN && m > 0 && n > 0 && k > 0) {
        /* dnnl_sgemm is row-major, as the arguments here are. */
        const dnnl_status_t status = dnnl_sgemm(transpose_a ? 'T' : 'N', transpose_b ? 'T' : 'N', m, n, k, 1.0f, a, lda,
                                                b, ldb, beta, c, ldc);
        if (status != dnnl_success)
            return vae_error(VAE_ERROR_INTERNAL,
                             "cpu backend: oneDNN sgemm (%s x %s, m %d n %d k %d, lda %d ldb %d ldc %d) failed: status %d",
                             transpose_a ? "A^T" : "A", transpose_b ? "B^T" : "B", m, n, k, lda, ldb, ldc,
                             (int)status);
        return VAE_OK;
    }
#endif
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    return VAE_OK;
}

int vae_cpu_gemm_library_available(vae_cpu_gemm_library library) {
    if (library == VAE_CPU_GEMM_OPENBLAS) return 1;
#ifdef VAE_HAVE_ONEDNN
    if (library == VAE_CPU_GEMM_ONEDNN) return 1;
#endif
    return 0;
}

/* auto takes oneDNN where the CPU has AVX-512: on Zen 4 its sgemm ran the
 * layers' GEMMs 12-17% faster than OpenBLAS's SkylakeX kernels (one core,
 * batch 128, 2026-12-07); with AVX2 (Zen 3, bench/README.md's BLAS section)
 * the two were within 2%, and OpenBLAS stays. */
vae_status vae_cpu_gemm_choose_library(vae_cpu_gemm_library *library, char *words, size_t size) {
    const char *setting = getenv("VAE_CPU_GEMM");
    const int automatic = !setting || setting[0] == '\0' || strcmp(setting, "auto") == 0;
    if (automatic || strcmp(setting, "onednn") == 0) {
        if (vae_cpu_gemm_library_available(VAE_CPU_GEMM_ONEDNN) && (!automatic || vae_cpu_has_avx512())) {
#ifdef VAE_HAVE_ONEDNN
            const dnnl_version_t *version = dnnl_version();
            *library = VAE_CPU_GEMM_ONEDNN;
            snprintf(words, size, "GEMMs: oneDNN %d.%d.%d%s", version->major, version->minor, version->patch,
                     automatic ? "" : " (VAE_CPU_GEMM=onednn)");
            return VAE_OK;
#endif
        }
        if (!automatic)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                             "environment variable VAE_CPU_GEMM=onednn: this build has no oneDNN "
                             "(apt-get install libdnnl-dev, then configure again)");
        *library = VAE_CPU_GEMM_OPENBLAS;
        snprintf(words, size, "GEMMs: OpenBLAS (%s)",
                 vae_cpu_gemm_library_available(VAE_CPU_GEMM_ONEDNN) ? "no AVX-512, where oneDNN is no faster"
                                                                      : "built without oneDNN");
        return VAE_OK;
    }
    if (strcmp(setting, "openblas") == 0) {
        *library = VAE_CPU_GEMM_OPENBLAS;
        snprintf(words, size, "GEMMs: OpenBLAS (VAE_CPU_GEMM=openblas)");
        return VAE_OK;
    }
    return vae_error(VAE_ERROR_INVALID_ARGUMENT, "environment variable VAE_CPU_GEMM=%s: expected auto, onednn or openblas",
                     setting);
}

void vae_cpu_gemm_release(vae_cpu_gemm *gemm) {
    free(gemm->rounded);
    gemm->rounded = NULL;
    gemm->rounded_floats = 0;
}
