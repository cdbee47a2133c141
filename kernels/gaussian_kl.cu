/* The hierarchical latents' per-row reductions over a group's dimensions, one
 * block per row, each thread's columns summed in a fixed tree:
 *
 * gaussian_kl: the KL of two diagonal Gaussians (a group's posterior q
 * against its conditional prior p), forward and backward fused. The row's KL
 * is summed first; then, when asked and the row is not below free bits
 * (every thread has the row's total from the block sum), each thread adds
 * its columns' scaled gradients to dq and dp (kernels/vae_math.h:
 * vae_gaussian_kl_term, vae_gaussian_kl_grad, vae_below_free_bits, the
 * formulas the CPU backend uses). The step is read from device memory, so a
 * captured graph replays the warm-up schedule.
 *
 * gaussian_log_ratio: log p(z) - log q(z) of the group's sample, for the
 * importance weights (vae_gaussian_log_ratio_term), and its backward pass in
 * the importance-weighted objective (vae_gaussian_log_ratio_grad times
 * vae_iwae_log_ratio_coefficient), one thread per element. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_step_math.h"
#include "vae_cuda_common.cuh"

__global__ void gaussian_kl_kernel(const float *q, const float *p, float *kl, float *dq, float *dp, int rows,
                                   int latent, float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                   float logvar_clamp, float free_bits) {
    __shared__ float shared[VAE_BLOCK];
    const size_t row = (size_t)blockIdx.x * 2 * (size_t)latent;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < latent; j += VAE_BLOCK) {
        const size_t mu = row + (size_t)j, logvar = mu + (size_t)latent;
        sum += vae_gaussian_kl_term(q[mu], vae_clamp_logvar(q[logvar], logvar_clamp), p[mu],
                                    vae_clamp_logvar(p[logvar], logvar_clamp));
    }
    /* Every thread gets the total (vae_block_sum broadcasts it through shared
     * memory), so all agree on whether the row is below free bits. */
    const float total = vae_block_sum<float, VAE_BLOCK>(sum, shared);
    if (threadIdx.x == 0) kl[blockIdx.x] = total;
    if (dq == NULL || vae_below_free_bits(total, free_bits)) return;
    const float kl_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)rows;
    for (int j = threadIdx.x; j < latent; j += VAE_BLOCK) {
        const size_t mu = row + (size_t)j, logvar = mu + (size_t)latent;
        const float q_logvar = vae_clamp_logvar(q[logvar], logvar_clamp);
        const float p_logvar = vae_clamp_logvar(p[logvar], logvar_clamp);
        const vae_gaussian_kl_gradient g = vae_gaussian_kl_grad(q[mu], q_logvar, p[mu], p_logvar);
        dq[mu] += kl_scale * g.q_mu;
        dp[mu] += kl_scale * g.p_mu;
        if (!vae_logvar_is_clamped(q[logvar], logvar_clamp)) dq[logvar] += kl_scale * g.q_logvar;
        if (!vae_logvar_is_clamped(p[logvar], logvar_clamp)) dp[logvar] += kl_scale * g.p_logvar;
    }
}

__global__ void gaussian_log_ratio_kernel(const float *z, const float *q, const float *p, float *out, int latent,
                                          float logvar_clamp, int accumulate) {
    __shared__ float shared[VAE_BLOCK];
    const size_t row = (size_t)blockIdx.x * 2 * (size_t)latent;
    const float *z_row = z + (size_t)blockIdx.x * (size_t)latent;
    float sum = 0.0f;
    for (int j = threadIdx.x; j < latent; j += VAE_BLOCK) {
        const size_t mu = row + (size_t)j, logvar = mu + (size_t)latent;
        sum += vae_gaussian_log_ratio_term(z_row[j], q[mu], vae_clamp_logvar(q[logvar], logvar_clamp), p[mu],
                                           vae_clamp_logvar(p[logvar], logvar_clamp));
    }
    const float total = vae_block_sum<float, VAE_BLOCK>(sum, shared);
    if (threadIdx.x == 0) out[blockIdx.x] = accumulate ? out[blockIdx.x] + total : total;
}

