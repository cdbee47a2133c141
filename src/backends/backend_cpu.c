/* The CPU reference backend: GEMMs through OpenBLAS, loops elsewhere with
 * OpenMP. Every reduction runs in a fixed order (fixed chunks, summed
 * sequentially), so results are bitwise repeatable whatever the thread
 * count. Element-wise math comes from kernels/vae_math.h, the per-step rules
 * (binarisation, row loss, non-finite skip, IWAE) from kernels/vae_step_math.h,
 * the noise from kernels/vae_philox.h: what the CUDA kernels use. Arguments
 * were checked by the vae_backend_* wrappers (backend.c). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backends/backend.h"
#include "backends/blas_select.h"
#include "backends/cpu_binary_linear.h"
#include "backends/cpu_conv.h"
#include "backends/cpu_gemm.h"
#include "base/error.h"
#include "vae_philox.h"
#include "vae_step_math.h"

#define CPU_REDUCTION_CHUNK 4096

/* The element-wise loops are compiled three times, for plain x86-64 (SSE2),
 * x86-64-v3 (AVX2 + FMA) and x86-64-v4 (AVX-512), and the loader picks one
 * from the CPU's features (GCC's target_clones): the build stays portable and
 * each CPU gets its widest vectors. Results are bitwise repeatable on one
 * machine; across CPUs they may differ in the last bits (FMA). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define CPU_VECTOR_KERNEL __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define CPU_VECTOR_KERNEL
#endif

/* Sums run in this many independent lanes (then added in lane order): a
 * fixed order that vectorises, where one running sum cannot. */
#define CPU_SUM_LANES 8

typedef struct cpu_backend {
    vae_backend base; /* first: a vae_backend* points here */
    vae_cpu_gemm gemm;
    /* Dense layers on binary inputs (cpu_binary_linear.h): on where they
     * pay (choose_binary_inputs); the masks of the last packed input. */
    int binary_inputs;
    vae_binary_input binary_input; /* its lists, of the bits in binary_words[0] when binary_lists_valid */
    int binary_lists_valid;
    uint64_t *binary_words[2];     /* [0] the lists' bits, [1] the last scan's */
    int32_t *binary_row_offsets, *binary_input_offsets, *binary_lists;
    float *binary_scratch;
    size_t binary_word_capacity[2], binary_row_capacity, binary_input_capacity, binary_list_capacity,
        binary_scratch_capacity;
} cpu_backend;

/* Above this share of set inputs the dense GEMM is faster than the sums
 * (bench/binary_linear.c measures both). */
#define CPU_BINARY_MAX_DENSITY 0.5

vae_cpu_gemm *vae_cpu_backend_gemm(vae_backend *backend) { return &((cpu_backend *)backend)->gemm; }

static void cpu_destroy(vae_backend *backend) {
    vae_cpu_gemm_release(vae_cpu_backend_gemm(backend));
    cpu_backend *cpu = (cpu_backend *)backend;
    free(cpu->binary_words[0]);
    free(cpu->binary_words[1]);
    free(cpu->binary_row_offsets);
    free(cpu->binary_input_offsets);
    free(cpu->binary_lists);
    free(cpu->binary_scratch);
    free(backend);
}

static vae_status cpu_alloc(vae_backend *backend, size_t bytes, void **out) {
    size_t rounded = (bytes + 63) / 64 * 64;
    if (rounded == 0) rounded = 64;
    *out = aligned_alloc(64, rounded);
    if (!*out) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu bytes", bytes);
    return VAE_OK;
}

static void cpu_free(vae_backend *backend, void *pointer) { free(pointer); }

static vae_status cpu_copy(vae_backend *backend, void *destination, const void *source, size_t bytes) {
    if (bytes) memmove(destination, source, bytes);
    return VAE_OK;
}

static vae_status cpu_fill(vae_backend *backend, float *destination, float value, size_t count) {
    for (size_t i = 0; i < count; ++i) destination[i] = value;
    return VAE_OK;
}

static vae_status cpu_synchronize(vae_backend *backend) { return VAE_OK; }

/* Grows *buffer to hold count elements of `size` bytes. */
static vae_status grow(void **buffer, size_t *capacity, size_t count, size_t size, const char *what) {
    if (count <= *capacity) return VAE_OK;
    void *grown = realloc(*buffer, count * size);
    if (!grown) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cpu backend: cannot allocate %zu %s", count, what);
    *buffer = grown;
    *capacity = count;
    return VAE_OK;
}

/* Scans x when the binary path is on; when it is binary and sparse enough,
 * makes its lists (or keeps them: the backward pass of a layer sees the
 * input its forward saw, the same bits) and room for the products' scratch:
 * *use_sums is then 1; 0 when the dense GEMM should run. */
