/* The backend table: every operation a training step needs. The step is
 * written once (src/model/train_step.c) against this table; the CPU reference
 * backend (src/backends/backend_cpu.c) and the CUDA backend (src/backends/backend_cuda.c with
 * the kernels/ .cu files) implement it. All pointers passed to operations are backend
 * memory (from alloc), except where a parameter says "host".
 *
 * Layouts are row-major. A linear layer's weight is [out, in] (PyTorch's
 * nn.Linear), so y[rows, out] = x[rows, in] * weight^T + bias.
 *
 * Values that change from step to step (Adam's bias correction, the learning
 * rate and beta schedules, the random-number counters, the batch's position
 * in the permutation) are read by the operations from a step counter that
 * lives in backend memory, so that the CUDA backend can replay one captured
 * graph. Operations are asynchronous on the CUDA backend; copy_to_host and
 * synchronize wait.
 *
 * Callers use the vae_backend_* functions at the end of this header, never
 * the table directly: they check the arguments once for every backend (sizes
 * positive, pointers present, enums in range; a clear VAE_ERROR_INVALID_ARGUMENT
 * naming the backend and the operation otherwise) and then dispatch. So an
 * implementation of the table may assume valid arguments. */
#ifndef VAE_BACKEND_H
#define VAE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "vae/vae.h"
#include "vae_conv_geometry.h"
#include "vae_math.h"
#include "vae_philox.h"
#include "vae_step_data.h"

typedef struct vae_backend vae_backend;

/* Where a gather finds the data set's rows: segment s holds rows
 * [first_row[s], first_row[s+1]) contiguously, row-major, at values[s]
 * (backend memory). A data set in one block is one segment. The CPU backend
 * reads a sharded, memory-mapped data set in place through one segment per
 * shard; the CUDA backend takes one segment (the trainer places shards in
 * one block of device or mapped host memory). Row offsets are 64-bit. Host
 * side only: the kernels get the one block's pointer. */
typedef struct vae_row_segments {
    int count;                  /* segments, >= 1 */
    const int64_t *first_row;   /* host memory, [count + 1] */
    const void *const *values;  /* host memory array of [count] backend pointers */
} vae_row_segments;

