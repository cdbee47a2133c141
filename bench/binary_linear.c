/* The first dense layer of a binarised-input VAE on the CPU backend: its
 * forward and its weight gradient (the backward without dx, as the step
 * runs it for the input layer), by the dense GEMMs (VAE_CPU_BINARY_INPUTS=dense)
 * and by the sums over the set inputs (=sums, src/backends/cpu_binary_linear.c),
 * in milliseconds per forward + weight gradient, at 784 -> 400 and
 * 784 -> 512, batch 128, 29% of the inputs set (binarised Fashion-MNIST's
 * share).
 *
 *   bench_binary_linear [seconds per measurement, default 1]
 *
 * Each figure is the median of 5 rounds. At one thread (OMP_NUM_THREADS=1)
 * the times are the thread's CPU time, so other processes on a shared machine
 * do not inflate them; at more threads they are wall-clock time. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/backend.h"
#include "base/error.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static double seconds_now(void) {
    struct timespec now;
    clock_gettime(thread_count() == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* xorshift64: the bench's inputs, fixed by the seed. */
static uint64_t next_random(uint64_t *state) {
    *state ^= *state << 13, *state ^= *state >> 7, *state ^= *state << 17;
    return *state;
}

typedef struct layer_buffers {
    int rows, in, out;
    float *x, *weight, *bias, *y, *dy, *dweight, *dbias;
} layer_buffers;

static vae_status first_layer(vae_backend *backend, layer_buffers *b) {
    VAE_TRY(vae_backend_linear_forward(backend, b->x, b->weight, b->bias, b->y, b->rows, b->in, b->out));
    return vae_backend_linear_backward(backend, b->x, b->weight, b->dy, NULL, b->dweight, b->dbias, b->rows, b->in,
                                       b->out);
}

/* Median milliseconds per call over 5 rounds of about seconds/5 each. */
static vae_status measure(vae_backend *backend, layer_buffers *b, double seconds, double *milliseconds) {
    VAE_TRY(first_layer(backend, b)); /* warm */
    double rounds[5];
    for (int round = 0; round < 5; ++round) {
        long calls = 0;
        double start = seconds_now(), now = start;
        while (now - start < seconds / 5) {
            VAE_TRY(first_layer(backend, b));
            ++calls;
            now = seconds_now();
        }
        rounds[round] = 1e3 * (now - start) / (double)calls;
    }
    qsort(rounds, 5, sizeof rounds[0], compare_doubles);
    *milliseconds = rounds[2];
    return VAE_OK;
}

static vae_status bench_layer(int rows, int in, int out, double seconds) {
    layer_buffers b = {rows, in, out, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t sizes[] = {(size_t)rows * in, (size_t)out * in, (size_t)out, (size_t)rows * out, (size_t)rows * out,
                      (size_t)out * in, (size_t)out};
    float **targets[] = {&b.x, &b.weight, &b.bias, &b.y, &b.dy, &b.dweight, &b.dbias};
    vae_status status = VAE_OK;
    for (int i = 0; i < 7; ++i) {
        *targets[i] = malloc(sizeof(float) * sizes[i]);
        if (!*targets[i]) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "bench: out of memory");
    }
    uint64_t state = 0x243f6a8885a308d3ULL;
    long long set = 0;
    if (status == VAE_OK) {
        for (size_t i = 0; i < sizes[0]; ++i) {
            b.x[i] = (next_random(&state) % 100) < 29 ? 1.0f : 0.0f;
            set += b.x[i] == 1.0f;
        }
        for (int t = 1; t < 5; ++t)
            for (size_t i = 0; i < sizes[t]; ++i)
                (*targets[t])[i] = (float)((double)(next_random(&state) >> 11) / 9007199254740992.0 - 0.5);
    }
    double dense_ms = 0, sums_ms = 0;
    for (int sums = 0; sums <= 1 && status == VAE_OK; ++sums) {
        setenv("VAE_CPU_BINARY_INPUTS", sums ? "sums" : "dense", 1); /* both paths on any CPU */
        vae_backend *backend = NULL;
        status = vae_backend_create_cpu(&backend);
        unsetenv("VAE_CPU_BINARY_INPUTS");
        if (status == VAE_OK) status = measure(backend, &b, seconds, sums ? &sums_ms : &dense_ms);
        vae_backend_destroy(backend);
    }
    if (status == VAE_OK)
        printf("{\"layer\":\"%dx%d->%d\",\"threads\":%d,\"set_share\":%.3f,\"dense_ms\":%.4f,\"sums_ms\":%.4f,"
               "\"dense_over_sums\":%.2f}\n",
               rows, in, out, thread_count(), (double)set / (double)sizes[0], dense_ms, sums_ms, dense_ms / sums_ms);
    for (int i = 0; i < 7; ++i) free(*targets[i]);
    return status;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(seconds > 0)) {
        fprintf(stderr, "bench_binary_linear: expected a positive number of seconds, got '%s'\n", argv[1]);
        return 2;
    }
    const int outs[] = {400, 512};
    for (int i = 0; i < 2; ++i) {
        vae_status status = bench_layer(128, getenv("BENCH_IN") ? atoi(getenv("BENCH_IN")) : 784, outs[i], seconds);
        if (status != VAE_OK) {
            fprintf(stderr, "bench_binary_linear: %s\n", vae_last_error());
            return 1;
        }
    }
    return 0;
}