static vae_status pack_binary_input(vae_backend *backend, const float *x, int rows, int in, int out, int *use_sums) {
    cpu_backend *cpu = (cpu_backend *)backend;
    *use_sums = 0;
    if (!cpu->binary_inputs) return VAE_OK;
    size_t values = (size_t)rows * (size_t)in;
    if (values > INT32_MAX) return VAE_OK; /* the lists' offsets are int32 */
    /* Most layers' inputs (activations, z) fail at their first values: look
     * before making room. */
    for (int p = 0; p < in && p < 64; ++p)
        if (x[p] != 0.0f && x[p] != 1.0f) return VAE_OK;
    size_t words = vae_binary_words(rows, in);
    VAE_TRY(grow((void **)&cpu->binary_words[0], &cpu->binary_word_capacity[0], words, sizeof(uint64_t), "words"));
    VAE_TRY(grow((void **)&cpu->binary_words[1], &cpu->binary_word_capacity[1], words, sizeof(uint64_t), "words"));
    long long set = vae_binary_input_scan(x, rows, in, cpu->binary_words[1]);
    if (set < 0 || (double)set > CPU_BINARY_MAX_DENSITY * (double)values) return VAE_OK;
    VAE_TRY(grow((void **)&cpu->binary_scratch, &cpu->binary_scratch_capacity,
                 vae_binary_linear_scratch_floats(rows, in, out), sizeof(float), "scratch floats"));
    *use_sums = 1;
    vae_binary_input *input = &cpu->binary_input;
    if (cpu->binary_lists_valid && input->rows == rows && input->in == in &&
        memcmp(cpu->binary_words[0], cpu->binary_words[1], words * sizeof(uint64_t)) == 0)
        return VAE_OK;
    cpu->binary_lists_valid = 0;
    VAE_TRY(grow((void **)&cpu->binary_row_offsets, &cpu->binary_row_capacity, (size_t)rows + 1, sizeof(int32_t),
                 "row offsets"));
    VAE_TRY(grow((void **)&cpu->binary_input_offsets, &cpu->binary_input_capacity, (size_t)in + 1, sizeof(int32_t),
                 "input offsets"));
    VAE_TRY(grow((void **)&cpu->binary_lists, &cpu->binary_list_capacity, 2 * (size_t)set, sizeof(int32_t),
                 "input list entries"));
    input->row_offsets = cpu->binary_row_offsets;
    input->input_offsets = cpu->binary_input_offsets;
    input->row_inputs = cpu->binary_lists;
    input->input_rows = cpu->binary_lists + set;
    vae_binary_input_from_words(cpu->binary_words[1], rows, in, set, input);
    uint64_t *kept = cpu->binary_words[0]; /* the lists' words become the ones to compare with */
    size_t kept_capacity = cpu->binary_word_capacity[0];
    cpu->binary_words[0] = cpu->binary_words[1];
    cpu->binary_word_capacity[0] = cpu->binary_word_capacity[1];
    cpu->binary_words[1] = kept;
    cpu->binary_word_capacity[1] = kept_capacity;
    cpu->binary_lists_valid = 1;
    return VAE_OK;
}

static int rounds_to_bfloat16(vae_backend *backend) {
    return vae_cpu_backend_gemm(backend)->precision == VAE_PRECISION_BF16;
}

static vae_status cpu_linear_forward(vae_backend *backend, const float *x, const float *weight, const float *bias,
                                     float *y, int rows, int in, int out) {
    int use_sums = 0;
    VAE_TRY(pack_binary_input(backend, x, rows, in, out, &use_sums));
    if (use_sums) {
        cpu_backend *cpu = (cpu_backend *)backend;
        vae_binary_linear_forward(&cpu->binary_input, out, weight, bias, rounds_to_bfloat16(backend),
                                  cpu->binary_scratch, y);
        return VAE_OK;
    }
    /* Start from the bias (or zero) so one GEMM with beta = 1 adds x W^T to it. */
    for (int r = 0; r < rows; ++r) {
        if (bias) memcpy(y + (size_t)r * out, bias, sizeof(float) * (size_t)out);
        else memset(y + (size_t)r * out, 0, sizeof(float) * (size_t)out);
    }
    return vae_cpu_gemm_run(vae_cpu_backend_gemm(backend), 0, 1, rows, out, in, x, in, weight, in, 1.0f, y, out);
}

static vae_status cpu_linear_backward(vae_backend *backend, const float *x, const float *weight, const float *dy,
                                      float *dx, float *dweight, float *dbias, int rows, int in, int out) {
    /* dweight[out,in] = dy^T[out,rows] x[rows,in] */
    int use_sums = 0;
    VAE_TRY(pack_binary_input(backend, x, rows, in, out, &use_sums));
    cpu_backend *cpu = (cpu_backend *)backend;
    if (use_sums)
        vae_binary_linear_weight_gradient(&cpu->binary_input, out, dy, rounds_to_bfloat16(backend),
                                          cpu->binary_scratch, dweight);
    else
        VAE_TRY(vae_cpu_gemm_run(vae_cpu_backend_gemm(backend), 1, 0, out, in, rows, dy, out, x, in, 0.0f, dweight,
                                 in));
    /* dbias = column sums of dy, in row order */
    for (int o = 0; o < out; ++o) dbias[o] = 0.0f;
    for (int r = 0; r < rows; ++r) {
        const float *row = dy + (size_t)r * out;
        for (int o = 0; o < out; ++o) dbias[o] += row[o];
    }
    /* dx[rows,in] = dy[rows,out] weight[out,in] */
    if (!dx) return VAE_OK;
    return vae_cpu_gemm_run(vae_cpu_backend_gemm(backend), 0, 0, rows, in, out, dy, out, weight, in, 0.0f, dx, in);
}

CPU_VECTOR_KERNEL
static void activation_forward_range(int activation, const float *restrict pre, float *restrict post, size_t count) {
    if (activation == VAE_ACTIVATION_RELU) {
        for (size_t i = 0; i < count; ++i) post[i] = pre[i] > 0.0f ? pre[i] : 0.0f;
        return;
    }
    for (size_t i = 0; i < count; ++i) post[i] = vae_activation_forward(activation, pre[i]);
}

CPU_VECTOR_KERNEL
static void activation_backward_range(int activation, const float *pre, const float *dpost, float *dpre,
                                      size_t count) {
    /* ReLU on its own loop: a constant activation lets the compiler vectorise the select. */
    if (activation == VAE_ACTIVATION_RELU) {
        for (size_t i = 0; i < count; ++i) dpre[i] = vae_activation_backward(VAE_ACTIVATION_RELU, pre[i], dpost[i]);
        return;
    }
    for (size_t i = 0; i < count; ++i) dpre[i] = vae_activation_backward(activation, pre[i], dpost[i]);
}

