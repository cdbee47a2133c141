/* NPY reader (NumPy's .npy format), written from the format description:
 *   "\x93NUMPY", major, minor, header length (uint16 LE for 1.0, uint32 LE for
 *   2.0 and 3.0), then an ASCII/UTF-8 Python dict literal
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (N, D), } padded with
 *   spaces and a newline, then the raw C-order values.
 * Only what the engine needs is accepted: little-endian uint8 or float32
 * data, uint8/int32/int64 labels. Every field and size is checked before use
 * and the file must hold exactly the data the header describes. */
#include "data/dataset.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "base/error.h"

/* Same bound as the IDX reader: int32 indices and permutations stay valid. */
#define NPY_MAX_VALUES ((uint64_t)INT32_MAX)
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
            if (value > NPY_MAX_VALUES)
                return vae_error(VAE_ERROR_BAD_INPUT,
                                 "%s: NPY header: 'shape' dimension %d is larger than %llu (corrupt header?)",
                                 cursor->path, header->rank, (unsigned long long)NPY_MAX_VALUES);
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
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' dimension %d is zero", path, i);
        header->values *= header->shape[i]; /* both factors <= 2^31: no wrap */
        if (header->values > NPY_MAX_VALUES)
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header: 'shape' holds more than %llu values", path,
                             (unsigned long long)NPY_MAX_VALUES);
    }
    return VAE_OK;
}

/* ------------------------------------------------------------- file level */

static vae_status read_exact(FILE *file, const char *path, void *buffer, size_t bytes, const char *what) {
    size_t got = fread(buffer, 1, bytes, file);
    if (got == bytes) return VAE_OK;
    if (ferror(file)) return vae_error(VAE_ERROR_IO, "%s: read failed: %s", path, strerror(errno));
    return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: expected %zu bytes of %s, found %zu", path, bytes, what, got);
}

/* Opens the file, parses the preamble and header, and reads the values into a
 * malloc'd buffer (*values, header->values elements). */
static vae_status read_npy(FILE *file, const char *path, npy_header *header, void **values) {
    *values = NULL;
    if (fseek(file, 0, SEEK_END) != 0) return vae_error(VAE_ERROR_IO, "%s: cannot seek: %s", path, strerror(errno));
    long file_size = ftell(file);
    if (file_size < 0) return vae_error(VAE_ERROR_IO, "%s: cannot tell size: %s", path, strerror(errno));
    rewind(file);

    unsigned char preamble[12];
    VAE_TRY(read_exact(file, path, preamble, 8, "NPY preamble"));
    if (memcmp(preamble, "\x93NUMPY", 6) != 0)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: bad magic: not an NPY file (expected \\x93NUMPY)", path);
    int major = preamble[6], minor = preamble[7];
    size_t length_bytes;
    if (major == 1 && minor == 0) length_bytes = 2;
    else if ((major == 2 || major == 3) && minor == 0) length_bytes = 4;
    else return vae_error(VAE_ERROR_BAD_INPUT, "%s: unsupported NPY version %d.%d (expected 1.0, 2.0 or 3.0)", path,
                          major, minor);
    VAE_TRY(read_exact(file, path, preamble + 8, length_bytes, "NPY header length"));
    uint32_t header_length = (uint32_t)preamble[8] | ((uint32_t)preamble[9] << 8);
    if (length_bytes == 4) header_length |= ((uint32_t)preamble[10] << 16) | ((uint32_t)preamble[11] << 24);
    uint64_t header_end = 8 + length_bytes + (uint64_t)header_length;
    if (header_end > (uint64_t)file_size)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header length %u runs past the end of the file (%ld bytes)",
                         path, header_length, file_size);
    if (header_length > NPY_MAX_HEADER_BYTES)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header length %u is larger than %u bytes", path, header_length,
                         NPY_MAX_HEADER_BYTES);

    char *text = malloc((size_t)header_length + 1);
    if (text == NULL) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate the NPY header", path);
    vae_status status = read_exact(file, path, text, header_length, "NPY header");
    if (status == VAE_OK) {
        text[header_length] = '\0';
        if (memchr(text, '\0', header_length) != NULL)
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY header contains a NUL byte", path);
    }
    if (status == VAE_OK) status = parse_header_dict(path, text, header_length, header);
    free(text);
    VAE_TRY(status);

    uint64_t data_bytes = header->values * header->element_bytes;
    uint64_t available = (uint64_t)file_size - header_end;
    if (available < data_bytes)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: truncated: expected %llu bytes of data, found %llu", path,
                         (unsigned long long)data_bytes, (unsigned long long)available);
    if (available > data_bytes)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: %llu trailing bytes after the %llu bytes of data that the NPY header describes", path,
                         (unsigned long long)(available - data_bytes), (unsigned long long)data_bytes);
    void *buffer = malloc((size_t)data_bytes);
    if (buffer == NULL)
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate %llu bytes of data", path,
                         (unsigned long long)data_bytes);
    status = read_exact(file, path, buffer, (size_t)data_bytes, "data");
    if (status != VAE_OK) {
        free(buffer);
        return status;
    }
    /* NPY data is little-endian; swap on a big-endian host. */
    const uint16_t probe = 1;
    if (header->element_bytes > 1 && *(const unsigned char *)&probe == 0) {
        unsigned char *bytes = buffer;
        for (uint64_t i = 0; i < header->values; ++i) {
            unsigned char *element = bytes + i * header->element_bytes;
            for (size_t a = 0, b = header->element_bytes - 1; a < b; ++a, --b) {
                unsigned char swap = element[a];
                element[a] = element[b];
                element[b] = swap;
            }
        }
    }
    *values = buffer;
    return VAE_OK;
}

