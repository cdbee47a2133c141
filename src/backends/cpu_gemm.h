/* Every GEMM of the CPU backend (linear layers and convolutions) goes through
 * here: oneDNN's sgemm where the build has it and the CPU has AVX-512
 * (12-17% faster than OpenBLAS 0.3.21's at the layers' shapes, batch 128, one
 * Zen 4 core), OpenBLAS's otherwise or when VAE_CPU_GEMM=openblas says so;
 * and for train.precision = bf16 the operands rounded
 * to bfloat16 first (vae_round_to_bfloat16, kernels/vae_math.h) into scratch
 * memory. A product of two bfloat16 values is exact in float, so this is what
 * the CUDA backend's bf16 GEMMs compute (bfloat16 operands, float
 * accumulation) up to the order of the float sums: the CPU stays the GPU's
 * reference in bf16 too. tf32 computes fp32 here (cuBLAS rounds its TF32
 * operands internally, in a way the CPU does not reproduce). */
#ifndef VAE_CPU_GEMM_H
#define VAE_CPU_GEMM_H

#include <stddef.h>

#include "backends/backend.h"

typedef enum vae_cpu_gemm_library { VAE_CPU_GEMM_OPENBLAS, VAE_CPU_GEMM_ONEDNN } vae_cpu_gemm_library;

typedef struct vae_cpu_gemm {
    vae_precision precision;
    vae_cpu_gemm_library library;
    float *rounded; /* both operands' bfloat16 values (bf16 only), grown on demand */
    size_t rounded_floats;
} vae_cpu_gemm;

/* C[m, n] = op(A)[m, k] op(B)[k, n] + beta C, row-major, cblas's arguments
 * (op = transpose when the flag is set). Fails only when bf16 scratch cannot
 * be allocated. */
vae_status vae_cpu_gemm_run(vae_cpu_gemm *gemm, int transpose_a, int transpose_b, int m, int n, int k, const float *a,
                            int lda, const float *b, int ldb, float beta, float *c, int ldc);
void vae_cpu_gemm_release(vae_cpu_gemm *gemm);

/* Whether this build can run the library's GEMMs (OpenBLAS always). */
int vae_cpu_gemm_library_available(vae_cpu_gemm_library library);

/* The library the environment asks for: VAE_CPU_GEMM = auto (or unset:
 * oneDNN where the build has it and the CPU has AVX-512), onednn or openblas; and the device line's
 * words for it ("GEMMs: oneDNN 2.6.3"). An unknown value, or onednn in a
 * build without it, is VAE_ERROR_INVALID_ARGUMENT naming the variable. */
vae_status vae_cpu_gemm_choose_library(vae_cpu_gemm_library *library, char *words, size_t size);

/* The CPU backend's GEMM (backend_cpu.c), for cpu_conv.c. */
vae_cpu_gemm *vae_cpu_backend_gemm(vae_backend *backend);

#endif
