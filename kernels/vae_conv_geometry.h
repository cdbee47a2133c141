/* Convolution geometry, shared by the host (src/backends/backend.h, the CPU
 * backend, the model) and the CUDA kernels (kernels/conv.cu): the layer's
 * shape, the output-size formulas of nn.Conv2d and nn.ConvTranspose2d, the
 * workspace the backend operations need, and the im2col/col2im index mapping,
 * written once here and used by the CPU twins and the kernels alike.
 *
 * How the operations compute (both backends, one GEMM over the whole batch):
 * the "unfolded" (im2col) matrix of a layer has one row per (channel c, kernel
 * row i, kernel column j) of the LARGER image of the layer (conv2d: its input;
 * conv_transpose2d: its output) and one column per (image b, kernel position
 * (py, px)) over the SMALLER one (conv2d: its output; conv_transpose2d: its
 * input). Entry (row, column) is pixel
 *     (b, c, py * stride - padding + i, px * stride - padding + j)
 * of the larger image, or 0 where that lies in the padding. The smaller
 * image's channels are "staged" as a matrix [channels, batch * positions]
 * (column b * positions + p), so that
 *     conv2d forward        staged y = weight[out_c, in_c*k*k] . im2col(x)
 *     conv_transpose2d fwd  y = col2im(weight[in_c, out_c*k*k]^T . staged x)
 * and the gradients are the transposed products. col2im sums, into each
 * pixel of the larger image, every column entry that maps to it. */
#ifndef VAE_CONV_GEOMETRY_H
#define VAE_CONV_GEOMETRY_H

#include <stddef.h>
#include <stdint.h>

#include "vae_hostdevice.h"

typedef struct vae_conv_geometry {
    int in_channels, in_height, in_width;    /* the layer's input, one image, NCHW */
    int out_channels, out_height, out_width; /* the layer's output */
    int kernel_size, stride, padding;        /* square kernel; same stride/padding both axes */
} vae_conv_geometry;

/* nn.Conv2d: (in + 2p - k) / s + 1 (floor); <= 0 when the kernel does not
 * fit (and 0 for a stride below 1). */
VAE_HD int vae_conv_output_size(int in, int kernel_size, int stride, int padding) {
    if (stride < 1 || in + 2 * padding < kernel_size) return 0;
    return (in + 2 * padding - kernel_size) / stride + 1;
}

/* nn.ConvTranspose2d with output_padding 0, dilation 1: (in - 1) s - 2p + k. */
VAE_HD int vae_conv_transpose_output_size(int in, int kernel_size, int stride, int padding) {
    return (in - 1) * stride - 2 * padding + kernel_size;
}

/* The unfolded matrix of one layer, described by its larger and smaller
 * image (see the top of this file). */
typedef struct vae_conv_unfolding {
    int channels, height, width;           /* the larger image: one row block per channel */
    int positions_height, positions_width; /* the smaller image's pixels: the kernel positions */
    int staged_channels;                   /* the smaller image's channels (rows of the staged matrix) */
    int kernel_size, stride, padding;
} vae_conv_unfolding;

VAE_HD vae_conv_unfolding vae_conv2d_unfolding(const vae_conv_geometry *geometry) {
    vae_conv_unfolding unfolding = {geometry->in_channels,  geometry->in_height,   geometry->in_width,
                                    geometry->out_height,   geometry->out_width,   geometry->out_channels,
                                    geometry->kernel_size,  geometry->stride,      geometry->padding};
    return unfolding;
}

VAE_HD vae_conv_unfolding vae_conv_transpose2d_unfolding(const vae_conv_geometry *geometry) {
    vae_conv_unfolding unfolding = {geometry->out_channels, geometry->out_height,  geometry->out_width,
                                    geometry->in_height,    geometry->in_width,    geometry->in_channels,
                                    geometry->kernel_size,  geometry->stride,      geometry->padding};
    return unfolding;
}

