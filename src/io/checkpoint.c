/* Safetensors checkpoints: an atomic writer and a reader that checks every
 * size, offset and the data checksum before it trusts a byte of the file. */
#define _POSIX_C_SOURCE 200809L

#include "io/checkpoint.h"
#include "base/error.h"
#include "io/atomic_file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define CHECKPOINT_FORMAT "vae-engine-1"
#define CHECKPOINT_MAX_HEADER_BYTES ((uint64_t)100 << 20)   /* as the safetensors reference */
#define CHECKPOINT_MAX_FILE_BYTES ((uint64_t)16 << 30)
#define CHECKPOINT_MAX_DIMENSION ((uint64_t)1 << 40)
#define CHECKPOINT_CHUNK_FLOATS 16384                        /* 64 KiB of converted data */
#define CHECKPOINT_MAX_NAME 127
#define CHECKPOINT_MAX_KEY 63

/* ------------------------------------------------------------ byte order */

static void store_u32_le(uint8_t *out, uint32_t value) {
    out[0] = (uint8_t)value;
    out[1] = (uint8_t)(value >> 8);
    out[2] = (uint8_t)(value >> 16);
    out[3] = (uint8_t)(value >> 24);
}

static uint32_t load_u32_le(const uint8_t *in) {
    return (uint32_t)in[0] | (uint32_t)in[1] << 8 | (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
}

static uint64_t load_u64_le(const uint8_t *in) {
    return (uint64_t)load_u32_le(in) | (uint64_t)load_u32_le(in + 4) << 32;
}

static void floats_to_le(const float *values, size_t count, uint8_t *out) {
    for (size_t i = 0; i < count; ++i) {
        uint32_t bits;
        memcpy(&bits, &values[i], sizeof bits);
        store_u32_le(out + 4 * i, bits);
    }
}

/* Element count of a shape, or -1 when it (or its byte size) overflows. */
static int64_t element_count(const int64_t *shape, int rank) {
    uint64_t count = 1;
    for (int i = 0; i < rank; ++i) {
        uint64_t dimension = (uint64_t)shape[i];
        if (dimension != 0 && count > (UINT64_MAX / 4) / dimension) return -1;
        count *= dimension;
    }
    return count > (uint64_t)INT64_MAX / 4 ? -1 : (int64_t)count;
}

/* ------------------------------------------------------------ writer */

static vae_status io_error(const char *path, const char *what, int error_number) {
    int disk_full = error_number == ENOSPC;
#ifdef EDQUOT
    disk_full = disk_full || error_number == EDQUOT;
#endif
    const char *hint = disk_full ? " (disk full)" : "";
    return vae_error(VAE_ERROR_IO, "%s: %s: %s%s", path, what, strerror(error_number), hint);
}

static vae_status check_write_arguments(const char *path, const vae_checkpoint_tensor *tensors, int tensor_count,
                                        const char *const *metadata_keys, const char *const *metadata_values,
                                        int metadata_count) {
    if (!path || !path[0]) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "checkpoint write: empty path");
    if (tensor_count < 0 || (tensor_count > 0 && !tensors))
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: bad tensor list (count %d)", path, tensor_count);
    if (metadata_count < 0 || (metadata_count > 0 && (!metadata_keys || !metadata_values)))
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: bad metadata list (count %d)", path, metadata_count);
    for (int i = 0; i < tensor_count; ++i) {
        const vae_checkpoint_tensor *tensor = &tensors[i];
        size_t name_length = strnlen(tensor->name, sizeof tensor->name);
        if (name_length == 0 || name_length > CHECKPOINT_MAX_NAME)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: tensor %d: name empty or longer than %d characters",
                             path, i, CHECKPOINT_MAX_NAME);
        if (strcmp(tensor->name, "__metadata__") == 0)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: tensor %d: the name __metadata__ is reserved", path, i);
        if (tensor->rank < 0 || tensor->rank > VAE_CHECKPOINT_MAX_RANK)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: tensor %s: rank %d, expected 0..%d", path,
                             tensor->name, tensor->rank, VAE_CHECKPOINT_MAX_RANK);
        for (int d = 0; d < tensor->rank; ++d)
            if (tensor->shape[d] < 0 || (uint64_t)tensor->shape[d] >= CHECKPOINT_MAX_DIMENSION)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: tensor %s: dimension %d is %lld, expected 0..2^40",
                                 path, tensor->name, d, (long long)tensor->shape[d]);
        int64_t count = element_count(tensor->shape, tensor->rank);
        if (count < 0)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: tensor %s: too many elements", path, tensor->name);
        if (count > 0 && !tensor->data)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: tensor %s: no data", path, tensor->name);
        for (int j = 0; j < i; ++j)
            if (strcmp(tensors[j].name, tensor->name) == 0)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: tensor name %s appears twice", path, tensor->name);
    }
    for (int i = 0; i < metadata_count; ++i) {
        const char *key = metadata_keys[i];
        if (!key || !key[0] || strlen(key) > CHECKPOINT_MAX_KEY || !metadata_values[i])
            return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                             "%s: metadata entry %d: key empty, longer than %d characters, or no value", path, i,
                             CHECKPOINT_MAX_KEY);
        if (strcmp(key, "checksum") == 0 || strcmp(key, "format") == 0)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: metadata key %s is reserved (written by the library)",
                             path, key);
        for (int j = 0; j < i; ++j)
            if (strcmp(metadata_keys[j], key) == 0)
                return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: metadata key %s appears twice", path, key);
    }
    return VAE_OK;
}

