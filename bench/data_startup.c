/* Start-up cost of an NPY training file: the engine's reader (memory-mapped,
 * the float check once through pread) beside a copy of the values into
 * malloc'd memory (what the reader did before: fread of the whole file, the
 * float check over the copy). Each way runs in its own child process so that
 * their resident memory does not mix; both are timed in the same run.
 *
 *   bench_data_startup FILE.npy [repeats]
 *
 * Prints seconds and the resident memory (VmRSS, VmHWM) each child reached.
 * The page cache is not dropped: run it twice and read the warm numbers, or
 * drop caches yourself for cold ones. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/error.h"
#include "data/dataset.h"
#include "backends/backend.h"

static double seconds_now(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec + 1e-9 * (double)now.tv_nsec;
}

/* VmRSS or VmHWM of this process, in MiB. */
static double status_mib(const char *field) {
    FILE *file = fopen("/proc/self/status", "r");
    if (!file) return -1;
    char line[256];
    double value = -1;
    size_t length = strlen(field);
    while (fgets(line, sizeof line, file))
        if (strncmp(line, field, length) == 0 && line[length] == ':') value = atof(line + length + 1) / 1024.0;
    fclose(file);
    return value;
}

/* The previous reader's way: the header read, then every value fread into
 * malloc'd memory and, for float32, checked there. (The header is read here
 * by a few lines that trust it: the file is the one the bench was given.) */
static int load_by_copy(const char *path, double *checksum) {
    FILE *file = fopen(path, "rb");
    if (!file) return 1;
    unsigned char preamble[12];
    if (fread(preamble, 1, 12, file) != 12) return 1;
    size_t header_end = preamble[6] == 1 ? 10 + (size_t)(preamble[8] | preamble[9] << 8)
                                         : 12 + (size_t)(preamble[8] | preamble[9] << 8 | preamble[10] << 16);
    char header[4096] = {0};
    if (fseek(file, 0, SEEK_SET) != 0 || fread(header, 1, header_end < sizeof header ? header_end : sizeof header - 1, file) == 0)
        return 1;
    int is_float = strstr(header, "<f4") != NULL;
    if (fseek(file, 0, SEEK_END) != 0) return 1;
    size_t bytes = (size_t)ftell(file) - header_end;
    if (fseek(file, (long)header_end, SEEK_SET) != 0) return 1;
    unsigned char *values = malloc(bytes);
    if (!values || fread(values, 1, bytes, file) != bytes) return 1;
    fclose(file);
    if (is_float) {
        const float *floats = (const float *)values;
        for (size_t i = 0; i < bytes / sizeof(float); ++i)
            if (!isfinite(floats[i]) || floats[i] < 0.0f || floats[i] > 1.0f) {
                fprintf(stderr, "bad value at flat index %zu\n", i);
                return 1;
            }
    }
    *checksum = values[bytes / 2];
    free(values);
    return 0;
}

static int run_child(const char *path, int copy) {
    double start = seconds_now(), checksum = 0;
    if (copy) {
        if (load_by_copy(path, &checksum) != 0) return 1;
    } else {
        vae_dataset data;
        if (vae_dataset_load_npy(path, &data) != VAE_OK) {
            fprintf(stderr, "%s\n", vae_last_error());
            return 1;
        }
        /* One example read, as the first training step would. */
        const void *example = vae_dataset_example(&data, data.count / 2);
        checksum = data.dtype == VAE_DTYPE_U8 ? ((const uint8_t *)example)[0] : ((const float *)example)[0];
        vae_dataset_free(&data);
    }
    double seconds = seconds_now() - start;
    printf("%-6s %9.4f s   peak resident %8.1f MiB   (checksum %g)\n", copy ? "copy" : "mapped", seconds,
           status_mib("VmHWM"), checksum);
    fflush(stdout); /* the child leaves by _exit */
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE.npy [repeats]\n", argv[0]);
        return 2;
    }
    int repeats = argc > 2 ? atoi(argv[2]) : 2;
    for (int r = 0; r < repeats; ++r)
        for (int copy = 1; copy >= 0; --copy) {
            fflush(stdout);
            pid_t child = fork();
            if (child == 0) _exit(run_child(argv[1], copy));
            int status = 0;
            if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "%s failed\n", copy ? "copy" : "mapped");
                return 1;
            }
        }
    return 0;
}
