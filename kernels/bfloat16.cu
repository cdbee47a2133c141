/* The GEMM operands of train.precision = bf16: a float matrix's values
 * rounded to bfloat16 by vae_bfloat16_bits (kernels/vae_math.h, the rounding
 * the CPU backend emulates) and packed, for cuBLAS to read as CUDA_R_16BF. */
#include "vae_cuda_common.cuh"
#include "vae_kernels.h"
#include "vae_math.h"

__global__ void round_to_bfloat16_kernel(const float *source, size_t lines, size_t line_length, size_t stride,
                                         uint16_t *destination) {
    const size_t count = lines * line_length;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        const size_t line = i / line_length, position = i - line * line_length;
        destination[i] = vae_bfloat16_bits(source[line * stride + position]);
    }
}

VAE_LAUNCHER cudaError_t vae_launch_round_to_bfloat16(const float *source, size_t lines, size_t line_length,
                                                      size_t stride, uint16_t *destination, cudaStream_t stream) {
    const size_t count = lines * line_length;
    if (count == 0) return cudaSuccess;
    VAE_LAUNCH(round_to_bfloat16_kernel, vae_grid_for(count), VAE_BLOCK, 0, stream)(
        source, lines, line_length, stride, destination);
    return cudaGetLastError();
}
