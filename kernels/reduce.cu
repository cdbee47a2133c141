/* Deterministic reductions: the gradient's sum of squares (for global-norm
 * clipping), the loss accumulator, and the importance-weighted log mean
 * (IWAE). Every sum is a fixed-order tree (the one atomic, the last-block
 * count, only picks which block adds the partials), so a run repeats bit
 * for bit. Sums are carried in double. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_step_math.h"
#include "vae_cuda_common.cuh"

/* One launch of VAE_REDUCTION_BLOCKS blocks: block k writes the sum of
 * squares of its grid-stride share to partials[k]; the block that finishes
 * last adds the partials with the same fixed tree, so the result does not
 * depend on which block that is. */
__global__ void sum_of_squares_kernel(const float *values, size_t count, vae_kernel_scratch *scratch,
                                      float *result) {
    __shared__ double shared[VAE_BLOCK];
    __shared__ int last_block;
    double sum = 0.0;
    for (size_t i = (size_t)blockIdx.x * VAE_BLOCK + threadIdx.x; i < count; i += (size_t)gridDim.x * VAE_BLOCK) {
        const double value = (double)values[i];
        sum += value * value;
    }
    const double block_total = vae_block_sum<double, VAE_BLOCK>(sum, shared);
    if (threadIdx.x == 0) {
        scratch->partials[blockIdx.x] = block_total;
        last_block = vae_last_block_to_finish(&scratch->sum_of_squares_blocks_done);
    }
    __syncthreads();
    if (!last_block) return;
    double partial_sum = 0.0;
    for (unsigned int k = threadIdx.x; k < gridDim.x; k += VAE_BLOCK) partial_sum += __ldcg(&scratch->partials[k]);
    const double total = vae_block_sum<double, VAE_BLOCK>(partial_sum, shared);
    if (threadIdx.x == 0) *result = (float)total;
}

/* One block: per data row b, recon_b = (1/samples) sum_l logp[l*rows+b],
 * loss_b = -recon_b + beta_t * kl[b]; the sums over rows are added to the
 * double accumulator (enum vae_loss_slot). */
__global__ void accumulate_loss_kernel(const float *logp, const float *kl, int rows, int samples, float beta,
                                       uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                       double *accumulator) {
    __shared__ double shared[VAE_BLOCK];
    const double beta_t = (double)vae_schedule_beta(counter->step, beta, kl_warmup_steps);
    double loss = 0.0, reconstruction = 0.0, divergence = 0.0;
    for (int row = threadIdx.x; row < rows; row += VAE_BLOCK) {
        const double log_likelihood = vae_row_reconstruction(logp, rows, samples, row);
        const double row_kl = (double)kl[row];
        reconstruction += log_likelihood;
        divergence += row_kl;
        loss += vae_row_loss(log_likelihood, row_kl, beta_t);
    }
    vae_block_add_loss_sums<VAE_BLOCK>(loss, reconstruction, divergence, rows, shared, accumulator);
}

/* log p(x|z_l) + sum_j [log p(z_lj) - log q(z_lj|x)] for sample l of row b. */
__device__ double importance_log_weight(const float *logp, const float *mu_logvar, const float *z, int row, int l,
                                        int rows, int latent, float logvar_clamp) {
    const float *mu = mu_logvar + (size_t)row * 2 * latent;
    const float *logvar = mu + latent;
    const size_t z_row = (size_t)l * rows + row;
    const float *z_values = z + z_row * latent;
    double weight = (double)logp[z_row];
    for (int j = 0; j < latent; ++j)
        weight += (double)vae_log_prior_minus_log_posterior(z_values[j], mu[j],
                                                            vae_clamp_logvar(logvar[j], logvar_clamp));
    return weight;
}

/* One block per data row: stable logsumexp over the samples minus
 * log(samples), with vae_step_math.h's rule for NaN and infinite weights.
 * Threads take samples l = t, t+BLOCK, ...; the log weights are recomputed in
 * the second pass instead of stored (any number of samples). */
__global__ void importance_log_mean_kernel(const float *logp, const float *mu_logvar, const float *z,
                                           float *result, int rows, int latent, int samples, float logvar_clamp) {
    __shared__ double shared[VAE_BLOCK];
    const int row = blockIdx.x;
    double local_max = -INFINITY;
    for (int l = threadIdx.x; l < samples; l += VAE_BLOCK) {
        const double weight = importance_log_weight(logp, mu_logvar, z, row, l, rows, latent, logvar_clamp);
        local_max = vae_nan_max(local_max, weight);
    }
    const double max_weight = vae_block_max<double, VAE_BLOCK>(local_max, shared);
    if (vae_iwae_max_decides(max_weight)) {
        if (threadIdx.x == 0) result[row] = vae_iwae_finish(max_weight, 0.0, samples);
        return;
    }
    double sum = 0.0;
    for (int l = threadIdx.x; l < samples; l += VAE_BLOCK)
        sum += exp(importance_log_weight(logp, mu_logvar, z, row, l, rows, latent, logvar_clamp) - max_weight);
    const double total = vae_block_sum<double, VAE_BLOCK>(sum, shared);
    if (threadIdx.x == 0) result[row] = vae_iwae_finish(max_weight, total, samples);
}

VAE_LAUNCHER cudaError_t vae_launch_sum_of_squares(const float *values, size_t count, float *result,
                                                   vae_kernel_scratch *scratch, cudaStream_t stream) {
    VAE_LAUNCH(sum_of_squares_kernel, VAE_REDUCTION_BLOCKS, VAE_BLOCK, 0, stream)(values, count, scratch, result);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_accumulate_loss(const float *logp, const float *kl, int rows, int samples,
                                                    float beta, uint64_t kl_warmup_steps,
                                                    const vae_step_counter *counter, double *accumulator,
                                                    cudaStream_t stream) {
    VAE_LAUNCH(accumulate_loss_kernel, 1, VAE_BLOCK, 0, stream)(
        logp, kl, rows, samples, beta, kl_warmup_steps, counter, accumulator);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_importance_log_mean(const float *logp, const float *mu_logvar, const float *z,
                                                        float *result, int rows, int latent, int samples,
                                                        float logvar_clamp, cudaStream_t stream) {
    if (rows <= 0) return cudaSuccess;
    VAE_LAUNCH(importance_log_mean_kernel, (unsigned int)rows, VAE_BLOCK, 0, stream)(
        logp, mu_logvar, z, result, rows, latent, samples, logvar_clamp);
    return cudaGetLastError();
}
