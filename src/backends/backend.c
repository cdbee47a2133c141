/* Picks a backend for --device cpu|cuda|auto, and the one place where the
 * arguments of every backend operation are checked: each vae_backend_*
 * function below validates, then dispatches through the backend's table. The
 * implementations (backend_cpu.c, backend_cuda.c) assume valid arguments. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "backends/backend.h"
#include "base/error.h"

vae_status vae_backend_create(vae_backend **out, vae_device_kind device, vae_precision precision) {
    if (device == VAE_DEVICE_CPU) return vae_backend_create_cpu_precision(out, precision);
    if (device == VAE_DEVICE_CUDA) return vae_backend_create_cuda(out, precision);
    /* auto: try CUDA; when it cannot be used, keep its reason (driver too
     * old, no device, out of memory, no CUDA in this build) for the user. */
    vae_status status = vae_backend_create_cuda(out, precision);
    if (status == VAE_OK) return VAE_OK;
    char reason[512];
    snprintf(reason, sizeof reason, "%s", vae_last_error());
    vae_error_clear();
    VAE_TRY(vae_backend_create_cpu_precision(out, precision));
    size_t used = strlen((*out)->device_name);
    snprintf((*out)->device_name + used, sizeof (*out)->device_name - used, "; CUDA not used: %s", reason);
    return VAE_OK;
}

/* Checks a condition; otherwise fails naming the backend and the operation. */
#define REQUIRE(condition, operation, ...)                                                               \
    do {                                                                                                 \
        if (!(condition)) return argument_error(backend, operation, __VA_ARGS__);                        \
    } while (0)

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static vae_status argument_error(const vae_backend *backend, const char *operation, const char *format, ...) {
    char detail[512];
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(detail, sizeof detail, format, arguments);
    va_end(arguments);
    return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s backend %s: %s", vae_backend_name(backend), operation, detail);
}

#define REQUIRE_BACKEND(operation)                                                                       \
    do {                                                                                                 \
        if (backend == NULL || backend->ops == NULL)                                                     \
            return vae_error(VAE_ERROR_INVALID_ARGUMENT, "backend %s: no backend (NULL)", operation);     \
    } while (0)

static int activation_known(vae_activation activation) {
    return activation >= VAE_ACTIVATION_RELU && activation <= VAE_ACTIVATION_IDENTITY;
}

const char *vae_backend_name(const vae_backend *backend) {
    return backend != NULL && backend->ops != NULL && backend->ops->name != NULL ? backend->ops->name : "(none)";
}

void vae_backend_destroy(vae_backend *backend) {
    if (backend != NULL && backend->ops != NULL) backend->ops->destroy(backend);
}

/* ------------------------------------------------------------------ memory */

vae_status vae_backend_alloc(vae_backend *backend, size_t bytes, void **out) {
    REQUIRE_BACKEND("alloc");
    REQUIRE(out != NULL, "alloc", "the out pointer is NULL");
    *out = NULL;
    return backend->ops->alloc(backend, bytes, out);
}

void vae_backend_free(vae_backend *backend, void *pointer) {
    if (backend != NULL && backend->ops != NULL && pointer != NULL) backend->ops->free(backend, pointer);
}

vae_status vae_backend_copy_to_device(vae_backend *backend, void *destination, const void *host_source,
                                      size_t bytes) {
    REQUIRE_BACKEND("copy_to_device");
    if (bytes == 0) return VAE_OK;
    REQUIRE(destination != NULL && host_source != NULL, "copy_to_device", "NULL pointer (%zu bytes)", bytes);
    return backend->ops->copy_to_device(backend, destination, host_source, bytes);
}

vae_status vae_backend_copy_to_host(vae_backend *backend, void *host_destination, const void *source, size_t bytes) {
    REQUIRE_BACKEND("copy_to_host");
    if (bytes == 0) return VAE_OK;
    REQUIRE(host_destination != NULL && source != NULL, "copy_to_host", "NULL pointer (%zu bytes)", bytes);
    return backend->ops->copy_to_host(backend, host_destination, source, bytes);
}

