/* The CUDA backend: the backend table (src/backends/backend.h) on one GPU. GEMMs go to
 * cuBLAS, everything else to the kernels in kernels/ through their C
 * launchers (kernels/vae_kernels.h). All work is enqueued on one stream, so
 * operations are ordered and asynchronous; copy_to_host, copy_to_device and
 * synchronize wait. The kernels' scratch and the cuBLAS workspace are
 * allocated at create time; the one thing allocated later, bf16's operand
 * scratch, grows only outside a capture. So a step is capturable as a CUDA
 * graph (src/backends/backend_cuda.h). Arguments were
 * checked once, for every backend, by the vae_backend_* wrappers
 * (src/backends/backend.c). */
#include "backends/backend_cuda.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "backends/backend.h"
#include "base/error.h"
#include "vae_kernels.h"

#define CUDA_CHECK(call)                                                                                 \
    do {                                                                                                 \
        cudaError_t cuda_status_ = (call);                                                               \
        if (cuda_status_ != cudaSuccess)                                                                 \
            return vae_error(VAE_ERROR_DEVICE, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call,        \
                             cudaGetErrorString(cuda_status_));                                          \
    } while (0)

#define CUBLAS_CHECK(call)                                                                               \
    do {                                                                                                 \
        cublasStatus_t cublas_status_ = (call);                                                          \
        if (cublas_status_ != CUBLAS_STATUS_SUCCESS)                                                     \
            return vae_error(VAE_ERROR_DEVICE, "%s:%d: %s failed: %s", __FILE__, __LINE__, #call,        \
                             cublasGetStatusString(cublas_status_));                                     \
    } while (0)

/* cuBLAS's recommended workspace for Hopper; set explicitly so that cuBLAS
 * never allocates inside a graph capture. */
#define CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)

/* The bf16 operand scratch at least doubles when it grows, so this many
 * outgrown buffers cover any size memory can hold. */
#define BFLOAT16_RETIRED_MAX 40

typedef struct cuda_backend {
    vae_backend base; /* first: a vae_backend* points here */
    int device;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *cublas_workspace;
    vae_kernel_scratch *kernel_scratch; /* sum_of_squares's partials, the last-block counts */
    int precision;
    uint16_t *bfloat16_operands; /* bf16: one GEMM's two operands as bfloat16, grown outside captures */
    size_t bfloat16_operand_elements;
    /* Outgrown operand buffers, kept until destroy: a captured graph may still use one. */
    void *retired_bfloat16_operands[BFLOAT16_RETIRED_MAX];
    int retired_bfloat16_count;
} cuda_backend;

static cuda_backend *as_cuda(vae_backend *backend) { return (cuda_backend *)backend; }

/* ------------------------------------------------------------------ memory */

static vae_status cuda_alloc(vae_backend *backend, size_t bytes, void **out) {
    (void)backend;
    *out = NULL;
    if (bytes == 0) bytes = 1; /* a distinct valid pointer, like malloc(1) */
    cudaError_t status = cudaMalloc(out, bytes);
    if (status == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* clear the (non-sticky) error */
        *out = NULL;
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s:%d: cudaMalloc of %zu bytes failed: %s", __FILE__, __LINE__,
                         bytes, cudaGetErrorString(status));
    }
    CUDA_CHECK(status);
    return VAE_OK;
}

static void cuda_free(vae_backend *backend, void *pointer) {
    (void)backend;
    if (pointer == NULL) return;
    /* free cannot report; a failure here means the context is already broken
     * and the next checked call says so. */
    cudaError_t status = cudaFree(pointer);
    if (status != cudaSuccess)
        vae_error(VAE_ERROR_DEVICE, "%s:%d: cudaFree failed: %s", __FILE__, __LINE__, cudaGetErrorString(status));
}

/* Page-locked, mapped host memory: kernels read it over the bus, so a
 * training set larger than device memory still feeds one captured graph. */
static vae_status cuda_alloc_host_mapped(vae_backend *backend, size_t bytes, void **host, void **device) {
    (void)backend;
    *host = NULL;
    *device = NULL;
    cudaError_t status = cudaHostAlloc(host, bytes ? bytes : 1, cudaHostAllocMapped | cudaHostAllocPortable);
    if (status == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        *host = NULL;
        return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s:%d: cudaHostAlloc of %zu bytes of page-locked memory failed: %s",
                         __FILE__, __LINE__, bytes, cudaGetErrorString(status));
    }
    CUDA_CHECK(status);
    status = cudaHostGetDevicePointer(device, *host, 0);
    if (status != cudaSuccess) {
        cudaFreeHost(*host);
        *host = NULL;
        CUDA_CHECK(status);
    }
    return VAE_OK;
}

static void cuda_free_host_mapped(vae_backend *backend, void *host) {
    (void)backend;
    if (host) cudaFreeHost(host);
}

