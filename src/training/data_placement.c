/* Placing a data set for the gather (data_placement.h). */
#include "training/data_placement.h"

#include <string.h>

#include "base/error.h"

static size_t row_bytes(const vae_dataset *data) {
    return (size_t)data->dim * (data->dtype == VAE_DTYPE_U8 ? sizeof(uint8_t) : sizeof(float));
}

/* Copies every segment, in order, into one block of backend memory
 * (destination) or of mapped host memory (host_destination). */
static vae_status copy_segments(vae_backend *backend, const vae_dataset *data, void *destination,
                                void *host_destination) {
    size_t offset = 0;
    for (int s = 0; s < data->segment_count; ++s) {
        size_t bytes = (size_t)(data->segment_first[s + 1] - data->segment_first[s]) * row_bytes(data);
        if (host_destination) memcpy((char *)host_destination + offset, data->segment_values[s], bytes);
        else VAE_TRY(vae_backend_copy_to_device(backend, (char *)destination + offset, data->segment_values[s], bytes));
        offset += bytes;
    }
    return VAE_OK;
}

vae_status vae_place_rows(vae_backend *backend, const vae_dataset *data, int placement, vae_placed_rows *out) {
    memset(out, 0, sizeof *out);
    if (data->segment_count < 1 || data->count < 1)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "placing a data set: it has no examples");
    if (!vae_backend_has_host_mapped_memory(backend)) {
        /* Backend memory is host memory: read the segments where they lie. */
        out->rows = (vae_row_segments){data->segment_count, data->segment_first, data->segment_values};
        return VAE_OK;
    }
    size_t bytes = (size_t)data->count * row_bytes(data);
    vae_status placed = placement == VAE_PLACE_HOST ? VAE_ERROR_OUT_OF_MEMORY : vae_backend_alloc(backend, bytes, &out->copy);
    if (placed == VAE_ERROR_OUT_OF_MEMORY && placement != VAE_PLACE_DEVICE_ONLY) {
        out->copy = NULL;
        VAE_TRY(vae_backend_alloc_host_mapped(backend, bytes, &out->copy_mapped, &out->copy));
        VAE_TRY(copy_segments(backend, data, NULL, out->copy_mapped));
    } else {
        VAE_TRY(placed);
        VAE_TRY(copy_segments(backend, data, out->copy, NULL));
    }
    out->copy_first_row[0] = 0;
    out->copy_first_row[1] = data->count;
    out->copy_values[0] = out->copy;
    out->rows = (vae_row_segments){1, out->copy_first_row, out->copy_values};
    return VAE_OK;
}

void vae_placed_rows_free(vae_backend *backend, vae_placed_rows *placed) {
    if (placed->copy_mapped) vae_backend_free_host_mapped(backend, placed->copy_mapped);
    else if (placed->copy) vae_backend_free(backend, placed->copy);
    memset(placed, 0, sizeof *placed);
}
