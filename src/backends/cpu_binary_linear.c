/* Binary-input dense layers as sums over the set inputs (cpu_binary_linear.h).
 *
 * Both products work on blocks of 16 outputs, one vector of 16 floats each:
 * a thread owns whole blocks, so no two threads write one value. The forward
 * first transposes the block's weights into a panel, one vector per input
 * (16 x 16 tiles transposed in registers, 64 shuffles per tile), then adds,
 * for each row, the panel's vectors of the row's set inputs. The weight
 * gradient adds, for each input, the dy vectors of the rows that have it set,
 * and transposes 16 inputs' sums back into the [out, in] layout. The inner
 * loops run over index lists (not over mask bits), so their length is the
 * whole row's or column's count: one branch miss per list, not per word. */
#include "backends/cpu_binary_linear.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#include "vae_math.h"

/* As backend_cpu.c's element-wise loops: compiled for plain x86-64, AVX2 and
 * AVX-512 (GCC's target_clones), the loader picks by the CPU's features. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define BINARY_VECTOR_KERNEL __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define BINARY_VECTOR_KERNEL
#endif

#define LANES 16
typedef float sixteen_floats __attribute__((vector_size(LANES * sizeof(float))));
/* The same, at any float's address (scratch, dy rows, panels). */
typedef float sixteen_floats_unaligned __attribute__((vector_size(LANES * sizeof(float)), aligned(sizeof(float))));
/* Half of one (sum_panel_vectors). */
typedef float eight_floats_unaligned __attribute__((vector_size(LANES / 2 * sizeof(float)), aligned(sizeof(float))));

static int min_int(int a, int b) { return a < b ? a : b; }

static int thread_count(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int thread_index(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Each thread's panel, reused block after block (so it stays in cache): a
 * vector per input (forward) or per row (weight gradient), plus a vector of
 * slack to start it on a 64-byte boundary (a vector load across two cache
 * lines costs two). */
static size_t panel_floats(int rows, int in) { return ((size_t)(in > rows ? in : rows) + 1) * LANES; }

static sixteen_floats_unaligned *thread_panel(float *scratch, int rows, int in) {
    uintptr_t start = (uintptr_t)(scratch + (size_t)thread_index() * panel_floats(rows, in));
    return (sixteen_floats_unaligned *)((start + 63) & ~(uintptr_t)63);
}

size_t vae_binary_words(int rows, int in) {
    if (rows <= 0 || in <= 0) return 0;
    return (size_t)rows * (size_t)((in + 63) / 64);
}

/* Rows below this are packed on the calling thread: a parallel region costs
 * more than scanning them. */
#define PARALLEL_PACK_MIN_ROWS 32

/* One row's words (bit j of word w: input 64 w + j is 1); returns nonzero
 * when some value is neither 0 nor 1 (NaN included: it equals neither).
 * Three versions: AVX-512 and AVX2 compare 16 or 8 floats an instruction
 * into a bit mask (the scalar loop does not vectorise: 1.8 ns a value). */
static unsigned scan_row_scalar(const float *row, int in, uint64_t *words, long long *set) {
    const int row_words = (in + 63) / 64;
    unsigned other = 0; /* branch-free within a row: the values are random bits */
    for (int w = 0; w < row_words; ++w) {
        const int first = 64 * w, span = min_int(64, in - first);
        uint64_t word = 0;
        for (int j = 0; j < span; ++j) {
            const float value = row[first + j];
            word |= (uint64_t)(value == 1.0f) << j;
            other |= (unsigned)(value != 0.0f) & (unsigned)(value != 1.0f);
        }
        words[w] = word;
        *set += __builtin_popcountll(word);
    }
    return other;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define SCAN_ROW_VECTORS 1
__attribute__((target("avx512f"))) static unsigned scan_row_avx512(const float *row, int in, uint64_t *words,
                                                                     long long *set) {
    const __m512 one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    const int row_words = (in + 63) / 64;
    unsigned other = 0;
    for (int w = 0; w < row_words; ++w) {
        uint64_t word = 0;
        for (int k = 0; k < 4; ++k) {
            const int first = 64 * w + 16 * k, span = min_int(16, in - first);
            if (span <= 0) break;
            /* Lanes past the row's end load as 0: neither set nor other. */
            const __mmask16 lanes = span == 16 ? (__mmask16)0xffff : (__mmask16)((1u << span) - 1);
            const __m512 values = _mm512_maskz_loadu_ps(lanes, row + first);
            const __mmask16 ones = _mm512_cmp_ps_mask(values, one, _CMP_EQ_OQ);
            const __mmask16 zeros = _mm512_cmp_ps_mask(values, zero, _CMP_EQ_OQ);
            other |= (unsigned)(uint16_t)~(ones | zeros);
            word |= (uint64_t)ones << (16 * k);
        }
        words[w] = word;
        *set += __builtin_popcountll(word);
    }
    return other;
}

__attribute__((target("avx2"))) static unsigned scan_row_avx2(const float *row, int in, uint64_t *words,
                                                                long long *set) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    const int row_words = (in + 63) / 64;
    unsigned other = 0;
    for (int w = 0; w < row_words; ++w) {
        const int first = 64 * w, span = min_int(64, in - first);
        uint64_t word = 0;
        int j = 0;
        for (; j + 8 <= span; j += 8) {
            const __m256 values = _mm256_loadu_ps(row + first + j);
            const unsigned ones = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(values, one, _CMP_EQ_OQ));
            const unsigned zeros = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(values, zero, _CMP_EQ_OQ));
            other |= ~(ones | zeros) & 0xffu;
            word |= (uint64_t)ones << j;
        }
        for (; j < span; ++j) {
            const float value = row[first + j];
            word |= (uint64_t)(value == 1.0f) << j;
            other |= (unsigned)(value != 0.0f) & (unsigned)(value != 1.0f);
        }
        words[w] = word;
        *set += __builtin_popcountll(word);
    }
    return other;
}
#endif

