/* The importance-weighted training objective (model.objective = iwae): the
 * per-row log weights, normalised weights, row losses and the rescaling of
 * the likelihood's gradient (one block per data row), the loss sums (one
 * block, fixed order), and the latent backward pass (one thread per data row
 * and latent column). Formulas in vae_step_math.h, shared with the CPU
 * backend; no atomics, no synchronisation with the host (capturable). */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_step_math.h"
#include "vae_cuda_common.cuh"

/* One block per data row; threads take samples l = t, t+BLOCK, ...; the log
 * weights are recomputed in each pass instead of stored (any number of
 * samples). Then the block rescales the row's samples*width outputs. */
__global__ void iwae_objective_kernel(const float *logp, const float *mu_logvar, const float *z,
                                      const float *log_ratio, float *out, float *weight, float *row_loss, int rows,
                                      int latent, int samples, int width, float beta, uint64_t kl_warmup_steps,
                                      const vae_step_counter *counter, float logvar_clamp) {
    __shared__ double shared[VAE_BLOCK];
    const int row = blockIdx.x;
    const double beta_now = (double)vae_schedule_beta(counter->step, beta, kl_warmup_steps);
#define IWAE_LOG_WEIGHT(l) \
    vae_iwae_draw_log_weight(logp, mu_logvar, z, log_ratio, rows, latent, row, (l), beta_now, logvar_clamp)
    double local_max = -INFINITY;
    for (int l = threadIdx.x; l < samples; l += VAE_BLOCK) local_max = vae_nan_max(local_max, IWAE_LOG_WEIGHT(l));
    const double max_weight = vae_block_max<double, VAE_BLOCK>(local_max, shared);
    double sum = 0.0;
    if (!vae_iwae_max_decides(max_weight))
        for (int l = threadIdx.x; l < samples; l += VAE_BLOCK) sum += exp(IWAE_LOG_WEIGHT(l) - max_weight);
    const double total = vae_block_sum<double, VAE_BLOCK>(sum, shared);
    for (int l = threadIdx.x; l < samples; l += VAE_BLOCK)
        weight[(size_t)l * rows + row] = vae_iwae_normalized_weight(IWAE_LOG_WEIGHT(l), max_weight, total);
#undef IWAE_LOG_WEIGHT
    if (threadIdx.x == 0) row_loss[row] = (float)vae_iwae_row_loss(max_weight, total, samples);
    if (out == NULL) return;
    __syncthreads(); /* the weights written above are visible to the whole block */
    const size_t count = (size_t)samples * (size_t)width;
    for (size_t i = threadIdx.x; i < count; i += VAE_BLOCK) {
        const size_t l = i / (size_t)width;
        const size_t z_row = l * (size_t)rows + (size_t)row;
        out[z_row * (size_t)width + i % (size_t)width] *= vae_iwae_output_gradient_scale(weight[z_row], samples);
    }
}

/* One block: the batch's sums into the double accumulator, as
 * accumulate_loss_kernel adds them, with the row losses in the loss slot. */
__global__ void iwae_accumulate_kernel(const float *logp, const float *kl, const float *row_loss, int rows,
                                       int samples, double *accumulator) {
    __shared__ double shared[VAE_BLOCK];
    double loss = 0.0, reconstruction = 0.0, divergence = 0.0;
    for (int row = threadIdx.x; row < rows; row += VAE_BLOCK) {
        loss += (double)row_loss[row];
        reconstruction += vae_row_reconstruction(logp, rows, samples, row);
        divergence += (double)kl[row];
    }
    vae_block_add_loss_sums<VAE_BLOCK>(loss, reconstruction, divergence, rows, shared, accumulator);
}

/* One thread per (data row b, latent column j): the draws in order
 * l = 0..samples-1, as the CPU backend sums them. */
__global__ void iwae_latent_backward_kernel(const float *mu_logvar, const float *z, const float *dz,
                                            const float *weight, float *dmu_logvar, int rows, int latent,
                                            int samples, float beta, uint64_t kl_warmup_steps,
                                            const vae_step_counter *counter, float logvar_clamp) {
    const size_t total = (size_t)rows * (size_t)latent;
    const float prior_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)rows;
    for (size_t item = (size_t)blockIdx.x * blockDim.x + threadIdx.x; item < total;
         item += (size_t)gridDim.x * blockDim.x) {
        const size_t row = item / (size_t)latent, column = item % (size_t)latent;
        const size_t mu_index = row * 2 * (size_t)latent + column;
        const float mu = mu_logvar[mu_index];
        const float raw_logvar = mu_logvar[mu_index + latent];
        float grad_mu = 0.0f, grad_logvar = vae_iwae_posterior_gradient_logvar(prior_scale);
        for (int l = 0; l < samples; ++l) {
            const size_t z_row = (size_t)l * rows + row, index = z_row * latent + column;
            const float upstream = dz[index] + vae_iwae_prior_gradient_z(weight[z_row], z[index], prior_scale);
            grad_mu += upstream;
            grad_logvar += vae_reparam_grad_logvar(upstream, z[index], mu);
        }
        if (vae_logvar_is_clamped(raw_logvar, logvar_clamp)) grad_logvar = 0.0f;
        dmu_logvar[mu_index] = grad_mu;
        dmu_logvar[mu_index + latent] = grad_logvar;
    }
}

VAE_LAUNCHER cudaError_t vae_launch_iwae_objective(const float *logp, const float *mu_logvar, const float *z,
                                                   const float *log_ratio, const float *kl, float *out,
                                                   float *weight, float *row_loss, int rows, int latent, int samples,
                                                   int width, float beta, uint64_t kl_warmup_steps,
                                                   const vae_step_counter *counter, float logvar_clamp,
                                                   double *accumulator, cudaStream_t stream) {
    if (rows <= 0) return cudaSuccess;
    VAE_LAUNCH(iwae_objective_kernel, (unsigned int)rows, VAE_BLOCK, 0, stream)(
        logp, mu_logvar, z, log_ratio, out, weight, row_loss, rows, latent, samples, width, beta, kl_warmup_steps,
        counter, logvar_clamp);
    cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
    VAE_LAUNCH(iwae_accumulate_kernel, 1, VAE_BLOCK, 0, stream)(logp, kl, row_loss, rows, samples, accumulator);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_iwae_latent_backward(const float *mu_logvar, const float *z, const float *dz,
                                                         const float *weight, float *dmu_logvar, int rows, int latent,
                                                         int samples, float beta, uint64_t kl_warmup_steps,
                                                         const vae_step_counter *counter, float logvar_clamp,
                                                         cudaStream_t stream) {
    const size_t total = (size_t)rows * (size_t)latent;
    if (total == 0) return cudaSuccess;
    VAE_LAUNCH(iwae_latent_backward_kernel, vae_grid_for(total), VAE_BLOCK, 0, stream)(
        mu_logvar, z, dz, weight, dmu_logvar, rows, latent, samples, beta, kl_warmup_steps, counter, logvar_clamp);
    return cudaGetLastError();
}
