/* Element-wise kernels of a linear layer: bias add (after the cuBLAS GEMM, so
 * y holds the pre-activation that the backward pass needs), activation
 * forward and backward, the bias gradient (column sums), and fill. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_cuda_common.cuh"

__global__ void fill_kernel(float *destination, float value, size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        destination[i] = value;
}

__global__ void bias_add_kernel(float *y, const float *bias, int width, size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        y[i] += bias[i % (size_t)width];
}

__global__ void activation_forward_kernel(int activation, const float *pre, float *post, size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        post[i] = vae_activation_forward(activation, pre[i]);
}

/* dpre may alias dpost: each element is read and written by one thread. */
__global__ void activation_backward_kernel(int activation, const float *pre, const float *dpost, float *dpre,
                                           size_t count) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dpre[i] = vae_activation_backward(activation, pre[i], dpost[i]);
}

/* Column sums, deterministic: a block covers BIAS_COLUMNS columns with
 * BIAS_ROW_LANES threads per column; lane k sums rows k, k+LANES, ... in
 * order, then the lanes' partials are added in lane order. Adjacent threads
 * read adjacent columns (coalesced). 32 lanes (1024-thread blocks): a layer
 * 2048 wide has only 64 blocks, so the rows are what gives the GPU enough
 * threads in flight. */
#define BIAS_COLUMNS 32
#define BIAS_ROW_LANES 32

__global__ void bias_gradient_kernel(const float *dy, float *bias_gradient, int rows, int width) {
    __shared__ float partial[BIAS_ROW_LANES][BIAS_COLUMNS];
    const int column = blockIdx.x * BIAS_COLUMNS + threadIdx.x;
    const int lane = threadIdx.y;
    float sum = 0.0f;
    if (column < width)
        for (int row = lane; row < rows; row += BIAS_ROW_LANES) sum += dy[(size_t)row * width + column];
    partial[lane][threadIdx.x] = sum;
    __syncthreads();
    if (lane == 0 && column < width) {
        float total = partial[0][threadIdx.x];
        for (int k = 1; k < BIAS_ROW_LANES; ++k) total += partial[k][threadIdx.x];
        bias_gradient[column] = total;
    }
}

VAE_LAUNCHER cudaError_t vae_launch_fill(float *destination, float value, size_t count, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(fill_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(destination, value, count);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_bias_add(float *y, const float *bias, int rows, int width, cudaStream_t stream) {
    size_t count = (size_t)rows * (size_t)width;
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(bias_add_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(y, bias, width, count);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_bias_gradient(const float *dy, float *bias_gradient, int rows, int width,
                                                  cudaStream_t stream) {
    if (width <= 0) return cudaSuccess;
    dim3 block(BIAS_COLUMNS, BIAS_ROW_LANES);
    dim3 grid((unsigned int)((width + BIAS_COLUMNS - 1) / BIAS_COLUMNS));
    VAE_LAUNCH(bias_gradient_kernel, grid, block, 0, stream)(dy, bias_gradient, rows, width);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_activation_forward(int activation, const float *pre, float *post, size_t count,
                                                       cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(activation_forward_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(activation, pre, post, count);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_activation_backward(int activation, const float *pre, const float *dpost,
                                                        float *dpre, size_t count, cudaStream_t stream) {
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(activation_backward_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(
        activation, pre, dpost, dpre, count);
    return cudaGetLastError();
}
