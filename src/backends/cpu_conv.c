/* The CPU backend's convolutions: im2col ("unfold"), one OpenBLAS GEMM over
 * the whole batch, col2im ("fold"), as kernels/vae_conv_geometry.h describes
 * them; the CUDA backend runs the same steps (kernels/conv.cu). The pixel
 * mapping comes from that header (vae_conv_pixel), so both backends unfold
 * and fold the same way. Loops run with OpenMP over independent rows or
 * image planes; every sum runs in a fixed order, so results do not depend on
 * the thread count. Arguments were checked by the vae_backend_* wrappers
 * (backend.c). */
#include "backends/cpu_conv.h"

#include <cblas.h>
#include <string.h>

#include "backends/backend.h"

/* Threads only above this many floats moved (below, waking them costs more
 * than the loop). */
#define CONV_PARALLEL_MIN 32768

/* The unfolded matrix [channels*k*k, batch*positions] of a batch of larger
 * images: row (c, i, j), column (b, py, px) holds pixel
 * (b, c, vae_conv_pixel(py, i), vae_conv_pixel(px, j)), or 0 in the padding. */
static void unfold(const vae_conv_unfolding *u, int batch, const float *image, float *unfolded) {
    const int k = u->kernel_size;
    const int64_t rows = vae_conv_unfolded_rows(u);
    const size_t positions = (size_t)vae_conv_positions(u), columns = (size_t)batch * positions;
    const size_t plane = (size_t)u->height * (size_t)u->width;
#pragma omp parallel for schedule(static) if ((size_t)rows * columns > CONV_PARALLEL_MIN)
    for (int64_t row = 0; row < rows; ++row) {
        const int channel = (int)(row / (k * k)), i = (int)(row % (k * k)) / k, j = (int)(row % k);
        /* px whose pixel lies inside the image: [first_x, last_x]. */
        int first_x = 0, last_x = u->positions_width - 1;
        while (first_x <= last_x && vae_conv_pixel(first_x, j, u->stride, u->padding) < 0) ++first_x;
        while (last_x >= first_x && vae_conv_pixel(last_x, j, u->stride, u->padding) >= u->width) --last_x;
        float *out = unfolded + (size_t)row * columns;
        for (int b = 0; b < batch; ++b) {
            const float *source_plane = image + ((size_t)b * (size_t)u->channels + (size_t)channel) * plane;
            for (int py = 0; py < u->positions_height; ++py) {
                float *destination = out + (size_t)b * positions + (size_t)py * (size_t)u->positions_width;
                const int y = vae_conv_pixel(py, i, u->stride, u->padding);
                if (y < 0 || y >= u->height || first_x > last_x) {
                    memset(destination, 0, sizeof(float) * (size_t)u->positions_width);
                    continue;
                }
                const float *source = source_plane + (size_t)y * (size_t)u->width;
                for (int px = 0; px < first_x; ++px) destination[px] = 0.0f;
                if (u->stride == 1) {
                    const int x = vae_conv_pixel(first_x, j, 1, u->padding);
                    memcpy(destination + first_x, source + x, sizeof(float) * (size_t)(last_x - first_x + 1));
                } else {
                    for (int px = first_x; px <= last_x; ++px)
                        destination[px] = source[vae_conv_pixel(px, j, u->stride, u->padding)];
                }
                for (int px = last_x + 1; px < u->positions_width; ++px) destination[px] = 0.0f;
            }
        }
    }
}

/* The inverse gather, summed: each pixel (b, c, y, x) of the larger images
 * becomes bias[c] (or 0) plus every unfolded entry that maps to it, added
 * in the order (i, j, py, px). One image plane per iteration: planes are
 * independent, so any thread count gives the same sums. */