vae_status vae_backend_copy(vae_backend *backend, void *destination, const void *source, size_t bytes) {
    REQUIRE_BACKEND("copy");
    if (bytes == 0) return VAE_OK;
    REQUIRE(destination != NULL && source != NULL, "copy", "NULL pointer (%zu bytes)", bytes);
    return backend->ops->copy(backend, destination, source, bytes);
}

vae_status vae_backend_fill(vae_backend *backend, float *destination, float value, size_t count) {
    REQUIRE_BACKEND("fill");
    if (count == 0) return VAE_OK;
    REQUIRE(destination != NULL, "fill", "NULL destination (%zu values)", count);
    return backend->ops->fill(backend, destination, value, count);
}

vae_status vae_backend_synchronize(vae_backend *backend) {
    REQUIRE_BACKEND("synchronize");
    return backend->ops->synchronize(backend);
}

/* ------------------------------------------------------------------ layers */

vae_status vae_backend_linear_forward(vae_backend *backend, const float *x, const float *weight, const float *bias,
                                      float *y, int rows, int in, int out) {
    REQUIRE_BACKEND("linear_forward");
    REQUIRE(rows > 0 && in > 0 && out > 0, "linear_forward", "sizes must be positive (rows %d, in %d, out %d)",
            rows, in, out);
    REQUIRE(x != NULL && weight != NULL && y != NULL, "linear_forward", "NULL pointer (x, weight or y)");
    return backend->ops->linear_forward(backend, x, weight, bias, y, rows, in, out);
}

vae_status vae_backend_linear_backward(vae_backend *backend, const float *x, const float *weight, const float *dy,
                                       float *dx, float *dweight, float *dbias, int rows, int in, int out) {
    REQUIRE_BACKEND("linear_backward");
    REQUIRE(rows > 0 && in > 0 && out > 0, "linear_backward", "sizes must be positive (rows %d, in %d, out %d)",
            rows, in, out);
    REQUIRE(x != NULL && weight != NULL && dy != NULL && dweight != NULL && dbias != NULL, "linear_backward",
            "NULL pointer (x, weight, dy, dweight or dbias)");
    return backend->ops->linear_backward(backend, x, weight, dy, dx, dweight, dbias, rows, in, out);
}

/* ------------------------------------------------------------------ convolutions */

/* The geometry of a conv2d (transposed == 0) or conv_transpose2d layer
 * against the formulas of kernels/vae_conv_geometry.h, and the sizes the
 * GEMMs take as int. */