/* Threads only where the work pays for waking them: element-wise passes
 * under about 64K floats (the models' activations at batch 128) run on the
 * calling thread; larger ones in CPU_PARALLEL_BLOCK pieces. */
#define CPU_PARALLEL_MIN 65536
#define CPU_PARALLEL_BLOCK 16384

static vae_status cpu_activation_forward(vae_backend *backend, int activation, const float *pre, float *post,
                                         size_t count) {
    if (count <= CPU_PARALLEL_MIN) {
        activation_forward_range(activation, pre, post, count);
        return VAE_OK;
    }
    size_t blocks = (count + CPU_PARALLEL_BLOCK - 1) / CPU_PARALLEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < blocks; ++b) {
        size_t start = b * CPU_PARALLEL_BLOCK, end = start + CPU_PARALLEL_BLOCK < count ? start + CPU_PARALLEL_BLOCK : count;
        activation_forward_range(activation, pre + start, post + start, end - start);
    }
    return VAE_OK;
}

static vae_status cpu_activation_backward(vae_backend *backend, int activation, const float *pre,
                                          const float *dpost, float *dpre, size_t count) {
    if (count <= CPU_PARALLEL_MIN) {
        activation_backward_range(activation, pre, dpost, dpre, count);
        return VAE_OK;
    }
    size_t blocks = (count + CPU_PARALLEL_BLOCK - 1) / CPU_PARALLEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < blocks; ++b) {
        size_t start = b * CPU_PARALLEL_BLOCK, end = start + CPU_PARALLEL_BLOCK < count ? start + CPU_PARALLEL_BLOCK : count;
        activation_backward_range(activation, pre + start, dpost + start, dpre + start, end - start);
    }
    return VAE_OK;
}

/* No restrict: y may be a or b itself (each element is read before it is written). */
CPU_VECTOR_KERNEL
static void add_scaled_range(const float *a, const float *b, float scale, float *y, size_t count) {
    for (size_t i = 0; i < count; ++i) y[i] = vae_add_scaled(a[i], b[i], scale);
}

static vae_status cpu_add_scaled(vae_backend *backend, const float *a, const float *b, float scale, float *y,
                                 size_t count) {
    if (count <= CPU_PARALLEL_MIN) {
        add_scaled_range(a, b, scale, y, count);
        return VAE_OK;
    }
    size_t blocks = (count + CPU_PARALLEL_BLOCK - 1) / CPU_PARALLEL_BLOCK;
#pragma omp parallel for schedule(static)
    for (size_t block = 0; block < blocks; ++block) {
        size_t start = block * CPU_PARALLEL_BLOCK,
               end = start + CPU_PARALLEL_BLOCK < count ? start + CPU_PARALLEL_BLOCK : count;
        add_scaled_range(a + start, b + start, scale, y + start, end - start);
    }
    return VAE_OK;
}

/* The segment holding row: the last one whose first row is at or before it
 * (binary search; one segment is the common case). */
static int segment_of_row(const vae_row_segments *dataset, int64_t row) {
    int low = 0, high = dataset->count - 1;
    while (low < high) {
        int middle = low + (high - low + 1) / 2;
        if (dataset->first_row[middle] <= row) low = middle;
        else high = middle - 1;
    }
    return low;
}

/* x ~ Bernoulli(x) for one row from the Philox stream: one block of four
 * uniforms per four columns. Written over whole blocks so that the loop
 * vectorises (several Philox blocks per vector). */
CPU_VECTOR_KERNEL
static void binarize_row_dynamic(uint64_t seed, uint64_t subsequence, float *restrict row, int dim) {
    int blocks = dim / 4;
    for (int b = 0; b < blocks; ++b) {
        float uniform[4];
        vae_uniform4(seed, subsequence, (uint64_t)b * 4, uniform);
        for (int k = 0; k < 4; ++k)
            row[4 * b + k] = vae_binarize_value(row[4 * b + k], VAE_BINARIZE_DYNAMIC, 0.0f, uniform[k]);
    }
    if (blocks * 4 < dim) {
        float uniform[4];
        vae_uniform4(seed, subsequence, (uint64_t)blocks * 4, uniform);
        for (int j = blocks * 4; j < dim; ++j)
            row[j] = vae_binarize_value(row[j], VAE_BINARIZE_DYNAMIC, 0.0f, uniform[j - blocks * 4]);
    }
}

static vae_status cpu_gather_batch(vae_backend *backend, const vae_row_segments *dataset, const int32_t *permutation,
                                   int dim, int rows, const vae_gather_settings *settings,
                                   const vae_step_counter *counter, float *x) {
    uint64_t step = counter->step;
    uint64_t batch_in_epoch = settings->steps_per_epoch > 0 ? step % (uint64_t)settings->steps_per_epoch : 0;
#pragma omp parallel for schedule(static) if ((size_t)rows * dim > 65536)
    for (int r = 0; r < rows; ++r) {
        int64_t source_row = permutation[vae_gather_slot(settings, batch_in_epoch, rows, r)];
        int segment = dataset->count == 1 ? 0 : segment_of_row(dataset, source_row);
        /* 64-bit offset: a data set may hold more than 2^31 values. */
        size_t offset = (size_t)(source_row - dataset->first_row[segment]) * (size_t)dim;
        float *destination = x + (size_t)r * dim;
        if (settings->dtype == VAE_DTYPE_U8) {
            const uint8_t *source = (const uint8_t *)dataset->values[segment] + offset;
            for (int j = 0; j < dim; ++j) destination[j] = (float)source[j] * settings->scale;
        } else {
            const float *source = (const float *)dataset->values[segment] + offset;
            for (int j = 0; j < dim; ++j) destination[j] = source[j] * settings->scale;
        }
        if (settings->binarize == VAE_BINARIZE_STATIC) {
            for (int j = 0; j < dim; ++j)
                destination[j] = vae_binarize_value(destination[j], settings->binarize, settings->threshold, 0.0f);
        } else if (settings->binarize == VAE_BINARIZE_DYNAMIC) {
            uint64_t subsequence =
                vae_philox_subsequence(step, settings->random_purpose, vae_gather_row_address(settings, r));
            binarize_row_dynamic(settings->seed, subsequence, destination, dim);
        }
    }
    return VAE_OK;
}

