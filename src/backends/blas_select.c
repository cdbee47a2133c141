/* OpenBLAS picks its kernels when it is loaded, from the CPU's model number;
 * a CPU it does not know (a virtual machine's "Intel Xeon Processor", a model
 * newer than the library) gets the generic SSE3 (Prescott) kernels, about 3x
 * slower. It reads OPENBLAS_CORETYPE only in its own initialiser, which the
 * loader runs before main() (and before the C library's environment can be
 * changed from the executable's own early hooks), so the vae program
 * restarts itself once with the variable set from the CPU's features when
 * OpenBLAS chose otherwise. A user's OPENBLAS_CORETYPE is always left alone. */
#include "backends/blas_select.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Marks a restart made here, so the report can tell it from a user's choice. */
#define RESTART_MARKER "VAE_BLAS_CORE_CHOSEN_BY_FEATURES"

const char *vae_blas_core_for_this_cpu(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    /* __builtin_cpu_supports also checks that the OS saves the wide
     * registers (XGETBV), so a kernel chosen here can run. */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512cd"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return __builtin_cpu_is("amd") ? "Zen" : "Haswell"; /* same sgemm kernel, each one's blocking */
    if (__builtin_cpu_supports("avx")) return "Sandybridge";
#endif
    return NULL;
}

static int user_set_core(void) {
    const char *variable = getenv("OPENBLAS_CORETYPE");
    return variable && *variable && !getenv(RESTART_MARKER);
}

void vae_blas_restart_with_chosen_core(char **argv) {
    if (user_set_core() || getenv(RESTART_MARKER)) return; /* the user's choice, or restarted already */
    const char *core = vae_blas_core_for_this_cpu();
    const char *running = openblas_get_corename();
    if (!core || (running && strcasecmp(running, core) == 0)) return;
    if (setenv("OPENBLAS_CORETYPE", core, 1) != 0 || setenv(RESTART_MARKER, core, 1) != 0) return;
    fflush(NULL);
    execv("/proc/self/exe", argv);
    /* No restart (no /proc?): carry on with OpenBLAS's choice, and leave the
     * environment of any child as it was. */
    unsetenv("OPENBLAS_CORETYPE");
    unsetenv(RESTART_MARKER);
}

void vae_blas_describe(char *text, size_t size) {
    const char *config = openblas_get_config();
    int parallel = openblas_get_parallel(); /* 0 sequential, 1 pthreads, 2 OpenMP */
    const char *running = openblas_get_corename();
    const char *wanted = vae_blas_core_for_this_cpu();
    const char *who = user_set_core() ? "set by OPENBLAS_CORETYPE"
                      : wanted && running && strcasecmp(running, wanted) == 0 ? "chosen by CPU features"
                                                                                 : "OpenBLAS's own choice";
#ifdef _OPENMP
    /* the OpenMP build follows OpenMP's thread count at each call */
    int threads = parallel == 2 ? omp_get_max_threads() : openblas_get_num_threads();
#else
    int threads = openblas_get_num_threads();
#endif
    snprintf(text, size, "%s, %s, core %s (%s), %d threads", config ? config : "OpenBLAS",
             parallel == 2 ? "openmp" : parallel == 1 ? "pthreads" : "sequential", running ? running : "?", who,
             threads);
}
