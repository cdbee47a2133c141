/* The CPU backend's convolutions: im2col ("unfold"), one OpenBLAS GEMM over
 * the whole batch, col2im ("fold"), as kernels/vae_conv_geometry.h describes
 * them; the CUDA backend runs the same steps (kernels/conv.cu) over the
 * whole batch at once, the CPU a chunk of images at a time. The pixel mapping
 * comes from that header (vae_conv_pixel), so both backends unfold and fold
 * the same way. Loops run with OpenMP over independent image planes or
 * channels; every sum runs in a fixed order, so results do not depend on the
 * thread count. Arguments were checked by the vae_backend_* wrappers
 * (backend.c). */
#include "backends/cpu_conv.h"
#include "backends/cpu_gemm.h"

#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "base/error.h"

/* Threads only above this many floats moved (below, waking them costs more
 * than the loop). */
#define CONV_PARALLEL_MIN 32768

/* The element-wise loops below are compiled for plain x86-64, x86-64-v3
 * (AVX2: the gather vectorises) and x86-64-v4, picked by CPU features (as in
 * backend_cpu.c). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define CONV_VECTOR_KERNEL __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define CONV_VECTOR_KERNEL
#endif

/* For each kernel tap (i, j), the pixel that each kernel position p of one
 * image reads, as its offset in the image plane, or `plane` (one past its
 * end) in the padding (vae_conv_pixel on both axes):
 * offsets[(i*k + j) * positions + p]. The same for every channel and image.
 * The loops below copy a plane into a buffer of plane + 1 floats whose last
 * one is the padding's 0 (unfold) or a slot that swallows the padding's terms
 * (fold), so they are plain indexed loops without a branch. NULL when out of
 * memory. */
static int32_t *tap_offsets(const vae_conv_unfolding *u) {
    const int k = u->kernel_size;
    const size_t positions = (size_t)vae_conv_positions(u);
    const int32_t outside = (int32_t)(u->height * u->width); /* planes hold at most 2^30 pixels (backend.c) */
    int32_t *offsets = malloc(sizeof(int32_t) * (size_t)k * (size_t)k * positions);
    if (!offsets) return NULL;
    for (int i = 0; i < k; ++i)
        for (int j = 0; j < k; ++j) {
            int32_t *tap = offsets + ((size_t)i * (size_t)k + (size_t)j) * positions;
            for (int py = 0; py < u->positions_height; ++py) {
                const int y = vae_conv_pixel(py, i, u->stride, u->padding);
                for (int px = 0; px < u->positions_width; ++px) {
                    const int x = vae_conv_pixel(px, j, u->stride, u->padding);
                    const int inside = y >= 0 && y < u->height && x >= 0 && x < u->width;
                    tap[(size_t)py * (size_t)u->positions_width + (size_t)px] =
                        inside ? (int32_t)(y * u->width + x) : outside;
                }
            }
        }
    return offsets;
}

/* destination[p] = plane[offsets[p]] (the plane buffer ends with the 0). */
CONV_VECTOR_KERNEL
static void gather_positions(const float *restrict plane, const int32_t *restrict offsets, float *restrict destination,
                             size_t count) {
    for (size_t p = 0; p < count; ++p) destination[p] = plane[offsets[p]];
}

/* plane[offsets[p]] += values[p]; within one tap the offsets are distinct
 * but for the padding's slot. */
CONV_VECTOR_KERNEL
static void scatter_add_positions(float *restrict plane, const int32_t *restrict offsets, const float *restrict values,
                                  size_t count) {
    for (size_t p = 0; p < count; ++p) plane[offsets[p]] += values[p];
}

/* The plane loops of unfold and fold: one image plane (b, c) per iteration,
 * with a per-thread buffer of plane + 1 floats. */
typedef enum { CONV_UNFOLD, CONV_FOLD } conv_direction;