static vae_status cuda_copy_to_device(vae_backend *backend, void *destination, const void *host_source,
                                      size_t bytes) {
    cuda_backend *cuda = as_cuda(backend);
    CUDA_CHECK(cudaMemcpyAsync(destination, host_source, bytes, cudaMemcpyHostToDevice, cuda->stream));
    /* Wait: the caller may reuse or free its host buffer at once. */
    CUDA_CHECK(cudaStreamSynchronize(cuda->stream));
    return VAE_OK;
}

static vae_status cuda_copy_to_host(vae_backend *backend, void *host_destination, const void *source, size_t bytes) {
    cuda_backend *cuda = as_cuda(backend);
    CUDA_CHECK(cudaMemcpyAsync(host_destination, source, bytes, cudaMemcpyDeviceToHost, cuda->stream));
    CUDA_CHECK(cudaStreamSynchronize(cuda->stream));
    return VAE_OK;
}

static vae_status cuda_copy(vae_backend *backend, void *destination, const void *source, size_t bytes) {
    CUDA_CHECK(cudaMemcpyAsync(destination, source, bytes, cudaMemcpyDeviceToDevice, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_fill(vae_backend *backend, float *destination, float value, size_t count) {
    CUDA_CHECK(vae_launch_fill(destination, value, count, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_synchronize(vae_backend *backend) {
    CUDA_CHECK(cudaStreamSynchronize(as_cuda(backend)->stream));
    return VAE_OK;
}

/* ------------------------------------------------------------------ linear
 *
 * cuBLAS is column-major. A row-major matrix M[r, c] (leading dimension c)
 * is, in the same memory, the column-major matrix M^T[c, r] with leading
 * dimension c. So every row-major product is computed as its transpose:
 *
 * forward  y[rows,out] = x[rows,in] W[out,in]^T
 *   column-major: y^T[out,rows] = W[out,in] x^T[in,rows]
 *   W's memory is W^T[in,out] (ld in) -> op T gives W;  x's memory is
 *   x^T[in,rows] (ld in) -> op N.   gemm(T, N, m=out, n=rows, k=in,
 *   A=W lda=in, B=x ldb=in, C=y ldc=out)
 *
 * dweight  dW[out,in] = dy[rows,out]^T x[rows,in]
 *   column-major: dW^T[in,out] = x^T[in,rows] dy[rows,out]
 *   x's memory is x^T (ld in) -> op N;  dy's memory is dy^T[out,rows]
 *   (ld out) -> op T gives dy.      gemm(N, T, m=in, n=out, k=rows,
 *   A=x lda=in, B=dy ldb=out, C=dW ldc=in)
 *
 * dx       dx[rows,in] = dy[rows,out] W[out,in]
 *   column-major: dx^T[in,rows] = W^T[in,out] dy^T[out,rows]
 *   W's memory is W^T (ld in) -> op N;  dy's memory is dy^T (ld out) -> op N.
 *                                   gemm(N, N, m=in, n=rows, k=out,
 *   A=W lda=in, B=dy ldb=out, C=dx ldc=in)
 */

/* Room for a bf16 GEMM's operands. It grows only outside a graph capture
 * (which cannot allocate): the trainer's first step runs eagerly and sizes
 * it, so the captured step finds it large enough. An outgrown buffer is
 * retired, not freed: a captured graph (or queued work) may still read it. */
static vae_status reserve_bfloat16_operands(cuda_backend *cuda, size_t elements) {
    if (elements <= cuda->bfloat16_operand_elements) return VAE_OK;
    if (elements < 2 * cuda->bfloat16_operand_elements) elements = 2 * cuda->bfloat16_operand_elements;
    enum cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(cuda->stream, &capture));
    if (capture != cudaStreamCaptureStatusNone)
        return vae_error(VAE_ERROR_DEVICE,
                         "bf16 GEMM operands need %zu bytes of scratch (%zu held) inside a CUDA graph capture, which "
                         "cannot allocate: run the captured work once eagerly first",
                         elements * sizeof(uint16_t), cuda->bfloat16_operand_elements * sizeof(uint16_t));
    if (cuda->retired_bfloat16_count == BFLOAT16_RETIRED_MAX)
        return vae_error(VAE_ERROR_DEVICE, "bf16 GEMM operand scratch outgrown %d times", BFLOAT16_RETIRED_MAX);
    void *grown = NULL;
    VAE_TRY(cuda_alloc(&cuda->base, elements * sizeof(uint16_t), &grown));
    if (cuda->bfloat16_operands != NULL)
        cuda->retired_bfloat16_operands[cuda->retired_bfloat16_count++] = cuda->bfloat16_operands;
    cuda->bfloat16_operands = grown;
    cuda->bfloat16_operand_elements = elements;
    return VAE_OK;
}

/* C[m, n] = op(A)[m, k] op(B)[k, n], column-major, beta 0, cuBLAS's
 * arguments: every GEMM of the backend. fp32 and tf32 run cublasSgemm (the
 * handle's math mode chooses TF32 tensor cores); bf16 rounds both operands to
 * bfloat16 as the CPU backend does (src/backends/cpu_gemm.h) and multiplies
 * them on tensor cores with float accumulation and float output. */
static vae_status cuda_gemm(cuda_backend *cuda, cublasOperation_t op_a, cublasOperation_t op_b, int m, int n, int k,
                            const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    const float one = 1.0f, zero = 0.0f;
    if (cuda->precision != VAE_PRECISION_BF16) {
        CUBLAS_CHECK(cublasSgemm(cuda->cublas, op_a, op_b, m, n, k, &one, a, lda, b, ldb, &zero, c, ldc));
        return VAE_OK;
    }
    /* The operands as stored (column-major): A is [m, k], or [k, m] under op T; B likewise. */
    const int a_rows = op_a == CUBLAS_OP_N ? m : k, a_columns = op_a == CUBLAS_OP_N ? k : m;
    const int b_rows = op_b == CUBLAS_OP_N ? k : n, b_columns = op_b == CUBLAS_OP_N ? n : k;
    /* B starts 256-byte aligned, as cuBLAS's fastest kernels want their operands. */
    const size_t a_elements = ((size_t)a_rows * (size_t)a_columns + 127) / 128 * 128;
    const size_t b_elements = (size_t)b_rows * (size_t)b_columns;
    VAE_TRY(reserve_bfloat16_operands(cuda, a_elements + b_elements));
    uint16_t *a_bfloat16 = cuda->bfloat16_operands, *b_bfloat16 = cuda->bfloat16_operands + a_elements;
    CUDA_CHECK(vae_launch_round_to_bfloat16(a, (size_t)a_columns, (size_t)a_rows, (size_t)lda, a_bfloat16,
                                            cuda->stream));
    CUDA_CHECK(vae_launch_round_to_bfloat16(b, (size_t)b_columns, (size_t)b_rows, (size_t)ldb, b_bfloat16,
                                            cuda->stream));
    CUBLAS_CHECK(cublasGemmEx(cuda->cublas, op_a, op_b, m, n, k, &one, a_bfloat16, CUDA_R_16BF, a_rows, b_bfloat16,
                              CUDA_R_16BF, b_rows, &zero, c, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return VAE_OK;
}

static vae_status cuda_linear_forward(vae_backend *backend, const float *x, const float *weight, const float *bias,
                                      float *y, int rows, int in, int out) {
    cuda_backend *cuda = as_cuda(backend);
    VAE_TRY(cuda_gemm(cuda, CUBLAS_OP_T, CUBLAS_OP_N, out, rows, in, weight, in, x, in, y, out));
    if (bias != NULL) CUDA_CHECK(vae_launch_bias_add(y, bias, rows, out, cuda->stream));
    return VAE_OK;
}

static vae_status cuda_linear_backward(vae_backend *backend, const float *x, const float *weight, const float *dy,
                                       float *dx, float *dweight, float *dbias, int rows, int in, int out) {
    cuda_backend *cuda = as_cuda(backend);
    VAE_TRY(cuda_gemm(cuda, CUBLAS_OP_N, CUBLAS_OP_T, in, out, rows, x, in, dy, out, dweight, in));
    CUDA_CHECK(vae_launch_bias_gradient(dy, dbias, rows, out, cuda->stream));
    if (dx != NULL) VAE_TRY(cuda_gemm(cuda, CUBLAS_OP_N, CUBLAS_OP_N, in, rows, out, weight, in, dy, out, dx, in));
    return VAE_OK;
}

/* ------------------------------------------------------------------ convolutions
 *
 * The CPU backend's steps (src/backends/cpu_conv.c), with the unfold, fold
 * and staging kernels of kernels/conv.cu and one cuBLAS GEMM over the whole
 * batch (the batch lies in the GEMM's column dimension, so no batched GEMM
 * is needed). row_major_gemm takes the CPU's cblas arguments unchanged. */

/* C[m, n] = op(A) op(B), row-major, beta 0. The same memory read
 * column-major is C^T = op(B)^T op(A)^T: cuBLAS gets the operands swapped,
 * each with its own transpose flag, and m, n swapped (as the linear layer's
 * GEMMs above). */
static vae_status row_major_gemm(cuda_backend *cuda, int transpose_a, int transpose_b, int m, int n, int k,
                                 const float *a, int lda, const float *b, int ldb, float *c, int ldc) {
    return cuda_gemm(cuda, transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N, transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, b,
                     ldb, a, lda, c, ldc);
}

static float *conv_staged_part(const vae_conv_unfolding *u, int batch, float *workspace) {
    return workspace + (size_t)vae_conv_unfolded_rows(u) * (size_t)batch * (size_t)vae_conv_positions(u);
}

static vae_status cuda_conv2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                      const float *x, const float *weight, const float *bias, float *y,
                                      float *workspace) {
    cuda_backend *cuda = as_cuda(backend);
    const vae_conv_unfolding u = vae_conv2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = conv_staged_part(&u, batch, workspace);
    CUDA_CHECK(vae_launch_conv_unfold(u, batch, x, unfolded, cuda->stream));
    VAE_TRY(row_major_gemm(cuda, 0, 0, u.staged_channels, columns, rows, weight, rows, unfolded, columns, staged,
                           columns));
    CUDA_CHECK(vae_launch_conv_unstage(u, batch, staged, bias, y, cuda->stream));
    return VAE_OK;
}

static vae_status cuda_conv2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                       const float *x, const float *weight, const float *dy, float *dx,
                                       float *dweight, float *dbias, float *workspace) {
    cuda_backend *cuda = as_cuda(backend);
    const vae_conv_unfolding u = vae_conv2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = conv_staged_part(&u, batch, workspace);
    if (dbias)
        CUDA_CHECK(vae_launch_conv_channel_sums(dy, batch, u.staged_channels, (size_t)vae_conv_positions(&u), dbias,
                                                cuda->stream));
    if (!dweight && !dx) return VAE_OK;
    CUDA_CHECK(vae_launch_conv_stage(u, batch, dy, staged, cuda->stream));
    if (dweight) {
        CUDA_CHECK(vae_launch_conv_unfold(u, batch, x, unfolded, cuda->stream));
        VAE_TRY(row_major_gemm(cuda, 0, 1, u.staged_channels, rows, columns, staged, columns, unfolded, columns,
                               dweight, rows));
    }
    if (dx) {
        VAE_TRY(row_major_gemm(cuda, 1, 0, rows, columns, u.staged_channels, weight, rows, staged, columns, unfolded,
                               columns));
        CUDA_CHECK(vae_launch_conv_fold(u, batch, unfolded, NULL, dx, cuda->stream));
    }
    return VAE_OK;
}

static vae_status cuda_conv_transpose2d_forward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                                const float *x, const float *weight, const float *bias, float *y,
                                                float *workspace) {
    cuda_backend *cuda = as_cuda(backend);
    const vae_conv_unfolding u = vae_conv_transpose2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = conv_staged_part(&u, batch, workspace);
    CUDA_CHECK(vae_launch_conv_stage(u, batch, x, staged, cuda->stream));
    VAE_TRY(row_major_gemm(cuda, 1, 0, rows, columns, u.staged_channels, weight, rows, staged, columns, unfolded,
                           columns));
    CUDA_CHECK(vae_launch_conv_fold(u, batch, unfolded, bias, y, cuda->stream));
    return VAE_OK;
}

static vae_status cuda_conv_transpose2d_backward(vae_backend *backend, const vae_conv_geometry *geometry, int batch,
                                                 const float *x, const float *weight, const float *dy, float *dx,
                                                 float *dweight, float *dbias, float *workspace) {
    cuda_backend *cuda = as_cuda(backend);
    const vae_conv_unfolding u = vae_conv_transpose2d_unfolding(geometry);
    const int rows = (int)vae_conv_unfolded_rows(&u), columns = batch * (int)vae_conv_positions(&u);
    float *unfolded = workspace, *staged = conv_staged_part(&u, batch, workspace);
    if (dbias)
        CUDA_CHECK(vae_launch_conv_channel_sums(dy, batch, u.channels, (size_t)u.height * (size_t)u.width, dbias,
                                                cuda->stream));
    if (!dweight && !dx) return VAE_OK;
    CUDA_CHECK(vae_launch_conv_unfold(u, batch, dy, unfolded, cuda->stream));
    if (dweight) {
        CUDA_CHECK(vae_launch_conv_stage(u, batch, x, staged, cuda->stream));
        VAE_TRY(row_major_gemm(cuda, 0, 1, u.staged_channels, rows, columns, staged, columns, unfolded, columns,
                               dweight, rows));
    }
    if (dx) {
        VAE_TRY(row_major_gemm(cuda, 0, 0, u.staged_channels, columns, rows, weight, rows, unfolded, columns, staged,
                               columns));
        CUDA_CHECK(vae_launch_conv_unstage(u, batch, staged, NULL, dx, cuda->stream));
    }
    return VAE_OK;
}

static vae_status cuda_activation_forward(vae_backend *backend, int activation, const float *pre, float *post,
                                          size_t count) {
    CUDA_CHECK(vae_launch_activation_forward(activation, pre, post, count, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_activation_backward(vae_backend *backend, int activation, const float *pre,
                                           const float *dpost, float *dpre, size_t count) {
    CUDA_CHECK(vae_launch_activation_backward(activation, pre, dpost, dpre, count, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_add_scaled(vae_backend *backend, const float *a, const float *b, float scale, float *y,
                                  size_t count) {
    CUDA_CHECK(vae_launch_add_scaled(a, b, scale, y, count, as_cuda(backend)->stream));
    return VAE_OK;
}

/* ------------------------------------------------------------------ batch, latent, likelihood */

static vae_status cuda_gather_batch(vae_backend *backend, const vae_row_segments *dataset,
                                    const int32_t *permutation, int dim, int rows,
                                    const vae_gather_settings *settings, const vae_step_counter *counter, float *x) {
    /* The kernel reads one block (device or mapped host memory); the trainer
     * places a sharded data set there contiguously. */
    if (dataset->count != 1)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "cuda gather_batch: the data set must be one segment of backend memory, got %d",
                         dataset->count);
    CUDA_CHECK(vae_launch_gather_batch(dataset->values[0], permutation, dim, rows, *settings, counter, x,
                                       as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_reparam_kl_forward(vae_backend *backend, const float *mu_logvar, float *z, float *kl,
                                          int rows, int latent, int samples, const vae_noise_settings *noise,
                                          const vae_step_counter *counter, const float *eps_override,
                                          float logvar_clamp) {
    CUDA_CHECK(vae_launch_reparam_kl_forward(mu_logvar, z, kl, rows, latent, samples, *noise, counter, eps_override,
                                             logvar_clamp, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_reparam_kl_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                           const float *dz, float *dmu_logvar, int rows, int latent, int samples,
                                           float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                           float logvar_clamp) {
    CUDA_CHECK(vae_launch_reparam_kl_backward(mu_logvar, z, dz, dmu_logvar, rows, latent, samples, beta,
                                              kl_warmup_steps, counter, logvar_clamp, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_gaussian_kl(vae_backend *backend, const float *q, const float *p, float *kl, float *dq,
                                   float *dp, int rows, int latent, float beta, uint64_t kl_warmup_steps,
                                   const vae_step_counter *counter, float logvar_clamp, float free_bits) {
    CUDA_CHECK(vae_launch_gaussian_kl(q, p, kl, dq, dp, rows, latent, beta, kl_warmup_steps, counter, logvar_clamp,
                                      free_bits, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_gaussian_log_ratio(vae_backend *backend, const float *z, const float *q, const float *p,
                                          float *out, int rows, int latent, float logvar_clamp, int accumulate) {
    CUDA_CHECK(vae_launch_gaussian_log_ratio(z, q, p, out, rows, latent, logvar_clamp, accumulate,
                                             as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_gaussian_log_ratio_backward(vae_backend *backend, const float *z, const float *q,
                                                   const float *p, const float *weight, float *dz, float *dq,
                                                   float *dp, int rows, int latent, float beta,
                                                   uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                                   int mean_rows, float logvar_clamp) {
    CUDA_CHECK(vae_launch_gaussian_log_ratio_backward(z, q, p, weight, dz, dq, dp, rows, latent, beta,
                                                      kl_warmup_steps, counter, mean_rows, logvar_clamp,
                                                      as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_likelihood(vae_backend *backend, int likelihood, const float *x, float *out, float *logp,
                                  int rows, int samples, int dim, float fixed_logvar, int write_gradient) {
    CUDA_CHECK(vae_launch_likelihood(likelihood, x, out, logp, rows, samples, dim, fixed_logvar, write_gradient,
                                     as_cuda(backend)->stream));
    return VAE_OK;
}

/* ------------------------------------------------------------------ reductions, optimizer */

static vae_status cuda_accumulate_loss(vae_backend *backend, const float *logp, const float *kl, int rows,
                                       int samples, float beta, uint64_t kl_warmup_steps,
                                       const vae_step_counter *counter, double *accumulator) {
    CUDA_CHECK(vae_launch_accumulate_loss(logp, kl, rows, samples, beta, kl_warmup_steps, counter, accumulator,
                                          as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_importance_log_mean(vae_backend *backend, const float *logp, const float *mu_logvar,
                                           const float *z, float *result, int rows, int latent, int samples,
                                           float logvar_clamp) {
    CUDA_CHECK(vae_launch_importance_log_mean(logp, mu_logvar, z, result, rows, latent, samples, logvar_clamp,
                                              as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_iwae_objective(vae_backend *backend, const float *logp, const float *mu_logvar, const float *z,
                                      const float *log_ratio, const float *kl, float *out, float *weight,
                                      float *row_loss, int rows, int latent, int samples, int width, float beta,
                                      uint64_t kl_warmup_steps, const vae_step_counter *counter, float logvar_clamp,
                                      double *accumulator) {
    CUDA_CHECK(vae_launch_iwae_objective(logp, mu_logvar, z, log_ratio, kl, out, weight, row_loss, rows, latent,
                                         samples, width, beta, kl_warmup_steps, counter, logvar_clamp, accumulator,
                                         as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_iwae_latent_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                            const float *dz, const float *weight, float *dmu_logvar, int rows,
                                            int latent, int samples, float beta, uint64_t kl_warmup_steps,
                                            const vae_step_counter *counter, float logvar_clamp) {
    CUDA_CHECK(vae_launch_iwae_latent_backward(mu_logvar, z, dz, weight, dmu_logvar, rows, latent, samples, beta,
                                               kl_warmup_steps, counter, logvar_clamp, as_cuda(backend)->stream));
    return VAE_OK;
}

static vae_status cuda_sum_of_squares(vae_backend *backend, const float *values, size_t count, float *result) {
    cuda_backend *cuda = as_cuda(backend);
    CUDA_CHECK(vae_launch_sum_of_squares(values, count, result, cuda->kernel_scratch, cuda->stream));
    return VAE_OK;
}

static vae_status cuda_adam_step(vae_backend *backend, float *params, const float *grads, float *m, float *v,
                                 size_t count, const vae_adam_settings *settings, const float *grad_norm_squared,
                                 vae_step_counter *counter) {
    cuda_backend *cuda = as_cuda(backend);
    CUDA_CHECK(vae_launch_adam_step(params, grads, m, v, count, *settings, grad_norm_squared, counter,
                                    cuda->kernel_scratch, cuda->stream));
    return VAE_OK;
}

/* ------------------------------------------------------------------ lifetime */

static void cuda_destroy(vae_backend *backend) {
    if (backend == NULL) return;
    cuda_backend *cuda = as_cuda(backend);
    /* Teardown cannot report failures; each step still runs so nothing leaks. */
    if (cuda->stream != NULL) (void)cudaStreamSynchronize(cuda->stream);
    if (cuda->cublas != NULL) (void)cublasDestroy(cuda->cublas);
    if (cuda->cublas_workspace != NULL) (void)cudaFree(cuda->cublas_workspace);
    if (cuda->kernel_scratch != NULL) (void)cudaFree(cuda->kernel_scratch);
    if (cuda->bfloat16_operands != NULL) (void)cudaFree(cuda->bfloat16_operands);
    for (int i = 0; i < cuda->retired_bfloat16_count; ++i) (void)cudaFree(cuda->retired_bfloat16_operands[i]);
    if (cuda->stream != NULL) (void)cudaStreamDestroy(cuda->stream);
    free(cuda);
}

/* The table's graph entries: the functions of backend_cuda.h, below. */
static void cuda_graph_destroy(vae_backend *backend, void *graph_exec) {
    (void)backend;
    vae_cuda_graph_destroy(graph_exec);
}

static const vae_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .alloc_host_mapped = cuda_alloc_host_mapped,
    .free_host_mapped = cuda_free_host_mapped,
    .free = cuda_free,
    .copy_to_device = cuda_copy_to_device,
    .copy_to_host = cuda_copy_to_host,
    .copy = cuda_copy,
    .fill = cuda_fill,
    .synchronize = cuda_synchronize,
    .linear_forward = cuda_linear_forward,
    .linear_backward = cuda_linear_backward,
    .conv2d_forward = cuda_conv2d_forward,
    .conv2d_backward = cuda_conv2d_backward,
    .conv_transpose2d_forward = cuda_conv_transpose2d_forward,
    .conv_transpose2d_backward = cuda_conv_transpose2d_backward,
    .activation_forward = cuda_activation_forward,
    .activation_backward = cuda_activation_backward,
    .add_scaled = cuda_add_scaled,
    .gather_batch = cuda_gather_batch,
    .reparam_kl_forward = cuda_reparam_kl_forward,
    .reparam_kl_backward = cuda_reparam_kl_backward,
    .gaussian_kl = cuda_gaussian_kl,
    .gaussian_log_ratio = cuda_gaussian_log_ratio,
    .gaussian_log_ratio_backward = cuda_gaussian_log_ratio_backward,
    .likelihood = cuda_likelihood,
    .accumulate_loss = cuda_accumulate_loss,
    .importance_log_mean = cuda_importance_log_mean,
    .iwae_objective = cuda_iwae_objective,
    .iwae_latent_backward = cuda_iwae_latent_backward,
    .sum_of_squares = cuda_sum_of_squares,
    .adam_step = cuda_adam_step,
    .graph_capture_begin = vae_cuda_graph_capture_begin,
    .graph_capture_end = vae_cuda_graph_capture_end,
    .graph_launch = vae_cuda_graph_launch,
    .graph_destroy = cuda_graph_destroy,
};

static int preferred_device_index = 0;

void vae_cuda_set_device_index(int index) { preferred_device_index = index >= 0 ? index : 0; }
int vae_cuda_backend_device(vae_backend *backend) { return as_cuda(backend)->device; }
void *vae_cuda_backend_stream(vae_backend *backend) { return (void *)as_cuda(backend)->stream; }

/* Why a CUDA call at start-up means there is no usable GPU, in the words a
 * user acts on (--device auto prints it when it falls back to the CPU). */
static vae_status no_usable_gpu(cudaError_t status, const char *what) {
    (void)cudaGetLastError(); /* clear a non-sticky error */
    if (status == cudaErrorInsufficientDriver) {
        int driver = 0, runtime = 0;
        (void)cudaDriverGetVersion(&driver);
        (void)cudaRuntimeGetVersion(&runtime);
        if (driver == 0)
            return vae_error(VAE_ERROR_DEVICE,
                             "no usable CUDA GPU: no NVIDIA driver (%s: %s, and no driver version: libcuda is not "
                             "installed or not found)",
                             what, cudaGetErrorName(status));
        return vae_error(VAE_ERROR_DEVICE,
                         "no usable CUDA GPU: driver too old (%s: %s; the driver supports CUDA %d.%d, this build "
                         "needs %d.%d): update the NVIDIA driver",
                         what, cudaGetErrorName(status), driver / 1000, driver % 1000 / 10, runtime / 1000,
                         runtime % 1000 / 10);
    }
    if (status == cudaErrorNoDevice)
        return vae_error(VAE_ERROR_DEVICE,
                         "no usable CUDA GPU: no device (%s: %s; check nvidia-smi and CUDA_VISIBLE_DEVICES)", what,
                         cudaGetErrorName(status));
    if (status == cudaErrorMemoryAllocation)
        return vae_error(VAE_ERROR_DEVICE, "no usable CUDA GPU: out of GPU memory (%s: %s)", what,
                         cudaGetErrorName(status));
    return vae_error(VAE_ERROR_DEVICE, "no usable CUDA GPU: %s failed: %s (%s)", what, cudaGetErrorString(status),
                     cudaGetErrorName(status));
}

#define SETUP_CHECK(call)                                                                                \
    do {                                                                                                 \
        cudaError_t setup_status_ = (call);                                                              \
        if (setup_status_ != cudaSuccess) return no_usable_gpu(setup_status_, #call);                    \
    } while (0)

#define SETUP_CUBLAS_CHECK(call)                                                                         \
    do {                                                                                                 \
        cublasStatus_t setup_cublas_status_ = (call);                                                    \
        if (setup_cublas_status_ == CUBLAS_STATUS_ALLOC_FAILED)                                          \
            return no_usable_gpu(cudaErrorMemoryAllocation, #call);                                      \
        CUBLAS_CHECK(setup_cublas_status_);                                                              \
    } while (0)

/* The fallible part of create; on failure the caller destroys the partial
 * backend. */
static vae_status cuda_setup(cuda_backend *cuda, int precision) {
    int device_count = 0;
    SETUP_CHECK(cudaGetDeviceCount(&device_count));
    if (device_count < 1) return no_usable_gpu(cudaErrorNoDevice, "cudaGetDeviceCount");

    struct cudaDeviceProp properties;
    cuda->device = preferred_device_index % device_count;
    SETUP_CHECK(cudaSetDevice(cuda->device));
    SETUP_CHECK(cudaGetDeviceProperties(&properties, cuda->device));
    properties.name[sizeof properties.name - 1] = '\0';
    snprintf(cuda->base.device_name, sizeof cuda->base.device_name, "cuda:%d (%.200s)", cuda->device,
             properties.name);

    SETUP_CHECK(cudaStreamCreateWithFlags(&cuda->stream, cudaStreamNonBlocking));
    SETUP_CUBLAS_CHECK(cublasCreate(&cuda->cublas));
    /* Order matters: cublasSetStream resets the workspace to cuBLAS's own
     * pool, so the workspace is set after it. With a user workspace cuBLAS
     * does not allocate, which graph capture requires. */
    CUBLAS_CHECK(cublasSetStream(cuda->cublas, cuda->stream));
    SETUP_CHECK(cudaMalloc(&cuda->cublas_workspace, CUBLAS_WORKSPACE_BYTES));
    /* Zeroed once, so that compute-sanitizer's initcheck reports the engine's
     * reads, not cuBLAS's reads of workspace it has not written. */
    SETUP_CHECK(cudaMemsetAsync(cuda->cublas_workspace, 0, CUBLAS_WORKSPACE_BYTES, cuda->stream));
    CUBLAS_CHECK(cublasSetWorkspace(cuda->cublas, cuda->cublas_workspace, CUBLAS_WORKSPACE_BYTES));
    /* fp32: cuBLAS's default math, full FP32 GEMMs; tf32: tensor cores with
     * inputs rounded to TF32 (faster, about 1e-3 relative error); bf16:
     * cublasGemmEx on bfloat16 operands (cuda_gemm), default math. */
    CUBLAS_CHECK(cublasSetMathMode(cuda->cublas, precision == VAE_PRECISION_TF32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                                                 : CUBLAS_DEFAULT_MATH));
    SETUP_CHECK(cudaMalloc((void **)&cuda->kernel_scratch, sizeof(vae_kernel_scratch)));
    /* The last-block counts start at zero (vae_kernel_scratch). */
    SETUP_CHECK(cudaMemsetAsync(cuda->kernel_scratch, 0, sizeof(vae_kernel_scratch), cuda->stream));

    /* A first kernel launch: fails here, clearly, when this build has no
     * kernel image for the GPU's architecture. */
    cudaError_t status = vae_launch_fill((float *)cuda->kernel_scratch->partials, 0.0f, 2 * VAE_REDUCTION_BLOCKS,
                                         cuda->stream);
    if (status == cudaSuccess) status = cudaStreamSynchronize(cuda->stream);
    if (status != cudaSuccess)
        return vae_error(VAE_ERROR_DEVICE,
                         "no usable CUDA GPU: a test kernel on %s (compute capability %d.%d) failed: %s (%s)%s",
                         properties.name, properties.major, properties.minor, cudaGetErrorString(status),
                         cudaGetErrorName(status),
                         status == cudaErrorNoKernelImageForDevice
                             ? "; this build has no kernel for it (set CMAKE_CUDA_ARCHITECTURES)"
                             : "");
    return VAE_OK;
}

vae_status vae_backend_create_cuda(vae_backend **out, vae_precision precision) {
    if (out == NULL) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_backend_create_cuda: out is NULL");
    *out = NULL;
    if (precision != VAE_PRECISION_FP32 && precision != VAE_PRECISION_TF32 && precision != VAE_PRECISION_BF16)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_backend_create_cuda: unknown precision %d", precision);
    cuda_backend *cuda = calloc(1, sizeof *cuda);
    if (cuda == NULL) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "vae_backend_create_cuda: out of host memory");
    cuda->base.ops = &cuda_ops;
    cuda->precision = precision;
    vae_status status = cuda_setup(cuda, precision);
    if (status != VAE_OK) {
        cuda_destroy(&cuda->base);
        return status;
    }
    *out = &cuda->base;
    return VAE_OK;
}

int vae_backend_cuda_available(void) {
    int device_count = 0;
    cudaError_t status = cudaGetDeviceCount(&device_count);
    if (status != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return device_count > 0;
}

/* ------------------------------------------------------------------ graphs */

static vae_status require_cuda_backend(vae_backend *backend, const char *function) {
    if (backend == NULL || backend->ops == NULL || backend->ops->destroy != cuda_destroy)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: the backend is not the CUDA backend", function);
    return VAE_OK;
}

vae_status vae_cuda_graph_capture_begin(vae_backend *backend) {
    VAE_TRY(require_cuda_backend(backend, "vae_cuda_graph_capture_begin"));
    /* Thread-local mode: only this thread's unsafe calls (cudaMalloc, syncs)
     * invalidate the capture. */
    CUDA_CHECK(cudaStreamBeginCapture(as_cuda(backend)->stream, cudaStreamCaptureModeThreadLocal));
    return VAE_OK;
}

vae_status vae_cuda_graph_capture_end(vae_backend *backend, void **graph_exec) {
    if (graph_exec == NULL) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_cuda_graph_capture_end: graph_exec is NULL");
    *graph_exec = NULL;
    VAE_TRY(require_cuda_backend(backend, "vae_cuda_graph_capture_end"));
    cudaGraph_t graph = NULL;
    CUDA_CHECK(cudaStreamEndCapture(as_cuda(backend)->stream, &graph));
    cudaGraphExec_t executable = NULL;
    cudaError_t status = cudaGraphInstantiate(&executable, graph, 0);
    cudaError_t destroy_status = cudaGraphDestroy(graph); /* the executable keeps what it needs */
    CUDA_CHECK(status);
    if (destroy_status != cudaSuccess) {
        (void)cudaGraphExecDestroy(executable);
        CUDA_CHECK(destroy_status);
    }
    *graph_exec = (void *)executable;
    return VAE_OK;
}

vae_status vae_cuda_graph_launch(vae_backend *backend, void *graph_exec) {
    VAE_TRY(require_cuda_backend(backend, "vae_cuda_graph_launch"));
    if (graph_exec == NULL) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_cuda_graph_launch: graph_exec is NULL");
    CUDA_CHECK(cudaGraphLaunch((cudaGraphExec_t)graph_exec, as_cuda(backend)->stream));
    return VAE_OK;
}

void vae_cuda_graph_destroy(void *graph_exec) {
    if (graph_exec != NULL) (void)cudaGraphExecDestroy((cudaGraphExec_t)graph_exec);
}
