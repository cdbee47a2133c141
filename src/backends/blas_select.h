/* Which OpenBLAS kernels the CPU backend runs, chosen from the CPU's
 * features (never its model name), and what OpenBLAS reports it uses. */
#ifndef VAE_BLAS_SELECT_H
#define VAE_BLAS_SELECT_H

#include <stddef.h>

/* The OPENBLAS_CORETYPE this CPU's features call for ("SkylakeX",
 * "Haswell", "Zen", "Sandybridge"), or NULL where none of these fits and
 * OpenBLAS's own detection is left to choose. */
const char *vae_blas_core_for_this_cpu(void);

/* For a program's main(), first thing: where OpenBLAS (already initialised
 * by the loader) runs other kernels than the CPU's features call for and the
 * user has not set OPENBLAS_CORETYPE, sets it and restarts the program
 * (execv of /proc/self/exe with the same arguments), because OpenBLAS reads
 * the variable only when it is loaded. Returns when nothing needs doing or
 * the restart failed (then OpenBLAS's own choice stays). */
void vae_blas_restart_with_chosen_core(char **argv);

/* "<OpenBLAS's config>, openmp, core Haswell (chosen by CPU features), 2
 * threads" into text: the library, the kernel in use and who chose it. */
void vae_blas_describe(char *text, size_t size);

#endif