/* One thread per (row, dimension): no reduction, so the CPU's loop and
 * this agree to rounding (the same formulas, vae_math.h and
 * vae_step_math.h). */
__global__ void gaussian_log_ratio_backward_kernel(const float *z, const float *q, const float *p,
                                                   const float *weight, float *dz, float *dq, float *dp, int rows,
                                                   int latent, float beta, uint64_t kl_warmup_steps,
                                                   const vae_step_counter *counter, int mean_rows,
                                                   float logvar_clamp) {
    const size_t total = (size_t)rows * (size_t)latent;
    const float prior_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)mean_rows;
    for (size_t item = (size_t)blockIdx.x * blockDim.x + threadIdx.x; item < total;
         item += (size_t)gridDim.x * blockDim.x) {
        const size_t row = item / (size_t)latent, column = item % (size_t)latent;
        const size_t mu = row * 2 * (size_t)latent + column, logvar = mu + (size_t)latent;
        const float coefficient = vae_iwae_log_ratio_coefficient(weight[row], prior_scale);
        const vae_gaussian_log_ratio_gradient g =
            vae_gaussian_log_ratio_grad(z[item], q[mu], vae_clamp_logvar(q[logvar], logvar_clamp), p[mu],
                                        vae_clamp_logvar(p[logvar], logvar_clamp));
        dz[item] += coefficient * g.z;
        dq[mu] = coefficient * g.q_mu;
        dp[mu] = coefficient * g.p_mu;
        dq[logvar] = vae_logvar_is_clamped(q[logvar], logvar_clamp) ? 0.0f : coefficient * g.q_logvar;
        dp[logvar] = vae_logvar_is_clamped(p[logvar], logvar_clamp) ? 0.0f : coefficient * g.p_logvar;
    }
}

VAE_LAUNCHER cudaError_t vae_launch_gaussian_kl(const float *q, const float *p, float *kl, float *dq, float *dp,
                                                int rows, int latent, float beta, uint64_t kl_warmup_steps,
                                                const vae_step_counter *counter, float logvar_clamp, float free_bits,
                                                cudaStream_t stream) {
    if (rows <= 0 || latent <= 0) return cudaSuccess;
    VAE_LAUNCH(gaussian_kl_kernel, (unsigned int)rows, VAE_BLOCK, 0, stream)(
        q, p, kl, dq, dp, rows, latent, beta, kl_warmup_steps, counter, logvar_clamp, free_bits);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_gaussian_log_ratio(const float *z, const float *q, const float *p, float *out,
                                                       int rows, int latent, float logvar_clamp, int accumulate,
                                                       cudaStream_t stream) {
    if (rows <= 0 || latent <= 0) return cudaSuccess;
    VAE_LAUNCH(gaussian_log_ratio_kernel, (unsigned int)rows, VAE_BLOCK, 0, stream)(z, q, p, out, latent,
                                                                                    logvar_clamp, accumulate);
    return cudaGetLastError();
}

VAE_LAUNCHER cudaError_t vae_launch_gaussian_log_ratio_backward(const float *z, const float *q, const float *p,
                                                                const float *weight, float *dz, float *dq, float *dp,
                                                                int rows, int latent, float beta,
                                                                uint64_t kl_warmup_steps,
                                                                const vae_step_counter *counter, int mean_rows,
                                                                float logvar_clamp, cudaStream_t stream) {
    const size_t total = (size_t)rows * (size_t)latent;
    if (rows <= 0 || latent <= 0) return cudaSuccess;
    VAE_LAUNCH(gaussian_log_ratio_backward_kernel, vae_grid_for(total), VAE_BLOCK, 0, stream)(
        z, q, p, weight, dz, dq, dp, rows, latent, beta, kl_warmup_steps, counter, mean_rows, logvar_clamp);
    return cudaGetLastError();
}
