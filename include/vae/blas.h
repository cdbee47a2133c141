/* vae-engine public C API: the CPU backend's OpenBLAS. OpenBLAS picks its
 * kernels from the CPU's model name when it is loaded; the engine switches
 * it, before main() and without restarting the program, to the kernels the
 * CPU's features call for (a user's OPENBLAS_CORETYPE wins). Setting
 * VAE_BLAS_SIMULATE_UNKNOWN_CPU=1 makes it behave as on a CPU OpenBLAS does
 * not recognise (OpenBLAS first on its generic kernels), for tests. */
#ifndef VAE_BLAS_H
#define VAE_BLAS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "<OpenBLAS's config>, openmp, core SkylakeX (chosen by CPU features;
 * OpenBLAS chose Prescott), 2 threads" into text: the library, the kernel
 * in use and who chose it. */
void vae_blas_describe(char *text, size_t size);

#ifdef __cplusplus
}
#endif
#endif