static vae_status plane_loop(const vae_conv_unfolding *u, int batch, conv_direction direction, const float *image_in,
                             float *image_out, const float *unfolded_in, float *unfolded_out, const float *bias) {
    const int k = u->kernel_size;
    const size_t positions = (size_t)vae_conv_positions(u), columns = (size_t)batch * positions;
    const size_t plane = (size_t)u->height * (size_t)u->width;
    const int64_t planes = (int64_t)batch * u->channels;
    int32_t *offsets = tap_offsets(u);
    int failed = offsets == NULL;
#pragma omp parallel if (!failed && (size_t)vae_conv_unfolded_rows(u) * columns > CONV_PARALLEL_MIN)
    {
        float *buffer = failed ? NULL : malloc(sizeof(float) * (plane + 1));
        if (!buffer) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t index = 0; index < planes; ++index) {
            if (!buffer) continue;
            const int b = (int)(index / u->channels), channel = (int)(index % u->channels);
            const size_t first_row = (size_t)channel * (size_t)k * (size_t)k;
            if (direction == CONV_UNFOLD) {
                memcpy(buffer, image_in + (size_t)index * plane, sizeof(float) * plane);
                buffer[plane] = 0.0f;
                for (int tap = 0; tap < k * k; ++tap)
                    gather_positions(buffer, offsets + (size_t)tap * positions,
                                     unfolded_out + (first_row + (size_t)tap) * columns + (size_t)b * positions,
                                     positions);
            } else {
                const float start = bias ? bias[channel] : 0.0f;
                for (size_t pixel = 0; pixel < plane; ++pixel) buffer[pixel] = start;
                /* Taps in order: each pixel adds its terms in ascending (i, j),
                 * the order of vae_conv_fold_pixel (the CUDA fold). */
                for (int tap = 0; tap < k * k; ++tap)
                    scatter_add_positions(buffer, offsets + (size_t)tap * positions,
                                          unfolded_in + (first_row + (size_t)tap) * columns + (size_t)b * positions,
                                          positions);
                memcpy(image_out + (size_t)index * plane, buffer, sizeof(float) * plane);
            }
        }
        free(buffer);
    }
    free(offsets);
    if (failed)
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cpu backend conv: out of memory for the %s tables (%zu pixels)",
                         direction == CONV_UNFOLD ? "unfold" : "fold", plane);
    return VAE_OK;
}

/* The unfolded matrix [channels*k*k, batch*positions] of a batch of larger
 * images: row (c, i, j), column (b, py, px) holds pixel
 * (b, c, vae_conv_pixel(py, i), vae_conv_pixel(px, j)), or 0 in the padding. */
static vae_status unfold(const vae_conv_unfolding *u, int batch, const float *image, float *unfolded) {
    return plane_loop(u, batch, CONV_UNFOLD, image, NULL, NULL, unfolded, NULL);
}

/* The inverse, summed: each pixel (b, c, y, x) of the larger images becomes
 * bias[c] (or 0) plus every unfolded entry that maps to it. */
static vae_status fold(const vae_conv_unfolding *u, int batch, const float *unfolded, const float *bias, float *image) {
    return plane_loop(u, batch, CONV_FOLD, NULL, image, unfolded, NULL, bias);
}

/* staged[c, b*positions + p] = image[b, c, p] for the batch of smaller images. */
static void stage(const vae_conv_unfolding *u, int batch, const float *image, float *staged) {
    const size_t positions = (size_t)vae_conv_positions(u);
    const int64_t planes = (int64_t)batch * u->staged_channels;
#pragma omp parallel for schedule(static) if ((size_t)planes * positions > CONV_PARALLEL_MIN)
    for (int64_t index = 0; index < planes; ++index) {
        const int b = (int)(index / u->staged_channels), channel = (int)(index % u->staged_channels);
        memcpy(staged + vae_conv_staged_offset(u, batch, b, channel, 0), image + (size_t)index * positions,
               sizeof(float) * positions);
    }
}

/* image[b, c, p] = staged[c, b*positions + p] + bias[c] (bias may be NULL). */
static void unstage(const vae_conv_unfolding *u, int batch, const float *staged, const float *bias, float *image) {
    const size_t positions = (size_t)vae_conv_positions(u);
    const int64_t planes = (int64_t)batch * u->staged_channels;
#pragma omp parallel for schedule(static) if ((size_t)planes * positions > CONV_PARALLEL_MIN)
    for (int64_t index = 0; index < planes; ++index) {
        const int b = (int)(index / u->staged_channels), channel = (int)(index % u->staged_channels);
        const float *source = staged + vae_conv_staged_offset(u, batch, b, channel, 0);
        float *destination = image + (size_t)index * positions;
        const float add = bias ? bias[channel] : 0.0f;
        for (size_t p = 0; p < positions; ++p) destination[p] = source[p] + add;
    }
}

