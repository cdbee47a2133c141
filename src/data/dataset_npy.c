/* NPY reader (NumPy's .npy format), written from the format description:
 *   "\x93NUMPY", major, minor, header length (uint16 LE for 1.0, uint32 LE for
 *   2.0 and 3.0), then an ASCII/UTF-8 Python dict literal
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), } padded with
 *   spaces and a newline, then the raw C-order values.
 * Only what the engine needs is accepted: little-endian uint8 or float32
 * data, uint8/int32/int64 labels. Every field and size is checked before use
 * and the file must hold exactly the data the header describes. */
#define _DEFAULT_SOURCE /* pread, mmap, madvise */

#include "data/dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backends/backend.h"
#include "base/error.h"

/* Bytes of data one file may describe: offsets fit off_t and size_t, and a
 * product of dimensions that wraps around is caught before it is trusted. */
#define NPY_MAX_BYTES ((uint64_t)INT64_MAX)
/* Examples one data set may hold: the epoch's permutation holds int32
 * indices (dataset.h). */
#define NPY_MAX_EXAMPLES ((uint64_t)INT32_MAX)
/* Values per example: the backends' dim is an int. */
#define NPY_MAX_EXAMPLE_VALUES ((uint64_t)INT_MAX)
/* NumPy writes headers of a few hundred bytes; a larger one is corrupt. */
#define NPY_MAX_HEADER_BYTES ((uint32_t)1 << 20)
#define NPY_MAX_RANK 8

enum npy_element { NPY_ELEMENT_U8, NPY_ELEMENT_F32, NPY_ELEMENT_I32, NPY_ELEMENT_I64 };

typedef struct npy_header {
    int element;          /* enum npy_element */
    size_t element_bytes;
    int rank;
    uint64_t shape[NPY_MAX_RANK];
    uint64_t values;      /* product of shape */
} npy_header;

/* ------------------------------------------------------------ dict parser */

typedef struct header_cursor {
    const char *text;
    size_t length, position;
    const char *path;
} header_cursor;

static void skip_spaces(header_cursor *cursor) {
    while (cursor->position < cursor->length &&
           (cursor->text[cursor->position] == ' ' || cursor->text[cursor->position] == '\t' ||
            cursor->text[cursor->position] == '\n' || cursor->text[cursor->position] == '\r'))
        cursor->position++;
}

static int peek(header_cursor *cursor) {
    skip_spaces(cursor);
    return cursor->position < cursor->length ? (unsigned char)cursor->text[cursor->position] : -1;
}

static int accept_char(header_cursor *cursor, char wanted) {
    if (peek(cursor) != (unsigned char)wanted) return 0;
    cursor->position++;
    return 1;
}

static vae_status syntax_error(header_cursor *cursor, const char *expected) {
    return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: expected %s at character %zu of the header dict", cursor->path,
                     expected, cursor->position);
}

/* A quoted Python string without escapes (NumPy's keys and dtypes have none). */
static vae_status parse_string(header_cursor *cursor, char *out, size_t out_size) {
    int quote = peek(cursor);
    if (quote != '\'' && quote != '"') return syntax_error(cursor, "a quoted string");
    cursor->position++;
    size_t used = 0;
    while (cursor->position < cursor->length && cursor->text[cursor->position] != (char)quote) {
        if (cursor->text[cursor->position] == '\\') return syntax_error(cursor, "a string without escapes");
        if (used + 1 >= out_size) return syntax_error(cursor, "a shorter string");
        out[used++] = cursor->text[cursor->position++];
    }
    if (cursor->position >= cursor->length) return syntax_error(cursor, "a closing quote");
    cursor->position++;
    out[used] = '\0';
    return VAE_OK;
}

static vae_status parse_bool(header_cursor *cursor, int *out) {
    skip_spaces(cursor);
    const char *here = cursor->text + cursor->position;
    size_t left = cursor->length - cursor->position;
    if (left >= 4 && memcmp(here, "True", 4) == 0) {
        *out = 1;
        cursor->position += 4;
    } else if (left >= 5 && memcmp(here, "False", 5) == 0) {
        *out = 0;
        cursor->position += 5;
    } else {
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'fortran_order' must be True or False", cursor->path);
    }
    return VAE_OK;
}