static uint32_t data_checksum(const vae_checkpoint_tensor *tensors, int tensor_count, uint8_t *chunk) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (int i = 0; i < tensor_count; ++i) {
        size_t count = (size_t)element_count(tensors[i].shape, tensors[i].rank);
        for (size_t start = 0; start < count; start += CHECKPOINT_CHUNK_FLOATS) {
            size_t n = count - start < CHECKPOINT_CHUNK_FLOATS ? count - start : CHECKPOINT_CHUNK_FLOATS;
            floats_to_le(tensors[i].data + start, n, chunk);
            crc = crc32(crc, chunk, (uInt)(n * 4));
        }
    }
    return (uint32_t)crc;
}

static cJSON *integer_item(int64_t value) {
    /* Raw text keeps large integers exact (cJSON would print doubles). */
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)value);
    return cJSON_CreateRaw(text);
}

/* The header text, padded with spaces to a multiple of 8 bytes. */
static vae_status build_header(const char *path, const vae_checkpoint_tensor *tensors, int tensor_count,
                               const char *const *metadata_keys, const char *const *metadata_values,
                               int metadata_count, uint32_t checksum, char **header_out, size_t *length_out) {
    cJSON *root = cJSON_CreateObject();
    cJSON *metadata = cJSON_CreateObject();
    int ok = root && metadata && cJSON_AddItemToObject(root, "__metadata__", metadata);
    if (!ok) cJSON_Delete(metadata);
    for (int i = 0; ok && i < metadata_count; ++i)
        ok = cJSON_AddStringToObject(metadata, metadata_keys[i], metadata_values[i]) != NULL;
    char checksum_text[32];
    snprintf(checksum_text, sizeof checksum_text, "crc32:%08x", (unsigned)checksum);
    ok = ok && cJSON_AddStringToObject(metadata, "checksum", checksum_text) != NULL;
    ok = ok && cJSON_AddStringToObject(metadata, "format", CHECKPOINT_FORMAT) != NULL;

    int64_t offset = 0;
    for (int i = 0; ok && i < tensor_count; ++i) {
        const vae_checkpoint_tensor *tensor = &tensors[i];
        int64_t bytes = 4 * element_count(tensor->shape, tensor->rank);
        cJSON *entry = cJSON_CreateObject();
        cJSON *shape = cJSON_CreateArray();
        cJSON *offsets = cJSON_CreateArray();
        ok = entry && shape && offsets && cJSON_AddStringToObject(entry, "dtype", "F32") != NULL;
        for (int d = 0; ok && d < tensor->rank; ++d) ok = cJSON_AddItemToArray(shape, integer_item(tensor->shape[d]));
        ok = ok && cJSON_AddItemToArray(offsets, integer_item(offset)) &&
             cJSON_AddItemToArray(offsets, integer_item(offset + bytes));
        if (ok && cJSON_AddItemToObject(entry, "shape", shape)) shape = NULL;
        if (ok && cJSON_AddItemToObject(entry, "data_offsets", offsets)) offsets = NULL;
        ok = ok && !shape && !offsets;
        if (ok && cJSON_AddItemToObject(root, tensor->name, entry)) entry = NULL;
        ok = ok && !entry;
        cJSON_Delete(shape);
        cJSON_Delete(offsets);
        cJSON_Delete(entry);
        offset += bytes;
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory building the header", path);
    size_t length = strlen(text);
    size_t padded = (length + 7) / 8 * 8;
    char *header = malloc(padded + 1);
    if (header) memcpy(header, text, length);
    cJSON_free(text);
    if (!header) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory building the header", path);
    memset(header + length, ' ', padded - length);
    header[padded] = '\0';
    *header_out = header;
    *length_out = padded;
    return VAE_OK;
}

/* Writes the file's bytes: the length of the header, the header, then each
 * tensor as little-endian floats, a chunk at a time. */
static void write_contents(vae_atomic_file *file, const char *header, size_t header_length,
                           const vae_checkpoint_tensor *tensors, int tensor_count, uint8_t *chunk) {
    uint8_t length_bytes[8];
    store_u32_le(length_bytes, (uint32_t)header_length);
    store_u32_le(length_bytes + 4, (uint32_t)((uint64_t)header_length >> 32));
    int error_number = vae_atomic_file_write(file, length_bytes, sizeof length_bytes);
    if (!error_number) error_number = vae_atomic_file_write(file, header, header_length);
    for (int i = 0; !error_number && i < tensor_count; ++i) {
        size_t count = (size_t)element_count(tensors[i].shape, tensors[i].rank);
        for (size_t start = 0; !error_number && start < count; start += CHECKPOINT_CHUNK_FLOATS) {
            size_t n = count - start < CHECKPOINT_CHUNK_FLOATS ? count - start : CHECKPOINT_CHUNK_FLOATS;
            floats_to_le(tensors[i].data + start, n, chunk);
            error_number = vae_atomic_file_write(file, chunk, n * 4);
        }
    }
}

vae_status vae_checkpoint_write(const char *path, const vae_checkpoint_tensor *tensors, int tensor_count,
                                const char *const *metadata_keys, const char *const *metadata_values,
                                int metadata_count) {
    VAE_TRY(check_write_arguments(path, tensors, tensor_count, metadata_keys, metadata_values, metadata_count));
    uint8_t *chunk = malloc((size_t)CHECKPOINT_CHUNK_FLOATS * 4);
    if (!chunk) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory", path);
    char *header = NULL;
    size_t header_length = 0;
    uint32_t checksum = data_checksum(tensors, tensor_count, chunk);
    vae_status status = build_header(path, tensors, tensor_count, metadata_keys, metadata_values, metadata_count,
                                     checksum, &header, &header_length);
    vae_atomic_file file;
    if (status == VAE_OK) status = vae_atomic_file_open(&file, path, "checkpoint");
    if (status == VAE_OK) {
        write_contents(&file, header, header_length, tensors, tensor_count, chunk);
        status = vae_atomic_file_commit(&file);
    }
    free(header);
    free(chunk);
    return status;
}

/* ------------------------------------------------------------ reader */

typedef struct tensor_extent {
    uint64_t begin, end;
    int index;
} tensor_extent;

static int compare_extents(const void *a, const void *b) {
    const tensor_extent *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->index - y->index;
}

static int compare_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A JSON number that is a whole number in [0, limit). */
static int json_whole_number(const cJSON *item, uint64_t limit, uint64_t *value) {
    if (!cJSON_IsNumber(item)) return 0;
    double number = item->valuedouble;
    if (!isfinite(number) || number < 0.0 || number >= (double)limit || floor(number) != number) return 0;
    *value = (uint64_t)number;
    return 1;
}

static vae_status parse_tensor_entry(const char *name, const cJSON *entry, uint64_t data_size,
                                     vae_checkpoint_tensor *tensor, tensor_extent *extent) {
    if (strlen(entry->string) > CHECKPOINT_MAX_NAME)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor name longer than %d characters: %.40s...", name,
                         CHECKPOINT_MAX_NAME, entry->string);
    const char *tensor_name = entry->string;
    if (!cJSON_IsObject(entry))
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: expected an object", name, tensor_name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype))
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: missing string \"dtype\"", name, tensor_name);
    if (strcmp(dtype->valuestring, "F32") != 0)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: dtype %.20s is not supported, expected F32", name,
                         tensor_name, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: missing array \"shape\"", name, tensor_name);
    int rank = cJSON_GetArraySize(shape);
    if (rank > VAE_CHECKPOINT_MAX_RANK)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: rank %d, expected at most %d", name, tensor_name, rank,
                         VAE_CHECKPOINT_MAX_RANK);
    memset(tensor, 0, sizeof *tensor);
    memcpy(tensor->name, tensor_name, strlen(tensor_name) + 1);
    tensor->rank = rank;
    int d = 0;
    for (const cJSON *item = shape->child; item; item = item->next, ++d) {
        uint64_t dimension;
        if (!json_whole_number(item, CHECKPOINT_MAX_DIMENSION, &dimension))
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: shape[%d] is not an integer in 0..2^40", name,
                             tensor_name, d);
        tensor->shape[d] = (int64_t)dimension;
    }
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: \"data_offsets\" must be an array [begin, end]", name,
                         tensor_name);
    uint64_t begin, end;
    if (!json_whole_number(offsets->child, data_size + 1, &begin) ||
        !json_whole_number(offsets->child->next, data_size + 1, &end) || begin > end)
        return vae_error(VAE_ERROR_BAD_INPUT,
                         "%s: tensor %s: data_offsets must be integers with 0 <= begin <= end <= %llu (data size)",
                         name, tensor_name, (unsigned long long)data_size);
    int64_t count = element_count(tensor->shape, rank);
    if (count < 0 || (uint64_t)count * 4 != end - begin)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s: shape needs %lld bytes but data_offsets span %llu",
                         name, tensor_name, count < 0 ? -1LL : (long long)count * 4,
                         (unsigned long long)(end - begin));
    extent->begin = begin;
    extent->end = end;
    return VAE_OK;
}

