/* vae-engine public C API: the CPU backend's OpenBLAS, for a program's
 * main(). OpenBLAS picks its kernels when the program is loaded; the engine
 * chooses them from the CPU's features (never its model name). */
#ifndef VAE_BLAS_H
#define VAE_BLAS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* First thing in main(): where OpenBLAS (already initialised by the loader)
 * runs other kernels than the CPU's features call for and the user has not
 * set OPENBLAS_CORETYPE, sets it and restarts the program (execv of
 * /proc/self/exe with the same arguments), because OpenBLAS reads the
 * variable only when it is loaded. Returns when nothing needs doing or the
 * restart failed (then OpenBLAS's own choice stays). */
void vae_blas_restart_with_chosen_core(char **argv);

/* "<OpenBLAS's config>, openmp, core Haswell (chosen by CPU features), 2
 * threads" into text: the library, the kernel in use and who chose it. */
void vae_blas_describe(char *text, size_t size);

#ifdef __cplusplus
}
#endif
#endif