/* sums[c] = sum over b and p of values[b, c, p] (NCHW, `channels` planes
 * of `plane` values per image), in double, b then p in order. */
static void channel_sums(const float *values, int batch, int channels, size_t plane, float *sums) {
#pragma omp parallel for schedule(static) if ((size_t)batch * (size_t)channels * plane > CONV_PARALLEL_MIN)
    for (int channel = 0; channel < channels; ++channel) {
        double sum = 0.0;
        for (int b = 0; b < batch; ++b) {
            const float *source = values + ((size_t)b * (size_t)channels + (size_t)channel) * plane;
            double plane_sum = 0.0;
            for (size_t p = 0; p < plane; ++p) plane_sum += (double)source[p];
            sum += plane_sum;
        }
        sums[channel] = (float)sum;
    }
}

/* The batch is unfolded a chunk of images at a time, so that a chunk's
 * unfolded matrix (about this many floats, 1 MiB) stays in cache between the
 * unfold that writes it and the GEMM that reads it (one unfold of the whole
 * batch goes out to memory and back). The chunk depends on the geometry
 * only, so results do not depend on the thread count; the weight gradient
 * adds the chunks' products in chunk order. */
#define CONV_CHUNK_FLOATS 262144

static int images_per_chunk(const vae_conv_unfolding *u, int batch) {
    const int64_t per_image = vae_conv_unfolded_rows(u) * vae_conv_positions(u);
    int64_t images = CONV_CHUNK_FLOATS / (per_image > 0 ? per_image : 1);
    if (images < 1) images = 1;
    return images < batch ? (int)images : batch;
}

/* The workspace: the unfolded matrix (one chunk's, with leading dimension
 * chunk * positions), then the staged one (the whole batch). */
static float *staged_part(const vae_conv_unfolding *u, int batch, float *workspace) {
    return workspace + (size_t)vae_conv_unfolded_rows(u) * (size_t)batch * (size_t)vae_conv_positions(u);
}

vae_status vae_cpu_conv2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch, const float *x,
                                  const float *weight, const float *bias, float *y, float *workspace) {
    vae_cpu_gemm *gemm = vae_cpu_backend_gemm(backend);
    const vae_conv_unfolding u = vae_conv2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), positions = (int)vae_conv_positions(&u);
    const int columns = batch * positions, chunk = images_per_chunk(&u, batch);
    const size_t x_image = (size_t)u.channels * (size_t)u.height * (size_t)u.width;
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    for (int first = 0; first < batch; first += chunk) {
        const int images = batch - first < chunk ? batch - first : chunk, width = images * positions;
        VAE_TRY(unfold(&u, images, x + (size_t)first * x_image, unfolded));
        /* staged y [out_c, columns] = weight [out_c, rows] . unfolded [rows, chunk columns] */
        VAE_TRY(vae_cpu_gemm_run(gemm, 0, 0, u.staged_channels, width, rows, weight, rows, unfolded, width, 0.0f,
                                 staged + (size_t)first * (size_t)positions, columns));
    }
    unstage(&u, batch, staged, bias, y);
    return VAE_OK;
}