/* (d0, d1, ...) with an optional trailing comma; "(N,)" is rank 1. */
static vae_status parse_shape(header_cursor *cursor, npy_header *header) {
    if (!accept_char(cursor, '('))
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' must be a tuple like (N, D)", cursor->path);
    header->rank = 0;
    for (;;) {
        if (accept_char(cursor, ')')) break;
        int next = peek(cursor);
        if (next == '-')
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' has a negative dimension", cursor->path);
        if (next < '0' || next > '9')
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' must be a tuple of integers, found '%c'",
                             cursor->path, next < 0 ? '?' : next);
        if (header->rank == NPY_MAX_RANK)
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' has more than %d dimensions", cursor->path,
                             NPY_MAX_RANK);
        uint64_t value = 0;
        while (cursor->position < cursor->length && cursor->text[cursor->position] >= '0' &&
               cursor->text[cursor->position] <= '9') {
            value = value * 10 + (uint64_t)(cursor->text[cursor->position] - '0');
            if (value > NPY_MAX_BYTES) /* checked each digit, so value * 10 + 9 cannot wrap */
                return vae_error(VAE_ERROR_BAD_INPUT,
                                 "%s: NPY header: 'shape' dimension %d is larger than %llu (corrupt header?)",
                                 cursor->path, header->rank, (unsigned long long)NPY_MAX_BYTES);
            cursor->position++;
        }
        header->shape[header->rank++] = value;
        if (accept_char(cursor, ',')) continue;
        if (accept_char(cursor, ')')) break;
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' tuple is malformed (expected ',' or ')')",
                         cursor->path);
    }
    return VAE_OK;
}

static vae_status parse_descr(const char *path, const char *descr, npy_header *header) {
    if (strcmp(descr, "|u1") == 0 || strcmp(descr, "u1") == 0 || strcmp(descr, "<u1") == 0) {
        header->element = NPY_ELEMENT_U8;
        header->element_bytes = 1;
    } else if (strcmp(descr, "<f4") == 0) {
        header->element = NPY_ELEMENT_F32;
        header->element_bytes = 4;
    } else if (strcmp(descr, "<i4") == 0) {
        header->element = NPY_ELEMENT_I32;
        header->element_bytes = 4;
    } else if (strcmp(descr, "<i8") == 0) {
        header->element = NPY_ELEMENT_I64;
        header->element_bytes = 8;
    } else if (descr[0] == '>') {
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'descr' '%s' is big-endian; save little-endian data",
                         path, descr);
    } else {
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: unsupported 'descr' '%s'", path, descr);
    }
    return VAE_OK;
}

static vae_status parse_header_dict(const char *path, const char *text, size_t length, npy_header *header) {
    header_cursor cursor = {text, length, 0, path};
    int have_descr = 0, have_order = 0, have_shape = 0, fortran_order = 0;
    char descr[32];
    if (!accept_char(&cursor, '{')) return syntax_error(&cursor, "'{'");
    for (;;) {
        if (accept_char(&cursor, '}')) break;
        char key[32];
        VAE_TRY(parse_string(&cursor, key, sizeof key));
        if (!accept_char(&cursor, ':')) return syntax_error(&cursor, "':' after a key");
        if (strcmp(key, "descr") == 0 && !have_descr) {
            VAE_TRY(parse_string(&cursor, descr, sizeof descr));
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
            VAE_TRY(parse_bool(&cursor, &fortran_order));
            have_order = 1;
        } else if (strcmp(key, "shape") == 0 && !have_shape) {
            VAE_TRY(parse_shape(&cursor, header));
            have_shape = 1;
        } else {
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: unexpected or repeated key '%s'", path, key);
        }
        if (accept_char(&cursor, ',')) continue;
        if (accept_char(&cursor, '}')) break;
        return syntax_error(&cursor, "',' or '}'");
    }
    if (peek(&cursor) != -1) return syntax_error(&cursor, "the end of the header after '}'");
    if (!have_descr || !have_order || !have_shape)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: missing key '%s'", path,
                         !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    if (fortran_order)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: NPY header: 'fortran_order' is True; save C-order data (numpy.ascontiguousarray)", path);
    VAE_TRY(parse_descr(path, descr, header));
    header->values = 1;
    for (int i = 0; i < header->rank; ++i) {
        if (header->shape[i] == 0)
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' dimension %d is zero%s", path, i,
                             i == 0 ? " (the file holds no examples)" : "");
        /* Checked before multiplying, so the product never wraps. */
        if (header->values > NPY_MAX_BYTES / header->element_bytes / header->shape[i])
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' holds more than %llu bytes of data", path,
                             (unsigned long long)NPY_MAX_BYTES);
        header->values *= header->shape[i];
    }
    return VAE_OK;
}

