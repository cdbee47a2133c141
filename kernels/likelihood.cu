/* Per-row log p(x|z) of the decoder's outputs and, in the same pass, the
 * gradient of loss = mean over data rows of -(1/samples) sum_l log p written
 * over the outputs (grad_scale = 1/(rows*samples)). Output row o belongs to
 * data row o % rows (sample-major). One block per output row; each thread
 * owns its elements (reads them, then overwrites them), and the row's sum is
 * a fixed-order tree in double, so the result is deterministic. */
#include "vae_kernels.h"
#include "vae_math.h"
#include "vae_cuda_common.cuh"

__global__ void likelihood_kernel(int likelihood, const float *x, float *out, float *logp, int rows, int dim,
                                  float fixed_logvar, int write_gradient, float grad_scale) {
    __shared__ double shared[VAE_BLOCK];
    const int output_row = blockIdx.x;
    const float *x_row = x + (size_t)(output_row % rows) * dim;
    double sum = 0.0;
    if (likelihood == VAE_LIKELIHOOD_BERNOULLI) {
        float *logits = out + (size_t)output_row * dim;
        for (int j = threadIdx.x; j < dim; j += VAE_BLOCK) {
            const float target = x_row[j], logit = logits[j];
            sum += (double)vae_bernoulli_log_prob(target, logit);
            if (write_gradient) logits[j] = grad_scale * vae_bernoulli_neg_log_prob_grad(target, logit);
        }
    } else if (likelihood == VAE_LIKELIHOOD_GAUSSIAN) {
        float *means = out + (size_t)output_row * 2 * dim;
        float *logvars = means + dim;
        for (int j = threadIdx.x; j < dim; j += VAE_BLOCK) {
            const float target = x_row[j], mean = means[j], logvar = logvars[j];
            sum += (double)vae_gaussian_log_prob(target, mean, logvar);
            if (write_gradient) {
                means[j] = grad_scale * vae_gaussian_neg_log_prob_grad_mean(target, mean, logvar);
                logvars[j] = grad_scale * vae_gaussian_neg_log_prob_grad_logvar(target, mean, logvar);
            }
        }
    } else { /* VAE_LIKELIHOOD_GAUSSIAN_FIXED */
        float *means = out + (size_t)output_row * dim;
        for (int j = threadIdx.x; j < dim; j += VAE_BLOCK) {
            const float target = x_row[j], mean = means[j];
            sum += (double)vae_gaussian_log_prob(target, mean, fixed_logvar);
            if (write_gradient) means[j] = grad_scale * vae_gaussian_neg_log_prob_grad_mean(target, mean, fixed_logvar);
        }
    }
    double total = vae_block_sum<double, VAE_BLOCK>(sum, shared);
    if (threadIdx.x == 0) logp[output_row] = (float)total;
}

VAE_LAUNCHER cudaError_t vae_launch_likelihood(int likelihood, const float *x, float *out, float *logp, int rows,
                                               int samples, int dim, float fixed_logvar, int write_gradient,
                                               cudaStream_t stream) {
    const unsigned int output_rows = (unsigned int)((size_t)rows * (size_t)samples);
    if (output_rows == 0) return cudaSuccess;
    const float grad_scale = 1.0f / ((float)rows * (float)samples);
    VAE_LAUNCH(likelihood_kernel, output_rows, VAE_BLOCK, 0, stream)(
        likelihood, x, out, logp, rows, dim, fixed_logvar, write_gradient, grad_scale);
    return cudaGetLastError();
}