typedef unsigned (*scan_row_function)(const float *row, int in, uint64_t *words, long long *set);

static scan_row_function scan_row_of(vae_binary_scan_kernel kernel) {
    if (!vae_binary_scan_kernel_available(kernel)) return NULL;
#ifdef SCAN_ROW_VECTORS
    if (kernel == VAE_BINARY_SCAN_AVX512) return scan_row_avx512;
    if (kernel == VAE_BINARY_SCAN_AVX2) return scan_row_avx2;
#endif
    return scan_row_scalar;
}

int vae_binary_scan_kernel_available(vae_binary_scan_kernel kernel) {
    switch (kernel) {
    case VAE_BINARY_SCAN_SCALAR: return 1;
#ifdef SCAN_ROW_VECTORS
    case VAE_BINARY_SCAN_AVX2: __builtin_cpu_init(); return __builtin_cpu_supports("avx2");
    case VAE_BINARY_SCAN_AVX512: __builtin_cpu_init(); return __builtin_cpu_supports("avx512f");
#endif
    default: return 0;
    }
}

long long vae_binary_input_scan(const float *x, int rows, int in, uint64_t *words) {
    vae_binary_scan_kernel best = VAE_BINARY_SCAN_SCALAR;
    if (vae_binary_scan_kernel_available(VAE_BINARY_SCAN_AVX2)) best = VAE_BINARY_SCAN_AVX2;
    if (vae_binary_scan_kernel_available(VAE_BINARY_SCAN_AVX512)) best = VAE_BINARY_SCAN_AVX512;
    return vae_binary_input_scan_with(best, x, rows, in, words);
}

long long vae_binary_input_scan_with(vae_binary_scan_kernel kernel, const float *x, int rows, int in,
                                     uint64_t *words) {
    const int row_words = (in + 63) / 64;
    const scan_row_function scan_row = scan_row_of(kernel);
    if (scan_row == NULL) return -1;
    long long set = 0;
    int refused = 0; /* a row with another value: the other threads stop at their next row */
#pragma omp parallel for schedule(static) reduction(+ : set) if (rows >= PARALLEL_PACK_MIN_ROWS)
    for (int r = 0; r < rows; ++r) {
        if (__atomic_load_n(&refused, __ATOMIC_RELAXED)) continue;
        if (scan_row(x + (size_t)r * (size_t)in, in, words + (size_t)r * (size_t)row_words, &set))
            __atomic_store_n(&refused, 1, __ATOMIC_RELAXED);
    }
    return refused ? -1 : set;
}

