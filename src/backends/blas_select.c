/* OpenBLAS picks its kernels in its own initialiser, from the CPU's model
 * number; a CPU it does not know (a virtual machine's "Intel Xeon
 * Processor", an AMD Zen 4 that OpenBLAS 0.3.21 predates) gets older
 * kernels, up to 3x slower. Every DYNAMIC_ARCH build exports the pair that
 * initialiser uses (gotoblas_dynamic_quit, gotoblas_dynamic_init: drop the
 * kernel table, choose one again, reading OPENBLAS_CORETYPE), so a
 * constructor here, which runs after OpenBLAS's own (a shared library is
 * initialised before the program that needs it) and before main(), switches
 * to the kernels the CPU's features call for. Nothing restarts: a launcher
 * (mpirun, srun, a debugger, a profiler) keeps the process it started.
 * The two functions are weak references, so another BLAS links too and is
 * left as it is. A user's OPENBLAS_CORETYPE is always left alone. */
#include "backends/blas_select.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#ifdef _OPENMP
#include <omp.h>
#endif

void gotoblas_dynamic_init(void) __attribute__((weak));
void gotoblas_dynamic_quit(void) __attribute__((weak));

/* Makes the library behave as on a CPU OpenBLAS does not recognise: OpenBLAS
 * is first set to its generic Prescott kernels, then the switch happens as it
 * would there. For tests on machines whose CPU OpenBLAS knows. */
#define SIMULATE_UNKNOWN_CPU "VAE_BLAS_SIMULATE_UNKNOWN_CPU"

static char openblas_choice[32];  /* the core OpenBLAS chose, when this file switched away from it */
static int user_set_core;         /* OPENBLAS_CORETYPE was set when the program started */

int vae_cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
#else
    return 0;
#endif
}

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

/* OpenBLAS chooses its kernel table again, as OPENBLAS_CORETYPE = core says.
 * The variable is removed afterwards, so child processes see the
 * environment the program was given. Returns 0 when OpenBLAS now runs core. */
static int openblas_switch_to(const char *core) {
    if (!gotoblas_dynamic_init || !gotoblas_dynamic_quit) return -1; /* not OpenBLAS DYNAMIC_ARCH */
    if (setenv("OPENBLAS_CORETYPE", core, 1) != 0) return -1;
    gotoblas_dynamic_quit();
    gotoblas_dynamic_init();
    unsetenv("OPENBLAS_CORETYPE");
    const char *running = openblas_get_corename();
    return running && strcasecmp(running, core) == 0 ? 0 : -1;
}

/* Runs before main(), with one thread: no BLAS call can be in flight. */
__attribute__((constructor)) static void choose_blas_core_for_this_cpu(void) {
    const char *variable = getenv("OPENBLAS_CORETYPE");
    user_set_core = variable && *variable;
    if (user_set_core) return;
    const char *simulate = getenv(SIMULATE_UNKNOWN_CPU);
    if (simulate && *simulate && strcmp(simulate, "0") != 0) openblas_switch_to("Prescott");
    const char *core = vae_blas_core_for_this_cpu();
    const char *running = openblas_get_corename();
    if (!core || (running && strcasecmp(running, core) == 0)) return;
    char chosen[sizeof openblas_choice];
    snprintf(chosen, sizeof chosen, "%s", running ? running : "?");
    if (openblas_switch_to(core) == 0) {
        memcpy(openblas_choice, chosen, sizeof chosen);
    } else if (running) {
        openblas_switch_to(running); /* the core could not be had: back to OpenBLAS's choice */
    }
}

void vae_blas_describe(char *text, size_t size) {
    const char *config = openblas_get_config();
    int parallel = openblas_get_parallel(); /* 0 sequential, 1 pthreads, 2 OpenMP */
    const char *running = openblas_get_corename();
    const char *wanted = vae_blas_core_for_this_cpu();
    char who[96];
    if (user_set_core)
        snprintf(who, sizeof who, "set by OPENBLAS_CORETYPE");
    else if (openblas_choice[0])
        snprintf(who, sizeof who, "chosen by CPU features; OpenBLAS chose %s", openblas_choice);
    else if (wanted && running && strcasecmp(running, wanted) == 0)
        snprintf(who, sizeof who, "chosen by CPU features");
    else
        snprintf(who, sizeof who, "OpenBLAS's own choice");
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
