// The host execution target's scheduler: a launch runs its blocks one after
// another in the chosen order; a block runs each of its threads as a fiber
// (its own stack, a separate heap block) until the fiber reaches
// __syncthreads or returns, in the chosen thread order, and releases the
// barrier once every thread still running waits at it. Exited threads count
// as arrived (as on the GPU). Threads waiting at different barriers are an
// error (the GPU's behaviour there is undefined).
//
// Fibers switch with a few lines of x86-64 assembly (callee-saved registers
// and the stack pointer; swapcontext would make a system call per switch),
// elsewhere with ucontext. Under AddressSanitizer every switch is announced
// (__sanitizer_start_switch_fiber), so its stack checks follow the fibers.
#include "vae_cuda_host_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define VAE_CUDA_HOST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VAE_CUDA_HOST_ASAN 1
#endif
#endif
#ifdef VAE_CUDA_HOST_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local uint3 blockDim;
thread_local uint3 gridDim;

#if defined(__x86_64__)
// vae_cuda_host_switch(save, load): pushes the callee-saved registers and the
// SSE/x87 control words, stores the stack pointer in *save, loads load, and
// pops the same from there.
extern "C" void vae_cuda_host_switch(void **save, void *load);
asm(".text\n"
    ".globl vae_cuda_host_switch\n"
    ".type vae_cuda_host_switch, @function\n"
    "vae_cuda_host_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    subq $8, %rsp\n"
    "    stmxcsr (%rsp)\n"
    "    fnstcw 4(%rsp)\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    ldmxcsr (%rsp)\n"
    "    fldcw 4(%rsp)\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size vae_cuda_host_switch, .-vae_cuda_host_switch\n"
    ".section .note.GNU-stack,\"\",@progbits\n"
    ".text\n");
#endif