static vae_status check_conv_geometry(vae_backend *backend, const char *operation, const vae_conv_geometry *geometry,
                                      int batch, int transposed) {
    REQUIRE(geometry != NULL, operation, "the geometry is NULL");
    const vae_conv_geometry *g = geometry;
    REQUIRE(batch > 0, operation, "batch must be positive, got %d", batch);
    REQUIRE(g->in_channels > 0 && g->in_height > 0 && g->in_width > 0, operation,
            "input channels, height and width must be positive, got %dx%dx%d", g->in_channels, g->in_height,
            g->in_width);
    REQUIRE(g->out_channels > 0 && g->out_height > 0 && g->out_width > 0, operation,
            "output channels, height and width must be positive, got %dx%dx%d", g->out_channels, g->out_height,
            g->out_width);
    REQUIRE(g->kernel_size > 0 && g->stride > 0, operation, "kernel size and stride must be positive, got k%d s%d",
            g->kernel_size, g->stride);
    REQUIRE(g->padding >= 0, operation, "padding must not be negative, got %d", g->padding);
    /* Far below INT_MAX, so that the output-size formulas ((in - 1) * s
     * + k at most 2^30 + 2^15) cannot overflow an int. */
    const int size_limit = 1 << 15;
    REQUIRE(g->in_height <= size_limit && g->in_width <= size_limit && g->out_height <= size_limit &&
                g->out_width <= size_limit && g->kernel_size <= size_limit && g->stride <= size_limit &&
                g->padding <= size_limit,
            operation, "a size above %d (input %dx%d, output %dx%d, k%d s%d p%d)", size_limit, g->in_height,
            g->in_width, g->out_height, g->out_width, g->kernel_size, g->stride, g->padding);
    int expected_height, expected_width;
    if (transposed) {
        expected_height = vae_conv_transpose_output_size(g->in_height, g->kernel_size, g->stride, g->padding);
        expected_width = vae_conv_transpose_output_size(g->in_width, g->kernel_size, g->stride, g->padding);
    } else {
        expected_height = vae_conv_output_size(g->in_height, g->kernel_size, g->stride, g->padding);
        expected_width = vae_conv_output_size(g->in_width, g->kernel_size, g->stride, g->padding);
    }
    REQUIRE(expected_height > 0 && expected_width > 0, operation,
            "a %dx%d input with k%d s%d p%d has no output (%s gives %dx%d)", g->in_height, g->in_width,
            g->kernel_size, g->stride, g->padding, transposed ? "(in - 1) s - 2p + k" : "(in + 2p - k) / s + 1",
            expected_height, expected_width);
    REQUIRE(g->out_height == expected_height && g->out_width == expected_width, operation,
            "output %dx%d does not fit a %dx%d input with k%d s%d p%d: %s gives %dx%d", g->out_height, g->out_width,
            g->in_height, g->in_width, g->kernel_size, g->stride, g->padding,
            transposed ? "(in - 1) s - 2p + k" : "(in + 2p - k) / s + 1", expected_height, expected_width);
    /* The GEMMs' dimensions are ints: the unfolded matrix's rows (channels x
     * k x k) and columns (batch x positions), and the weight's size. Checked
     * by division, so that no product overflows on the way. */
    const vae_conv_unfolding unfolding =
        transposed ? vae_conv_transpose2d_unfolding(g) : vae_conv2d_unfolding(g);
    const int64_t kernel_area = (int64_t)g->kernel_size * g->kernel_size;
    const int64_t positions = (int64_t)unfolding.positions_height * unfolding.positions_width;
    REQUIRE(kernel_area <= INT32_MAX && unfolding.channels <= INT32_MAX / kernel_area && positions <= INT32_MAX &&
                batch <= INT32_MAX / positions &&
                unfolding.staged_channels <= INT32_MAX / (unfolding.channels * kernel_area),
            operation,
            "too large for int GEMM sizes: %d channels x k%d x k%d unfolded rows, batch %d x %lld positions, "
            "weight %d x %d x %d x %d",
            unfolding.channels, g->kernel_size, g->kernel_size, batch, (long long)positions, g->out_channels,
            g->in_channels, g->kernel_size, g->kernel_size);
    return VAE_OK;
}

vae_status vae_backend_conv2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                      const float *x, const float *weight, const float *bias, float *y,
                                      float *workspace) {
    REQUIRE_BACKEND("conv2d_forward");
    VAE_TRY(check_conv_geometry(backend, "conv2d_forward", geometry, batch, 0));
    REQUIRE(x != NULL && weight != NULL && y != NULL, "conv2d_forward", "NULL pointer (x, weight or y)");
    REQUIRE(workspace != NULL, "conv2d_forward", "no workspace (needs vae_conv_workspace_floats = %zu floats)",
            vae_conv_workspace_floats(geometry, batch));
    return backend->ops->conv2d_forward(backend, geometry, batch, x, weight, bias, y, workspace);
}

vae_status vae_backend_conv2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                       const float *x, const float *weight, const float *dy, float *dx,
                                       float *dweight, float *dbias, float *workspace) {
    REQUIRE_BACKEND("conv2d_backward");
    VAE_TRY(check_conv_geometry(backend, "conv2d_backward", geometry, batch, 0));
    REQUIRE(x != NULL && weight != NULL && dy != NULL, "conv2d_backward", "NULL pointer (x, weight or dy)");
    REQUIRE(dx != NULL || dweight != NULL || dbias != NULL, "conv2d_backward",
            "dx, dweight and dbias are all NULL: nothing to compute");
    REQUIRE(workspace != NULL, "conv2d_backward", "no workspace (needs vae_conv_workspace_floats = %zu floats)",
            vae_conv_workspace_floats(geometry, batch));
    return backend->ops->conv2d_backward(backend, geometry, batch, x, weight, dy, dx, dweight, dbias, workspace);
}