typedef struct vae_backend_ops {
    const char *name;
    void (*destroy)(vae_backend *backend);

    /* memory */
    vae_status (*alloc)(vae_backend *backend, size_t bytes, void **out);
    void (*free)(vae_backend *backend, void *pointer);
    vae_status (*copy_to_device)(vae_backend *backend, void *destination, const void *host_source, size_t bytes);
    vae_status (*copy_to_host)(vae_backend *backend, void *host_destination, const void *source, size_t bytes);
    vae_status (*copy)(vae_backend *backend, void *destination, const void *source, size_t bytes);
    vae_status (*fill)(vae_backend *backend, float *destination, float value, size_t count);
    vae_status (*synchronize)(vae_backend *backend);

    /* y[rows,out] = x[rows,in] weight[out,in]^T + bias[out] */
    vae_status (*linear_forward)(vae_backend *backend, const float *x, const float *weight, const float *bias,
                                 float *y, int rows, int in, int out);
    /* dweight = dy^T x, dbias = column sums of dy (both overwritten);
     * dx = dy weight when dx is not NULL. */
    vae_status (*linear_backward)(vae_backend *backend, const float *x, const float *weight, const float *dy,
                                  float *dx, float *dweight, float *dbias, int rows, int in, int out);
    /* Convolutions, NCHW row-major, `batch` images; geometry is host memory
     * (kernels/vae_conv_geometry.h: the shapes, the output-size formulas,
     * how the operations unfold the images); workspace holds
     * vae_conv_workspace_floats(geometry, batch) floats of backend memory.
     *
     * conv2d: y[batch, out_c, out_h, out_w] = F.conv2d(x[batch, in_c, in_h, in_w],
     * weight[out_c, in_c, k, k], bias[out_c], stride, padding); bias may be NULL. */
    vae_status (*conv2d_forward)(vae_backend *backend, const vae_conv_geometry *geometry, int batch, const float *x,
                                 const float *weight, const float *bias, float *y, float *workspace);
    /* dweight[out_c, in_c, k, k] and dbias[out_c] = d loss / d weight, bias
     * summed over the batch, dx = d loss / d x, each overwritten (never
     * accumulated) where not NULL. */
    vae_status (*conv2d_backward)(vae_backend *backend, const vae_conv_geometry *geometry, int batch, const float *x,
                                  const float *weight, const float *dy, float *dx, float *dweight, float *dbias,
                                  float *workspace);
    /* conv_transpose2d: y = F.conv_transpose2d(x, weight[in_c, out_c, k, k],
     * bias[out_c], stride, padding) (output_padding 0, dilation 1): in_* is
     * its input, out_* its (usually larger) output. Backward as for conv2d. */
    vae_status (*conv_transpose2d_forward)(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                           const float *x, const float *weight, const float *bias, float *y,
                                           float *workspace);
    vae_status (*conv_transpose2d_backward)(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                            const float *x, const float *weight, const float *dy, float *dx,
                                            float *dweight, float *dbias, float *workspace);

    /* post = act(pre), element-wise */
    vae_status (*activation_forward)(vae_backend *backend, int activation, const float *pre, float *post, size_t count);
    /* dpre = dpost * act'(pre); dpre may alias dpost */
    vae_status (*activation_backward)(vae_backend *backend, int activation, const float *pre, const float *dpost,
                                      float *dpre, size_t count);
    /* y[i] = a[i] + scale * b[i] (vae_add_scaled: one rounding, the same bits
     * on every backend); y may be a or b itself, not a part of either. */
    vae_status (*add_scaled)(vae_backend *backend, const float *a, const float *b, float scale, float *y,
                             size_t count);

    /* x[rows, dim] = scaled (and binarised) dataset rows
     * permutation[vae_gather_slot(settings, counter.step % steps_per_epoch, rows, r)]
     * (one process: (step % steps_per_epoch) * rows + r). */
    vae_status (*gather_batch)(vae_backend *backend, const vae_row_segments *dataset, const int32_t *permutation, int dim,
                               int rows, const vae_gather_settings *settings, const vae_step_counter *counter,
                               float *x);

    /* mu_logvar[rows, 2*latent] -> z[samples*rows, latent] (sample-major:
     * z row l*rows+b belongs to data row b), kl[rows]. eps comes from Philox
     * at subsequence (counter.step + step_offset, purpose,
     * vae_noise_row_address(noise, rows, l, b)), column noise.column_offset
     * + j (one process, no offsets: l*rows+b, column j; with
     * noise.rows_hold_samples > 1 the rows are sample-major copies of the
     * batch, samples is 1: kernels/vae_step_data.h); when eps_override
     * (backend memory, [samples*rows, latent]) is not NULL it is used instead
     * (tests). logvar_clamp > 0 clamps logvar first. */
    vae_status (*reparam_kl_forward)(vae_backend *backend, const float *mu_logvar, float *z, float *kl, int rows,
                                     int latent, int samples, const vae_noise_settings *noise,
                                     const vae_step_counter *counter, const float *eps_override,
                                     float logvar_clamp);
    /* dmu_logvar[rows, 2*latent] = sum_l (dz through the reparameterisation)
     * + kl_scale(step) * dKL, where kl_scale = beta_t / rows. */
    vae_status (*reparam_kl_backward)(vae_backend *backend, const float *mu_logvar, const float *z, const float *dz,
                                      float *dmu_logvar, int rows, int latent, int samples, float beta,
                                      uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                      float logvar_clamp);
    /* Hierarchical latents: per row the KL of a group's posterior
     * q = N(q_mu, exp(q_logvar)) from its conditional prior
     * p = N(p_mu, exp(p_logvar)), both [rows, 2*latent] (mu | logvar), summed
     * over the group's dimensions into kl[rows] (overwritten; the CPU sums in
     * column order, the GPU in a fixed tree). When dq is not NULL, in the same
     * pass, adds kl_scale(step) * dKL/dq to dq and kl_scale * dKL/dp to dp
     * (both [rows, 2*latent]; kl_scale = beta_t / rows, as reparam_kl_backward):
     * their other terms (the reparameterisation, the prior's network) come
     * from the other operations. logvar_clamp > 0 clamps both logvars first,
     * and a logvar strictly outside gets no KL gradient. free_bits > 0: a row
     * whose KL (kl[row]) is below free_bits gets no gradient at all (the loss
     * is max(KL, free_bits) per row: vae_below_free_bits); kl[row] is still
     * the KL itself. */
    vae_status (*gaussian_kl)(vae_backend *backend, const float *q, const float *p, float *kl, float *dq, float *dp,
                              int rows, int latent, float beta, uint64_t kl_warmup_steps,
                              const vae_step_counter *counter, float logvar_clamp, float free_bits);
    /* Hierarchical importance weights: per row the group's
     * log p(z | p) - log q(z | q) = sum_j vae_gaussian_log_ratio_term of
     * z[rows, latent] under q and p ([rows, 2*latent], mu | logvar, both
     * logvars clamped as gaussian_kl), the CPU summing in column order, the
     * GPU in a fixed tree; out[rows] = the sum (accumulate 0) or += it
     * (accumulate != 0: log w = log p(x|z) + the groups' terms). */
    vae_status (*gaussian_log_ratio)(vae_backend *backend, const float *z, const float *q, const float *p,
                                     float *out, int rows, int latent, float logvar_clamp, int accumulate);
    /* Its backward pass in the importance-weighted objective (model.objective
     * = iwae with latent groups): per row r the coefficient c_r =
     * vae_iwae_log_ratio_coefficient(weight[r], beta_t / mean_rows) (the
     * loss's derivative by the row's log ratio; weight from iwae_objective,
     * mean_rows the data rows the loss averages over), then per dimension
     * vae_gaussian_log_ratio_grad's partials times c_r: dz[rows, latent] +=
     * (dz holds the path through the networks below; the sum goes on
     * through the reparameterisation), dq and dp ([rows, 2*latent], mu |
     * logvar) overwritten. Logvars clamped as gaussian_kl: one strictly
     * outside gets 0. Element-wise: the CPU and the GPU agree to rounding. */
    vae_status (*gaussian_log_ratio_backward)(vae_backend *backend, const float *z, const float *q, const float *p,
                                              const float *weight, float *dz, float *dq, float *dp, int rows,
                                              int latent, float beta, uint64_t kl_warmup_steps,
                                              const vae_step_counter *counter, int mean_rows, float logvar_clamp);

    /* out[samples*rows, width] holds the decoder's outputs (width D or 2D);
     * x[rows, dim]. Writes logp[samples*rows] and, when write_gradient is
     * set, overwrites out with d(loss)/d(out) where loss = mean over data rows
     * of -(1/samples) sum_l log p: grad_scale = 1/(rows*samples). */
    vae_status (*likelihood)(vae_backend *backend, int likelihood, const float *x, float *out, float *logp,
                             int rows, int samples, int dim, float fixed_logvar, int write_gradient);

    /* accumulator[slots] (doubles) += this batch's sums (deterministic). */
    vae_status (*accumulate_loss)(vae_backend *backend, const float *logp, const float *kl, int rows, int samples,
                                  float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                  double *accumulator);

    /* log_weight[samples*rows] = log p(x|z) + log p(z) - log q(z|x), then
     * result[rows] = logsumexp over samples - log(samples) (stable). */
    vae_status (*importance_log_mean)(vae_backend *backend, const float *logp, const float *mu_logvar,
                                      const float *z, float *result, int rows, int latent, int samples,
                                      float logvar_clamp);

    /* The importance-weighted training objective (model.objective = iwae;
     * formulas in kernels/vae_step_math.h), after likelihood with
     * write_gradient left in out[samples*rows, width] the ELBO's gradient
     * (scale 1/(rows*samples)). Per data row b: the log weights
     * a_k = logp + beta_t (log p(z) - log q(z|x)) of its samples, the
     * normalised weights weight[k*rows+b] = softmax_k a, row_loss[b] =
     * -(logsumexp_k a_k - log samples); out's rows multiplied by
     * samples * weight (out may be NULL: no gradient); and accumulator +=
     * the batch's sums: VAE_LOSS_SUM_LOSS the row losses, reconstruction, KL
     * and count as accumulate_loss adds them. kl[rows] from reparam_kl_forward.
     * log_ratio[samples*rows] (may be NULL): a hierarchical model's lower
     * groups' log p - log q of each draw, added to the top group's (then
     * mu_logvar and z) before beta_t (vae_iwae_draw_log_weight). */
    vae_status (*iwae_objective)(vae_backend *backend, const float *logp, const float *mu_logvar, const float *z,
                                 const float *log_ratio, const float *kl, float *out, float *weight, float *row_loss,
                                 int rows, int latent, int samples, int width, float beta, uint64_t kl_warmup_steps,
                                 const vae_step_counter *counter, float logvar_clamp, double *accumulator);
    /* dmu_logvar[rows, 2*latent] of the IWAE objective: dz[samples*rows,
     * latent] (the decoder's d loss/dz) plus the prior's term, both through
     * the reparameterisation, plus log q's direct logvar term; weight from
     * iwae_objective (vae_step_math.h). */
    vae_status (*iwae_latent_backward)(vae_backend *backend, const float *mu_logvar, const float *z, const float *dz,
                                       const float *weight, float *dmu_logvar, int rows, int latent, int samples,
                                       float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                       float logvar_clamp);

    /* sum of squares of grads[count] into *result (backend memory, one float),
     * deterministic. */
    vae_status (*sum_of_squares)(vae_backend *backend, const float *values, size_t count, float *result);

    /* Adam/AdamW over the flat buffers, at t = counter.step + 1, with the
     * learning rate of the schedule and global-norm clipping from
     * *grad_norm_squared. If the norm is not finite the parameters and
     * moments stay unchanged, counter.skipped_steps += 1 and
     * counter.nonfinite_seen = 1 (the trainer's policy then skips on or
     * stops). Then counter.step += 1. */
    vae_status (*adam_step)(vae_backend *backend, float *params, const float *grads, float *m, float *v, size_t count,
                            const vae_adam_settings *settings, const float *grad_norm_squared, vae_step_counter *counter);

    /* Optional (NULL where backend memory is host memory, as on the CPU):
     * page-locked host memory that kernels read directly over the bus, for a
     * training set that does not fit in device memory. *device is the
     * pointer kernels use. */
    vae_status (*alloc_host_mapped)(vae_backend *backend, size_t bytes, void **host, void **device);
    void (*free_host_mapped)(vae_backend *backend, void *host);

    /* Optional (NULL where the backend has none, as on the CPU): record the
     * operations issued between capture_begin and capture_end once, then
     * replay them with graph_launch (the CUDA backend's CUDA graphs). */
    vae_status (*graph_capture_begin)(vae_backend *backend);
    vae_status (*graph_capture_end)(vae_backend *backend, void **graph);
    vae_status (*graph_launch)(vae_backend *backend, void *graph);
    void (*graph_destroy)(vae_backend *backend, void *graph);
} vae_backend_ops;