/* ------------------------------------------------------------- file level */

/* An open NPY file whose preamble and header have been checked. */
typedef struct npy_file {
    int descriptor;
    const char *path;
    npy_header header;
    uint64_t data_offset; /* where the values start */
    uint64_t data_bytes;
    uint64_t file_bytes;
} npy_file;

static int host_is_little_endian(void) {
    const uint16_t probe = 1;
    return *(const unsigned char *)&probe == 1;
}

/* Reads exactly bytes at offset (pread, so the file position never matters). */
static vae_status read_at(const npy_file *file, void *buffer, size_t bytes, uint64_t offset, const char *what) {
    unsigned char *destination = buffer;
    size_t got = 0;
    while (got < bytes) {
        ssize_t count = pread(file->descriptor, destination + got, bytes - got, (off_t)(offset + got));
        if (count < 0) {
            if (errno == EINTR) continue;
            return vae_error(VAE_ERROR_IO, "%s: read failed: %s", file->path, strerror(errno));
        }
        if (count == 0)
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: expected %zu bytes of %s, found %zu", file->path,
                             bytes, what, got);
        got += (size_t)count;
    }
    return VAE_OK;
}

static void close_npy(npy_file *file) {
    if (file->descriptor >= 0) close(file->descriptor); /* read-only: nothing is lost if closing fails */
    file->descriptor = -1;
}

/* Opens the file and checks the preamble, the header and that the file holds
 * exactly the data the header describes. */
static vae_status open_npy(const char *path, npy_file *file) {
    memset(file, 0, sizeof *file);
    file->path = path;
    errno = 0;
    file->descriptor = open(path, O_RDONLY | O_CLOEXEC);
    if (file->descriptor < 0) return vae_error(VAE_ERROR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat info;
    if (fstat(file->descriptor, &info) != 0)
        return vae_error(VAE_ERROR_IO, "%s: cannot read its size: %s", path, strerror(errno));
    if (!S_ISREG(info.st_mode)) return vae_error(VAE_ERROR_IO, "%s: is not a regular file", path);
    file->file_bytes = (uint64_t)info.st_size;

    unsigned char preamble[12];
    if (file->file_bytes < 10)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: expected at least 10 bytes of NPY preamble, found %llu",
                         path, (unsigned long long)file->file_bytes);
    VAE_TRY(read_at(file, preamble, 8, 0, "NPY preamble"));
    if (memcmp(preamble, "\x93NUMPY", 6) != 0)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: bad magic: not an NPY file (expected \\x93NUMPY)", path);
    int major = preamble[6], minor = preamble[7];
    size_t length_bytes;
    if (major == 1 && minor == 0) length_bytes = 2;
    else if ((major == 2 || major == 3) && minor == 0) length_bytes = 4;
    else return vae_error(VAE_ERROR_BAD_INPUT, "%s: unsupported NPY version %d.%d (expected 1.0, 2.0 or 3.0)", path,
                          major, minor);
    VAE_TRY(read_at(file, preamble + 8, length_bytes, 8, "NPY header length"));
    uint32_t header_length = (uint32_t)preamble[8] | ((uint32_t)preamble[9] << 8);
    if (length_bytes == 4) header_length |= ((uint32_t)preamble[10] << 16) | ((uint32_t)preamble[11] << 24);
    uint64_t header_end = 8 + length_bytes + (uint64_t)header_length;
    if (header_end > file->file_bytes)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header length %u runs past the end of the file (%llu bytes)",
                         path, header_length, (unsigned long long)file->file_bytes);
    if (header_length > NPY_MAX_HEADER_BYTES)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header length %u is larger than %u bytes", path, header_length,
                         NPY_MAX_HEADER_BYTES);

    char *text = malloc((size_t)header_length + 1);
    if (text == NULL) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the NPY header", path);
    vae_status status = read_at(file, text, header_length, 8 + length_bytes, "NPY header");
    if (status == VAE_OK) {
        text[header_length] = '\0';
        if (memchr(text, '\0', header_length) != NULL)
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header contains a NUL byte", path);
    }
    if (status == VAE_OK) status = parse_header_dict(path, text, header_length, &file->header);
    free(text);
    VAE_TRY(status);

    file->data_offset = header_end;
    file->data_bytes = file->header.values * file->header.element_bytes; /* bounded by NPY_MAX_BYTES */
    uint64_t available = file->file_bytes - header_end;
    if (available < file->data_bytes)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: expected %llu bytes of data, found %llu", path,
                         (unsigned long long)file->data_bytes, (unsigned long long)available);
    if (available > file->data_bytes)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: %llu trailing bytes after the %llu bytes of data that the NPY header describes", path,
                         (unsigned long long)(available - file->data_bytes), (unsigned long long)file->data_bytes);
    if (file->data_bytes > SIZE_MAX)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: %llu bytes of data do not fit this host's address space", path,
                         (unsigned long long)file->data_bytes);
    return VAE_OK;
}