namespace vae_cuda_host {
namespace {

// Generous: the kernels are shallow, but sanitizer builds grow frames.
constexpr size_t kStackBytes = 256 * 1024;

enum class FiberState { kReady, kAtBarrier, kDone };

struct Fiber {
    void *stack = nullptr;
    FiberState state = FiberState::kReady;
    const char *barrier_file = nullptr;
    int barrier_line = 0;
#if defined(__x86_64__)
    void *stack_pointer = nullptr;
#else
    ucontext_t context;
#endif
#ifdef VAE_CUDA_HOST_ASAN
    void *fake_stack = nullptr;
#endif
};

struct BlockRun {
    std::vector<Fiber> fibers;
    Fiber *current = nullptr;
    ThreadBody body = nullptr;
    void *context = nullptr;
    void *dynamic_shared = nullptr;
#if defined(__x86_64__)
    void *scheduler_stack_pointer = nullptr;
#else
    ucontext_t scheduler_context;
#endif
#ifdef VAE_CUDA_HOST_ASAN
    void *scheduler_fake_stack = nullptr;
    const void *scheduler_stack_bottom = nullptr;
    size_t scheduler_stack_size = 0;
#endif
};

thread_local BlockRun *running = nullptr;
thread_local cudaError_t last_error = cudaSuccess;

CaptureHooks capture_hooks = {nullptr, nullptr};

bool order_chosen = false;
Order chosen_order;

void record_error(cudaError_t error) {
    if (last_error == cudaSuccess) last_error = error;
}

// From the scheduler into fiber (its first run or back from a barrier).
void switch_to_fiber(BlockRun &run, Fiber &fiber) {
    run.current = &fiber;
#ifdef VAE_CUDA_HOST_ASAN
    __sanitizer_start_switch_fiber(&run.scheduler_fake_stack, fiber.stack, kStackBytes);
#endif
#if defined(__x86_64__)
    vae_cuda_host_switch(&run.scheduler_stack_pointer, fiber.stack_pointer);
#else
    swapcontext(&run.scheduler_context, &fiber.context);
#endif
#ifdef VAE_CUDA_HOST_ASAN
    __sanitizer_finish_switch_fiber(run.scheduler_fake_stack, nullptr, nullptr);
#endif
}

// From the running fiber back to the scheduler; finished: the fiber never
// runs again (its fake stack frames may go).
void switch_to_scheduler(BlockRun &run, bool finished) {
    Fiber &fiber = *run.current;
#ifdef VAE_CUDA_HOST_ASAN
    __sanitizer_start_switch_fiber(finished ? nullptr : &fiber.fake_stack, run.scheduler_stack_bottom,
                                   run.scheduler_stack_size);
#else
    (void)finished;
#endif
#if defined(__x86_64__)
    vae_cuda_host_switch(&fiber.stack_pointer, run.scheduler_stack_pointer);
#else
    swapcontext(&fiber.context, &run.scheduler_context);
#endif
#ifdef VAE_CUDA_HOST_ASAN
    __sanitizer_finish_switch_fiber(fiber.fake_stack, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
#endif
}

// Where every fiber starts; it never returns (nothing to return to).
[[noreturn]] void fiber_main() {
    BlockRun &run = *running;
#ifdef VAE_CUDA_HOST_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &run.scheduler_stack_bottom, &run.scheduler_stack_size);
#endif
    run.body(run.context);
    run.current->state = FiberState::kDone;
    switch_to_scheduler(run, true);
    std::abort(); // a finished fiber is never resumed
}

#if !defined(__x86_64__)
void fiber_main_for_ucontext() { fiber_main(); }
#endif

// A fresh start on the fiber's stack.
void prepare_fiber(Fiber &fiber) {
    fiber.state = FiberState::kReady;
    fiber.barrier_file = nullptr;
    fiber.barrier_line = 0;
#ifdef VAE_CUDA_HOST_ASAN
    // The previous fiber's last frame (fiber_main's) never returned: clear
    // what it left poisoned at the top of the stack.
    ASAN_UNPOISON_MEMORY_REGION(static_cast<char *>(fiber.stack) + kStackBytes - 16384, 16384);
#endif
#if defined(__x86_64__)
    // The frame vae_cuda_host_switch pops: control words, six registers, and
    // fiber_main as the return address, above it a null "return address" of
    // fiber_main, leaving the stack aligned as after a call.
    uintptr_t top = (reinterpret_cast<uintptr_t>(fiber.stack) + kStackBytes) & ~uintptr_t(15);
    void **slot = reinterpret_cast<void **>(top);
    *--slot = nullptr;
    *--slot = reinterpret_cast<void *>(&fiber_main);
    for (int k = 0; k < 6; ++k) *--slot = nullptr;
    --slot;
    uint32_t control[2] = {0, 0};
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    std::memcpy(slot, control, sizeof control);
    fiber.stack_pointer = slot;
#else
    getcontext(&fiber.context);
    fiber.context.uc_stack.ss_sp = fiber.stack;
    fiber.context.uc_stack.ss_size = kStackBytes;
    fiber.context.uc_link = nullptr;
    makecontext(&fiber.context, fiber_main_for_ucontext, 0);
#endif
}

uint3 coordinates(uint64_t linear, dim3 extent) {
    uint3 c;
    c.x = (unsigned int)(linear % extent.x);
    c.y = (unsigned int)(linear / extent.x % extent.y);
    c.z = (unsigned int)(linear / ((uint64_t)extent.x * extent.y));
    return c;
}

uint3 as_uint3(dim3 d) {
    uint3 c;
    c.x = d.x;
    c.y = d.y;
    c.z = d.z;
    return c;
}

bool configuration_is_valid(dim3 grid, dim3 block, size_t shared_bytes) {
    const uint64_t threads = (uint64_t)block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64) return false;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
        return false;
    return shared_bytes <= 48 * 1024; // without the opt-in attribute
}

std::vector<uint64_t> block_sequence(uint64_t blocks, const Order &order) {
    std::vector<uint64_t> sequence(blocks);
    for (uint64_t b = 0; b < blocks; ++b) sequence[b] = order.blocks == BlockOrder::kReversed ? blocks - 1 - b : b;
    if (order.blocks == BlockOrder::kShuffled) {
        // Fisher-Yates with the engine's own draws from mt19937_64 (the
        // standard library's shuffle may differ between implementations).
        std::mt19937_64 random(order.seed);
        for (uint64_t i = blocks; i > 1; --i) std::swap(sequence[i - 1], sequence[random() % i]);
    }
    return sequence;
}

// Runs one block to its end; false on a divergent barrier.
bool run_block(BlockRun &run, const Order &order, unsigned int threads) {
    for (Fiber &fiber : run.fibers) prepare_fiber(fiber);
    const dim3 block(blockDim.x, blockDim.y, blockDim.z);
    for (;;) {
        for (unsigned int k = 0; k < threads; ++k) {
            const unsigned int t = order.threads == ThreadOrder::kReversed ? threads - 1 - k : k;
            Fiber &fiber = run.fibers[t];
            if (fiber.state != FiberState::kReady) continue;
            threadIdx = coordinates(t, block);
            switch_to_fiber(run, fiber);
        }
        const Fiber *first_waiting = nullptr;
        for (unsigned int t = 0; t < threads; ++t) {
            Fiber &fiber = run.fibers[t];
            if (fiber.state != FiberState::kAtBarrier) continue;
            if (first_waiting == nullptr) {
                first_waiting = &fiber;
            } else if (fiber.barrier_line != first_waiting->barrier_line ||
                       std::strcmp(fiber.barrier_file, first_waiting->barrier_file) != 0) {
                std::fprintf(stderr,
                             "vae_cuda_host: block (%u,%u,%u): thread %u waits at %s:%d, thread %u at %s:%d "
                             "(divergent __syncthreads)\n",
                             blockIdx.x, blockIdx.y, blockIdx.z, (unsigned int)(first_waiting - run.fibers.data()),
                             first_waiting->barrier_file, first_waiting->barrier_line, t, fiber.barrier_file,
                             fiber.barrier_line);
                return false;
            }
        }
        if (first_waiting == nullptr) return true;
        for (Fiber &fiber : run.fibers)
            if (fiber.state == FiberState::kAtBarrier) fiber.state = FiberState::kReady;
    }
}

Order order_from_environment() {
    Order order;
    const char *blocks = std::getenv("VAE_CUDA_HOST_BLOCK_ORDER");
    const char *threads = std::getenv("VAE_CUDA_HOST_THREAD_ORDER");
    const char *seed = std::getenv("VAE_CUDA_HOST_SEED");
    if (blocks != nullptr && std::strcmp(blocks, "reversed") == 0) order.blocks = BlockOrder::kReversed;
    if (blocks != nullptr && std::strcmp(blocks, "shuffled") == 0) order.blocks = BlockOrder::kShuffled;
    if (threads != nullptr && std::strcmp(threads, "reversed") == 0) order.threads = ThreadOrder::kReversed;
    if (seed != nullptr) order.seed = std::strtoull(seed, nullptr, 10);
    return order;
}

} // namespace

void set_order(const Order &order) {
    chosen_order = order;
    order_chosen = true;
}

Order current_order() {
    if (!order_chosen) set_order(order_from_environment());
    return chosen_order;
}

std::string order_name(const Order &order) {
    std::string name = "blocks_";
    switch (order.blocks) {
    case BlockOrder::kForward: name += "forward"; break;
    case BlockOrder::kReversed: name += "reversed"; break;
    case BlockOrder::kShuffled: name += "shuffled_" + std::to_string(order.seed); break;
    }
    name += order.threads == ThreadOrder::kReversed ? "_threads_reversed" : "_threads_forward";
    return name;
}

cudaError_t get_last_error() {
    const cudaError_t error = last_error;
    last_error = cudaSuccess;
    return error;
}

cudaError_t peek_at_last_error() { return last_error; }

bool accept_launch(dim3 grid, dim3 block, size_t shared_bytes) {
    if (configuration_is_valid(grid, block, shared_bytes)) return true;
    record_error(cudaErrorInvalidConfiguration);
    return false;
}

void set_capture_hooks(const CaptureHooks &hooks) { capture_hooks = hooks; }

bool stream_is_capturing(cudaStream_t stream) {
    return capture_hooks.is_capturing != nullptr && capture_hooks.is_capturing(stream);
}

void record_work(cudaStream_t stream, Work work) {
    if (capture_hooks.record != nullptr) {
        capture_hooks.record(stream, std::move(work));
    } else {
        work();
    }
}

void run_grid(dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream, ThreadBody body, void *context) {
    // One host thread runs everything in launch order: no streams.
    (void)stream;
    // A launch from a kernel (dynamic parallelism) is not modelled.
    if (running != nullptr) {
        record_error(cudaErrorNotSupported);
        return;
    }
    if (!accept_launch(grid, block, shared_bytes)) return;
    const Order order = current_order();
    const unsigned int threads = block.x * block.y * block.z;
    BlockRun run;
    run.body = body;
    run.context = context;
    run.fibers.resize(threads);
    for (Fiber &fiber : run.fibers) {
        fiber.stack = std::malloc(kStackBytes);
        if (fiber.stack == nullptr) {
            std::fprintf(stderr, "vae_cuda_host: out of memory for %u fiber stacks\n", threads);
            std::abort();
        }
    }
    blockDim = as_uint3(block);
    gridDim = as_uint3(grid);
    running = &run;
    const std::vector<uint64_t> sequence = block_sequence((uint64_t)grid.x * grid.y * grid.z, order);
    for (uint64_t linear : sequence) {
        blockIdx = coordinates(linear, grid);
        // Its own heap block, filled with 0xff bytes (NaN as floats): a read
        // before any write shows.
        run.dynamic_shared = shared_bytes > 0 ? std::malloc(shared_bytes) : nullptr;
        if (run.dynamic_shared != nullptr) std::memset(run.dynamic_shared, 0xff, shared_bytes);
        const bool completed = run_block(run, order, threads);
        std::free(run.dynamic_shared);
        run.dynamic_shared = nullptr;
        if (!completed) {
            record_error(cudaErrorLaunchFailure);
            break;
        }
    }
    running = nullptr;
    for (Fiber &fiber : run.fibers) {
#ifdef VAE_CUDA_HOST_ASAN
        ASAN_UNPOISON_MEMORY_REGION(fiber.stack, kStackBytes);
#endif
        std::free(fiber.stack);
    }
}

void syncthreads(const char *file, int line) {
    if (running == nullptr || running->current == nullptr) {
        std::fprintf(stderr, "vae_cuda_host: __syncthreads outside a kernel (%s:%d)\n", file, line);
        std::abort();
    }
    BlockRun &run = *running;
    Fiber &fiber = *run.current;
    fiber.state = FiberState::kAtBarrier;
    fiber.barrier_file = file;
    fiber.barrier_line = line;
    switch_to_scheduler(run, false);
}

uint3 thread_index() { return threadIdx; }
uint3 block_index() { return blockIdx; }

void *dynamic_shared_memory() { return running != nullptr ? running->dynamic_shared : nullptr; }

} // namespace vae_cuda_host