static vae_status cpu_reparam_kl_forward(vae_backend *backend, const float *mu_logvar, float *z, float *kl, int rows,
                                         int latent, int samples, const vae_noise_settings *noise,
                                         const vae_step_counter *counter, const float *eps_override,
                                         float logvar_clamp) {
    uint64_t step = counter->step + noise->step_offset;
#pragma omp parallel for schedule(static) if ((size_t)rows * latent * samples > 16384)
    for (int b = 0; b < rows; ++b) {
        const float *mu = mu_logvar + (size_t)b * 2 * latent;
        const float *logvar = mu + latent;
        float kl_sum = 0.0f;
        for (int j = 0; j < latent; ++j) kl_sum += vae_kl_term(mu[j], vae_clamp_logvar(logvar[j], logvar_clamp));
        kl[b] = kl_sum;
        for (int l = 0; l < samples; ++l) {
            size_t z_row = (size_t)l * rows + (size_t)b;
            float *z_out = z + z_row * latent;
            if (eps_override) {
                for (int j = 0; j < latent; ++j)
                    z_out[j] = vae_reparam_z(mu[j], vae_clamp_logvar(logvar[j], logvar_clamp),
                                             eps_override[z_row * latent + j]);
                continue;
            }
            uint64_t subsequence =
                vae_philox_subsequence(step, noise->random_purpose, vae_noise_row_address(noise, rows, l, b));
            /* Column j draws at Philox column first + j; a block gives four
             * columns from a multiple of 4, so with an offset that is not one
             * the first and last blocks are partly used. */
            const uint64_t first = noise->column_offset, end = first + (uint64_t)latent;
            for (uint64_t block = first & ~(uint64_t)3; block < end; block += 4) {
                float eps[4];
                vae_normal4(noise->seed, subsequence, block, eps);
                for (int k = 0; k < 4; ++k) {
                    const uint64_t column = block + (uint64_t)k;
                    if (column < first || column >= end) continue;
                    const size_t j = (size_t)(column - first);
                    z_out[j] = vae_reparam_z(mu[j], vae_clamp_logvar(logvar[j], logvar_clamp), eps[k]);
                }
            }
        }
    }
    return VAE_OK;
}

static vae_status cpu_reparam_kl_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                          const float *dz, float *dmu_logvar, int rows, int latent, int samples,
                                          float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                          float logvar_clamp) {
    float kl_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)rows;
#pragma omp parallel for schedule(static) if ((size_t)rows * latent * samples > 16384)
    for (int b = 0; b < rows; ++b) {
        const float *mu = mu_logvar + (size_t)b * 2 * latent;
        const float *logvar = mu + latent;
        float *dmu = dmu_logvar + (size_t)b * 2 * latent;
        float *dlogvar = dmu + latent;
        for (int j = 0; j < latent; ++j) {
            float lv = vae_clamp_logvar(logvar[j], logvar_clamp);
            float grad_mu = kl_scale * vae_kl_grad_mu(mu[j]);
            float grad_logvar = kl_scale * vae_kl_grad_logvar(lv);
            for (int l = 0; l < samples; ++l) {
                size_t index = ((size_t)l * rows + (size_t)b) * latent + (size_t)j;
                grad_mu += dz[index];
                grad_logvar += vae_reparam_grad_logvar(dz[index], z[index], mu[j]);
            }
            /* A clamped logvar does not move the loss. */
            if (vae_logvar_is_clamped(logvar[j], logvar_clamp)) grad_logvar = 0.0f;
            dmu[j] = grad_mu;
            dlogvar[j] = grad_logvar;
        }
    }
    return VAE_OK;
}

static vae_status cpu_gaussian_kl(vae_backend *backend, const float *q, const float *p, float *kl, float *dq,
                                  float *dp, int rows, int latent, float beta, uint64_t kl_warmup_steps,
                                  const vae_step_counter *counter, float logvar_clamp, float free_bits) {
    const float kl_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)rows;
#pragma omp parallel for schedule(static) if ((size_t)rows * latent > 16384)
    for (int b = 0; b < rows; ++b) {
        const size_t row = (size_t)b * 2 * (size_t)latent;
        float sum = 0.0f;
        for (int j = 0; j < latent; ++j) {
            const size_t mu = row + (size_t)j, logvar = mu + (size_t)latent;
            sum += vae_gaussian_kl_term(q[mu], vae_clamp_logvar(q[logvar], logvar_clamp), p[mu],
                                        vae_clamp_logvar(p[logvar], logvar_clamp));
        }
        kl[b] = sum;
        /* Free bits: a row whose KL is below the floor pays the floor, a
         * constant, so nothing in it moves the loss. Known only once the row
         * is summed, hence the second pass. */
        if (!dq || vae_below_free_bits(sum, free_bits)) continue;
        for (int j = 0; j < latent; ++j) {
            const size_t mu = row + (size_t)j, logvar = mu + (size_t)latent;
            const float q_logvar = vae_clamp_logvar(q[logvar], logvar_clamp);
            const float p_logvar = vae_clamp_logvar(p[logvar], logvar_clamp);
            vae_gaussian_kl_gradient g = vae_gaussian_kl_grad(q[mu], q_logvar, p[mu], p_logvar);
            dq[mu] += kl_scale * g.q_mu;
            dp[mu] += kl_scale * g.p_mu;
            /* A clamped logvar does not move the loss. */
            if (!vae_logvar_is_clamped(q[logvar], logvar_clamp)) dq[logvar] += kl_scale * g.q_logvar;
            if (!vae_logvar_is_clamped(p[logvar], logvar_clamp)) dp[logvar] += kl_scale * g.p_logvar;
        }
    }
    return VAE_OK;
}