vae_status vae_backend_conv_transpose2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                                const float *x, const float *weight, const float *bias, float *y,
                                                float *workspace) {
    REQUIRE_BACKEND("conv_transpose2d_forward");
    VAE_TRY(check_conv_geometry(backend, "conv_transpose2d_forward", geometry, batch, 1));
    REQUIRE(x != NULL && weight != NULL && y != NULL, "conv_transpose2d_forward", "NULL pointer (x, weight or y)");
    REQUIRE(workspace != NULL, "conv_transpose2d_forward",
            "no workspace (needs vae_conv_workspace_floats = %zu floats)", vae_conv_workspace_floats(geometry, batch));
    return backend->ops->conv_transpose2d_forward(backend, geometry, batch, x, weight, bias, y, workspace);
}

vae_status vae_backend_conv_transpose2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                                 const float *x, const float *weight, const float *dy, float *dx,
                                                 float *dweight, float *dbias, float *workspace) {
    REQUIRE_BACKEND("conv_transpose2d_backward");
    VAE_TRY(check_conv_geometry(backend, "conv_transpose2d_backward", geometry, batch, 1));
    REQUIRE(x != NULL && weight != NULL && dy != NULL, "conv_transpose2d_backward",
            "NULL pointer (x, weight or dy)");
    REQUIRE(dx != NULL || dweight != NULL || dbias != NULL, "conv_transpose2d_backward",
            "dx, dweight and dbias are all NULL: nothing to compute");
    REQUIRE(workspace != NULL, "conv_transpose2d_backward",
            "no workspace (needs vae_conv_workspace_floats = %zu floats)", vae_conv_workspace_floats(geometry, batch));
    return backend->ops->conv_transpose2d_backward(backend, geometry, batch, x, weight, dy, dx, dweight, dbias,
                                                   workspace);
}

vae_status vae_backend_activation_forward(vae_backend *backend, vae_activation activation, const float *pre,
                                          float *post, size_t count) {
    REQUIRE_BACKEND("activation_forward");
    REQUIRE(activation_known(activation), "activation_forward", "unknown activation %d", (int)activation);
    if (count == 0) return VAE_OK;
    REQUIRE(pre != NULL && post != NULL, "activation_forward", "NULL pointer (pre or post)");
    return backend->ops->activation_forward(backend, (int)activation, pre, post, count);
}

vae_status vae_backend_activation_backward(vae_backend *backend, vae_activation activation, const float *pre,
                                           const float *dpost, float *dpre, size_t count) {
    REQUIRE_BACKEND("activation_backward");
    REQUIRE(activation_known(activation), "activation_backward", "unknown activation %d", (int)activation);
    if (count == 0) return VAE_OK;
    REQUIRE(pre != NULL && dpost != NULL && dpre != NULL, "activation_backward", "NULL pointer (pre, dpost or dpre)");
    return backend->ops->activation_backward(backend, (int)activation, pre, dpost, dpre, count);
}

/* Whether [x, x + count) and [y, y + count) share an element without being
 * the same range: what an element-wise operation whose output may alias an
 * input cannot take. Integers, as backend memory need not be host memory. */
static int overlaps_partly(const float *x, const float *y, size_t count) {
    const uintptr_t xs = (uintptr_t)x, ys = (uintptr_t)y, bytes = (uintptr_t)(count * sizeof(float));
    return xs != ys && xs < ys + bytes && ys < xs + bytes;
}