static vae_status open_and_read(const char *path, npy_header *header, void **values) {
    memset(header, 0, sizeof *header);
    errno = 0;
    FILE *file = fopen(path, "rb");
    if (file == NULL) return vae_error(VAE_ERROR_IO, "%s: cannot open: %s", path, strerror(errno));
    vae_status status = read_npy(file, path, header, values);
    fclose(file); /* read-only: nothing is lost if closing fails */
    return status;
}

/* Largest s with s*s <= value, exact for the int range. */
static int integer_square_root(int value) {
    int root = (int)sqrt((double)value);
    while (root > 0 && (long long)root * root > value) --root;
    while ((long long)(root + 1) * (root + 1) <= value) ++root;
    return root;
}

vae_status vae_dataset_load_npy(const char *path, vae_dataset *out) {
    if (path == NULL || out == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_load_npy: path and out must not be NULL");
    memset(out, 0, sizeof *out);
    npy_header header;
    void *values = NULL;
    VAE_TRY(open_and_read(path, &header, &values));
    vae_status status = VAE_OK;
    if (header.element != NPY_ELEMENT_U8 && header.element != NPY_ELEMENT_F32)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY 'descr' must be '|u1' or '<f4' for data (int types are for labels)",
                           path);
    else if (header.rank != 2 && header.rank != 3)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY 'shape' has %d dimensions: expected (N, D) or (N, rows, cols)",
                           path, header.rank);
    if (status == VAE_OK && header.element == NPY_ELEMENT_F32) {
        /* The engine expects data in [0,1]; name the first value that is not. */
        const float *data = values;
        uint64_t dim = header.values / header.shape[0];
        for (uint64_t i = 0; i < header.values; ++i) {
            float value = data[i];
            if (!isfinite(value)) {
                status = vae_error(VAE_ERROR_BAD_INPUT,
                                   "%s: value at flat index %llu (example %llu, position %llu) is %s; data must be "
                                   "finite and in [0,1]",
                                   path, (unsigned long long)i, (unsigned long long)(i / dim),
                                   (unsigned long long)(i % dim), isnan(value) ? "NaN" : "infinite");
                break;
            }
            if (value < 0.0f || value > 1.0f) {
                status = vae_error(VAE_ERROR_BAD_INPUT,
                                   "%s: value %g at flat index %llu (example %llu, position %llu) is outside [0,1]",
                                   path, (double)value, (unsigned long long)i, (unsigned long long)(i / dim),
                                   (unsigned long long)(i % dim));
                break;
            }
        }
    }
    if (status != VAE_OK) {
        free(values);
        return status;
    }
    out->count = (long)header.shape[0];
    out->dim = (int)(header.values / header.shape[0]);
    if (header.rank == 3) {
        out->rows = (int)header.shape[1];
        out->cols = (int)header.shape[2];
    } else {
        int side = integer_square_root(out->dim);
        out->rows = out->cols = side * side == out->dim ? side : 0;
    }
    out->dtype = header.element == NPY_ELEMENT_U8 ? VAE_DTYPE_U8 : VAE_DTYPE_F32;
    out->scale = header.element == NPY_ELEMENT_U8 ? 1.0f / 255.0f : 1.0f;
    out->values = values;
    out->labels = NULL;
    return VAE_OK;
}

vae_status vae_dataset_load_npy_labels(const char *path, vae_dataset *dataset) {
    if (path == NULL || dataset == NULL)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_dataset_load_npy_labels: path and dataset must not be NULL");
    if (dataset->count <= 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: labels need a dataset with examples loaded first", path);
    npy_header header;
    void *values = NULL;
    VAE_TRY(open_and_read(path, &header, &values));
    vae_status status = VAE_OK;
    if (header.element == NPY_ELEMENT_F32)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY 'descr' must be '|u1', '<i4' or '<i8' for labels", path);
    else if (header.rank != 1)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: NPY 'shape' has %d dimensions: expected (N,) for labels", path,
                           header.rank);
    else if (header.shape[0] != (uint64_t)dataset->count)
        status = vae_error(VAE_ERROR_BAD_INPUT, "%s: holds %llu labels but the data has %ld examples", path,
                           (unsigned long long)header.shape[0], dataset->count);
    int32_t *labels = NULL;
    if (status == VAE_OK) {
        labels = malloc((size_t)header.values * sizeof *labels);
        if (labels == NULL) status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: cannot allocate labels", path);
    }
    for (uint64_t i = 0; status == VAE_OK && i < header.values; ++i) {
        int64_t label;
        if (header.element == NPY_ELEMENT_U8) label = ((const uint8_t *)values)[i];
        else if (header.element == NPY_ELEMENT_I32) label = ((const int32_t *)values)[i];
        else label = ((const int64_t *)values)[i];
        /* Labels index classes: negative or beyond int32 means corrupt data. */
        if (label < 0 || label > INT32_MAX)
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: label %lld at index %llu is outside [0, %d]", path,
                               (long long)label, (unsigned long long)i, INT32_MAX);
        else labels[i] = (int32_t)label;
    }
    free(values);
    if (status != VAE_OK) {
        free(labels);
        return status;
    }
    free(dataset->labels);
    dataset->labels = labels;
    return VAE_OK;
}