/* Threads own whole rows (the row lists) or whole words of inputs (the
 * input lists), and every list is filled in ascending order, so the lists
 * are the same at any thread count; only the two prefix sums are serial. */
void vae_binary_input_from_words(const uint64_t *words, int rows, int in, long long set, vae_binary_input *input) {
    const int row_words = (in + 63) / 64;
    const int parallel = rows >= PARALLEL_PACK_MIN_ROWS;
    input->rows = rows;
    input->in = in;
    input->set = set;
    int32_t *row_offsets = input->row_offsets, *input_offsets = input->input_offsets;
    int32_t *row_inputs = input->row_inputs, *input_rows = input->input_rows;
    memset(input_offsets, 0, sizeof(int32_t) * ((size_t)in + 1));
    /* Counts per row into row_offsets[r + 1], per input into input_offsets[p + 1]. */
#pragma omp parallel if (parallel)
    {
#pragma omp for schedule(static) nowait
        for (int r = 0; r < rows; ++r) {
            int32_t count = 0;
            for (int w = 0; w < row_words; ++w)
                count += __builtin_popcountll(words[(size_t)r * (size_t)row_words + (size_t)w]);
            row_offsets[r + 1] = count;
        }
#pragma omp for schedule(static)
        for (int w = 0; w < row_words; ++w)
            for (int r = 0; r < rows; ++r)
                for (uint64_t word = words[(size_t)r * (size_t)row_words + (size_t)w]; word; word &= word - 1)
                    input_offsets[64 * w + __builtin_ctzll(word) + 1] += 1;
    }
    row_offsets[0] = 0;
    for (int r = 0; r < rows; ++r) row_offsets[r + 1] += row_offsets[r];
    for (int p = 0; p < in; ++p) input_offsets[p + 1] += input_offsets[p];
    /* Input p's rows with input_offsets[p] as the cursor (shifted back after). */
#pragma omp parallel if (parallel)
    {
#pragma omp for schedule(static) nowait
        for (int r = 0; r < rows; ++r) {
            int32_t cursor = row_offsets[r];
            for (int w = 0; w < row_words; ++w)
                for (uint64_t word = words[(size_t)r * (size_t)row_words + (size_t)w]; word; word &= word - 1)
                    row_inputs[cursor++] = 64 * w + __builtin_ctzll(word);
        }
#pragma omp for schedule(static)
        for (int w = 0; w < row_words; ++w)
            for (int r = 0; r < rows; ++r)
                for (uint64_t word = words[(size_t)r * (size_t)row_words + (size_t)w]; word; word &= word - 1)
                    input_rows[input_offsets[64 * w + __builtin_ctzll(word)]++] = r;
    }
    for (int p = in; p > 0; --p) input_offsets[p] = input_offsets[p - 1];
    input_offsets[0] = 0;
}

size_t vae_binary_linear_scratch_floats(int rows, int in, int out) {
    if (rows <= 0 || in <= 0 || out <= 0) return 0;
    /* Per output block: the forward's weight panel (a vector per input) or
     * the gradient's dy panel (a vector per row). */
    return (size_t)thread_count() * panel_floats(rows, in);
}

/* The first `count` floats at source into *vector, the other lanes zero (and
 * back): blocks at the right and bottom edges are partial. */
static inline __attribute__((always_inline)) void load_lanes(sixteen_floats *vector, const float *source, int count) {
    if (count == LANES) {
        *vector = *(const sixteen_floats_unaligned *)source;
        return;
    }
    sixteen_floats zero = {0};
    *vector = zero;
    memcpy(vector, source, sizeof(float) * (size_t)count);
}

static inline __attribute__((always_inline)) void store_lanes(float *destination, const sixteen_floats *vector,
                                                              int count) {
    if (count == LANES) *(sixteen_floats_unaligned *)destination = *vector;
    else memcpy(destination, vector, sizeof(float) * (size_t)count);
}

/* Whether 16-float vectors are registers here (AVX-512). libgcc fills the
 * CPU model before main, so the query is a read of it. */
static int whole_vectors_in_registers(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f") != 0;
#else
    return 0;
#endif
}