vae_status vae_backend_add_scaled(vae_backend *backend, const float *a, const float *b, float scale, float *y,
                                  size_t count) {
    REQUIRE_BACKEND("add_scaled");
    if (count == 0) return VAE_OK;
    REQUIRE(a != NULL && b != NULL && y != NULL, "add_scaled", "NULL pointer (a, b or y)");
    REQUIRE(!overlaps_partly(y, a, count) && !overlaps_partly(y, b, count), "add_scaled",
            "y overlaps a or b without being the same pointer");
    return backend->ops->add_scaled(backend, a, b, scale, y, count);
}

/* ------------------------------------------------------------------ batch, latent, likelihood */

vae_status vae_backend_gather_batch(vae_backend *backend, const vae_row_segments *dataset, const int32_t *permutation, int dim,
                                    int rows, const vae_gather_settings *settings, const vae_step_counter *counter,
                                    float *x) {
    REQUIRE_BACKEND("gather_batch");
    REQUIRE(rows > 0 && dim > 0, "gather_batch", "sizes must be positive (rows %d, dim %d)", rows, dim);
    REQUIRE(dataset != NULL && permutation != NULL && settings != NULL && counter != NULL && x != NULL,
            "gather_batch", "NULL pointer (dataset, permutation, settings, counter or x)");
    REQUIRE(dataset->count >= 1 && dataset->first_row != NULL && dataset->values != NULL, "gather_batch",
            "the data set needs at least one segment with its table (count %d)", dataset->count);
    REQUIRE(settings->steps_per_epoch > 0, "gather_batch", "steps_per_epoch must be positive, got %ld",
            settings->steps_per_epoch);
    REQUIRE(settings->dtype == VAE_DTYPE_U8 || settings->dtype == VAE_DTYPE_F32, "gather_batch",
            "dtype %d is neither u8 (%d) nor f32 (%d)", settings->dtype, VAE_DTYPE_U8, VAE_DTYPE_F32);
    REQUIRE(settings->binarize >= VAE_BINARIZE_NONE && settings->binarize <= VAE_BINARIZE_DYNAMIC, "gather_batch",
            "unknown binarize mode %d", settings->binarize);
    return backend->ops->gather_batch(backend, dataset, permutation, dim, rows, settings, counter, x);
}

vae_status vae_backend_reparam_kl_forward(vae_backend *backend, const float *mu_logvar, float *z, float *kl, int rows,
                                          int latent, int samples, const vae_noise_settings *noise,
                                          const vae_step_counter *counter, const float *eps_override,
                                          float logvar_clamp) {
    REQUIRE_BACKEND("reparam_kl_forward");
    REQUIRE(rows > 0 && latent > 0 && samples > 0, "reparam_kl_forward",
            "sizes must be positive (rows %d, latent %d, samples %d)", rows, latent, samples);
    REQUIRE(mu_logvar != NULL && z != NULL && kl != NULL && noise != NULL && counter != NULL, "reparam_kl_forward",
            "NULL pointer (mu_logvar, z, kl, noise or counter)");
    REQUIRE(noise->rows_hold_samples <= 1 || (samples == 1 && (uint32_t)rows % noise->rows_hold_samples == 0),
            "reparam_kl_forward",
            "rows that hold %u samples need samples 1 (got %d) and rows a multiple of %u (got %d)",
            noise->rows_hold_samples, samples, noise->rows_hold_samples, rows);
    return backend->ops->reparam_kl_forward(backend, mu_logvar, z, kl, rows, latent, samples, noise, counter,
                                            eps_override, logvar_clamp);
}

vae_status vae_backend_reparam_kl_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                           const float *dz, float *dmu_logvar, int rows, int latent, int samples,
                                           float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                           float logvar_clamp) {
    REQUIRE_BACKEND("reparam_kl_backward");
    REQUIRE(rows > 0 && latent > 0 && samples > 0, "reparam_kl_backward",
            "sizes must be positive (rows %d, latent %d, samples %d)", rows, latent, samples);
    REQUIRE(mu_logvar != NULL && z != NULL && dz != NULL && dmu_logvar != NULL && counter != NULL,
            "reparam_kl_backward", "NULL pointer (mu_logvar, z, dz, dmu_logvar or counter)");
    return backend->ops->reparam_kl_backward(backend, mu_logvar, z, dz, dmu_logvar, rows, latent, samples, beta,
                                             kl_warmup_steps, counter, logvar_clamp);
}

