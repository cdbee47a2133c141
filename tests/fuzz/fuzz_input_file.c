/* See fuzz_input_file.h. /dev/shm keeps the per-input write in memory; /tmp is
 * the fallback where there is no /dev/shm. */
#define _POSIX_C_SOURCE 200809L

#include "fuzz_input_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int input_descriptor = -1;
static char input_path[64];

static void remove_input_file(void) {
    if (input_descriptor >= 0) {
        close(input_descriptor);
        unlink(input_path);
        input_descriptor = -1;
    }
}

static void create_input_file(void) {
    const char *folders[] = {"/dev/shm", "/tmp"};
    for (size_t i = 0; i < sizeof folders / sizeof folders[0]; ++i) {
        snprintf(input_path, sizeof input_path, "%s/vae-fuzz-input-XXXXXX", folders[i]);
        input_descriptor = mkstemp(input_path);
        if (input_descriptor >= 0) {
            atexit(remove_input_file);
            return;
        }
    }
    perror("fuzz: cannot create a temporary input file in /dev/shm or /tmp");
    abort();
}

const char *fuzz_input_file_write(const uint8_t *data, size_t size) {
    if (input_descriptor < 0) create_input_file();
    size_t written = 0;
    while (written < size) {
        ssize_t wrote = pwrite(input_descriptor, data + written, size - written, (off_t)written);
        if (wrote <= 0) {
            perror("fuzz: writing the temporary input file failed");
            abort();
        }
        written += (size_t)wrote;
    }
    if (ftruncate(input_descriptor, (off_t)size) != 0) {
        perror("fuzz: truncating the temporary input file failed");
        abort();
    }
    return input_path;
}
