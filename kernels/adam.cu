/* Fused Adam/AdamW over the flat parameter buffer, then the step counter's
 * advance, in one launch, reading the step from device memory so that a
 * captured graph replays every step correctly.
 *
 * At 0-based step s = counter->step, vae_adam_constants gives the schedule's
 * learning rate, the bias corrections and the clipping scale exactly as the
 * CPU backend computes them, once per block (not per thread: they take three
 * double pows), then vae_adam_update runs per parameter. A non-finite norm
 * leaves params, m and v untouched (no NaN ever reaches the parameters; the
 * trainer's policy reads counter.nonfinite_seen), as on the CPU backend. The
 * block that finishes last advances the counter: every block has read the
 * step by then. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_step_math.h"
#include "vae_cuda_common.cuh"

__global__ void adam_step_kernel(float *params, const float *grads, float *m, float *v, size_t count,
                                 vae_adam_settings settings, const float *grad_norm_squared,
                                 vae_step_counter *counter, unsigned int *blocks_done) {
    __shared__ vae_adam_step_constants block_constants;
    __shared__ int skip_update;
    if (threadIdx.x == 0) {
        const float norm_squared = *grad_norm_squared;
        skip_update = vae_step_is_skipped(norm_squared, settings.skip_norm);
        if (!skip_update) block_constants = vae_adam_constants(&settings, counter->step, norm_squared);
    }
    __syncthreads();
    if (!skip_update) {
        const vae_adam_step_constants constants = block_constants;
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
             i += (size_t)gridDim.x * blockDim.x) {
            float param = params[i], first = m[i], second = v[i];
            vae_adam_update(&param, &first, &second, grads[i], constants);
            params[i] = param;
            m[i] = first;
            v[i] = second;
        }
    }
    /* Thread 0 read the step before this block's ticket; the last ticket
     * records a non-finite norm and advances the step. */
    if (threadIdx.x == 0 && vae_last_block_to_finish(blocks_done))
        vae_advance_step_counter(counter, *grad_norm_squared, settings.skip_norm);
}

VAE_LAUNCHER cudaError_t vae_launch_adam_step(float *params, const float *grads, float *m, float *v, size_t count,
                                              vae_adam_settings settings, const float *grad_norm_squared,
                                              vae_step_counter *counter, vae_kernel_scratch *scratch,
                                              cudaStream_t stream) {
    /* One block even with nothing to update: the counter still advances. */
    const unsigned int blocks = count > 0 ? vae_grid_for(count) : 1;
    VAE_LAUNCH(adam_step_kernel, blocks, VAE_BLOCK, 0, stream)(
        params, grads, m, v, count, settings, grad_norm_squared, counter, &scratch->adam_blocks_done);
    return cudaGetLastError();
}