vae_status vae_cpu_conv2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch, const float *x,
                                   const float *weight, const float *dy, float *dx, float *dweight, float *dbias,
                                   float *workspace) {
    vae_cpu_gemm *gemm = vae_cpu_backend_gemm(backend);
    const vae_conv_unfolding u = vae_conv2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), positions = (int)vae_conv_positions(&u);
    const int columns = batch * positions, chunk = images_per_chunk(&u, batch);
    const size_t x_image = (size_t)u.channels * (size_t)u.height * (size_t)u.width;
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    if (dbias) channel_sums(dy, batch, u.staged_channels, (size_t)positions, dbias);
    if (!dweight && !dx) return VAE_OK;
    stage(&u, batch, dy, staged);
    for (int first = 0; first < batch; first += chunk) {
        const int images = batch - first < chunk ? batch - first : chunk, width = images * positions;
        const float *staged_chunk = staged + (size_t)first * (size_t)positions;
        if (dweight) {
            VAE_TRY(unfold(&u, images, x + (size_t)first * x_image, unfolded));
            /* dweight [out_c, rows] (+)= staged dy [out_c, chunk columns] . unfolded^T */
            VAE_TRY(vae_cpu_gemm_run(gemm, 0, 1, u.staged_channels, rows, width, staged_chunk, columns, unfolded, width,
                                     first ? 1.0f : 0.0f, dweight, rows));
        }
        if (dx) {
            /* unfolded gradient [rows, chunk columns] = weight^T [rows, out_c] . staged dy, then folded */
            VAE_TRY(vae_cpu_gemm_run(gemm, 1, 0, rows, width, u.staged_channels, weight, rows, staged_chunk, columns,
                                     0.0f, unfolded, width));
            VAE_TRY(fold(&u, images, unfolded, NULL, dx + (size_t)first * x_image));
        }
    }
    return VAE_OK;
}

vae_status vae_cpu_conv_transpose2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                            const float *x, const float *weight, const float *bias, float *y,
                                            float *workspace) {
    vae_cpu_gemm *gemm = vae_cpu_backend_gemm(backend);
    const vae_conv_unfolding u = vae_conv_transpose2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), positions = (int)vae_conv_positions(&u);
    const int columns = batch * positions, chunk = images_per_chunk(&u, batch);
    const size_t y_image = (size_t)u.channels * (size_t)u.height * (size_t)u.width;
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    stage(&u, batch, x, staged);
    for (int first = 0; first < batch; first += chunk) {
        const int images = batch - first < chunk ? batch - first : chunk, width = images * positions;
        /* unfolded y [rows, chunk columns] = weight^T [rows, in_c] . staged x [in_c, chunk columns], then folded */
        VAE_TRY(vae_cpu_gemm_run(gemm, 1, 0, rows, width, u.staged_channels, weight, rows,
                                 staged + (size_t)first * (size_t)positions, columns, 0.0f, unfolded, width));
        VAE_TRY(fold(&u, images, unfolded, bias, y + (size_t)first * y_image));
    }
    return VAE_OK;
}

vae_status vae_cpu_conv_transpose2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                             const float *x, const float *weight, const float *dy, float *dx,
                                             float *dweight, float *dbias, float *workspace) {
    vae_cpu_gemm *gemm = vae_cpu_backend_gemm(backend);
    const vae_conv_unfolding u = vae_conv_transpose2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), positions = (int)vae_conv_positions(&u);
    const int columns = batch * positions, chunk = images_per_chunk(&u, batch);
    const size_t y_image = (size_t)u.channels * (size_t)u.height * (size_t)u.width;
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    if (dbias) channel_sums(dy, batch, u.channels, (size_t)u.height * (size_t)u.width, dbias);
    if (!dweight && !dx) return VAE_OK;
    if (dweight) stage(&u, batch, x, staged);
    for (int first = 0; first < batch; first += chunk) {
        const int images = batch - first < chunk ? batch - first : chunk, width = images * positions;
        float *staged_chunk = staged + (size_t)first * (size_t)positions;
        VAE_TRY(unfold(&u, images, dy + (size_t)first * y_image, unfolded));
        /* dweight [in_c, rows] (+)= staged x [in_c, chunk columns] . unfolded dy^T (reads this chunk's x ...) */
        if (dweight)
            VAE_TRY(vae_cpu_gemm_run(gemm, 0, 1, u.staged_channels, rows, width, staged_chunk, columns, unfolded, width,
                                     first ? 1.0f : 0.0f, dweight, rows));
        /* ... before staged dx [in_c, chunk columns] = weight [in_c, rows] . unfolded dy overwrites it */
        if (dx)
            VAE_TRY(vae_cpu_gemm_run(gemm, 0, 0, u.staged_channels, width, rows, weight, rows, unfolded, width, 0.0f,
                                     staged_chunk, columns));
    }
    if (dx) unstage(&u, batch, staged, NULL, dx);
    return VAE_OK;
}