static vae_status cpu_gaussian_log_ratio(vae_backend *backend, const float *z, const float *q, const float *p,
                                         float *out, int rows, int latent, float logvar_clamp, int accumulate) {
#pragma omp parallel for schedule(static) if ((size_t)rows * latent > 16384)
    for (int b = 0; b < rows; ++b) {
        const size_t row = (size_t)b * 2 * (size_t)latent;
        const float *z_row = z + (size_t)b * (size_t)latent;
        float sum = 0.0f;
        for (int j = 0; j < latent; ++j) {
            const size_t mu = row + (size_t)j, logvar = mu + (size_t)latent;
            sum += vae_gaussian_log_ratio_term(z_row[j], q[mu], vae_clamp_logvar(q[logvar], logvar_clamp), p[mu],
                                               vae_clamp_logvar(p[logvar], logvar_clamp));
        }
        out[b] = accumulate ? out[b] + sum : sum;
    }
    return VAE_OK;
}

static vae_status cpu_gaussian_log_ratio_backward(vae_backend *backend, const float *z, const float *q, const float *p,
                                                  const float *weight, float *dz, float *dq, float *dp, int rows,
                                                  int latent, float beta, uint64_t kl_warmup_steps,
                                                  const vae_step_counter *counter, int mean_rows,
                                                  float logvar_clamp) {
    const float prior_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)mean_rows;
#pragma omp parallel for schedule(static) if ((size_t)rows * latent > 16384)
    for (int b = 0; b < rows; ++b) {
        const size_t row = (size_t)b * 2 * (size_t)latent;
        const float coefficient = vae_iwae_log_ratio_coefficient(weight[b], prior_scale);
        float *dz_row = dz + (size_t)b * (size_t)latent;
        const float *z_row = z + (size_t)b * (size_t)latent;
        for (int j = 0; j < latent; ++j) {
            const size_t mu = row + (size_t)j, logvar = mu + (size_t)latent;
            vae_gaussian_log_ratio_gradient g =
                vae_gaussian_log_ratio_grad(z_row[j], q[mu], vae_clamp_logvar(q[logvar], logvar_clamp), p[mu],
                                            vae_clamp_logvar(p[logvar], logvar_clamp));
            dz_row[j] += coefficient * g.z;
            dq[mu] = coefficient * g.q_mu;
            dp[mu] = coefficient * g.p_mu;
            /* A clamped logvar does not move the loss. */
            dq[logvar] = vae_logvar_is_clamped(q[logvar], logvar_clamp) ? 0.0f : coefficient * g.q_logvar;
            dp[logvar] = vae_logvar_is_clamped(p[logvar], logvar_clamp) ? 0.0f : coefficient * g.p_logvar;
        }
    }
    return VAE_OK;
}

/* One pass over a Bernoulli row: log p and, when asked, the logits
 * overwritten by the gradient, both from one exp. The terms of 64 columns at
 * a time go through a small buffer, so that the element-wise part is one
 * vectorised loop and the sum runs in double lanes in a fixed order. */
#define BERNOULLI_BLOCK 64
CPU_VECTOR_KERNEL
static double bernoulli_row(const float *restrict x, float *restrict logits, int dim, float grad_scale,
                            int write_gradient) {
    double lanes[CPU_SUM_LANES] = {0};
    double tail = 0.0;
    float terms[BERNOULLI_BLOCK];
    for (int start = 0; start < dim; start += BERNOULLI_BLOCK) {
        int n = dim - start < BERNOULLI_BLOCK ? dim - start : BERNOULLI_BLOCK;
        const float *restrict target = x + start;
        float *restrict logit = logits + start;
        if (write_gradient) {
            for (int i = 0; i < n; ++i) {
                terms[i] = vae_bernoulli_log_prob(target[i], logit[i]);
                logit[i] = grad_scale * vae_bernoulli_neg_log_prob_grad(target[i], logit[i]);
            }
        } else {
            for (int i = 0; i < n; ++i) terms[i] = vae_bernoulli_log_prob(target[i], logit[i]);
        }
        if (n == BERNOULLI_BLOCK) {
            for (int i = 0; i < BERNOULLI_BLOCK; i += CPU_SUM_LANES)
                for (int k = 0; k < CPU_SUM_LANES; ++k) lanes[k] += (double)terms[i + k];
        } else {
            for (int i = 0; i < n; ++i) tail += (double)terms[i];
        }
    }
    double sum = 0.0;
    for (int k = 0; k < CPU_SUM_LANES; ++k) sum += lanes[k];
    return sum + tail;
}