static void fold(const vae_conv_unfolding *u, int batch, const float *unfolded, const float *bias, float *image) {
    const int k = u->kernel_size;
    const size_t positions = (size_t)vae_conv_positions(u), columns = (size_t)batch * positions;
    const size_t plane = (size_t)u->height * (size_t)u->width;
    const int64_t planes = (int64_t)batch * u->channels;
#pragma omp parallel for schedule(static) if ((size_t)vae_conv_unfolded_rows(u) * columns > CONV_PARALLEL_MIN)
    for (int64_t index = 0; index < planes; ++index) {
        const int b = (int)(index / u->channels), channel = (int)(index % u->channels);
        float *destination = image + (size_t)index * plane;
        const float start = bias ? bias[channel] : 0.0f;
        for (size_t pixel = 0; pixel < plane; ++pixel) destination[pixel] = start;
        for (int i = 0; i < k; ++i)
            for (int j = 0; j < k; ++j) {
                const size_t row = ((size_t)channel * (size_t)k + (size_t)i) * (size_t)k + (size_t)j;
                const float *source = unfolded + row * columns + (size_t)b * positions;
                int first_x = 0, last_x = u->positions_width - 1;
                while (first_x <= last_x && vae_conv_pixel(first_x, j, u->stride, u->padding) < 0) ++first_x;
                while (last_x >= first_x && vae_conv_pixel(last_x, j, u->stride, u->padding) >= u->width) --last_x;
                for (int py = 0; py < u->positions_height; ++py) {
                    const int y = vae_conv_pixel(py, i, u->stride, u->padding);
                    if (y < 0 || y >= u->height) continue;
                    float *target = destination + (size_t)y * (size_t)u->width;
                    const float *values = source + (size_t)py * (size_t)u->positions_width;
                    for (int px = first_x; px <= last_x; ++px)
                        target[vae_conv_pixel(px, j, u->stride, u->padding)] += values[px];
                }
            }
    }
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

/* C[M, N] = op(A) op(B), row-major (beta 0). */
static void gemm(int transpose_a, int transpose_b, int m, int n, int k, const float *a, int lda, const float *b,
                 int ldb, float *c, int ldc) {
    cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans, m, n,
                k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc);
}

/* The workspace: the unfolded matrix, then the staged one. */
static float *staged_part(const vae_conv_unfolding *u, int batch, float *workspace) {
    return workspace + (size_t)vae_conv_unfolded_rows(u) * (size_t)batch * (size_t)vae_conv_positions(u);
}

vae_status vae_cpu_conv2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch, const float *x,
                                  const float *weight, const float *bias, float *y, float *workspace) {
    (void)backend;
    const vae_conv_unfolding u = vae_conv2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    unfold(&u, batch, x, unfolded);
    /* staged y [out_c, columns] = weight [out_c, rows] . unfolded [rows, columns] */
    gemm(0, 0, u.staged_channels, columns, rows, weight, rows, unfolded, columns, staged, columns);
    unstage(&u, batch, staged, bias, y);
    return VAE_OK;
}

vae_status vae_cpu_conv2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                   const float *x, const float *weight, const float *dy, float *dx, float *dweight,
                                   float *dbias, float *workspace) {
    (void)backend;
    const vae_conv_unfolding u = vae_conv2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    if (dbias) channel_sums(dy, batch, u.staged_channels, (size_t)vae_conv_positions(&u), dbias);
    if (!dweight && !dx) return VAE_OK;
    stage(&u, batch, dy, staged);
    if (dweight) {
        unfold(&u, batch, x, unfolded);
        /* dweight [out_c, rows] = staged dy [out_c, columns] . unfolded^T */
        gemm(0, 1, u.staged_channels, rows, columns, staged, columns, unfolded, columns, dweight, rows);
    }
    if (dx) {
        /* unfolded gradient [rows, columns] = weight^T [rows, out_c] . staged dy, then folded */
        gemm(1, 0, rows, columns, u.staged_channels, weight, rows, staged, columns, unfolded, columns);
        fold(&u, batch, unfolded, NULL, dx);
    }
    return VAE_OK;
}

vae_status vae_cpu_conv_transpose2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                            const float *x, const float *weight, const float *bias, float *y,
                                            float *workspace) {
    (void)backend;
    const vae_conv_unfolding u = vae_conv_transpose2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    stage(&u, batch, x, staged);
    /* unfolded y [rows, columns] = weight^T [rows, in_c] . staged x [in_c, columns], then folded */
    gemm(1, 0, rows, columns, u.staged_channels, weight, rows, staged, columns, unfolded, columns);
    fold(&u, batch, unfolded, bias, y);
    return VAE_OK;
}

vae_status vae_cpu_conv_transpose2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                             const float *x, const float *weight, const float *dy, float *dx,
                                             float *dweight, float *dbias, float *workspace) {
    (void)backend;
    const vae_conv_unfolding u = vae_conv_transpose2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = staged_part(&u, batch, workspace);
    if (dbias) channel_sums(dy, batch, u.channels, (size_t)u.height * (size_t)u.width, dbias);
    if (!dweight && !dx) return VAE_OK;
    unfold(&u, batch, dy, unfolded);
    if (dweight) {
        stage(&u, batch, x, staged);
        /* dweight [in_c, rows] = staged x [in_c, columns] . unfolded dy^T */
        gemm(0, 1, u.staged_channels, rows, columns, staged, columns, unfolded, columns, dweight, rows);
    }
    if (dx) {
        /* staged dx [in_c, columns] = weight [in_c, rows] . unfolded dy, then unstaged */
        gemm(0, 0, u.staged_channels, columns, rows, weight, rows, unfolded, columns, staged, columns);
        unstage(&u, batch, staged, NULL, dx);
    }
    return VAE_OK;
}
