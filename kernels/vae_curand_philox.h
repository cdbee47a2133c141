/* cuRAND's own Philox4x32-10 at the engine's random-number addresses, for
 * the kernels (CUDA C++), and compilable as host C++ for the tests.
 *
 * Only curand_philox4x32_x.h is included, not curand_kernel.h: the full
 * header also defines the XORWOW and MRG32k3a skip-ahead tables (about
 * 218 KB of device globals in every kernel file that includes it, none of
 * which the engine uses), and curand_normal.h / curand_uniform.h pull the
 * MRG32k3a tables back in. So the block comes from cuRAND's bijection
 * (curand_Philox4x32_10) with the counter and key that
 * curand_init(seed, subsequence, column) sets, and the transforms to
 * uniforms and normals are the shared ones in vae_philox.h.
 *
 * tests/test_curand_host.cpp checks, with cuRAND's full header compiled as
 * host code, that vae_curand_philox_block equals curand_init + curand4 and
 * that the shared transforms equal curand_uniform4 and (host way)
 * curand_normal4. */
#ifndef VAE_CURAND_PHILOX_H
#define VAE_CURAND_PHILOX_H

#include <stdint.h>
#include <cuda_runtime.h> /* uint2, uint4, make_uint2, make_uint4 */
#include <curand_philox4x32_x.h>

#include "vae_philox.h"

#if defined(__CUDACC__)
#define VAE_CURAND_QUALIFIERS static __device__ __forceinline__
#else
#define VAE_CURAND_QUALIFIERS static inline
#endif

/* The block curand_init(seed, subsequence, column) then curand4() returns,
 * for column a multiple of 4: counter = {column/4 lo, column/4 hi,
 * subsequence lo, subsequence hi}, key = {seed lo, seed hi}. One Philox
 * evaluation (curand4 after curand_init computes two: it prefetches the next
 * block). */
VAE_CURAND_QUALIFIERS uint4 vae_curand_philox_block(uint64_t seed, uint64_t subsequence, uint64_t column) {
    const uint64_t block_index = column >> 2;
    uint4 counter = make_uint4((uint32_t)block_index, (uint32_t)(block_index >> 32), (uint32_t)subsequence,
                               (uint32_t)(subsequence >> 32));
    uint2 key = make_uint2((uint32_t)seed, (uint32_t)(seed >> 32));
    return curand_Philox4x32_10(counter, key);
}

/* Four uniforms in (0, 1] at the address: curand_uniform4's values. */
VAE_CURAND_QUALIFIERS void vae_curand_uniform4(uint64_t seed, uint64_t subsequence, uint64_t column,
                                               float out[4]) {
    uint4 block = vae_curand_philox_block(seed, subsequence, column);
    out[0] = vae_uniform_from_uint(block.x);
    out[1] = vae_uniform_from_uint(block.y);
    out[2] = vae_uniform_from_uint(block.z);
    out[3] = vae_uniform_from_uint(block.w);
}

/* Four standard normals at the address: cuRAND's Box-Muller on the same
 * words, with accurate sinf/cosf/logf (curand_normal4 on the device uses
 * __sincosf, whose error grows over the angle's (0, 2pi] range), so that the
 * GPU's eps equal the CPU's vae_normal4 to a few float ulps. */
VAE_CURAND_QUALIFIERS void vae_curand_normal4(uint64_t seed, uint64_t subsequence, uint64_t column, float out[4]) {
    uint4 block = vae_curand_philox_block(seed, subsequence, column);
    vae_box_muller(block.x, block.y, &out[0], &out[1]);
    vae_box_muller(block.z, block.w, &out[2], &out[3]);
}

#endif