vae_status vae_backend_gaussian_kl(vae_backend *backend, const float *q, const float *p, float *kl, float *dq,
                                   float *dp, int rows, int latent, float beta, uint64_t kl_warmup_steps,
                                   const vae_step_counter *counter, float logvar_clamp, float free_bits) {
    REQUIRE_BACKEND("gaussian_kl");
    REQUIRE(rows > 0 && latent > 0, "gaussian_kl", "sizes must be positive (rows %d, latent %d)", rows, latent);
    REQUIRE(q != NULL && p != NULL && kl != NULL && counter != NULL, "gaussian_kl",
            "NULL pointer (q, p, kl or counter)");
    REQUIRE((dq == NULL) == (dp == NULL), "gaussian_kl", "dq and dp must be both NULL or both given");
    REQUIRE(!isnan(free_bits), "gaussian_kl", "free_bits is NaN");
    return backend->ops->gaussian_kl(backend, q, p, kl, dq, dp, rows, latent, beta, kl_warmup_steps, counter,
                                     logvar_clamp, free_bits);
}

vae_status vae_backend_gaussian_log_ratio(vae_backend *backend, const float *z, const float *q, const float *p,
                                          float *out, int rows, int latent, float logvar_clamp, int accumulate) {
    REQUIRE_BACKEND("gaussian_log_ratio");
    REQUIRE(rows > 0 && latent > 0, "gaussian_log_ratio", "sizes must be positive (rows %d, latent %d)", rows,
            latent);
    REQUIRE(z != NULL && q != NULL && p != NULL && out != NULL, "gaussian_log_ratio",
            "NULL pointer (z, q, p or out)");
    return backend->ops->gaussian_log_ratio(backend, z, q, p, out, rows, latent, logvar_clamp, accumulate);
}

vae_status vae_backend_gaussian_log_ratio_backward(vae_backend *backend, const float *z, const float *q,
                                                   const float *p, const float *weight, float *dz, float *dq,
                                                   float *dp, int rows, int latent, float beta,
                                                   uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                                   int mean_rows, float logvar_clamp) {
    REQUIRE_BACKEND("gaussian_log_ratio_backward");
    REQUIRE(rows > 0 && latent > 0 && mean_rows > 0, "gaussian_log_ratio_backward",
            "sizes must be positive (rows %d, latent %d, mean_rows %d)", rows, latent, mean_rows);
    REQUIRE(z != NULL && q != NULL && p != NULL && weight != NULL && dz != NULL && dq != NULL && dp != NULL &&
                counter != NULL,
            "gaussian_log_ratio_backward", "NULL pointer (z, q, p, weight, dz, dq, dp or counter)");
    REQUIRE(isfinite(beta) && beta >= 0.0f, "gaussian_log_ratio_backward", "beta must be finite and >= 0, got %g",
            (double)beta);
    return backend->ops->gaussian_log_ratio_backward(backend, z, q, p, weight, dz, dq, dp, rows, latent, beta,
                                                     kl_warmup_steps, counter, mean_rows, logvar_clamp);
}

vae_status vae_backend_likelihood(vae_backend *backend, vae_likelihood likelihood, const float *x, float *out,
                                  float *logp, int rows, int samples, int dim, float fixed_logvar,
                                  int write_gradient) {
    REQUIRE_BACKEND("likelihood");
    REQUIRE(rows > 0 && samples > 0 && dim > 0, "likelihood", "sizes must be positive (rows %d, samples %d, dim %d)",
            rows, samples, dim);
    REQUIRE(likelihood >= VAE_LIKELIHOOD_BERNOULLI && likelihood <= VAE_LIKELIHOOD_GAUSSIAN_FIXED, "likelihood",
            "unknown likelihood %d", (int)likelihood);
    REQUIRE(x != NULL && out != NULL && logp != NULL, "likelihood", "NULL pointer (x, out or logp)");
    return backend->ops->likelihood(backend, (int)likelihood, x, out, logp, rows, samples, dim, fixed_logvar,
                                    write_gradient);
}

