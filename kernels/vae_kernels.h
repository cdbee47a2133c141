/* C launchers of the CUDA kernels (the .cu files in kernels/), called by the CUDA
 * backend's host side (src/backends/backend_cuda.c). Every launcher enqueues its
 * kernels on the given stream, never synchronises, and returns the launch
 * status (cudaGetLastError). All pointers are device memory except the
 * settings structs, which are passed by value into the kernels (so a captured
 * CUDA graph keeps them). Arguments were checked by the vae_backend_* wrappers
 * (src/backends/backend.c): sizes are positive, pointers present. */
#ifndef VAE_KERNELS_H
#define VAE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <cuda_runtime_api.h>

#include "vae_conv_geometry.h"
#include "vae_math.h"
#include "vae_step_data.h"

/* The launchers are C functions, except in the host execution target
 * (VAE_CUDA_HOST: the same .cu files compiled by the host C++ compiler,
 * tests/cuda_host), where they keep C++ linkage: a test binary links both
 * builds, and the host ones must not take the GPU ones' names. The host
 * build for the CUDA backend's host side (VAE_CUDA_HOST_C_LAUNCHERS) has C
 * names again: backend_cuda.c calls them, and its binary has no GPU build. */
#if defined(VAE_CUDA_HOST) && !defined(VAE_CUDA_HOST_C_LAUNCHERS)
#define VAE_LAUNCHER
#else
#define VAE_LAUNCHER extern "C"
#endif

