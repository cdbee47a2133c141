/* The reparameterisation and the closed-form KL.
 *
 * Forward: z[l*rows+b, j] = mu[b,j] + exp(0.5*logvar[b,j]) * eps with eps
 * from cuRAND's Philox bijection at (seed, subsequence(step+step_offset,
 * purpose, vae_noise_row_address(l, b)), column column_offset + j)
 * (vae_curand_philox.h): no state in memory,
 * so the draw depends only on its address and the step read from device
 * memory (graph-replayable, equal to the CPU's vae_normal4 to float ulps).
 * kl[b] = sum_j vae_kl_term, one block per row, fixed-order tree.
 *
 * logvar_clamp > 0 clamps logvar to [-c, c] (fminf/fmaxf) before any use, as
 * the CPU backend does; the backward pass gives zero gradient w.r.t. a logvar
 * that lay strictly outside [-c, c]. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_philox.h"
#include "vae_curand_philox.h"
#include "vae_cuda_common.cuh"

/* The Philox blocks (4 columns each, from a multiple of 4) that a row's
 * columns column_offset .. column_offset + latent - 1 draw from. */
VAE_HD size_t philox_blocks_per_row(uint32_t column_offset, int latent) {
    return (size_t)(((uint64_t)column_offset + (uint64_t)latent - 1) / 4 - (uint64_t)column_offset / 4 + 1);
}

/* One thread per (z row, Philox block of 4 columns): with a column offset
 * that is not a multiple of 4 the row's first and last blocks are partly
 * used, so every column draws what it would in a wider call. */
__global__ void reparam_forward_kernel(const float *mu_logvar, float *z, int rows, int latent, int samples,
                                       vae_noise_settings noise, const vae_step_counter *counter,
                                       const float *eps_override, float logvar_clamp) {
    const size_t blocks_per_row = philox_blocks_per_row(noise.column_offset, latent);
    const size_t total = (size_t)samples * (size_t)rows * blocks_per_row;
    const uint64_t step = counter->step + noise.step_offset;
    const uint64_t first = noise.column_offset, end = first + (uint64_t)latent;
    for (size_t item = (size_t)blockIdx.x * blockDim.x + threadIdx.x; item < total;
         item += (size_t)gridDim.x * blockDim.x) {
        const int z_row = (int)(item / blocks_per_row); /* = l*rows + b */
        const uint64_t block = (first & ~(uint64_t)3) + (uint64_t)(item % blocks_per_row) * 4;
        const int data_row = z_row % rows;

        float eps[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (eps_override == NULL)
            vae_curand_normal4(noise.seed,
                               vae_philox_subsequence(step, noise.random_purpose,
                                                      vae_noise_row_address(&noise, rows, z_row / rows, data_row)),
                               block, eps);
        const float *mu = mu_logvar + (size_t)data_row * 2 * latent;
        const float *logvar = mu + latent;
        for (int k = 0; k < 4; ++k) {
            const uint64_t philox_column = block + (uint64_t)k;
            if (philox_column < first) continue;
            if (philox_column >= end) break;
            const int column = (int)(philox_column - first);
            const size_t index = (size_t)z_row * latent + column;
            const float e = eps_override != NULL ? eps_override[index] : eps[k];
            z[index] = vae_reparam_z(mu[column], vae_clamp_logvar(logvar[column], logvar_clamp), e);
        }
    }
}

/* One block per data row. */
__global__ void kl_forward_kernel(const float *mu_logvar, float *kl, int latent, float logvar_clamp) {
    __shared__ float shared[VAE_BLOCK];
    const float *mu = mu_logvar + (size_t)blockIdx.x * 2 * latent;
    const float *logvar = mu + latent;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < latent; j += VAE_BLOCK)
        sum += vae_kl_term(mu[j], vae_clamp_logvar(logvar[j], logvar_clamp));
    float total = vae_block_sum<float, VAE_BLOCK>(sum, shared);
    if (threadIdx.x == 0) kl[blockIdx.x] = total;
}

/* One thread per (data row b, latent column j): sums the samples in order
 * l = 0..samples-1, then adds the KL gradient scaled by beta_t / rows. */
__global__ void reparam_kl_backward_kernel(const float *mu_logvar, const float *z, const float *dz,
                                           float *dmu_logvar, int rows, int latent, int samples, float beta,
                                           uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                           float logvar_clamp) {
    const size_t total = (size_t)rows * (size_t)latent;
    const float kl_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)rows;
    for (size_t item = (size_t)blockIdx.x * blockDim.x + threadIdx.x; item < total;
         item += (size_t)gridDim.x * blockDim.x) {
        const int row = (int)(item / (size_t)latent);
        const int column = (int)(item % (size_t)latent);
        const size_t mu_index = (size_t)row * 2 * latent + column;
        const float mu = mu_logvar[mu_index];
        const float raw_logvar = mu_logvar[mu_index + latent];
        const float logvar = vae_clamp_logvar(raw_logvar, logvar_clamp);

        float grad_mu = 0.0f, grad_logvar = 0.0f;
        for (int l = 0; l < samples; ++l) {
            const size_t index = ((size_t)l * rows + row) * latent + column;
            const float upstream = dz[index];
            grad_mu += upstream;
            grad_logvar += vae_reparam_grad_logvar(upstream, z[index], mu);
        }
        grad_mu += kl_scale * vae_kl_grad_mu(mu);
        grad_logvar += kl_scale * vae_kl_grad_logvar(logvar);
        if (vae_logvar_is_clamped(raw_logvar, logvar_clamp)) grad_logvar = 0.0f;
        dmu_logvar[mu_index] = grad_mu;
        dmu_logvar[mu_index + latent] = grad_logvar;
    }
}

VAE_LAUNCHER cudaError_t vae_launch_reparam_kl_forward(const float *mu_logvar, float *z, float *kl, int rows,
                                                       int latent, int samples, vae_noise_settings noise,
                                                       const vae_step_counter *counter, const float *eps_override,
                                                       float logvar_clamp, cudaStream_t stream) {
    if (samples <= 0 || rows <= 0 || latent <= 0) return cudaSuccess;
    size_t total = (size_t)samples * (size_t)rows * philox_blocks_per_row(noise.column_offset, latent);
    VAE_LAUNCH(reparam_forward_kernel, vae_grid_for(total), VAE_BLOCK, 0, stream)(
        mu_logvar, z, rows, latent, samples, noise, counter, eps_override, logvar_clamp);
    cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
    VAE_LAUNCH(kl_forward_kernel, (unsigned int)rows, VAE_BLOCK, 0, stream)(mu_logvar, kl, latent, logvar_clamp);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_reparam_kl_backward(const float *mu_logvar, const float *z, const float *dz,
                                                        float *dmu_logvar, int rows, int latent, int samples,
                                                        float beta, uint64_t kl_warmup_steps,
                                                        const vae_step_counter *counter, float logvar_clamp,
                                                        cudaStream_t stream) {
    size_t total = (size_t)rows * (size_t)latent;
    if (total == 0) return cudaSuccess;
    VAE_LAUNCH(reparam_kl_backward_kernel, vae_grid_for(total), VAE_BLOCK, 0, stream)(
        mu_logvar, z, dz, dmu_logvar, rows, latent, samples, beta, kl_warmup_steps, counter, logvar_clamp);
    return cudaGetLastError();
}