/* ------------------------------------------------------------------ reductions, optimizer */

vae_status vae_backend_accumulate_loss(vae_backend *backend, const float *logp, const float *kl, int rows,
                                       int samples, float beta, uint64_t kl_warmup_steps,
                                       const vae_step_counter *counter, double *accumulator) {
    REQUIRE_BACKEND("accumulate_loss");
    REQUIRE(rows > 0 && samples > 0, "accumulate_loss", "sizes must be positive (rows %d, samples %d)", rows,
            samples);
    REQUIRE(logp != NULL && kl != NULL && counter != NULL && accumulator != NULL, "accumulate_loss",
            "NULL pointer (logp, kl, counter or accumulator)");
    return backend->ops->accumulate_loss(backend, logp, kl, rows, samples, beta, kl_warmup_steps, counter,
                                         accumulator);
}

vae_status vae_backend_importance_log_mean(vae_backend *backend, const float *logp, const float *mu_logvar,
                                           const float *z, float *result, int rows, int latent, int samples,
                                           float logvar_clamp) {
    REQUIRE_BACKEND("importance_log_mean");
    REQUIRE(rows > 0 && latent > 0 && samples > 0, "importance_log_mean",
            "sizes must be positive (rows %d, latent %d, samples %d)", rows, latent, samples);
    REQUIRE(logp != NULL && mu_logvar != NULL && z != NULL && result != NULL, "importance_log_mean",
            "NULL pointer (logp, mu_logvar, z or result)");
    return backend->ops->importance_log_mean(backend, logp, mu_logvar, z, result, rows, latent, samples,
                                             logvar_clamp);
}

vae_status vae_backend_iwae_objective(vae_backend *backend, const float *logp, const float *mu_logvar, const float *z,
                                      const float *log_ratio, const float *kl, float *out, float *weight,
                                      float *row_loss, int rows, int latent, int samples, int width, float beta,
                                      uint64_t kl_warmup_steps, const vae_step_counter *counter, float logvar_clamp,
                                      double *accumulator) {
    REQUIRE_BACKEND("iwae_objective");
    REQUIRE(rows > 0 && latent > 0 && samples > 0 && width > 0, "iwae_objective",
            "sizes must be positive (rows %d, latent %d, samples %d, width %d)", rows, latent, samples, width);
    REQUIRE(logp != NULL && mu_logvar != NULL && z != NULL && kl != NULL && weight != NULL && row_loss != NULL &&
                counter != NULL && accumulator != NULL,
            "iwae_objective", "NULL pointer (logp, mu_logvar, z, kl, weight, row_loss, counter or accumulator)");
    REQUIRE(isfinite(beta) && beta >= 0.0f, "iwae_objective", "beta must be finite and >= 0, got %g", (double)beta);
    return backend->ops->iwae_objective(backend, logp, mu_logvar, z, log_ratio, kl, out, weight, row_loss, rows,
                                        latent, samples, width, beta, kl_warmup_steps, counter, logvar_clamp,
                                        accumulator);
}

vae_status vae_backend_iwae_latent_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                            const float *dz, const float *weight, float *dmu_logvar, int rows,
                                            int latent, int samples, float beta, uint64_t kl_warmup_steps,
                                            const vae_step_counter *counter, float logvar_clamp) {
    REQUIRE_BACKEND("iwae_latent_backward");
    REQUIRE(rows > 0 && latent > 0 && samples > 0, "iwae_latent_backward",
            "sizes must be positive (rows %d, latent %d, samples %d)", rows, latent, samples);
    REQUIRE(mu_logvar != NULL && z != NULL && dz != NULL && weight != NULL && dmu_logvar != NULL && counter != NULL,
            "iwae_latent_backward", "NULL pointer (mu_logvar, z, dz, weight, dmu_logvar or counter)");
    REQUIRE(isfinite(beta) && beta >= 0.0f, "iwae_latent_backward", "beta must be finite and >= 0, got %g",
            (double)beta);
    return backend->ops->iwae_latent_backward(backend, mu_logvar, z, dz, weight, dmu_logvar, rows, latent, samples,
                                              beta, kl_warmup_steps, counter, logvar_clamp);
}

