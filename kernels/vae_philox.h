/* Counter-based Philox4x32-10, laid out exactly as cuRAND's device API numbers
 * its stream, so that the CPU backend and curand_init()/curand_normal4() on the
 * GPU draw the same numbers.
 *
 * cuRAND's curand_init(seed, subsequence, offset) sets key = {seed lo, seed hi}
 * and counter = {offset/4 lo, offset/4 hi, subsequence lo, subsequence hi};
 * offset % 4 selects a word of the block. We always start on a block boundary
 * (offset a multiple of 4), so one block gives four uint32 words.
 *
 * Address of a random block used by the engine:
 *   subsequence = vae_philox_subsequence(step, purpose, row)
 *   offset      = column (a multiple of 4; the block covers columns
 *                 column .. column+3)
 * Written once here, included by host C and CUDA code alike. */
#ifndef VAE_PHILOX_H
#define VAE_PHILOX_H

#include <stdint.h>
#include "vae_hostdevice.h"

#define VAE_PHILOX_M0 0xD2511F53u
#define VAE_PHILOX_M1 0xCD9E8D57u
#define VAE_PHILOX_W0 0x9E3779B9u
#define VAE_PHILOX_W1 0xBB67AE85u

/* What a stream of random numbers is for: keeps the streams apart. */
enum vae_random_purpose {
    VAE_RANDOM_EPS = 0,        /* reparameterisation noise */
    VAE_RANDOM_BINARIZE = 1,   /* dynamic binarisation of a batch */
    VAE_RANDOM_EVAL_EPS = 2,   /* evaluation noise (ELBO / IWAE) */
    VAE_RANDOM_EVAL_BINARIZE = 3,
    VAE_RANDOM_SAMPLE = 4,     /* prior samples for pictures */
    VAE_RANDOM_SHUFFLE = 5,    /* per-epoch permutation (host) */
    VAE_RANDOM_INIT = 6        /* parameter initialisation (host) */
};

typedef struct vae_philox_block { uint32_t word[4]; } vae_philox_block;

VAE_HD void vae_philox_round(uint32_t c[4], uint32_t k0, uint32_t k1) {
    uint64_t p0 = (uint64_t)VAE_PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)VAE_PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k0;
    uint32_t n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
}

/* The raw bijection: 10 rounds with the Weyl key schedule (Random123). */
VAE_HD vae_philox_block vae_philox4x32_10(const uint32_t counter[4], uint32_t key0, uint32_t key1) {
    uint32_t c[4] = {counter[0], counter[1], counter[2], counter[3]};
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { key0 += VAE_PHILOX_W0; key1 += VAE_PHILOX_W1; }
        vae_philox_round(c, key0, key1);
    }
    vae_philox_block out = {{c[0], c[1], c[2], c[3]}};
    return out;
}

/* 64-bit subsequence for (step, purpose, row): step in the high 29 bits,
 * purpose in 3 bits, row (sample-major row index) in the low 32 bits. */
VAE_HD uint64_t vae_philox_subsequence(uint64_t step, uint32_t purpose, uint32_t row) {
    return (step << 35) | ((uint64_t)(purpose & 7u) << 32) | (uint64_t)row;
}

/* The block cuRAND's curand_init(seed, subsequence, column) followed by
 * curand4() returns, for column a multiple of 4. */
VAE_HD vae_philox_block vae_philox_block_at(uint64_t seed, uint64_t subsequence, uint64_t column) {
    uint64_t block_index = column >> 2;
    uint32_t counter[4] = {(uint32_t)block_index, (uint32_t)(block_index >> 32),
                           (uint32_t)subsequence, (uint32_t)(subsequence >> 32)};
    return vae_philox4x32_10(counter, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* cuRAND's uniform float in (0, 1]: x * 2^-32 + 2^-33. */
VAE_HD float vae_uniform_from_uint(uint32_t x) {
    return (float)x * 2.3283064e-10f + (2.3283064e-10f / 2.0f);
}

/* cuRAND's Box-Muller pair: (s*sin v, s*cos v), with cuRAND's host-side
 * sinf/cosf (its device side uses __sincosf).
 * nvcc contracts cuRAND's `y * c + c/2` into one fused multiply-add on the
 * device, so the steps are written as fmaf here: host and device then give
 * the same u and v bit for bit. (For u the product is exact, a power-of-two
 * scaling, so fused and unfused agree; for the angle v they differ in the
 * last bit for about 1 angle in 110: tests/test_curand_host.cpp.) */
VAE_HD void vae_box_muller(uint32_t x, uint32_t y, float *first, float *second) {
    const float two_pow32_inv_2pi = 2.3283064e-10f * 6.2831855f;
    float u = fmaf((float)x, 2.3283064e-10f, 2.3283064e-10f / 2.0f);
    float v = fmaf((float)y, two_pow32_inv_2pi, two_pow32_inv_2pi / 2.0f);
    float s = sqrtf(-2.0f * logf(u));
    *first = s * sinf(v);
    *second = s * cosf(v);
}

/* Four standard normals as curand_normal4() gives them. */
VAE_HD void vae_normal4(uint64_t seed, uint64_t subsequence, uint64_t column, float out[4]) {
    vae_philox_block b = vae_philox_block_at(seed, subsequence, column);
    vae_box_muller(b.word[0], b.word[1], &out[0], &out[1]);
    vae_box_muller(b.word[2], b.word[3], &out[2], &out[3]);
}

/* Four uniforms as curand_uniform4() gives them. */
VAE_HD void vae_uniform4(uint64_t seed, uint64_t subsequence, uint64_t column, float out[4]) {
    vae_philox_block b = vae_philox_block_at(seed, subsequence, column);
    for (int i = 0; i < 4; ++i) out[i] = vae_uniform_from_uint(b.word[i]);
}

#endif