static double gaussian_row(int likelihood, const float *x, float *o, int dim, float fixed_logvar, float grad_scale,
                           int write_gradient) {
    double sum = 0.0;
    for (int j = 0; j < dim; ++j) {
        if (likelihood == VAE_LIKELIHOOD_GAUSSIAN) {
            float mean = o[j], logvar = o[dim + j];
            sum += (double)vae_gaussian_log_prob(x[j], mean, logvar);
            if (write_gradient) {
                o[j] = grad_scale * vae_gaussian_neg_log_prob_grad_mean(x[j], mean, logvar);
                o[dim + j] = grad_scale * vae_gaussian_neg_log_prob_grad_logvar(x[j], mean, logvar);
            }
        } else {
            float mean = o[j];
            sum += (double)vae_gaussian_log_prob(x[j], mean, fixed_logvar);
            if (write_gradient) o[j] = grad_scale * vae_gaussian_neg_log_prob_grad_mean(x[j], mean, fixed_logvar);
        }
    }
    return sum;
}

static vae_status cpu_likelihood(vae_backend *backend, int likelihood, const float *x, float *out, float *logp,
                                 int rows, int samples, int dim, float fixed_logvar, int write_gradient) {
    int total_rows = rows * samples;
    float grad_scale = 1.0f / ((float)rows * (float)samples);
    int width = likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * dim : dim;
    /* log p is summed in double, as the CUDA kernel sums it. */
#pragma omp parallel for schedule(static) if ((size_t)total_rows * dim > CPU_PARALLEL_MIN / 2)
    for (int row = 0; row < total_rows; ++row) {
        const float *x_row = x + (size_t)(row % rows) * dim;
        float *o = out + (size_t)row * width;
        double sum = likelihood == VAE_LIKELIHOOD_BERNOULLI
                         ? bernoulli_row(x_row, o, dim, grad_scale, write_gradient)
                         : gaussian_row(likelihood, x_row, o, dim, fixed_logvar, grad_scale, write_gradient);
        logp[row] = (float)sum;
    }
    return VAE_OK;
}

/* A batch's sums into the step's loss accumulator (the slots of
 * VAE_LOSS_SUM_*), as the CUDA kernels' vae_block_add_loss_sums. */
static void add_loss_sums(double *accumulator, double loss, double reconstruction, double kl, int rows) {
    accumulator[VAE_LOSS_SUM_LOSS] += loss;
    accumulator[VAE_LOSS_SUM_RECONSTRUCTION] += reconstruction;
    accumulator[VAE_LOSS_SUM_KL] += kl;
    accumulator[VAE_LOSS_COUNT] += rows;
}

static vae_status cpu_accumulate_loss(vae_backend *backend, const float *logp, const float *kl, int rows, int samples,
                                      float beta, uint64_t kl_warmup_steps, const vae_step_counter *counter,
                                      double *accumulator) {
    double beta_now = vae_schedule_beta(counter->step, beta, kl_warmup_steps);
    double loss = 0.0, reconstruction = 0.0, kl_total = 0.0;
    for (int b = 0; b < rows; ++b) {
        double row_reconstruction = vae_row_reconstruction(logp, rows, samples, b);
        reconstruction += row_reconstruction;
        kl_total += kl[b];
        loss += vae_row_loss(row_reconstruction, kl[b], beta_now);
    }
    add_loss_sums(accumulator, loss, reconstruction, kl_total, rows);
    return VAE_OK;
}

static vae_status cpu_importance_log_mean(vae_backend *backend, const float *logp, const float *mu_logvar,
                                          const float *z, float *result, int rows, int latent, int samples,
                                          float logvar_clamp) {
#pragma omp parallel for schedule(static)
    for (int b = 0; b < rows; ++b) {
        const float *mu = mu_logvar + (size_t)b * 2 * latent;
        const float *logvar = mu + latent;
        double max_weight = -INFINITY, sum = 0.0;
        /* Two passes: the maximum first, then the shifted sum (stable); the
         * rule for NaN and infinite weights is vae_step_math.h's. */
        for (int pass = 0; pass < 2; ++pass) {
            if (pass == 1 && vae_iwae_max_decides(max_weight)) break;
            for (int l = 0; l < samples; ++l) {
                size_t z_row = (size_t)l * rows + (size_t)b;
                double weight = logp[z_row];
                for (int j = 0; j < latent; ++j)
                    weight += vae_log_prior_minus_log_posterior(z[z_row * latent + j], mu[j],
                                                                vae_clamp_logvar(logvar[j], logvar_clamp));
                if (pass == 0) max_weight = vae_nan_max(max_weight, weight);
                else sum += exp(weight - max_weight);
            }
        }
        result[b] = vae_iwae_finish(max_weight, sum, samples);
    }
    return VAE_OK;
}

CPU_VECTOR_KERNEL
static void scale_range(float *restrict values, float scale, int count) {
    for (int i = 0; i < count; ++i) values[i] *= scale;
}

static vae_status cpu_iwae_objective(vae_backend *backend, const float *logp, const float *mu_logvar, const float *z,
                                     const float *log_ratio, const float *kl, float *out, float *weight,
                                     float *row_loss, int rows, int latent, int samples, int width, float beta,
                                     uint64_t kl_warmup_steps, const vae_step_counter *counter, float logvar_clamp,
                                     double *accumulator) {
    const double beta_now = vae_schedule_beta(counter->step, beta, kl_warmup_steps);
#pragma omp parallel for schedule(static) if ((size_t)rows * samples * (width + latent) > CPU_PARALLEL_MIN)
    for (int b = 0; b < rows; ++b) {
        /* The log weights are recomputed in each pass rather than stored:
         * a few multiply-adds per latent dimension, any number of samples. */
        double max_weight = -INFINITY, sum = 0.0;
#define CPU_IWAE_LOG_WEIGHT(l) \
    vae_iwae_draw_log_weight(logp, mu_logvar, z, log_ratio, rows, latent, b, (l), beta_now, logvar_clamp)
        for (int l = 0; l < samples; ++l) max_weight = vae_nan_max(max_weight, CPU_IWAE_LOG_WEIGHT(l));
        if (!vae_iwae_max_decides(max_weight))
            for (int l = 0; l < samples; ++l) sum += exp(CPU_IWAE_LOG_WEIGHT(l) - max_weight);
        row_loss[b] = (float)vae_iwae_row_loss(max_weight, sum, samples);
        for (int l = 0; l < samples; ++l) {
            size_t z_row = (size_t)l * rows + (size_t)b;
            weight[z_row] = vae_iwae_normalized_weight(CPU_IWAE_LOG_WEIGHT(l), max_weight, sum);
            if (out) scale_range(out + z_row * width, vae_iwae_output_gradient_scale(weight[z_row], samples), width);
        }
#undef CPU_IWAE_LOG_WEIGHT
    }
    /* The sums in row order (deterministic), as the CUDA kernel adds them. */
    double loss = 0.0, reconstruction = 0.0, kl_total = 0.0;
    for (int b = 0; b < rows; ++b) {
        loss += row_loss[b];
        reconstruction += vae_row_reconstruction(logp, rows, samples, b);
        kl_total += kl[b];
    }
    add_loss_sums(accumulator, loss, reconstruction, kl_total, rows);
    return VAE_OK;
}

