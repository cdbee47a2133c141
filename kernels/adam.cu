/* Fused Adam/AdamW over the flat parameter buffer, then the step counter's
 * advance, both reading their step from device memory so that a captured
 * graph replays every step correctly.
 *
 * At 0-based step s = counter->step, vae_adam_constants gives the schedule's
 * learning rate, the bias corrections and the clipping scale exactly as the
 * CPU backend computes them, then vae_adam_update runs per parameter. A
 * non-finite norm leaves params, m and v untouched (no NaN ever reaches the
 * parameters; the trainer's policy reads counter.nonfinite_seen), as on the
 * CPU backend. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_step_math.h"
#include "vae_cuda_common.cuh"

__global__ void adam_update_kernel(float *params, const float *grads, float *m, float *v, size_t count,
                                   vae_adam_settings settings, const float *grad_norm_squared,
                                   const vae_step_counter *counter) {
    const float norm_squared = *grad_norm_squared;
    if (vae_step_is_nonfinite(norm_squared)) return;
    const vae_adam_step_constants constants = vae_adam_constants(&settings, counter->step, norm_squared);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        float param = params[i], first = m[i], second = v[i];
        vae_adam_update(&param, &first, &second, grads[i], constants);
        params[i] = param;
        m[i] = first;
        v[i] = second;
    }
}

/* One thread, after the update (stream order): records a non-finite norm and
 * advances the step. */
__global__ void advance_step_kernel(const float *grad_norm_squared, vae_step_counter *counter) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    vae_advance_step_counter(counter, *grad_norm_squared);
}

extern "C" cudaError_t vae_launch_adam_step(float *params, const float *grads, float *m, float *v, size_t count,
                                            vae_adam_settings settings, const float *grad_norm_squared,
                                            vae_step_counter *counter, cudaStream_t stream) {
    if (count > 0) {
        adam_update_kernel<<<vae_grid_for(count), VAE_BLOCK, 0, stream>>>(params, grads, m, v, count, settings,
                                                                           grad_norm_squared, counter);
        cudaError_t status = cudaGetLastError();
        if (status != cudaSuccess) return status;
    }
    advance_step_kernel<<<1, 1, 0, stream>>>(grad_norm_squared, counter);
    return cudaGetLastError();
}