/* Rows of the unfolded matrix: channels * k * k. */
VAE_HD int64_t vae_conv_unfolded_rows(const vae_conv_unfolding *unfolding) {
    return (int64_t)unfolding->channels * unfolding->kernel_size * unfolding->kernel_size;
}
/* Kernel positions per image. */
VAE_HD int64_t vae_conv_positions(const vae_conv_unfolding *unfolding) {
    return (int64_t)unfolding->positions_height * unfolding->positions_width;
}

/* The one relation between the two images, per axis: kernel position
 * `position`, kernel offset `offset` -> pixel of the larger image (may lie in
 * the padding: < 0 or >= its size). */
VAE_HD int vae_conv_pixel(int position, int offset, int stride, int padding) {
    return position * stride - padding + offset;
}

/* Its inverse, per axis: the kernel offset at which position `position`
 * covers `pixel` (valid when in [0, kernel_size)). */
VAE_HD int vae_conv_offset(int pixel, int position, int stride, int padding) {
    return pixel + padding - position * stride;
}

/* The kernel positions whose window covers `pixel`: first..last (empty when
 * first > last); position q covers it at offset vae_conv_offset(pixel, q). */
VAE_HD void vae_conv_positions_covering(int pixel, int kernel_size, int stride, int padding, int positions,
                                        int *first, int *last) {
    const int shifted = pixel + padding; /* = q * stride + offset, 0 <= offset < k */
    /* q >= (shifted - k + 1) / stride, rounded up; q <= shifted / stride. */
    const int low = shifted - kernel_size + 1;
    int start = low <= 0 ? 0 : (low + stride - 1) / stride;
    int end = shifted / stride;
    if (end > positions - 1) end = positions - 1;
    *first = start;
    *last = end;
}

/* Unfolded entry (row, column) with column = b * positions + p: the offset of
 * its pixel in the batch of larger images (NCHW), or -1 where it lies in the
 * padding. 64-bit: a batch may hold more than 2^31 values. */
VAE_HD int64_t vae_conv_unfolded_source(const vae_conv_unfolding *unfolding, int64_t row, int64_t column) {
    const int k = unfolding->kernel_size;
    const int64_t positions = vae_conv_positions(unfolding);
    const int channel = (int)(row / ((int64_t)k * k));
    const int within_kernel = (int)(row % ((int64_t)k * k));
    const int64_t image = column / positions;
    const int position = (int)(column % positions);
    const int y = vae_conv_pixel(position / unfolding->positions_width, within_kernel / k, unfolding->stride,
                                 unfolding->padding);
    const int x = vae_conv_pixel(position % unfolding->positions_width, within_kernel % k, unfolding->stride,
                                 unfolding->padding);
    if (y < 0 || y >= unfolding->height || x < 0 || x >= unfolding->width) return -1;
    return ((image * unfolding->channels + channel) * unfolding->height + y) * unfolding->width + x;
}

/* col2im of one pixel, gathered: pixel `index` (NCHW offset) of the batch of
 * larger images is start (a bias, or 0) plus every unfolded entry that maps
 * to it, added in ascending kernel offsets (row, then column): the order of
 * the CPU backend's fold, which scatters row by row. The CUDA fold kernel
 * runs this once per pixel (no atomics). */
