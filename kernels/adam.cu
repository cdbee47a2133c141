/* Fused Adam/AdamW over the flat parameter buffer, then the step counter's
 * advance, both reading their step from device memory so that a captured
 * graph replays every step correctly.
 *
 * At 0-based step s = counter->step: t = s + 1, lr = vae_schedule_lr(s, ...),
 * bias1 = (float)(1 - beta1^t) and bias2 = (float)(1 - beta2^t) computed in
 * double (as the CPU backend does), and the gradient is multiplied by
 * vae_clip_scale(*grad_norm_squared, clip_norm) before vae_adam_update. A
 * non-finite norm leaves params, m and v untouched (no NaN ever reaches the
 * parameters; the trainer's policy reads counter.nonfinite_seen), as on the
 * CPU backend. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_cuda_common.cuh"

__global__ void adam_update_kernel(float *params, const float *grads, float *m, float *v, size_t count,
                                   vae_adam_settings settings, const float *grad_norm_squared,
                                   const vae_step_counter *counter) {
    const float norm_squared = *grad_norm_squared;
    if (!isfinite(norm_squared)) return;
    const uint64_t step = counter->step;
    const uint64_t t = step + 1;
    const float lr = vae_schedule_lr(step, settings.lr_schedule, settings.lr, settings.lr_min,
                                     settings.warmup_steps, settings.total_steps);
    const float bias1 = (float)(1.0 - pow((double)settings.beta1, (double)t));
    const float bias2 = (float)(1.0 - pow((double)settings.beta2, (double)t));
    const float clip = vae_clip_scale(norm_squared, settings.clip_norm);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x) {
        float param = params[i], first = m[i], second = v[i];
        vae_adam_update(&param, &first, &second, grads[i] * clip, lr, &settings, bias1, bias2);
        params[i] = param;
        m[i] = first;
        v[i] = second;
    }
}

/* One thread, after the update (stream order): records a non-finite norm and
 * advances the step. */
__global__ void advance_step_kernel(const float *grad_norm_squared, vae_step_counter *counter) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    if (!isfinite(*grad_norm_squared)) {
        counter->nonfinite_seen = 1;
        counter->skipped_steps += 1;
    }
    counter->step += 1;
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