/* A malloc'd copy of the values, byte-swapped on a big-endian host. */
static vae_status copy_values(const npy_file *file, void **out) {
    *out = NULL;
    void *buffer = malloc(file->data_bytes > 0 ? (size_t)file->data_bytes : 1);
    if (buffer == NULL)
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %llu bytes of data", file->path,
                         (unsigned long long)file->data_bytes);
    vae_status status = read_at(file, buffer, (size_t)file->data_bytes, file->data_offset, "data");
    if (status != VAE_OK) {
        free(buffer);
        return status;
    }
    size_t element_bytes = file->header.element_bytes;
    if (element_bytes > 1 && !host_is_little_endian()) {
        unsigned char *bytes = buffer;
        for (uint64_t i = 0; i < file->header.values; ++i) {
            unsigned char *element = bytes + i * element_bytes;
            for (size_t a = 0, b = element_bytes - 1; a < b; ++a, --b) {
                unsigned char swap = element[a];
                element[a] = element[b];
                element[b] = swap;
            }
        }
    }
    *out = buffer;
    return VAE_OK;
}

/* The values in memory: the file mapped read-only and shared with the page
 * cache (nothing is copied; pages are read when an example is first used),
 * or a copy where mapping is impossible (a big-endian host must swap bytes;
 * some file systems cannot map). */
static vae_status place_values(const npy_file *file, vae_dataset_storage *storage, const void **values) {
    if (file->header.element_bytes == 1 || host_is_little_endian()) {
        void *mapping = mmap(NULL, (size_t)file->file_bytes, PROT_READ, MAP_SHARED, file->descriptor, 0);
        if (mapping != MAP_FAILED) {
            /* Training reads examples in a random order: no read-around, so
             * that a row read costs its own pages, not megabytes around it
             * (which would also count as this process's resident memory). */
            (void)madvise(mapping, (size_t)file->file_bytes, MADV_RANDOM); /* advice only: failure is harmless */
            *storage = (vae_dataset_storage){mapping, (size_t)file->file_bytes, 1};
            *values = (const unsigned char *)mapping + file->data_offset;
            return VAE_OK;
        }
    }
    void *copy = NULL;
    VAE_TRY(copy_values(file, &copy));
    *storage = (vae_dataset_storage){copy, (size_t)file->data_bytes, 0};
    *values = copy;
    return VAE_OK;
}

/* The engine expects float data in [0,1]: names the first value that is not,
 * by file, flat index, example and position. */