static vae_status cpu_iwae_latent_backward(vae_backend *backend, const float *mu_logvar, const float *z,
                                           const float *dz, const float *weight, float *dmu_logvar, int rows,
                                           int latent, int samples, float beta, uint64_t kl_warmup_steps,
                                           const vae_step_counter *counter, float logvar_clamp) {
    const float prior_scale = vae_schedule_beta(counter->step, beta, kl_warmup_steps) / (float)rows;
#pragma omp parallel for schedule(static) if ((size_t)rows * latent * samples > 16384)
    for (int b = 0; b < rows; ++b) {
        const float *mu = mu_logvar + (size_t)b * 2 * latent;
        const float *logvar = mu + latent;
        float *dmu = dmu_logvar + (size_t)b * 2 * latent;
        float *dlogvar = dmu + latent;
        for (int j = 0; j < latent; ++j) {
            float grad_mu = 0.0f, grad_logvar = vae_iwae_posterior_gradient_logvar(prior_scale);
            for (int l = 0; l < samples; ++l) {
                size_t z_row = (size_t)l * rows + (size_t)b, index = z_row * latent + (size_t)j;
                float upstream = dz[index] + vae_iwae_prior_gradient_z(weight[z_row], z[index], prior_scale);
                grad_mu += upstream;
                grad_logvar += vae_reparam_grad_logvar(upstream, z[index], mu[j]);
            }
            /* A clamped logvar does not move the loss. */
            if (vae_logvar_is_clamped(logvar[j], logvar_clamp)) grad_logvar = 0.0f;
            dmu[j] = grad_mu;
            dlogvar[j] = grad_logvar;
        }
    }
    return VAE_OK;
}

/* One chunk's sum of squares in double lanes, added in lane order. */
CPU_VECTOR_KERNEL
static double chunk_sum_of_squares(const float *values, size_t count) {
    double lanes[CPU_SUM_LANES] = {0};
    size_t i = 0;
    for (; i + CPU_SUM_LANES <= count; i += CPU_SUM_LANES)
        for (int k = 0; k < CPU_SUM_LANES; ++k) lanes[k] += (double)values[i + k] * values[i + k];
    double sum = 0.0;
    for (int k = 0; k < CPU_SUM_LANES; ++k) sum += lanes[k];
    for (; i < count; ++i) sum += (double)values[i] * values[i];
    return sum;
}

/* Fixed chunks summed in chunk order: the same result with any thread count. */
static double fixed_order_sum_of_squares(const float *values, size_t count) {
    size_t chunks = (count + CPU_REDUCTION_CHUNK - 1) / CPU_REDUCTION_CHUNK;
    double total = 0.0;
    if (count <= CPU_PARALLEL_MIN) {
        for (size_t c = 0; c < chunks; ++c) {
            size_t end = (c + 1) * CPU_REDUCTION_CHUNK < count ? (c + 1) * CPU_REDUCTION_CHUNK : count;
            total += chunk_sum_of_squares(values + c * CPU_REDUCTION_CHUNK, end - c * CPU_REDUCTION_CHUNK);
        }
        return total;
    }
    double *partial = malloc(sizeof(double) * chunks);
    if (!partial) { /* the same chunks, on this thread: same order, same result */
        for (size_t c = 0; c < chunks; ++c) {
            size_t end = (c + 1) * CPU_REDUCTION_CHUNK < count ? (c + 1) * CPU_REDUCTION_CHUNK : count;
            total += chunk_sum_of_squares(values + c * CPU_REDUCTION_CHUNK, end - c * CPU_REDUCTION_CHUNK);
        }
        return total;
    }
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; ++c) {
        size_t end = (c + 1) * CPU_REDUCTION_CHUNK < count ? (c + 1) * CPU_REDUCTION_CHUNK : count;
        partial[c] = chunk_sum_of_squares(values + c * CPU_REDUCTION_CHUNK, end - c * CPU_REDUCTION_CHUNK);
    }
    for (size_t c = 0; c < chunks; ++c) total += partial[c];
    free(partial);
    return total;
}

static vae_status cpu_sum_of_squares(vae_backend *backend, const float *values, size_t count, float *result) {
    *result = (float)fixed_order_sum_of_squares(values, count);
    return VAE_OK;
}

CPU_VECTOR_KERNEL
static void adam_range(float *restrict p, const float *restrict g, float *restrict first, float *restrict second,
                       size_t count, vae_adam_step_constants constants) {
    for (size_t i = 0; i < count; ++i) vae_adam_update(&p[i], &first[i], &second[i], g[i], constants);
}

