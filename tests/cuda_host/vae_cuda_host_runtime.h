// The host execution target of the CUDA kernels (issue 23): what a test
// calls. kernels/*.cu compiled by the host C++ compiler with VAE_CUDA_HOST
// (the vae_kernels_host library) launch their grids here: every block runs
// its threads as fibers on the calling OS thread, switching only at
// __syncthreads, so a block's threads share its __shared__ memory and a
// barrier is a real barrier. Blocks and the threads of a block run in the
// order set here, so that a missing barrier or a reduction that depends on
// the order shows up as a difference between runs.
//
// The order comes from set_order(), or else from the environment at the
// first launch: VAE_CUDA_HOST_BLOCK_ORDER=forward|reversed|shuffled,
// VAE_CUDA_HOST_THREAD_ORDER=forward|reversed, VAE_CUDA_HOST_SEED=<n> (the
// shuffle's seed).
#ifndef VAE_CUDA_HOST_RUNTIME_H
#define VAE_CUDA_HOST_RUNTIME_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include <cuda_runtime_api.h>
#include <vector_types.h>

namespace vae_cuda_host {

enum class BlockOrder { kForward, kReversed, kShuffled };
enum class ThreadOrder { kForward, kReversed };

struct Order {
    BlockOrder blocks = BlockOrder::kForward;
    ThreadOrder threads = ThreadOrder::kForward;
    uint64_t seed = 0; // of the shuffled block order
};

void set_order(const Order &order);
Order current_order();
// "blocks_shuffled_7_threads_reversed": for test names and messages.
std::string order_name(const Order &order);

// What cudaGetLastError returns on the host target: the first error since
// the last call (an invalid launch configuration, a divergent barrier),
// then cleared.
cudaError_t get_last_error();
cudaError_t peek_at_last_error();

// One launch: body(context) runs once per thread of every block. Used by
// vae_cuda_host::launch (vae_cuda_host.h), not called directly.
using ThreadBody = void (*)(void *context);
void run_grid(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, ThreadBody body, void *context);

// Whether a launch configuration is valid; records
// cudaErrorInvalidConfiguration when not (run_grid checks it too).
bool accept_launch(dim3 grid, dim3 block, size_t shared_bytes);

// Graph capture. The host CUDA runtime (vae_cuda_host_cudart.cpp, library
// vae_cuda_host_runtime) sets these hooks; without it no stream captures.
// A launch on a capturing stream becomes work recorded with its argument
// values, which cudaGraphLaunch replays.
using Work = std::function<void()>;
struct CaptureHooks {
    bool (*is_capturing)(cudaStream_t stream);
    void (*record)(cudaStream_t stream, Work work);
};
void set_capture_hooks(const CaptureHooks &hooks);
bool stream_is_capturing(cudaStream_t stream);
void record_work(cudaStream_t stream, Work work);

// The host CUDA runtime's own checks (vae_cuda_host_runtime only): whether
// [pointer, pointer + bytes) lies in one live cudaMalloc allocation, or in
// one mapped cudaHostAlloc one (device-accessible); and the message of the
// last call it refused ("" when none).
bool is_device_memory(const void *pointer, size_t bytes);
bool is_device_accessible(const void *pointer, size_t bytes);
std::string last_refusal();
// Records a refusal: the message to stderr and last_refusal(); returns error.
cudaError_t refuse(cudaError_t error, const std::string &message);

// __syncthreads of the running thread; file and line name the barrier, so
// that threads of one block waiting at different barriers are reported.
void syncthreads(const char *file, int line);
// The running block's dynamic shared memory (the launch's shared_bytes; its
// own heap block, so reads past its end are caught by AddressSanitizer).
void *dynamic_shared_memory();
// The running thread's threadIdx and blockIdx, for code outside the kernel
// files (the scheduler's tests).
uint3 thread_index();
uint3 block_index();

} // namespace vae_cuda_host

#endif