static vae_status check_float_values(const char *path, const float *values, uint64_t count, uint64_t first_index,
                                     uint64_t dim) {
    for (uint64_t k = 0; k < count; ++k) {
        float value = values[k];
        if (isfinite(value) && value >= 0.0f && value <= 1.0f) continue;
        uint64_t i = first_index + k;
        if (!isfinite(value))
            return vae_error(VAE_ERROR_BAD_INPUT,
                             "%s: value at flat index %llu (example %llu, position %llu) is %s; data must be "
                             "finite and in [0,1]",
                             path, (unsigned long long)i, (unsigned long long)(i / dim), (unsigned long long)(i % dim),
                             isnan(value) ? "NaN" : "infinite");
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: value %g at flat index %llu (example %llu, position %llu) is outside [0,1]", path,
                         (double)value, (unsigned long long)i, (unsigned long long)(i / dim),
                         (unsigned long long)(i % dim));
    }
    return VAE_OK;
}

/* Bytes read per piece by the float check; the pieces go through a small
 * buffer (pread, not the mapping), so checking a file once does not leave it
 * resident in the process. */
#define NPY_CHECK_PIECE_BYTES ((size_t)8 << 20)

static vae_status check_float_file(const npy_file *file, const vae_dataset_storage *storage, const void *values) {
    uint64_t dim = file->header.values / file->header.shape[0];
    if (!storage->mapped) return check_float_values(file->path, values, file->header.values, 0, dim);
    float *piece = malloc(NPY_CHECK_PIECE_BYTES);
    if (piece == NULL) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the check buffer", file->path);
    vae_status status = VAE_OK;
    const uint64_t piece_values = NPY_CHECK_PIECE_BYTES / sizeof(float);
    for (uint64_t first = 0; status == VAE_OK && first < file->header.values; first += piece_values) {
        uint64_t count = file->header.values - first < piece_values ? file->header.values - first : piece_values;
        status = read_at(file, piece, (size_t)count * sizeof(float), file->data_offset + first * sizeof(float), "data");
        if (status == VAE_OK) status = check_float_values(file->path, piece, count, first, dim);
    }
    free(piece);
    return status;
}

/* Largest s with s*s <= value, exact for the int range. */
static int integer_square_root(int value) {
    int root = (int)sqrt((double)value);
    while (root > 0 && (long long)root * root > value) --root;
    while ((long long)(root + 1) * (root + 1) <= value) ++root;
    return root;
}

static const char *element_name(int element) {
    switch (element) {
    case NPY_ELEMENT_U8: return "uint8 ('|u1')";
    case NPY_ELEMENT_F32: return "float32 ('<f4')";
    case NPY_ELEMENT_I32: return "int32 ('<i4')";
    default: return "int64 ('<i8')";
    }
}

/* The shape of a data file as text, "(N, 28, 28)" (N written as N). */
static void shape_text(const npy_header *header, char *out, size_t size) {
    size_t used = (size_t)snprintf(out, size, "(%s", header->rank > 0 ? "N" : "");
    for (int i = 1; i < header->rank && used < size; ++i)
        used += (size_t)snprintf(out + used, size - used, ", %llu", (unsigned long long)header->shape[i]);
    if (used < size) snprintf(out + used, size - used, header->rank == 1 ? ",)" : ")");
}

/* Checks that a data file's header fits the engine. */
static vae_status check_data_header(const npy_file *file) {
    const npy_header *header = &file->header;
    if (header->element != NPY_ELEMENT_U8 && header->element != NPY_ELEMENT_F32)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: NPY 'descr' must be '|u1' or '<f4' for data (int types are for labels)", file->path);
    if (header->rank < 2 || header->rank > 4) {
        char shape[200];
        shape_text(header, shape, sizeof shape);
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: NPY 'shape' is %s, %d dimensions: expected (N, D), (N, rows, cols) or (N, channels, "
                         "rows, cols)",
                         file->path, shape, header->rank);
    }
    uint64_t dim = header->values / header->shape[0];
    if (dim > NPY_MAX_EXAMPLE_VALUES || header->shape[1] > NPY_MAX_EXAMPLE_VALUES)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: examples of %llu values: at most %llu values per example", file->path,
                         (unsigned long long)dim, (unsigned long long)NPY_MAX_EXAMPLE_VALUES);
    if (header->shape[0] > NPY_MAX_EXAMPLES)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: %llu examples: at most %llu (the epoch's shuffle holds 32-bit indices)", file->path,
                         (unsigned long long)header->shape[0], (unsigned long long)NPY_MAX_EXAMPLES);
    return VAE_OK;
}