#if defined(__cplusplus) && (!defined(VAE_CUDA_HOST) || defined(VAE_CUDA_HOST_C_LAUNCHERS))
extern "C" {
#endif

/* Blocks of vae_launch_sum_of_squares: one partial sum each. */
#define VAE_REDUCTION_BLOCKS 512

/* Device memory of the kernels that finish in their last block (one launch
 * instead of a second one-block kernel): the partial sums, and for each such
 * kernel the count of its blocks done. A count is zero between launches (the
 * last block resets it, so graph replays find it zero too): the owner zeroes
 * the struct once when it allocates it. Two launches given the same scratch
 * must not overlap: the CUDA backend runs everything on its one stream. */
typedef struct vae_kernel_scratch {
    double partials[VAE_REDUCTION_BLOCKS];
    unsigned int sum_of_squares_blocks_done;
    unsigned int adam_blocks_done;
} vae_kernel_scratch;

/* ---- activation.cu ---- */
cudaError_t vae_launch_fill(float *destination, float value, size_t count, cudaStream_t stream);
/* y[rows, width] += bias[width] (row broadcast). */
cudaError_t vae_launch_bias_add(float *y, const float *bias, int rows, int width, cudaStream_t stream);
/* bias_gradient[width] = sum over rows of dy[rows, width], fixed order. */
cudaError_t vae_launch_bias_gradient(const float *dy, float *bias_gradient, int rows, int width,
                                     cudaStream_t stream);
cudaError_t vae_launch_activation_forward(int activation, const float *pre, float *post, size_t count,
                                          cudaStream_t stream);
/* dpre may alias dpost. */
cudaError_t vae_launch_activation_backward(int activation, const float *pre, const float *dpost, float *dpre,
                                           size_t count, cudaStream_t stream);

/* ---- add_scaled.cu ---- */
/* y[i] = vae_add_scaled(a[i], b[i], scale); y may be a or b. */
cudaError_t vae_launch_add_scaled(const float *a, const float *b, float scale, float *y, size_t count,
                                  cudaStream_t stream);

/* ---- bfloat16.cu ---- */
/* destination[lines * line_length] (packed) = the bfloat16 bits
 * (vae_bfloat16_bits) of source's lines, line l at source + l * stride: a
 * column-major matrix's columns, for the bf16 GEMMs. */
cudaError_t vae_launch_round_to_bfloat16(const float *source, size_t lines, size_t line_length, size_t stride,
                                         uint16_t *destination, cudaStream_t stream);

/* ---- conv.cu (the unfolding's matrices: kernels/vae_conv_geometry.h) ---- */
/* unfolded[rows, batch*positions] = im2col of the batch of larger images. */
cudaError_t vae_launch_conv_unfold(vae_conv_unfolding unfolding, int batch, const float *image, float *unfolded,
                                   cudaStream_t stream);
/* image = col2im(unfolded) + bias[channel] (bias may be NULL): every pixel written. */
cudaError_t vae_launch_conv_fold(vae_conv_unfolding unfolding, int batch, const float *unfolded, const float *bias,
                                 float *image, cudaStream_t stream);
/* staged[c, b*positions + p] = image[b, c, p] (the smaller images). */
cudaError_t vae_launch_conv_stage(vae_conv_unfolding unfolding, int batch, const float *image, float *staged,
                                  cudaStream_t stream);
/* image[b, c, p] = staged[c, b*positions + p] + bias[c] (bias may be NULL). */
cudaError_t vae_launch_conv_unstage(vae_conv_unfolding unfolding, int batch, const float *staged, const float *bias,
                                    float *image, cudaStream_t stream);
/* sums[c] = sum over b and p of values[b, c, p] (NCHW, plane = H*W), fixed order. */
cudaError_t vae_launch_conv_channel_sums(const float *values, int batch, int channels, size_t plane, float *sums,
                                         cudaStream_t stream);

/* ---- gather.cu ---- */
cudaError_t vae_launch_gather_batch(const void *dataset, const int32_t *permutation, int dim, int rows,
                                    vae_gather_settings settings, const vae_step_counter *counter, float *x,
                                    cudaStream_t stream);

/* ---- reparam_kl.cu ---- */
cudaError_t vae_launch_reparam_kl_forward(const float *mu_logvar, float *z, float *kl, int rows, int latent,
                                          int samples, vae_noise_settings noise, const vae_step_counter *counter,
                                          const float *eps_override, float logvar_clamp, cudaStream_t stream);
cudaError_t vae_launch_reparam_kl_backward(const float *mu_logvar, const float *z, const float *dz,
                                           float *dmu_logvar, int rows, int latent, int samples, float beta,
                                           uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                           float logvar_clamp, cudaStream_t stream);

/* ---- gaussian_kl.cu ---- */
cudaError_t vae_launch_gaussian_kl(const float *q, const float *p, float *kl, float *dq, float *dp, int rows,
                                   int latent, float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                   float logvar_clamp, float free_bits, cudaStream_t stream);
/* out[rows] = (or +=, accumulate != 0) sum_j vae_gaussian_log_ratio_term. */
cudaError_t vae_launch_gaussian_log_ratio(const float *z, const float *q, const float *p, float *out, int rows,
                                          int latent, float logvar_clamp, int accumulate, cudaStream_t stream);
/* dz += c_r * d(log ratio)/dz, dq and dp = c_r * its partials (backend.h). */
cudaError_t vae_launch_gaussian_log_ratio_backward(const float *z, const float *q, const float *p,
                                                   const float *weight, float *dz, float *dq, float *dp, int rows,
                                                   int latent, float beta, uint64_t kl_warmup_steps,
                                                   const vae_step_counter *counter, int mean_rows,
                                                   float logvar_clamp, cudaStream_t stream);

/* ---- likelihood.cu ---- */
cudaError_t vae_launch_likelihood(int likelihood, const float *x, float *out, float *logp, int rows, int samples,
                                  int dim, float fixed_logvar, int write_gradient, cudaStream_t stream);

/* ---- reduce.cu ---- */
cudaError_t vae_launch_sum_of_squares(const float *values, size_t count, float *result, vae_kernel_scratch *scratch,
                                      cudaStream_t stream);
cudaError_t vae_launch_accumulate_loss(const float *logp, const float *kl, int rows, int samples, float beta,
                                       uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                       double *accumulator, cudaStream_t stream);
cudaError_t vae_launch_importance_log_mean(const float *logp, const float *mu_logvar, const float *z,
                                           float *result, int rows, int latent, int samples, float logvar_clamp,
                                           cudaStream_t stream);

/* ---- iwae.cu ---- */
/* out and log_ratio may be NULL (no gradient to rescale; one latent). */
cudaError_t vae_launch_iwae_objective(const float *logp, const float *mu_logvar, const float *z,
                                      const float *log_ratio, const float *kl, float *out, float *weight,
                                      float *row_loss, int rows, int latent, int samples, int width, float beta,
                                      uint64_t kl_warmup_steps, const vae_step_counter *counter, float logvar_clamp,
                                      double *accumulator, cudaStream_t stream);
cudaError_t vae_launch_iwae_latent_backward(const float *mu_logvar, const float *z, const float *dz,
                                            const float *weight, float *dmu_logvar, int rows, int latent, int samples,
                                            float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                            float logvar_clamp, cudaStream_t stream);

/* ---- adam.cu ---- */
/* The update and then the counter's advance, in one launch. */
cudaError_t vae_launch_adam_step(float *params, const float *grads, float *m, float *v, size_t count,
                                 vae_adam_settings settings, const float *grad_norm_squared,
                                 vae_step_counter *counter, vae_kernel_scratch *scratch, cudaStream_t stream);

#if defined(__cplusplus) && (!defined(VAE_CUDA_HOST) || defined(VAE_CUDA_HOST_C_LAUNCHERS))
}
#endif

#endif