struct vae_backend {
    const vae_backend_ops *ops;
    /* What runs the operations; after --device auto fell back to the CPU it
     * ends with why CUDA was not used. */
    char device_name[768];
};

/* Backends that exist in this build. The CPU backend computes fp32 GEMMs
 * (for tf32 too) or, for bf16, emulates the GPU's bf16 GEMMs
 * (src/backends/cpu_gemm.h); vae_backend_create_cpu is fp32. */
vae_status vae_backend_create_cpu(vae_backend **out);
vae_status vae_backend_create_cpu_precision(vae_backend **out, vae_precision precision);
/* Fails with VAE_ERROR_DEVICE and a clear message when the build has no CUDA
 * or no usable GPU is present. */
vae_status vae_backend_create_cuda(vae_backend **out, vae_precision precision);
/* 1 if this build has the CUDA backend and a usable GPU is present. */
int vae_backend_cuda_available(void);
/* device: vae_device_kind. auto picks CUDA when it can be created, else the
 * CPU, and then says why in device_name ("...; CUDA not used: <reason>"). */
vae_status vae_backend_create(vae_backend **out, vae_device_kind device, vae_precision precision);

/* ---- the operations, checked then dispatched (src/backends/backend.c); see
 * vae_backend_ops above for what each computes. */