/* Opens, checks and maps shard index of paths into out's segment index. */
static vae_status add_shard(const char *const *paths, int index, vae_dataset *out, npy_header *first_header) {
    npy_file file;
    vae_status status = open_npy(paths[index], &file);
    if (status == VAE_OK) status = check_data_header(&file);
    if (status == VAE_OK && index > 0) {
        const npy_header *header = &file.header;
        int same_shape = header->rank == first_header->rank;
        for (int i = 1; same_shape && i < header->rank; ++i) same_shape = header->shape[i] == first_header->shape[i];
        if (header->element != first_header->element)
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: shard %d holds %s values but %s (shard 0) holds %s; all shards "
                               "must hold one type", paths[index], index, element_name(header->element), paths[0],
                               element_name(first_header->element));
        else if (!same_shape) {
            char shape[160], first_shape[160];
            shape_text(header, shape, sizeof shape);
            shape_text(first_header, first_shape, sizeof first_shape);
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: shard %d has shape %s but %s (shard 0) has %s; all shards "
                               "must agree on everything but N", paths[index], index, shape, paths[0], first_shape);
        }
    }
    if (status == VAE_OK && (uint64_t)out->count + file.header.shape[0] > NPY_MAX_EXAMPLES)
        status = vae_error(VAE_ERROR_BAD_INPUT,
                           "%s: the shards up to this one hold more than %llu examples (the epoch's shuffle holds "
                           "32-bit indices)", paths[index], (unsigned long long)NPY_MAX_EXAMPLES);
    const void *values = NULL;
    if (status == VAE_OK) {
        status = place_values(&file, &out->storage[index], &values);
        if (status == VAE_OK) out->storage_count = index + 1;
    }
    if (status == VAE_OK && file.header.element == NPY_ELEMENT_F32)
        status = check_float_file(&file, &out->storage[index], values);
    close_npy(&file); /* a mapping stays valid after its descriptor closes */
    VAE_TRY(status);
    if (index == 0) *first_header = file.header;
    out->segment_values[index] = values;
    out->segment_first[index + 1] = out->segment_first[index] + (int64_t)file.header.shape[0];
    out->segment_count = index + 1;
    out->count = (long)out->segment_first[index + 1];
    return VAE_OK;
}

