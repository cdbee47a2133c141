/* NPY writer, written from NumPy's format description: magic "\x93NUMPY",
 * version 1.0, a little-endian uint16 header length, a Python dict literal
 * padded with spaces and a newline so that the data start at a multiple of
 * 64 bytes, then the raw little-endian values. */
#define _POSIX_C_SOURCE 200809L

#include "vae/output.h"
#include "base/error.h"
#include "io/atomic_file.h"

#include <stdio.h>
#include <string.h>

#define NPY_ALIGNMENT 64
#define NPY_PREFIX_BYTES 10 /* magic (6), version (2), header length (2) */
#define NPY_CHUNK_VALUES 4096

/* Writes count 4-byte values as little-endian, whatever the host order. */
static void write_little_endian_words(vae_atomic_file *file, const void *values, size_t count) {
    const uint32_t *words = values;
    unsigned char chunk[4 * NPY_CHUNK_VALUES];
    for (size_t start = 0; start < count; start += NPY_CHUNK_VALUES) {
        size_t n = count - start < NPY_CHUNK_VALUES ? count - start : NPY_CHUNK_VALUES;
        for (size_t i = 0; i < n; ++i) {
            uint32_t word;
            memcpy(&word, words + start + i, sizeof word);
            chunk[4 * i + 0] = (unsigned char)(word & 0xff);
            chunk[4 * i + 1] = (unsigned char)((word >> 8) & 0xff);
            chunk[4 * i + 2] = (unsigned char)((word >> 16) & 0xff);
            chunk[4 * i + 3] = (unsigned char)((word >> 24) & 0xff);
        }
        if (vae_atomic_file_write(file, chunk, 4 * n) != 0) return;
    }
}

/* descr: "<f4" or "<i4"; shape: Python tuple text such as "(3, 2)" or "(3,)". */
static vae_status write_npy(const char *path, const char *descr, const char *shape, const void *values,
                            size_t count) {
    if (!path || !path[0]) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "NPY: empty output path");
    char header[256];
    int length = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr,
                          shape);
    if (length < 0 || length + NPY_ALIGNMENT + 1 >= (int)sizeof header)
        return vae_error(VAE_ERROR_INTERNAL, "%s: NPY header too long", path);
    /* Pad with spaces; the newline ends the header. */
    int total = NPY_PREFIX_BYTES + length + 1;
    int padding = (NPY_ALIGNMENT - total % NPY_ALIGNMENT) % NPY_ALIGNMENT;
    memset(header + length, ' ', (size_t)padding);
    length += padding;
    header[length++] = '\n';
    unsigned char prefix[NPY_PREFIX_BYTES] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                                              (unsigned char)(length & 0xff), (unsigned char)(length >> 8)};

    vae_atomic_file file;
    VAE_TRY(vae_atomic_file_open(&file, path, "NPY file"));
    vae_atomic_file_write(&file, prefix, sizeof prefix);
    vae_atomic_file_write(&file, header, (size_t)length);
    write_little_endian_words(&file, values, count);
    return vae_atomic_file_commit(&file);
}

vae_status vae_npy_write_f32(const char *path, const float *values, long rows, long cols) {
    if ((!values && rows > 0 && cols > 0) || rows < 0 || cols < 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: bad NPY array (%ld x %ld): expected sizes >= 0", path ? path : "",
                         rows, cols);
    char shape[64];
    snprintf(shape, sizeof shape, "(%ld, %ld)", rows, cols);
    return write_npy(path, "<f4", shape, values, (size_t)rows * (size_t)cols);
}

vae_status vae_npy_write_i32(const char *path, const int32_t *values, long count) {
    if ((!values && count > 0) || count < 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: bad NPY array (%ld values): expected a size >= 0",
                         path ? path : "", count);
    char shape[64];
    snprintf(shape, sizeof shape, "(%ld,)", count);
    return write_npy(path, "<i4", shape, values, (size_t)count);
}