static vae_status parse_metadata(const char *name, const cJSON *metadata, vae_checkpoint *out,
                                 const char **checksum_text) {
    if (!cJSON_IsObject(metadata))
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: __metadata__ must be an object", name);
    int count = cJSON_GetArraySize(metadata);
    out->metadata = calloc(count > 0 ? (size_t)count : 1, sizeof *out->metadata);
    if (!out->metadata) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for metadata", name);
    for (const cJSON *item = metadata->child; item; item = item->next) {
        if (strlen(item->string) > CHECKPOINT_MAX_KEY)
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: metadata key longer than %d characters: %.40s...", name,
                             CHECKPOINT_MAX_KEY, item->string);
        if (!cJSON_IsString(item))
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: metadata %s: value must be a string", name, item->string);
        vae_checkpoint_entry *entry = &out->metadata[out->metadata_count];
        entry->value = strdup(item->valuestring);
        if (!entry->value) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for metadata", name);
        memcpy(entry->key, item->string, strlen(item->string) + 1);
        out->metadata_count++;
        if (strcmp(item->string, "checksum") == 0) *checksum_text = entry->value;
    }
    /* Sorted copies of the keys find duplicates in n log n, whatever the file holds. */
    const char **keys = malloc((size_t)out->metadata_count * sizeof *keys + 1);
    if (!keys) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for metadata", name);
    for (int i = 0; i < out->metadata_count; ++i) keys[i] = out->metadata[i].key;
    qsort(keys, (size_t)out->metadata_count, sizeof *keys, compare_names);
    for (int i = 1; i < out->metadata_count; ++i) {
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            vae_status status = vae_error(VAE_ERROR_BAD_INPUT, "%s: metadata key %s appears twice", name, keys[i]);
            free(keys);
            return status;
        }
    }
    free(keys);
    const char *format = vae_checkpoint_metadata(out, "format");
    if (format && strcmp(format, CHECKPOINT_FORMAT) != 0)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: format %.40s is not supported, expected %s", name, format,
                         CHECKPOINT_FORMAT);
    return VAE_OK;
}

