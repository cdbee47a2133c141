/* The CPU backend's convolution operations on the layers of a Fashion-MNIST
 * conv VAE (batch 128; encoder conv 1->32 and 32->64, k4 s2 p1; the decoder's
 * transposed mirror), forward alone and forward + backward (dx, dweight,
 * dbias), in milliseconds per call. bench/conv_compare.sh runs it beside
 * PyTorch's F.conv2d / F.conv_transpose2d (bench/conv_torch.py) on the same
 * core.
 *
 *   bench_conv_ops [seconds per measurement, default 1] [layer index, default all]
 *
 * Each figure is the median of 5 rounds; a round repeats the call for about
 * a fifth of the time given. Times are the calling thread's CPU time (run it
 * at 1 thread: OMP_NUM_THREADS=1), so that other processes on a shared
 * machine do not inflate them. Prints one line per layer. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "backends/backend.h"
#include "base/error.h"

typedef struct layer {
    const char *name;
    int transposed;
    vae_conv_geometry geometry;
} layer;

/* This thread's CPU time, not the wall clock: on a shared machine the time
 * the thread waits for a core does not count (run at 1 thread). */
static double seconds_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct buffers {
    float *x, *weight, *bias, *y, *dy, *dx, *dweight, *dbias, *workspace;
} buffers;

static vae_status step(vae_backend *backend, const layer *l, int batch, buffers *b, int with_backward) {
    const vae_conv_geometry *g = &l->geometry;
    if (l->transposed) {
        VAE_TRY(vae_backend_conv_transpose2d_forward(backend, g, batch, b->x, b->weight, b->bias, b->y, b->workspace));
        if (with_backward)
            VAE_TRY(vae_backend_conv_transpose2d_backward(backend, g, batch, b->x, b->weight, b->dy, b->dx,
                                                          b->dweight, b->dbias, b->workspace));
    } else {
        VAE_TRY(vae_backend_conv2d_forward(backend, g, batch, b->x, b->weight, b->bias, b->y, b->workspace));
        if (with_backward)
            VAE_TRY(vae_backend_conv2d_backward(backend, g, batch, b->x, b->weight, b->dy, b->dx, b->dweight,
                                                b->dbias, b->workspace));
    }
    return VAE_OK;
}

/* Milliseconds per call: median of 5 rounds of about seconds/5 each. */
static double measure(vae_backend *backend, const layer *l, int batch, buffers *b, int with_backward,
                      double seconds) {
    double rounds[5];
    if (step(backend, l, batch, b, with_backward) != VAE_OK) return -1; /* warm-up */
    for (int r = 0; r < 5; ++r) {
        int calls = 0;
        double start = seconds_now(), elapsed = 0;
        while (calls < 2 || elapsed < seconds / 5) {
            if (step(backend, l, batch, b, with_backward) != VAE_OK) return -1;
            ++calls;
            elapsed = seconds_now() - start;
        }
        rounds[r] = elapsed / calls * 1e3;
    }
    qsort(rounds, 5, sizeof rounds[0], compare_doubles);
    return rounds[2];
}

static float *random_floats(size_t count, unsigned int *seed) {
    float *values = malloc(sizeof(float) * (count ? count : 1));
    if (!values) return NULL;
    for (size_t i = 0; i < count; ++i) values[i] = (float)rand_r(seed) / (float)RAND_MAX - 0.5f;
    return values;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(seconds > 0)) seconds = 1.0;
    const int batch = 128;
    const layer layers[] = {
        {"conv2d 1->32 28x28 k4 s2 p1", 0, {1, 28, 28, 32, 14, 14, 4, 2, 1}},
        {"conv2d 32->64 14x14 k4 s2 p1", 0, {32, 14, 14, 64, 7, 7, 4, 2, 1}},
        {"conv_transpose2d 64->32 7x7 k4 s2 p1", 1, {64, 7, 7, 32, 14, 14, 4, 2, 1}},
        {"conv_transpose2d 32->1 14x14 k4 s2 p1", 1, {32, 14, 14, 1, 28, 28, 4, 2, 1}},
    };
    vae_backend *backend = NULL;
    if (vae_backend_create_cpu(&backend) != VAE_OK) {
        fprintf(stderr, "bench_conv_ops: %s\n", vae_last_error());
        return 1;
    }
    printf("# engine %s, batch %d, ms of thread CPU time per call (median of 5 rounds)\n", backend->device_name, batch);
    printf("%-40s %10s %14s\n", "layer", "forward", "forward+back");
    unsigned int seed = 12345;
    const int only = argc > 2 ? atoi(argv[2]) : -1;
    for (size_t i = 0; i < sizeof layers / sizeof layers[0]; ++i) {
        if (only >= 0 && (size_t)only != i) continue;
        const vae_conv_geometry *g = &layers[i].geometry;
        const size_t x_count = (size_t)batch * g->in_channels * g->in_height * g->in_width;
        const size_t y_count = (size_t)batch * g->out_channels * g->out_height * g->out_width;
        const size_t weight_count = (size_t)g->in_channels * g->out_channels * g->kernel_size * g->kernel_size;
        buffers b = {random_floats(x_count, &seed),      random_floats(weight_count, &seed),
                     random_floats(g->out_channels, &seed), random_floats(y_count, &seed),
                     random_floats(y_count, &seed),      random_floats(x_count, &seed),
                     random_floats(weight_count, &seed), random_floats(g->out_channels, &seed),
                     random_floats(vae_conv_workspace_floats(g, batch), &seed)};
        if (!b.x || !b.weight || !b.bias || !b.y || !b.dy || !b.dx || !b.dweight || !b.dbias || !b.workspace) {
            fprintf(stderr, "bench_conv_ops: out of memory\n");
            return 1;
        }
        const double forward = measure(backend, &layers[i], batch, &b, 0, seconds);
        const double both = measure(backend, &layers[i], batch, &b, 1, seconds);
        if (forward < 0 || both < 0) {
            fprintf(stderr, "bench_conv_ops: %s\n", vae_last_error());
            return 1;
        }
        printf("%-40s %10.3f %14.3f\n", layers[i].name, forward, both);
        free(b.x); free(b.weight); free(b.bias); free(b.y); free(b.dy); free(b.dx); free(b.dweight); free(b.dbias);
        free(b.workspace);
    }
    vae_backend_destroy(backend);
    return 0;
}