vae_status vae_dataset_load_npy_shards(const char *const *paths, int count, vae_dataset *out) {
    if (paths == NULL || count < 1 || out == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_load_npy_shards: paths, count >= 1 and out needed");
    memset(out, 0, sizeof *out);
    out->segment_first = calloc((size_t)count + 1, sizeof *out->segment_first);
    out->segment_values = calloc((size_t)count, sizeof *out->segment_values);
    out->storage = calloc((size_t)count, sizeof *out->storage);
    if (!out->segment_first || !out->segment_values || !out->storage) {
        vae_dataset_free(out);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the table of %d shards", paths[0], count);
    }
    npy_header first_header;
    memset(&first_header, 0, sizeof first_header);
    for (int index = 0; index < count; ++index) {
        vae_status status = add_shard(paths, index, out, &first_header);
        if (status != VAE_OK) {
            vae_dataset_free(out);
            return status;
        }
    }
    uint64_t dim = first_header.values / first_header.shape[0];
    out->dim = (int)dim;
    if (first_header.rank == 4) { /* (N, C, H, W): NCHW images */
        out->channels = (int)first_header.shape[1];
        out->rows = (int)first_header.shape[2];
        out->cols = (int)first_header.shape[3];
    } else if (first_header.rank == 3) { /* (N, H, W): grey images */
        out->channels = 1;
        out->rows = (int)first_header.shape[1];
        out->cols = (int)first_header.shape[2];
    } else { /* (N, D): no image shape; a square D still gives pictures */
        int side = integer_square_root(out->dim);
        out->rows = out->cols = side * side == out->dim ? side : 0;
    }
    out->dtype = first_header.element == NPY_ELEMENT_U8 ? VAE_DTYPE_U8 : VAE_DTYPE_F32;
    out->scale = first_header.element == NPY_ELEMENT_U8 ? 1.0f / 255.0f : 1.0f;
    out->values = count == 1 ? out->segment_values[0] : NULL;
    out->labels = NULL;
    return VAE_OK;
}

vae_status vae_dataset_load_npy(const char *path, vae_dataset *out) {
    if (path == NULL || out == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_load_npy: path and out must not be NULL");
    return vae_dataset_load_npy_shards(&path, 1, out);
}

/* Reads one labels file into labels[0, expected). */
static vae_status read_label_file(const char *path, uint64_t expected, const char *expected_what, int32_t *labels) {
    npy_file file;
    vae_status status = open_npy(path, &file);
    const npy_header *header = &file.header;
    if (status == VAE_OK && header->element == NPY_ELEMENT_F32)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY 'descr' must be '|u1', '<i4' or '<i8' for labels", path);
    else if (status == VAE_OK && header->rank != 1)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY 'shape' has %d dimensions: expected (N,) for labels", path,
                           header->rank);
    else if (status == VAE_OK && header->shape[0] != expected)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: holds %llu labels but %s has %llu examples", path,
                           (unsigned long long)header->shape[0], expected_what, (unsigned long long)expected);
    void *values = NULL;
    if (status == VAE_OK) status = copy_values(&file, &values);
    close_npy(&file);
    for (uint64_t i = 0; status == VAE_OK && i < expected; ++i) {
        int64_t label;
        if (header->element == NPY_ELEMENT_U8) label = ((const uint8_t *)values)[i];
        else if (header->element == NPY_ELEMENT_I32) label = ((const int32_t *)values)[i];
        else label = ((const int64_t *)values)[i];
        /* Labels index classes: negative or beyond int32 means corrupt data. */
        if (label < 0 || label > INT32_MAX)
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: label %lld at index %llu is outside [0, %d]", path,
                               (long long)label, (unsigned long long)i, INT32_MAX);
        else labels[i] = (int32_t)label;
    }
    free(values);
    return status;
}

vae_status vae_dataset_load_npy_label_shards(const char *const *paths, int count, vae_dataset *dataset) {
    if (paths == NULL || count < 1 || dataset == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "vae_dataset_load_npy_label_shards: paths, count >= 1 and dataset needed");
    if (dataset->count <= 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: labels need a dataset with examples loaded first", paths[0]);
    if (count > 1 && count != dataset->segment_count)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: %d label shards for %d data shards; give one labels file per data "
                         "shard, or one for all", paths[0], count, dataset->segment_count);
    int32_t *labels = malloc((size_t)dataset->count * sizeof *labels);
    if (labels == NULL) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate labels", paths[0]);
    vae_status status = VAE_OK;
    if (count == 1) {
        status = read_label_file(paths[0], (uint64_t)dataset->count, "the data", labels);
    } else {
        for (int s = 0; status == VAE_OK && s < count; ++s) {
            char what[64];
            snprintf(what, sizeof what, "data shard %d", s);
            uint64_t first = (uint64_t)dataset->segment_first[s];
            uint64_t examples = (uint64_t)dataset->segment_first[s + 1] - first;
            status = read_label_file(paths[s], examples, what, labels + first);
        }
    }
    if (status != VAE_OK) {
        free(labels);
        return status;
    }
    free(dataset->labels);
    dataset->labels = labels;
    return VAE_OK;
}

vae_status vae_dataset_load_npy_labels(const char *path, vae_dataset *dataset) {
    if (path == NULL || dataset == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_load_npy_labels: path and dataset must not be NULL");
    return vae_dataset_load_npy_label_shards(&path, 1, dataset);
}