static vae_status check_checksum(const char *name, const char *checksum_text, const uint8_t *data, uint64_t size) {
    if (!checksum_text)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: __metadata__ has no checksum", name);
    uint32_t expected = 0;
    int digits = 0;
    if (strncmp(checksum_text, "crc32:", 6) == 0) {
        for (const char *c = checksum_text + 6; *c && digits <= 8; ++c, ++digits) {
            int nibble = (*c >= '0' && *c <= '9') ? *c - '0'
                         : (*c >= 'a' && *c <= 'f') ? *c - 'a' + 10
                         : (*c >= 'A' && *c <= 'F') ? *c - 'A' + 10 : -1;
            if (nibble < 0) { digits = -1; break; }
            expected = expected << 4 | (uint32_t)nibble;
        }
    }
    if (digits != 8)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: checksum %.40s: expected crc32:<8 hex digits>", name,
                         checksum_text);
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t start = 0; start < size; start += (1u << 30)) {
        uint64_t n = size - start < (1u << 30) ? size - start : (1u << 30);
        crc = crc32(crc, data + start, (uInt)n);
    }
    if ((uint32_t)crc != expected)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: checksum mismatch: the file is corrupted", name);
    return VAE_OK;
}

/* Parses the header (already known to lie inside the buffer) into out. */
static vae_status parse_header(const char *name, const cJSON *root, const uint8_t *data, uint64_t data_size,
                               vae_checkpoint *out) {
    if (!cJSON_IsObject(root)) return vae_error(VAE_ERROR_BAD_INPUT, "%s: header is not a JSON object", name);
    int entry_count = cJSON_GetArraySize(root);
    tensor_extent *extents = calloc((size_t)entry_count + 1, sizeof *extents);
    const char **names = calloc((size_t)entry_count + 1, sizeof *names);
    out->tensors = calloc((size_t)entry_count + 1, sizeof *out->tensors);
    vae_status status = VAE_OK;
    if (!extents || !names || !out->tensors)
        status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for %d header entries", name, entry_count);
    const char *checksum_text = NULL;
    int have_metadata = 0;
    for (const cJSON *entry = root->child; status == VAE_OK && entry; entry = entry->next) {
        if (strcmp(entry->string, "__metadata__") == 0) {
            if (have_metadata) status = vae_error(VAE_ERROR_BAD_INPUT, "%s: __metadata__ appears twice", name);
            else status = parse_metadata(name, entry, out, &checksum_text);
            have_metadata = 1;
            continue;
        }
        int index = out->tensor_count;
        status = parse_tensor_entry(name, entry, data_size, &out->tensors[index], &extents[index]);
        extents[index].index = index;
        names[index] = entry->string;
        if (status == VAE_OK) out->tensor_count++;
    }
    if (status == VAE_OK) {
        qsort(names, (size_t)out->tensor_count, sizeof *names, compare_names);
        for (int i = 1; status == VAE_OK && i < out->tensor_count; ++i)
            if (strcmp(names[i - 1], names[i]) == 0)
                status = vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s appears twice", name, names[i]);
    }
    if (status == VAE_OK) {
        /* Sorted by offset, each tensor must start where the previous ended. */
        qsort(extents, (size_t)out->tensor_count, sizeof *extents, compare_extents);
        uint64_t cursor = 0;
        for (int i = 0; status == VAE_OK && i < out->tensor_count; ++i) {
            const char *tensor_name = out->tensors[extents[i].index].name;
            if (extents[i].begin < cursor)
                status = vae_error(VAE_ERROR_BAD_INPUT, "%s: tensor %s overlaps another tensor", name, tensor_name);
            else if (extents[i].begin > cursor)
                status = vae_error(VAE_ERROR_BAD_INPUT, "%s: %llu unused bytes before tensor %s", name,
                                   (unsigned long long)(extents[i].begin - cursor), tensor_name);
            cursor = extents[i].end;
        }
        if (status == VAE_OK && cursor != data_size)
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s: tensors cover %llu of %llu data bytes", name,
                               (unsigned long long)cursor, (unsigned long long)data_size);
    }
    if (status == VAE_OK) status = check_checksum(name, checksum_text, data, data_size);
    if (status == VAE_OK) {
        /* data_size is a sum of 4-byte tensors, so every begin is 4-aligned. */
        float *values = malloc(data_size > 0 ? (size_t)data_size : 4);
        if (!values) {
            status = vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory for %llu bytes of tensors", name,
                               (unsigned long long)data_size);
        } else {
            for (uint64_t i = 0; i < data_size / 4; ++i) {
                uint32_t bits = load_u32_le(data + 4 * i);
                memcpy(&values[i], &bits, sizeof bits);
            }
            out->storage_ = values;
            for (int i = 0; i < out->tensor_count; ++i)
                out->tensors[extents[i].index].data = values + extents[i].begin / 4;
        }
    }
    free(extents);
    free(names);
    return status;
}