void vae_backend_destroy(vae_backend *backend); /* NULL is allowed */
const char *vae_backend_name(const vae_backend *backend);
vae_status vae_backend_alloc(vae_backend *backend, size_t bytes, void **out);
void vae_backend_free(vae_backend *backend, void *pointer); /* NULL is allowed */
vae_status vae_backend_copy_to_device(vae_backend *backend, void *destination, const void *host_source,
                                      size_t bytes);
vae_status vae_backend_copy_to_host(vae_backend *backend, void *host_destination, const void *source, size_t bytes);
vae_status vae_backend_copy(vae_backend *backend, void *destination, const void *source, size_t bytes);
vae_status vae_backend_fill(vae_backend *backend, float *destination, float value, size_t count);
vae_status vae_backend_synchronize(vae_backend *backend);
/* bias may be NULL (no bias). */
vae_status vae_backend_linear_forward(vae_backend *backend, const float *x, const float *weight, const float *bias,
                                      float *y, int rows, int in, int out);
/* dx may be NULL (not wanted). */
vae_status vae_backend_linear_backward(vae_backend *backend, const float *x, const float *weight, const float *dy,
                                       float *dx, float *dweight, float *dbias, int rows, int in, int out);
/* The convolutions (see the table above). The wrappers check the geometry:
 * sizes positive, padding >= 0, out_height/out_width equal to
 * vae_conv_output_size (conv2d) or vae_conv_transpose_output_size
 * (conv_transpose2d) of the input, the unfolded matrix's sizes within int
 * (GEMM dimensions), the pointers present (bias, dx, dweight, dbias may be
 * NULL; not all three gradients). */