static vae_status cpu_adam_step(vae_backend *backend, float *params, const float *grads, float *m, float *v,
                                size_t count, const vae_adam_settings *settings, const float *grad_norm_squared,
                                vae_step_counter *counter) {
    float norm_squared = *grad_norm_squared;
    if (!vae_step_is_skipped(norm_squared, settings->skip_norm)) {
        const vae_adam_step_constants constants = vae_adam_constants(settings, counter->step, norm_squared);
        if (count <= CPU_PARALLEL_MIN) {
            adam_range(params, grads, m, v, count, constants);
        } else {
            size_t blocks = (count + CPU_PARALLEL_BLOCK - 1) / CPU_PARALLEL_BLOCK;
#pragma omp parallel for schedule(static)
            for (size_t b = 0; b < blocks; ++b) {
                size_t start = b * CPU_PARALLEL_BLOCK;
                size_t end = start + CPU_PARALLEL_BLOCK < count ? start + CPU_PARALLEL_BLOCK : count;
                adam_range(params + start, grads + start, m + start, v + start, end - start, constants);
            }
        }
    }
    vae_advance_step_counter(counter, norm_squared, settings->skip_norm);
    return VAE_OK;
}

static const vae_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy_to_device = cpu_copy,
    .copy_to_host = cpu_copy,
    .copy = cpu_copy,
    .fill = cpu_fill,
    .synchronize = cpu_synchronize,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .conv2d_forward = vae_cpu_conv2d_forward,
    .conv2d_backward = vae_cpu_conv2d_backward,
    .conv_transpose2d_forward = vae_cpu_conv_transpose2d_forward,
    .conv_transpose2d_backward = vae_cpu_conv_transpose2d_backward,
    .activation_forward = cpu_activation_forward,
    .activation_backward = cpu_activation_backward,
    .add_scaled = cpu_add_scaled,
    .gather_batch = cpu_gather_batch,
    .reparam_kl_forward = cpu_reparam_kl_forward,
    .reparam_kl_backward = cpu_reparam_kl_backward,
    .gaussian_kl = cpu_gaussian_kl,
    .gaussian_log_ratio = cpu_gaussian_log_ratio,
    .gaussian_log_ratio_backward = cpu_gaussian_log_ratio_backward,
    .likelihood = cpu_likelihood,
    .accumulate_loss = cpu_accumulate_loss,
    .importance_log_mean = cpu_importance_log_mean,
    .iwae_objective = cpu_iwae_objective,
    .iwae_latent_backward = cpu_iwae_latent_backward,
    .sum_of_squares = cpu_sum_of_squares,
    .adam_step = cpu_adam_step,
};

vae_status vae_backend_create_cpu(vae_backend **out) {
    return vae_backend_create_cpu_precision(out, VAE_PRECISION_FP32);
}

/* Whether dense layers on binary inputs take the sums (cpu_binary_linear.h),
 * and the device line's words for it. VAE_CPU_BINARY_INPUTS = auto (unset),
 * sums or dense. auto takes the sums only where the CPU has AVX-512: their
 * 16-float vectors are one register there, and bench_binary_linear measured
 * the first layer 1.4x faster than the GEMM (Zen 4); with AVX2 (Zen 3) the
 * sums, even in 8-float halves, ran at 0.6-0.9x OpenBLAS's GEMM, so the GEMM
 * stays. */
static vae_status choose_binary_inputs(int *use_sums, const char **words) {
    const char *setting = getenv("VAE_CPU_BINARY_INPUTS");
    if (setting && strcmp(setting, "dense") == 0) {
        *use_sums = 0;
        *words = "binary inputs: dense GEMMs (VAE_CPU_BINARY_INPUTS=dense)";
    } else if (setting && strcmp(setting, "sums") == 0) {
        *use_sums = 1;
        *words = "dense layers on binary inputs: sums over the set inputs (VAE_CPU_BINARY_INPUTS=sums)";
    } else if (!setting || setting[0] == '\0' || strcmp(setting, "auto") == 0) {
        *use_sums = vae_cpu_has_avx512();
        *words = *use_sums ? "dense layers on binary inputs: sums over the set inputs"
                           : "binary inputs: dense GEMMs (no AVX-512, where the sums do not pay)";
    } else {
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "environment variable VAE_CPU_BINARY_INPUTS=%s: expected auto, sums or dense", setting);
    }
    return VAE_OK;
}

vae_status vae_backend_create_cpu_precision(vae_backend **out, vae_precision precision) {
    if (precision != VAE_PRECISION_FP32 && precision != VAE_PRECISION_TF32 && precision != VAE_PRECISION_BF16)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_backend_create_cpu_precision: unknown precision %d",
                         (int)precision);
    cpu_backend *backend = calloc(1, sizeof *backend);
    if (!backend) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "cpu backend: out of memory");
    backend->base.ops = &cpu_ops;
    backend->gemm.precision = precision;
    const char *binary_choice = NULL;
    vae_status status = choose_binary_inputs(&backend->binary_inputs, &binary_choice);
    if (status != VAE_OK) {
        free(backend);
        return status;
    }
    char gemm_choice[96];
    status = vae_cpu_gemm_choose_library(&backend->gemm.library, gemm_choice, sizeof gemm_choice);
    if (status != VAE_OK) {
        free(backend);
        return status;
    }
    char blas[200];
    vae_blas_describe(blas, sizeof blas);
    snprintf(backend->base.device_name, sizeof backend->base.device_name, "cpu (%s%s; %s; %s)", blas,
             precision == VAE_PRECISION_BF16 ? ", bf16 GEMM operands emulated" : "", gemm_choice, binary_choice);
    *out = &backend->base;
    return VAE_OK;
}
