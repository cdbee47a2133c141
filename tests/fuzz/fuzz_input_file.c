/* See fuzz_input_file.h. /dev/shm keeps the per-input write in memory; /tmp is
 * the fallback where there is no /dev/shm. The file's name is removed as soon
 * as it is created, so that nothing is left behind even after a crash. */
#define _POSIX_C_SOURCE 200809L

#include "fuzz_input_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int input_descriptor = -1;
static char input_path[64];

static void remove_input_file(void) {
    unlink(input_path);
}

static void create_input_file(void) {
    const char *folders[] = {"/dev/shm", "/tmp"};
    for (size_t i = 0; i < sizeof folders / sizeof folders[0]; ++i) {
        snprintf(input_path, sizeof input_path, "%s/vae-fuzz-input-XXXXXX", folders[i]);
        input_descriptor = mkstemp(input_path);
        if (input_descriptor < 0) continue;
        /* A crash ends the process without atexit handlers: remove the name
         * now and let the readers reopen the file through /proc. */
        char reopen_path[sizeof input_path];
        snprintf(reopen_path, sizeof reopen_path, "/proc/self/fd/%d", input_descriptor);
        if (access(reopen_path, R_OK) == 0 && unlink(input_path) == 0) {
            memcpy(input_path, reopen_path, sizeof input_path);
            return;
        }
        atexit(remove_input_file); /* no /proc: remove the file at a clean exit */
        return;
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
