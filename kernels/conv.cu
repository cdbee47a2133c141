/* The convolutions' own kernels, around the cuBLAS GEMMs of the CUDA backend
 * (src/backends/backend_cuda.c): im2col ("unfold"), col2im ("fold", with the
 * bias), staging the smaller image's channels as a matrix and back, and the
 * bias gradient. The index mapping is kernels/vae_conv_geometry.h's, the one
 * the CPU backend's twins (src/backends/cpu_conv.c) use. Grid-stride loops
 * with 64-bit indices: an unfolded batch may hold more than 2^31 values.
 * Deterministic: no atomics; fold adds each pixel's terms in the CPU fold's
 * order (kernel rows, then kernel columns, ascending), so from the same
 * unfolded matrix both give the same sums. */
#include "vae_kernels.h"
#include "vae_conv_geometry.h"
#include "vae_cuda_common.cuh"

/* unfolded[row, column] = the larger image's pixel that entry maps to, or 0. */
__global__ void conv_unfold_kernel(vae_conv_unfolding unfolding, int batch, const float *image, float *unfolded) {
    const int64_t columns = (int64_t)batch * vae_conv_positions(&unfolding);
    const size_t count = (size_t)vae_conv_unfolded_rows(&unfolding) * (size_t)columns;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const int64_t source = vae_conv_unfolded_source(&unfolding, (int64_t)(i / (size_t)columns),
                                                        (int64_t)(i % (size_t)columns));
        unfolded[i] = source >= 0 ? image[source] : 0.0f;
    }
}

/* image[b, c, y, x] = bias[c] (or 0) + every unfolded entry that maps to the
 * pixel: one thread per pixel gathers them (vae_conv_fold_pixel). */
__global__ void conv_fold_kernel(vae_conv_unfolding unfolding, int batch, const float *unfolded, const float *bias,
                                 float *image) {
    const size_t plane = (size_t)unfolding.height * (size_t)unfolding.width;
    const size_t count = (size_t)batch * (size_t)unfolding.channels * plane;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const float start = bias != NULL ? bias[i / plane % (size_t)unfolding.channels] : 0.0f;
        image[i] = vae_conv_fold_pixel(&unfolding, batch, unfolded, start, i);
    }
}

/* staged[c, b*positions + p] = image[b, c, p] (to_staged), or the reverse
 * plus bias[c] (bias may be NULL). One thread per image element. */
__global__ void conv_stage_kernel(vae_conv_unfolding unfolding, int batch, const float *from, const float *bias,
                                  float *to, int to_staged) {
    const size_t positions = (size_t)vae_conv_positions(&unfolding);
    const size_t count = (size_t)batch * (size_t)unfolding.staged_channels * positions;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const size_t position = i % positions;
        const int channel = (int)(i / positions % (size_t)unfolding.staged_channels);
        const size_t image_index = i / (positions * (size_t)unfolding.staged_channels);
        const size_t staged =
            (size_t)vae_conv_staged_offset(&unfolding, batch, (int64_t)image_index, channel, (int64_t)position);
        if (to_staged) to[staged] = from[i];
        else to[i] = from[staged] + (bias != NULL ? bias[channel] : 0.0f);
    }
}

/* One block per channel: sums[c] = sum over b and p of values[b, c, p], in
 * double, as a fixed tree (deterministic). */
__global__ void conv_channel_sums_kernel(const float *values, int batch, int channels, size_t plane, float *sums) {
    __shared__ double shared[VAE_BLOCK];
    const int channel = blockIdx.x;
    const size_t count = (size_t)batch * plane;
    double sum = 0.0;
    for (size_t e = threadIdx.x; e < count; e += VAE_BLOCK) {
        const size_t image_index = e / plane, p = e % plane;
        sum += (double)values[(image_index * (size_t)channels + (size_t)channel) * plane + p];
    }
    const double total = vae_block_sum<double, VAE_BLOCK>(sum, shared);
    if (threadIdx.x == 0) sums[channel] = (float)total;
}

VAE_LAUNCHER cudaError_t vae_launch_conv_unfold(vae_conv_unfolding unfolding, int batch, const float *image,
                                                float *unfolded, cudaStream_t stream) {
    const size_t count =
        (size_t)vae_conv_unfolded_rows(&unfolding) * (size_t)batch * (size_t)vae_conv_positions(&unfolding);
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(conv_unfold_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(unfolding, batch, image, unfolded);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_conv_fold(vae_conv_unfolding unfolding, int batch, const float *unfolded,
                                              const float *bias, float *image, cudaStream_t stream) {
    const size_t count = (size_t)batch * (size_t)unfolding.channels * (size_t)unfolding.height * (size_t)unfolding.width;
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(conv_fold_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(unfolding, batch, unfolded, bias, image);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_conv_stage(vae_conv_unfolding unfolding, int batch, const float *image,
                                               float *staged, cudaStream_t stream) {
    const size_t count = (size_t)batch * (size_t)unfolding.staged_channels * (size_t)vae_conv_positions(&unfolding);
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(conv_stage_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(unfolding, batch, image, NULL, staged, 1);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_conv_unstage(vae_conv_unfolding unfolding, int batch, const float *staged,
                                                 const float *bias, float *image, cudaStream_t stream) {
    const size_t count = (size_t)batch * (size_t)unfolding.staged_channels * (size_t)vae_conv_positions(&unfolding);
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(conv_stage_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(unfolding, batch, staged, bias, image, 0);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_conv_channel_sums(const float *values, int batch, int channels, size_t plane,
                                                      float *sums, cudaStream_t stream) {
    if (channels <= 0) return cudaSuccess;
    VAE_LAUNCH(conv_channel_sums_kernel, (unsigned int)channels, VAE_BLOCK, 0, stream)(
        values, batch, channels, plane, sums);
    return cudaGetLastError();
}
