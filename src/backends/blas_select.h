/* Which OpenBLAS kernels the CPU backend runs, chosen from the CPU's
 * features (never its model name), and what OpenBLAS reports it uses. */
#ifndef VAE_BLAS_SELECT_H
#define VAE_BLAS_SELECT_H

#include <stddef.h>

#include "vae/blas.h" /* the part programs use: describe */

/* The OPENBLAS_CORETYPE this CPU's features call for ("SkylakeX",
 * "Haswell", "Zen", "Sandybridge"), or NULL where none of these fits and
 * OpenBLAS's own detection is left to choose. */
const char *vae_blas_core_for_this_cpu(void);

/* Whether the CPU (and the OS, which must save the wide registers) has
 * AVX-512F: where the CPU backend takes its AVX-512 paths (the sums over
 * binary inputs, oneDNN's GEMMs) by default. */
int vae_cpu_has_avx512(void);

#endif
