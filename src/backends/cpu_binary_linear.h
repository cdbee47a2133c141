/* Dense layers whose input is binary (every value 0 or 1: dynamic or static
 * binarisation of the pixels, issue 26): the forward x W^T + b and the weight
 * gradient dy^T x as sums of weights (of dy rows) over the set inputs,
 * skipping the multiplications by zero that a dense GEMM does. With 29% of
 * Fashion-MNIST's pixels set that is under a third of the GEMM's work. The
 * CPU backend (backend_cpu.c) uses them whenever a layer's input packs as
 * binary and sparse enough.
 *
 * The order of every sum is fixed (so results are bitwise repeatable at any
 * thread count, and equal the dense ones up to float rounding): its terms in
 * ascending order (of input for the forward, of row for the gradient), term t
 * added to partial sum t mod 4, the partials added as (s0 + s1) + (s2 + s3);
 * the forward then adds that to the bias. */
#ifndef VAE_CPU_BINARY_LINEAR_H
#define VAE_CPU_BINARY_LINEAR_H

#include <stddef.h>
#include <stdint.h>

/* The set inputs of a binary batch x[rows, in], both ways round: row r's
 * inputs are row_inputs[row_offsets[r] .. row_offsets[r + 1]) and input p's
 * rows input_rows[input_offsets[p] .. input_offsets[p + 1]), ascending. The
 * arrays are the caller's: rows + 1, in + 1 and rows * in entries (twice). */
typedef struct vae_binary_input {
    int rows, in;
    long long set; /* how many values are 1 */
    int32_t *row_offsets, *row_inputs;
    int32_t *input_offsets, *input_rows;
} vae_binary_input;

/* Bit words of x[rows, in]: 64 inputs a word, ceil(in / 64) words a row, bit
 * j of word w of row r is input 64 w + j (the bits past `in` zero). */
size_t vae_binary_words(int rows, int in);

/* Scans x into words. Returns how many values are 1 when every value is
 * exactly 0 or 1; -1 when some value is neither (the words are then
 * incomplete). Rows are scanned in parallel from 32 rows on. */
long long vae_binary_input_scan(const float *x, int rows, int in, uint64_t *words);

/* The scan's kernels: the first available of AVX-512, AVX2, scalar is the
 * one vae_binary_input_scan uses; all give the same words (tests compare). */
typedef enum vae_binary_scan_kernel {
    VAE_BINARY_SCAN_SCALAR,
    VAE_BINARY_SCAN_AVX2,
    VAE_BINARY_SCAN_AVX512
} vae_binary_scan_kernel;
int vae_binary_scan_kernel_available(vae_binary_scan_kernel kernel);
/* vae_binary_input_scan with the kernel named; -1 as well where it is not available. */
long long vae_binary_input_scan_with(vae_binary_scan_kernel kernel, const float *x, int rows, int in,
                                     uint64_t *words);

/* Fills input's lists (its arrays given) from the words of a scan, the same
 * lists at any thread count (in parallel from 32 rows on). */
void vae_binary_input_from_words(const uint64_t *words, int rows, int in, long long set, vae_binary_input *input);

/* Floats of scratch the two products need for a layer of in -> out over
 * `rows` rows, at the current OpenMP thread count (a panel per thread). */
size_t vae_binary_linear_scratch_floats(int rows, int in, int out);

/* y[r, o] = bias[o] + the sum over row r's set inputs p of weight[o, p];
 * weight is [out, in] row-major (nn.Linear's layout), bias may be NULL (0).
 * With round_bfloat16 each weight is rounded to bfloat16 first
 * (train.precision = bf16: what the GEMM with bfloat16 operands sums). */
void vae_binary_linear_forward(const vae_binary_input *input, int out, const float *weight, const float *bias,
                               int round_bfloat16, float *scratch, float *y);

/* dweight[o, p] = the sum over the rows r with input p set of dy[r, o]
 * (overwritten); dy is [rows, out]. With round_bfloat16 each dy value is
 * rounded to bfloat16 first. */
void vae_binary_linear_weight_gradient(const vae_binary_input *input, int out, const float *dy, int round_bfloat16,
                                       float *scratch, float *dweight);

#endif