/* *sum = the sum of panel[indices[0 .. count)] in the header's order: term t
 * into partial t mod 4, then (s0 + s1) + (s2 + s3). With AVX-512 in whole
 * vectors; otherwise in halves of 8 floats, lane by lane the same bits:
 * GCC keeps 16-float vectors in memory, not in register pairs, where the CPU
 * has no AVX-512 (whole vectors ran the sums 4x slower than in halves on
 * Zen 3), while on Intel's AVX-512 cores a 16-float load is as cheap as an
 * 8-float one. */
static inline __attribute__((always_inline)) void sum_panel_vectors(const sixteen_floats_unaligned *panel,
                                                                   const int32_t *indices, int32_t count,
                                                                   int whole, sixteen_floats *sum) {
    int32_t t = 0;
    if (whole) {
        sixteen_floats s[4] = {{0}};
        for (; t + 4 <= count; t += 4)
            for (int k = 0; k < 4; ++k) s[k] += panel[indices[t + k]];
        for (int k = 0; t < count; ++k, ++t) s[k] += panel[indices[t]];
        *sum = (s[0] + s[1]) + (s[2] + s[3]);
        return;
    }
    const int half = LANES / 2;
    eight_floats_unaligned low[4] = {{0}}, high[4] = {{0}};
    for (; t + 4 <= count; t += 4)
        for (int k = 0; k < 4; ++k) {
            const float *vector = (const float *)(panel + indices[t + k]);
            low[k] += *(const eight_floats_unaligned *)vector;
            high[k] += *(const eight_floats_unaligned *)(vector + half);
        }
    for (int k = 0; t < count; ++k, ++t) {
        const float *vector = (const float *)(panel + indices[t]);
        low[k] += *(const eight_floats_unaligned *)vector;
        high[k] += *(const eight_floats_unaligned *)(vector + half);
    }
    const eight_floats_unaligned low_sum = (low[0] + low[1]) + (low[2] + low[3]);
    const eight_floats_unaligned high_sum = (high[0] + high[1]) + (high[2] + high[3]);
    memcpy(sum, &low_sum, sizeof low_sum);
    memcpy((float *)sum + half, &high_sum, sizeof high_sum);
}

/* tile[j][k] becomes tile[k][j]: four rounds of swapping the off-diagonal
 * blocks of size 8, 4, 2 and 1 between row pairs (i, i + size), one
 * two-source shuffle per row each round. */
static inline __attribute__((always_inline)) void transpose_tile(sixteen_floats tile[LANES]) {
/* __builtin_shufflevector takes its lane indices as constants; GCC (12 and
 * later) and clang both provide it, so the fuzz build (clang) compiles this
 * file too. */
#define LOW8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HIGH8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LOW4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define HIGH4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define LOW2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define HIGH2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define LOW1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define HIGH1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define SWAP_BLOCKS(size, low, high)                                                                                   \
    do {                                                                                                               \
        _Pragma("GCC unroll 16") for (int i = 0; i < LANES; ++i) {                                                     \
            if (i & (size)) continue;                                                                                  \
            sixteen_floats top = __builtin_shufflevector(tile[i], tile[i + (size)], low);                              \
            sixteen_floats bottom = __builtin_shufflevector(tile[i], tile[i + (size)], high);                          \
            tile[i] = top;                                                                                             \
            tile[i + (size)] = bottom;                                                                                 \
        }                                                                                                              \
    } while (0)
    SWAP_BLOCKS(8, LOW8, HIGH8);
    SWAP_BLOCKS(4, LOW4, HIGH4);
    SWAP_BLOCKS(2, LOW2, HIGH2);
    SWAP_BLOCKS(1, LOW1, HIGH1);
#undef SWAP_BLOCKS
#undef LOW8
#undef HIGH8
#undef LOW4
#undef HIGH4
#undef LOW2
#undef HIGH2
#undef LOW1
#undef HIGH1
}

/* Outputs [first_output, first_output + 16) of every row (fewer at the
 * edge); panel: in vectors of this block's scratch. */