vae_status vae_backend_conv2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                      const float *x, const float *weight, const float *bias, float *y,
                                      float *workspace);
vae_status vae_backend_conv2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                       const float *x, const float *weight, const float *dy, float *dx,
                                       float *dweight, float *dbias, float *workspace);
vae_status vae_backend_conv_transpose2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                                const float *x, const float *weight, const float *bias, float *y,
                                                float *workspace);
vae_status vae_backend_conv_transpose2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                                 const float *x, const float *weight, const float *dy, float *dx,
                                                 float *dweight, float *dbias, float *workspace);
vae_status vae_backend_activation_forward(vae_backend *backend, vae_activation activation, const float *pre,
                                          float *post, size_t count);
vae_status vae_backend_activation_backward(vae_backend *backend, vae_activation activation, const float *pre,
                                           const float *dpost, float *dpre, size_t count);
/* y may be a or b (the same pointer), not overlap them otherwise. */
vae_status vae_backend_add_scaled(vae_backend *backend, const float *a, const float *b, float scale, float *y,
                                  size_t count);
vae_status vae_backend_gather_batch(vae_backend *backend, const vae_row_segments *dataset, const int32_t *permutation, int dim,
                                    int rows, const vae_gather_settings *settings, const vae_step_counter *counter,
                                    float *x);
/* eps_override may be NULL (noise from Philox). noise.rows_hold_samples > 1
 * needs samples 1 and rows a multiple of it. */