vae_status vae_checkpoint_parse(const uint8_t *bytes, size_t size, const char *name, vae_checkpoint *out) {
    if (!name) name = "checkpoint";
    if (!out) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: no output checkpoint", name);
    memset(out, 0, sizeof *out);
    if (!bytes && size > 0) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: no bytes", name);
    if (size < 8)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: %zu bytes, too short for the 8-byte header length", name, size);
    uint64_t header_length = load_u64_le(bytes);
    if (header_length < 2 || header_length > (uint64_t)size - 8 || header_length > CHECKPOINT_MAX_HEADER_BYTES)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: header length %llu, expected 2..%llu (file has %zu bytes)", name,
                         (unsigned long long)header_length,
                         (unsigned long long)((uint64_t)size - 8 < CHECKPOINT_MAX_HEADER_BYTES
                                                  ? (uint64_t)size - 8 : CHECKPOINT_MAX_HEADER_BYTES),
                         size);
    const char *header = (const char *)bytes + 8;
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)header_length, &parse_end, 0);
    if (!root) {
        size_t position = parse_end && parse_end >= header ? (size_t)(parse_end - header) : 0;
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: header is not valid JSON (near byte %zu of the header)", name,
                         position);
    }
    /* Only padding may follow the JSON value. */
    for (const char *c = parse_end; c < header + header_length; ++c) {
        if (*c != ' ' && *c != '\t' && *c != '\n' && *c != '\r') {
            cJSON_Delete(root);
            return vae_error(VAE_ERROR_BAD_INPUT, "%s: unexpected byte 0x%02x after the header JSON (byte %zu)", name,
                             (unsigned)(unsigned char)*c, (size_t)(c - header));
        }
    }
    const uint8_t *data = bytes + 8 + header_length;
    vae_status status = parse_header(name, root, data, (uint64_t)size - 8 - header_length, out);
    cJSON_Delete(root);
    if (status != VAE_OK) vae_checkpoint_free(out);
    return status;
}

