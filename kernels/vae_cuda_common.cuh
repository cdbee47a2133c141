/* Device helpers shared by the kernels: the launch macro, launch sizing, the
 * fixed-order block reductions (deterministic: the same inputs give the same
 * bits on every run), and the logvar clamp. CUDA, or host C++ for the host
 * execution target (VAE_CUDA_HOST, tests/cuda_host/vae_cuda_host.h). */
#ifndef VAE_CUDA_COMMON_CUH
#define VAE_CUDA_COMMON_CUH

#include <stddef.h>
#include <cuda_runtime.h>
#if !defined(__CUDACC__) && defined(VAE_CUDA_HOST)
/* What CUDA C gives a kernel, on the host: outside this layer (the tests'
 * tests/cuda_host, on the include path of that build only), like the
 * toolkit's headers. */
#include <vae_cuda_host.h>
#endif
#include "vae_math.h"
#include "vae_step_math.h"

/* Every kernel launch: VAE_LAUNCH(kernel, grid, block, shared_bytes,
 * stream)(arguments...). Under nvcc exactly kernel<<<...>>>; on the host
 * target a launch of the grid's blocks as fibers (tests/cuda_host). */
#if defined(__CUDACC__)
#define VAE_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<grid, block, shared_bytes, stream>>>
#else
#define VAE_LAUNCH(kernel, grid, block, shared_bytes, stream)                                                          \
    vae_cuda_host::launch(kernel, grid, block, shared_bytes, stream)
#endif

/* A kernel's dynamic shared memory (the launch's shared_bytes), as an array
 * of type named name. */
#if defined(__CUDACC__)
#define VAE_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#else
#define VAE_DYNAMIC_SHARED(type, name) type *name = static_cast<type *>(vae_cuda_host::dynamic_shared_memory())
#endif

/* Threads per block of the element-wise and row kernels (a power of two:
 * the tree reductions below rely on it). */
#define VAE_BLOCK 256

/* Blocks for a grid-stride loop over count items: enough to fill any GPU,
 * never more than needed. count > 0. */
static inline unsigned int vae_grid_for(size_t count) {
    size_t blocks = (count + VAE_BLOCK - 1) / VAE_BLOCK;
    const size_t max_blocks = 4096;
    return (unsigned int)(blocks < max_blocks ? blocks : max_blocks);
}

/* Sum of value over the block's BLOCK threads, as a fixed binary tree over
 * thread indices; every thread gets the result. shared holds BLOCK items. The
 * final __syncthreads lets the caller reuse shared at once. */
template <typename T, int BLOCK>
__device__ __forceinline__ T vae_block_sum(T value, T *shared) {
    static_assert((BLOCK & (BLOCK - 1)) == 0, "block size must be a power of two");
    const int thread = threadIdx.x;
    shared[thread] = value;
    __syncthreads();
    for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (thread < stride) shared[thread] = shared[thread] + shared[thread + stride];
        __syncthreads();
    }
    T result = shared[0];
    __syncthreads();
    return result;
}

/* The end of every loss-accumulating kernel (one block): the block's sums of
 * the per-thread partial loss, reconstruction and KL go into the double
 * accumulator (enum vae_loss_slot) with the batch's row count. */
template <int BLOCK>
__device__ __forceinline__ void vae_block_add_loss_sums(double loss, double reconstruction, double divergence,
                                                        int rows, double *shared, double *accumulator) {
    const double loss_total = vae_block_sum<double, BLOCK>(loss, shared);
    const double reconstruction_total = vae_block_sum<double, BLOCK>(reconstruction, shared);
    const double divergence_total = vae_block_sum<double, BLOCK>(divergence, shared);
    if (threadIdx.x == 0) {
        accumulator[VAE_LOSS_SUM_LOSS] += loss_total;
        accumulator[VAE_LOSS_SUM_RECONSTRUCTION] += reconstruction_total;
        accumulator[VAE_LOSS_SUM_KL] += divergence_total;
        accumulator[VAE_LOSS_COUNT] += (double)rows;
    }
}

/* Maximum over the block, same tree, with vae_nan_max (vae_step_math.h):
 * NaN anywhere gives NaN, so a NaN log weight is not silently dropped. */
template <typename T, int BLOCK>
__device__ __forceinline__ T vae_block_max(T value, T *shared) {
    const int thread = threadIdx.x;
    shared[thread] = value;
    __syncthreads();
    for (int stride = BLOCK / 2; stride > 0; stride >>= 1) {
        if (thread < stride) {
            shared[thread] = vae_nan_max(shared[thread], shared[thread + stride]);
        }
        __syncthreads();
    }
    T result = shared[0];
    __syncthreads();
    return result;
}

/* For a kernel that finishes in its last block. Called by thread 0 of every
 * block once the block is done with what the last block reads or must not
 * overtake: 1 in the block that finishes last, 0 elsewhere. The fence
 * before the ticket makes this thread's writes (and orders its reads)
 * before the count goes up; the last block resets the count for the next
 * launch and fences again, so that what it reads next (after a
 * __syncthreads, with __ldcg) is every other block's writes. */
__device__ __forceinline__ int vae_last_block_to_finish(unsigned int *blocks_done) {
    __threadfence();
    const unsigned int blocks = gridDim.x * gridDim.y * gridDim.z;
    const int last = atomicAdd(blocks_done, 1u) == blocks - 1;
    if (last) {
        *blocks_done = 0;
        __threadfence();
    }
    return last;
}

#endif