vae_status vae_backend_reparam_kl_forward(vae_backend *backend, const float *mu_logvar, float *z, float *kl, int rows,
                                          int latent, int samples, const vae_noise_settings *noise,
                                          const vae_step_counter *counter, const float *eps_override,
                                          float logvar_clamp);
vae_status vae_backend_reparam_kl_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                           const float *dz, float *dmu_logvar, int rows, int latent, int samples,
                                           float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                           float logvar_clamp);
/* dq and dp both NULL (the KL alone) or both given; free_bits not NaN
 * (<= 0: no floor). */
vae_status vae_backend_gaussian_kl(vae_backend *backend, const float *q, const float *p, float *kl, float *dq,
                                   float *dp, int rows, int latent, float beta, uint64_t kl_warmup_steps,
                                   const vae_step_counter *counter, float logvar_clamp, float free_bits);
vae_status vae_backend_gaussian_log_ratio(vae_backend *backend, const float *z, const float *q, const float *p,
                                          float *out, int rows, int latent, float logvar_clamp, int accumulate);
/* weight, dz, dq, dp all given; 0 < rows, latent, mean_rows; beta finite and >= 0. */
vae_status vae_backend_gaussian_log_ratio_backward(vae_backend *backend, const float *z, const float *q,
                                                   const float *p, const float *weight, float *dz, float *dq,
                                                   float *dp, int rows, int latent, float beta,
                                                   uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                                   int mean_rows, float logvar_clamp);
vae_status vae_backend_likelihood(vae_backend *backend, vae_likelihood likelihood, const float *x, float *out,
                                  float *logp, int rows, int samples, int dim, float fixed_logvar,
                                  int write_gradient);
vae_status vae_backend_accumulate_loss(vae_backend *backend, const float *logp, const float *kl, int rows,
                                       int samples, float beta, uint64_t kl_warmup_steps,
                                       const vae_step_counter *counter, double *accumulator);
vae_status vae_backend_importance_log_mean(vae_backend *backend, const float *logp, const float *mu_logvar,
                                           const float *z, float *result, int rows, int latent, int samples,
                                           float logvar_clamp);
/* out and log_ratio may be NULL (no gradient to rescale; one latent). */
vae_status vae_backend_iwae_objective(vae_backend *backend, const float *logp, const float *mu_logvar, const float *z,
                                      const float *log_ratio, const float *kl, float *out, float *weight,
                                      float *row_loss, int rows, int latent, int samples, int width, float beta,
                                      uint64_t kl_warmup_steps, const vae_step_counter *counter, float logvar_clamp,
                                      double *accumulator);
vae_status vae_backend_iwae_latent_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                            const float *dz, const float *weight, float *dmu_logvar, int rows,
                                            int latent, int samples, float beta, uint64_t kl_warmup_steps,
                                            const vae_step_counter *counter, float logvar_clamp);
vae_status vae_backend_sum_of_squares(vae_backend *backend, const float *values, size_t count, float *result);
vae_status vae_backend_adam_step(vae_backend *backend, float *params, const float *grads, float *m, float *v,
                                 size_t count, const vae_adam_settings *settings, const float *grad_norm_squared,
                                 vae_step_counter *counter);

/* The optional operations: whether the backend has them, and the calls
 * (VAE_ERROR_INVALID_ARGUMENT on a backend without them). */
int vae_backend_has_host_mapped_memory(const vae_backend *backend);
vae_status vae_backend_alloc_host_mapped(vae_backend *backend, size_t bytes, void **host, void **device);
void vae_backend_free_host_mapped(vae_backend *backend, void *host); /* NULL is allowed */
int vae_backend_has_graphs(const vae_backend *backend);
vae_status vae_backend_graph_capture_begin(vae_backend *backend);
vae_status vae_backend_graph_capture_end(vae_backend *backend, void **graph);
vae_status vae_backend_graph_launch(vae_backend *backend, void *graph);
void vae_backend_graph_destroy(vae_backend *backend, void *graph); /* NULL graph is allowed */

#endif