vae_status vae_checkpoint_read(const char *path, vae_checkpoint *out) {
    if (!out) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "checkpoint read: no output checkpoint");
    memset(out, 0, sizeof *out);
    if (!path) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "checkpoint read: no path");
    FILE *file = fopen(path, "rb");
    if (!file) return io_error(path, "cannot open the checkpoint", errno);
    struct stat info;
    if (fstat(fileno(file), &info) != 0) {
        int error_number = errno;
        fclose(file);
        return io_error(path, "cannot stat the checkpoint", error_number);
    }
    if (!S_ISREG(info.st_mode)) {
        fclose(file);
        return vae_error(VAE_ERROR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)info.st_size > CHECKPOINT_MAX_FILE_BYTES || (uint64_t)info.st_size > SIZE_MAX) {
        fclose(file);
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: %lld bytes, larger than the 16 GiB limit", path,
                         (long long)info.st_size);
    }
    size_t size = (size_t)info.st_size;
    uint8_t *bytes = malloc(size > 0 ? size : 1);
    if (!bytes) {
        fclose(file);
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: out of memory reading %zu bytes", path, size);
    }
    errno = 0;
    size_t got = fread(bytes, 1, size, file);
    int read_error = ferror(file) ? (errno ? errno : EIO) : 0;
    fclose(file);
    if (read_error) {
        free(bytes);
        return io_error(path, "reading the checkpoint failed", read_error);
    }
    /* A file that shrank while we read it is parsed as what we got (and fails). */
    vae_status status = vae_checkpoint_parse(bytes, got, path, out);
    free(bytes);
    return status;
}

const vae_checkpoint_tensor *vae_checkpoint_find(const vae_checkpoint *checkpoint, const char *name) {
    if (!checkpoint || !name) return NULL;
    for (int i = 0; i < checkpoint->tensor_count; ++i)
        if (strcmp(checkpoint->tensors[i].name, name) == 0) return &checkpoint->tensors[i];
    return NULL;
}

const char *vae_checkpoint_metadata(const vae_checkpoint *checkpoint, const char *key) {
    if (!checkpoint || !key) return NULL;
    for (int i = 0; i < checkpoint->metadata_count; ++i)
        if (strcmp(checkpoint->metadata[i].key, key) == 0) return checkpoint->metadata[i].value;
    return NULL;
}

void vae_checkpoint_free(vae_checkpoint *checkpoint) {
    if (!checkpoint) return;
    if (checkpoint->metadata)
        for (int i = 0; i < checkpoint->metadata_count; ++i) free(checkpoint->metadata[i].value);
    free(checkpoint->metadata);
    free(checkpoint->tensors);
    free(checkpoint->storage_);
    memset(checkpoint, 0, sizeof *checkpoint);
}