vae_status vae_backend_sum_of_squares(vae_backend *backend, const float *values, size_t count, float *result) {
    REQUIRE_BACKEND("sum_of_squares");
    REQUIRE(result != NULL && (values != NULL || count == 0), "sum_of_squares", "NULL pointer (values or result)");
    return backend->ops->sum_of_squares(backend, values, count, result);
}

vae_status vae_backend_adam_step(vae_backend *backend, float *params, const float *grads, float *m, float *v,
                                 size_t count, const vae_adam_settings *settings, const float *grad_norm_squared,
                                 vae_step_counter *counter) {
    REQUIRE_BACKEND("adam_step");
    REQUIRE(settings != NULL && grad_norm_squared != NULL && counter != NULL, "adam_step",
            "NULL pointer (settings, grad_norm_squared or counter)");
    REQUIRE(count == 0 || (params != NULL && grads != NULL && m != NULL && v != NULL), "adam_step",
            "NULL buffer (params, grads, m or v) for %zu values", count);
    return backend->ops->adam_step(backend, params, grads, m, v, count, settings, grad_norm_squared, counter);
}

/* ------------------------------------------------------------------ optional operations */

int vae_backend_has_host_mapped_memory(const vae_backend *backend) {
    return backend != NULL && backend->ops != NULL && backend->ops->alloc_host_mapped != NULL &&
           backend->ops->free_host_mapped != NULL;
}

vae_status vae_backend_alloc_host_mapped(vae_backend *backend, size_t bytes, void **host, void **device) {
    REQUIRE_BACKEND("alloc_host_mapped");
    REQUIRE(host != NULL && device != NULL, "alloc_host_mapped", "NULL out pointer");
    *host = NULL;
    *device = NULL;
    REQUIRE(vae_backend_has_host_mapped_memory(backend), "alloc_host_mapped", "this backend has no mapped host memory");
    return backend->ops->alloc_host_mapped(backend, bytes, host, device);
}

void vae_backend_free_host_mapped(vae_backend *backend, void *host) {
    if (host != NULL && vae_backend_has_host_mapped_memory(backend)) backend->ops->free_host_mapped(backend, host);
}

int vae_backend_has_graphs(const vae_backend *backend) {
    return backend != NULL && backend->ops != NULL && backend->ops->graph_capture_begin != NULL &&
           backend->ops->graph_capture_end != NULL && backend->ops->graph_launch != NULL &&
           backend->ops->graph_destroy != NULL;
}

vae_status vae_backend_graph_capture_begin(vae_backend *backend) {
    REQUIRE_BACKEND("graph_capture_begin");
    REQUIRE(vae_backend_has_graphs(backend), "graph_capture_begin", "this backend has no graphs");
    return backend->ops->graph_capture_begin(backend);
}

vae_status vae_backend_graph_capture_end(vae_backend *backend, void **graph) {
    REQUIRE_BACKEND("graph_capture_end");
    REQUIRE(graph != NULL, "graph_capture_end", "the graph out pointer is NULL");
    *graph = NULL;
    REQUIRE(vae_backend_has_graphs(backend), "graph_capture_end", "this backend has no graphs");
    return backend->ops->graph_capture_end(backend, graph);
}

vae_status vae_backend_graph_launch(vae_backend *backend, void *graph) {
    REQUIRE_BACKEND("graph_launch");
    REQUIRE(vae_backend_has_graphs(backend), "graph_launch", "this backend has no graphs");
    REQUIRE(graph != NULL, "graph_launch", "the graph is NULL");
    return backend->ops->graph_launch(backend, graph);
}

void vae_backend_graph_destroy(vae_backend *backend, void *graph) {
    if (graph != NULL && vae_backend_has_graphs(backend)) backend->ops->graph_destroy(backend, graph);
}
