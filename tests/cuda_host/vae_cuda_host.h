// What CUDA C gives a kernel, for kernels/*.cu compiled as host C++
// (VAE_CUDA_HOST, included by kernels/vae_cuda_common.cuh after
// cuda_runtime.h, whose types and declarations g++ compiles as they are).
// The fibers and their scheduling are in vae_cuda_host.cpp.
//
// Modelled: threadIdx/blockIdx/blockDim/gridDim (per fiber), __shared__
// (one copy per block: a block runs to its end on one OS thread before the
// next begins, so a static thread_local is the block's), dynamic shared
// memory (VAE_DYNAMIC_SHARED), __syncthreads, __threadfence, the atomics,
// __ldg/__ldcg. Not modelled: warp-level primitives (no kernel uses them),
// dynamic parallelism, concurrent blocks. A __device__ global is one per
// kernel file (static), as with nvcc's whole-program compilation.
#ifndef VAE_CUDA_HOST_H
#define VAE_CUDA_HOST_H

#if defined(__CUDACC__) || !defined(__cplusplus)
#error "vae_cuda_host.h is for the host C++ build of the kernels (VAE_CUDA_HOST)"
#endif

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include "vae_cuda_host_runtime.h"

// Kernels and device functions get internal linkage: a test binary also
// links the nvcc objects, whose host stubs carry the same names.
#undef __global__
#define __global__ static
#undef __device__
#define __device__ static
#undef __shared__
#define __shared__ static thread_local

// The running fiber's coordinates, set by the scheduler at every switch.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local uint3 blockDim;
extern thread_local uint3 gridDim;
constexpr int warpSize = 32;

#define __syncthreads() vae_cuda_host::syncthreads(__FILE__, __LINE__)
#define cudaGetLastError vae_cuda_host::get_last_error
#define cudaPeekAtLastError vae_cuda_host::peek_at_last_error

// Fibers switch only at barriers, and blocks run one after another, so these
// are atomic already; the builtins keep them so if blocks ever run on
// several OS threads.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

template <typename T> inline T __ldg(const T *address) { return *address; }
template <typename T> inline T __ldcg(const T *address) { return *address; }

namespace vae_cuda_host {
template <typename T, typename Update> inline T atomic_update(T *address, Update update) {
    T old = *address;
    T desired;
    do {
        desired = update(old);
    } while (!__atomic_compare_exchange(address, &old, &desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST));
    return old;
}
} // namespace vae_cuda_host

inline int atomicAdd(int *address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST); }
inline unsigned int atomicAdd(unsigned int *address, unsigned int value) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
inline unsigned long long atomicAdd(unsigned long long *address, unsigned long long value) {
    return __atomic_fetch_add(address, value, __ATOMIC_SEQ_CST);
}
inline float atomicAdd(float *address, float value) {
    return vae_cuda_host::atomic_update(address, [value](float old) { return old + value; });
}
inline double atomicAdd(double *address, double value) {
    return vae_cuda_host::atomic_update(address, [value](double old) { return old + value; });
}
inline int atomicSub(int *address, int value) { return __atomic_fetch_sub(address, value, __ATOMIC_SEQ_CST); }
inline unsigned int atomicSub(unsigned int *address, unsigned int value) {
    return __atomic_fetch_sub(address, value, __ATOMIC_SEQ_CST);
}
template <typename T> inline T atomicExch(T *address, T value) {
    T old;
    __atomic_exchange(address, &value, &old, __ATOMIC_SEQ_CST);
    return old;
}
template <typename T> inline T atomicCAS(T *address, T compare, T value) {
    __atomic_compare_exchange(address, &compare, &value, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return compare; // the old value either way
}
template <typename T> inline T atomicMax(T *address, T value) {
    return vae_cuda_host::atomic_update(address, [value](T old) { return old > value ? old : value; });
}
template <typename T> inline T atomicMin(T *address, T value) {
    return vae_cuda_host::atomic_update(address, [value](T old) { return old < value ? old : value; });
}
// CUDA's wrapping increment and decrement.
inline unsigned int atomicInc(unsigned int *address, unsigned int limit) {
    return vae_cuda_host::atomic_update(address, [limit](unsigned int old) { return old >= limit ? 0u : old + 1u; });
}
inline unsigned int atomicDec(unsigned int *address, unsigned int limit) {
    return vae_cuda_host::atomic_update(
        address, [limit](unsigned int old) { return (old == 0u || old > limit) ? limit : old - 1u; });
}

namespace vae_cuda_host {

// VAE_LAUNCH(kernel, grid, block, shared_bytes, stream)(arguments...): the
// launch keeps one copy of the arguments, and every thread gets its own copy
// of them (by-value parameters are per thread on the GPU too).
template <typename... Params> class KernelLaunch {
  public:
    KernelLaunch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream)
        : kernel_(kernel), grid_(grid), block_(block), shared_bytes_(shared_bytes), stream_(stream) {}

    // Plain parameters, not a template: the call converts each argument as
    // a kernel call does (NULL to a pointer parameter, int to size_t).
    void operator()(Params... arguments) const {
        if (stream_is_capturing(stream_)) {
            // A graph node: the argument values of now, run at each replay
            // (a by-value argument does not follow its host variable).
            if (!accept_launch(grid_, block_, shared_bytes_)) return;
            auto call = std::make_shared<Call>(Call{kernel_, Arguments(arguments...)});
            const dim3 grid = grid_, block = block_;
            const size_t shared_bytes = shared_bytes_;
            cudaStream_t stream = stream_;
            record_work(stream_, [call, grid, block, shared_bytes, stream] {
                run_grid(grid, block, shared_bytes, stream, &KernelLaunch::run_call, call.get());
            });
            return;
        }
        Call call{kernel_, Arguments(arguments...)};
        run_grid(grid_, block_, shared_bytes_, stream_, &KernelLaunch::run_call, &call);
    }

  private:
    using Arguments = std::tuple<Params...>;
    struct Call {
        void (*kernel)(Params...);
        Arguments arguments;
    };
    static void run_call(void *context) {
        Call *c = static_cast<Call *>(context);
        std::apply(c->kernel, c->arguments);
    }

    void (*kernel_)(Params...);
    dim3 grid_, block_;
    size_t shared_bytes_;
    cudaStream_t stream_;
};

template <typename... Params>
KernelLaunch<Params...> launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                               cudaStream_t stream) {
    return KernelLaunch<Params...>(kernel, grid, block, shared_bytes, stream);
}

} // namespace vae_cuda_host

#endif
