/* y = a + scale * b, element-wise (a hierarchical model's residual sums and
 * the like): vae_add_scaled (kernels/vae_math.h), an explicit fused
 * multiply-add, so the bits equal the CPU backend's. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_cuda_common.cuh"

/* y may be a or b itself: each element is read and written by one thread. */
__global__ void add_scaled_kernel(const float *a, const float *b, float scale, float *y, size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        y[i] = vae_add_scaled(a[i], b[i], scale);
}

VAE_LAUNCHER cudaError_t vae_launch_add_scaled(const float *a, const float *b, float scale, float *y, size_t count,
                                               cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(add_scaled_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(a, b, scale, y, count);
    return cudaGetLastError();
}