VAE_HD float vae_conv_fold_pixel(const vae_conv_unfolding *unfolding, int batch, const float *unfolded, float start,
                                 size_t index) {
    const int k = unfolding->kernel_size;
    const size_t positions = (size_t)vae_conv_positions(unfolding), columns = (size_t)batch * positions;
    const size_t plane = (size_t)unfolding->height * (size_t)unfolding->width;
    const int x = (int)(index % (size_t)unfolding->width);
    const int y = (int)(index / (size_t)unfolding->width % (size_t)unfolding->height);
    const int channel = (int)(index / plane % (size_t)unfolding->channels);
    const size_t image = index / (plane * (size_t)unfolding->channels);
    int first_y, last_y, first_x, last_x;
    vae_conv_positions_covering(y, k, unfolding->stride, unfolding->padding, unfolding->positions_height, &first_y,
                                &last_y);
    vae_conv_positions_covering(x, k, unfolding->stride, unfolding->padding, unfolding->positions_width, &first_x,
                                &last_x);
    float sum = start;
    /* Positions from last to first: the offsets ascend. */
    for (int py = last_y; py >= first_y; --py) {
        const size_t row_of_y = ((size_t)channel * (size_t)k + (size_t)vae_conv_offset(y, py, unfolding->stride,
                                                                                        unfolding->padding)) *
                                (size_t)k;
        for (int px = last_x; px >= first_x; --px) {
            const size_t row = row_of_y + (size_t)vae_conv_offset(x, px, unfolding->stride, unfolding->padding);
            sum += unfolded[row * columns + image * positions + (size_t)py * (size_t)unfolding->positions_width +
                            (size_t)px];
        }
    }
    return sum;
}

/* The staged matrix [staged_channels, batch * positions] holds element
 * (b, c, p) of the smaller image (NCHW) at this offset. */
VAE_HD int64_t vae_conv_staged_offset(const vae_conv_unfolding *unfolding, int batch, int64_t image, int channel,
                                      int64_t position) {
    return (int64_t)channel * batch * vae_conv_positions(unfolding) + image * vae_conv_positions(unfolding) +
           position;
}

/* Floats the unfolded and staged matrices of one unfolding take for
 * `batch` images. */
VAE_HD size_t vae_conv_unfolding_floats(const vae_conv_unfolding *unfolding, int batch) {
    const size_t columns = (size_t)batch * (size_t)vae_conv_positions(unfolding);
    return columns * ((size_t)vae_conv_unfolded_rows(unfolding) + (size_t)unfolding->staged_channels);
}

/* Floats of backend memory the four operations need as workspace for
 * `batch` images: the unfolded matrix (rows x batch * positions) and the
 * staged matrix (staged_channels x batch * positions). The same for a layer's
 * forward and backward; a model allocates the maximum over its layers. The
 * output size tells the kinds apart (it follows nn.Conv2d's formula or
 * nn.ConvTranspose2d's); where it fits both (stride 1, padding (k-1)/2) or
 * neither (an invalid geometry, which the operations refuse), this is the
 * larger of the two needs, so it is enough for either kind. */
VAE_HD size_t vae_conv_workspace_floats(const vae_conv_geometry *geometry, int batch) {
    const vae_conv_unfolding forward = vae_conv2d_unfolding(geometry);
    const vae_conv_unfolding transposed = vae_conv_transpose2d_unfolding(geometry);
    const int is_conv2d =
        geometry->out_height == vae_conv_output_size(geometry->in_height, geometry->kernel_size, geometry->stride,
                                                     geometry->padding) &&
        geometry->out_width ==
            vae_conv_output_size(geometry->in_width, geometry->kernel_size, geometry->stride, geometry->padding);
    const int is_transposed = geometry->out_height == vae_conv_transpose_output_size(geometry->in_height,
                                                                                      geometry->kernel_size,
                                                                                      geometry->stride,
                                                                                      geometry->padding) &&
                              geometry->out_width == vae_conv_transpose_output_size(geometry->in_width,
                                                                                     geometry->kernel_size,
                                                                                     geometry->stride,
                                                                                     geometry->padding);
    const size_t conv2d_floats = vae_conv_unfolding_floats(&forward, batch);
    const size_t transposed_floats = vae_conv_unfolding_floats(&transposed, batch);
    if (is_conv2d && !is_transposed) return conv2d_floats;
    if (is_transposed && !is_conv2d) return transposed_floats;
    return conv2d_floats > transposed_floats ? conv2d_floats : transposed_floats;
}

#endif