BINARY_VECTOR_KERNEL
static void forward_output_block(const vae_binary_input *input, int out, const float *weight, const float *bias,
                                 int round_bfloat16, int first_output, int whole, sixteen_floats_unaligned *panel,
                                 float *y) {
    const int in = input->in, width = min_int(LANES, out - first_output);
    for (int first_input = 0; first_input < in; first_input += LANES) {
        const int span = min_int(LANES, in - first_input);
        sixteen_floats tile[LANES];
        for (int k = 0; k < LANES; ++k) {
            sixteen_floats zero = {0};
            tile[k] = zero;
            if (k >= width) continue;
            load_lanes(&tile[k], weight + (size_t)(first_output + k) * (size_t)in + first_input, span);
            if (round_bfloat16)
                for (int j = 0; j < LANES; ++j) tile[k][j] = vae_round_to_bfloat16(tile[k][j]);
        }
        transpose_tile(tile);
        for (int j = 0; j < span; ++j) panel[first_input + j] = tile[j];
    }
    sixteen_floats bias_lanes = {0};
    if (bias) load_lanes(&bias_lanes, bias + first_output, width);
    for (int r = 0; r < input->rows; ++r) {
        const int32_t *inputs = input->row_inputs + input->row_offsets[r];
        const int32_t count = input->row_offsets[r + 1] - input->row_offsets[r];
        sixteen_floats sum;
        sum_panel_vectors(panel, inputs, count, whole, &sum);
        sum = bias_lanes + sum;
        store_lanes(y + (size_t)r * (size_t)out + first_output, &sum, width);
    }
}

void vae_binary_linear_forward(const vae_binary_input *input, int out, const float *weight, const float *bias,
                               int round_bfloat16, float *scratch, float *y) {
    const int blocks = (out + LANES - 1) / LANES, whole = whole_vectors_in_registers();
#pragma omp parallel for schedule(static)
    for (int block = 0; block < blocks; ++block)
        forward_output_block(input, out, weight, bias, round_bfloat16, block * LANES, whole,
                             thread_panel(scratch, input->rows, input->in), y);
}

BINARY_VECTOR_KERNEL
static void weight_gradient_output_block(const vae_binary_input *input, int out, const float *dy, int round_bfloat16,
                                         int first_output, int whole, sixteen_floats_unaligned *panel,
                                         float *dweight) {
    const int in = input->in, width = min_int(LANES, out - first_output);
    /* The block's dy lanes of every row, side by side: the rows' own stride
     * (out floats) can alias in the cache (2 KiB at 512 outputs). */
    for (int r = 0; r < input->rows; ++r) {
        sixteen_floats lanes;
        load_lanes(&lanes, dy + (size_t)r * (size_t)out + first_output, width);
        if (round_bfloat16)
            for (int k = 0; k < LANES; ++k) lanes[k] = vae_round_to_bfloat16(lanes[k]);
        panel[r] = lanes;
    }
    for (int first_input = 0; first_input < in; first_input += LANES) {
        const int span = min_int(LANES, in - first_input);
        sixteen_floats tile[LANES]; /* tile[j]: the block's outputs' gradients of input first_input + j */
        for (int j = 0; j < LANES; ++j) {
            /* Inputs past the edge (j >= span) sum nothing. */
            const int32_t *rows = input->input_rows;
            int32_t count = 0;
            if (j < span) {
                rows += input->input_offsets[first_input + j];
                count = input->input_offsets[first_input + j + 1] - input->input_offsets[first_input + j];
            }
            sum_panel_vectors(panel, rows, count, whole, &tile[j]);
        }
        transpose_tile(tile); /* tile[k] = dweight[first_output + k, first_input ...] */
        for (int k = 0; k < width; ++k)
            store_lanes(dweight + (size_t)(first_output + k) * (size_t)in + first_input, &tile[k], span);
    }
}

void vae_binary_linear_weight_gradient(const vae_binary_input *input, int out, const float *dy, int round_bfloat16,
                                       float *scratch, float *dweight) {
    const int blocks = (out + LANES - 1) / LANES, whole = whole_vectors_in_registers();
#pragma omp parallel for schedule(static)
    for (int block = 0; block < blocks; ++block)
        weight_gradient_output_block(input, out, dy, round_bfloat16, block * LANES, whole,
                                     thread_panel(scratch, input->rows, input->in), dweight);
}
