// A host CUDA runtime subset (issue 23): the functions of
// cuda_runtime_api.h that src/backends/backend_cuda.c calls, with the
// runtime's own names and C linkage, so that the CUDA backend's host side
// runs in a test binary without a GPU or libcudart.
//
// One device, named like an H100. Every allocation is its own heap block
// (AddressSanitizer sees overruns), filled with 0xff bytes (NaN as floats,
// as fresh GPU memory is garbage), and registered: a copy, memset or cuBLAS
// call whose device pointer is not in a live allocation (a host pointer, a
// freed one) is refused with cudaErrorInvalidValue and a message. Streams
// run their work at once, in order. Graph capture records instead: between
// cudaStreamBeginCapture and cudaStreamEndCapture a launch, copy or memset
// becomes work holding its argument values, and cudaGraphLaunch replays that
// work, as a GPU replays a graph's nodes with the parameters they were
// captured with.
#include "vae_cuda_host_runtime.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

struct CUstream_st {
    bool capturing = false;
    bool capture_invalidated = false; // an unsafe call (a sync, an allocation) during the capture
    std::vector<vae_cuda_host::Work> recorded;
};

struct CUgraph_st {
    std::vector<vae_cuda_host::Work> work;
};

struct CUgraphExec_st {
    std::vector<vae_cuda_host::Work> work;
};

namespace vae_cuda_host {
namespace {

enum class AllocationKind { kDevice, kHostPinned, kHostMapped };

struct Allocation {
    size_t bytes;
    AllocationKind kind;
};

// Keyed by first byte. One mutex: tests may create backends on several
// threads.
std::mutex registry_mutex;
std::map<uintptr_t, Allocation> allocations;
std::string refusal;
cudaError_t runtime_last_error = cudaSuccess;
int current_device = 0;
// Streams that capture (the null stream never does here).
std::vector<CUstream_st *> capturing_streams;

// The live allocation holding [pointer, pointer + bytes), or NULL.
const Allocation *find_allocation(const void *pointer, size_t bytes, uintptr_t *start) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(pointer);
    auto it = allocations.upper_bound(address);
    if (it == allocations.begin()) return nullptr;
    --it;
    if (address - it->first > it->second.bytes || bytes > it->second.bytes - (address - it->first)) return nullptr;
    if (start != nullptr) *start = it->first;
    return &it->second;
}

std::string describe(const void *pointer, size_t bytes) {
    char text[96];
    std::snprintf(text, sizeof text, "%p (%zu bytes)", pointer, bytes);
    return text;
}

void note_error(cudaError_t error) {
    if (error != cudaSuccess && runtime_last_error == cudaSuccess) runtime_last_error = error;
}

bool any_capture() { return !capturing_streams.empty(); }

// An unsafe call during a capture (cudaStreamCaptureModeThreadLocal: this
// thread's allocations and synchronizations) ends it as invalidated.
cudaError_t refuse_during_capture(const char *function) {
    for (CUstream_st *stream : capturing_streams) stream->capture_invalidated = true;
    return refuse(cudaErrorStreamCaptureUnsupported,
                  std::string(function) + " during a stream capture (not allowed in thread-local capture mode)");
}

bool stream_capturing(cudaStream_t stream) { return stream != nullptr && stream->capturing; }

void record(cudaStream_t stream, Work work) { stream->recorded.push_back(std::move(work)); }

// Runs now, or records on a capturing stream.
void enqueue(cudaStream_t stream, Work work) {
    if (stream_capturing(stream)) {
        record(stream, std::move(work));
    } else {
        work();
    }
}

struct InstallHooks {
    InstallHooks() { set_capture_hooks(CaptureHooks{stream_capturing, record}); }
} install_hooks;

cudaError_t allocate(void **out, size_t bytes, AllocationKind kind, const char *function) {
    if (out == nullptr) return refuse(cudaErrorInvalidValue, std::string(function) + ": the out pointer is NULL");
    *out = nullptr;
    if (any_capture()) return refuse_during_capture(function);
    if (bytes == 0) return cudaSuccess; // the runtime gives NULL for 0 bytes
    void *block = std::malloc(bytes);
    if (block == nullptr) {
        note_error(cudaErrorMemoryAllocation);
        return cudaErrorMemoryAllocation;
    }
    std::memset(block, 0xff, bytes);
    std::lock_guard<std::mutex> lock(registry_mutex);
    allocations[reinterpret_cast<uintptr_t>(block)] = Allocation{bytes, kind};
    *out = block;
    return cudaSuccess;
}

cudaError_t release(void *pointer, bool host, const char *function) {
    if (pointer == nullptr) return cudaSuccess;
    if (any_capture()) return refuse_during_capture(function);
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = allocations.find(reinterpret_cast<uintptr_t>(pointer));
    if (it == allocations.end() || (it->second.kind == AllocationKind::kDevice) == host)
        return refuse(cudaErrorInvalidValue, std::string(function) + ": " + describe(pointer, 0) + " is not a live " +
                                                 (host ? "cudaMallocHost/cudaHostAlloc" : "cudaMalloc") +
                                                 " allocation (freed twice, or never allocated so)");
    allocations.erase(it);
    std::free(pointer);
    return cudaSuccess;
}

// Where a copy's side is: device memory (a live cudaMalloc or mapped
// allocation) or host memory (anything that is not in a cudaMalloc one).
cudaError_t check_copy_side(const void *pointer, size_t bytes, bool device, const char *function, const char *side) {
    if (pointer == nullptr && bytes > 0)
        return refuse(cudaErrorInvalidValue, std::string(function) + ": the " + side + " is NULL");
    if (bytes == 0) return cudaSuccess;
    if (device) {
        if (!is_device_accessible(pointer, bytes))
            return refuse(cudaErrorInvalidValue, std::string(function) + ": the " + side + " " +
                                                     describe(pointer, bytes) +
                                                     " is not device memory (not in one live cudaMalloc allocation)");
    } else {
        std::lock_guard<std::mutex> lock(registry_mutex);
        const void *end = static_cast<const char *>(pointer) + bytes - 1;
        const Allocation *first = find_allocation(pointer, 1, nullptr), *last = find_allocation(end, 1, nullptr);
        if (first != nullptr && first->kind == AllocationKind::kDevice)
            return refuse(cudaErrorInvalidValue, std::string(function) + ": the " + side + " " +
                                                     describe(pointer, bytes) +
                                                     " is device memory where the copy's kind says host memory");
        if (last != nullptr && last->kind == AllocationKind::kDevice)
            return refuse(cudaErrorInvalidValue, std::string(function) + ": the " + side + " " +
                                                     describe(pointer, bytes) + " runs into device memory");
    }
    return cudaSuccess;
}

cudaError_t copy(void *destination, const void *source, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream,
                 const char *function) {
    bool destination_device, source_device;
    switch (kind) {
    case cudaMemcpyHostToDevice: destination_device = true, source_device = false; break;
    case cudaMemcpyDeviceToHost: destination_device = false, source_device = true; break;
    case cudaMemcpyDeviceToDevice: destination_device = true, source_device = true; break;
    case cudaMemcpyHostToHost: destination_device = false, source_device = false; break;
    default:
        return refuse(cudaErrorInvalidMemcpyDirection,
                      std::string(function) + ": kind " + std::to_string((int)kind) + " (cudaMemcpyDefault and "
                                                                                       "others are not modelled)");
    }
    cudaError_t status = check_copy_side(destination, bytes, destination_device, function, "destination");
    if (status == cudaSuccess) status = check_copy_side(source, bytes, source_device, function, "source");
    if (status != cudaSuccess) return status;
    if (bytes == 0) return cudaSuccess;
    enqueue(stream, [destination, source, bytes] { std::memmove(destination, source, bytes); });
    return cudaSuccess;
}

cudaError_t fill(void *destination, int value, size_t bytes, cudaStream_t stream, const char *function) {
    if (bytes == 0) return cudaSuccess;
    if (!is_device_accessible(destination, bytes))
        return refuse(cudaErrorInvalidValue, std::string(function) + ": " + describe(destination, bytes) +
                                                 " is not device memory (not in one live cudaMalloc allocation)");
    enqueue(stream, [destination, value, bytes] { std::memset(destination, value, bytes); });
    return cudaSuccess;
}

cudaError_t synchronize(cudaStream_t stream, const char *function) {
    if (stream_capturing(stream) || (stream == nullptr && any_capture())) return refuse_during_capture(function);
    // Work ran when enqueued; a kernel's failure (a divergent barrier) is
    // sticky on a GPU and reported by the next synchronization.
    const cudaError_t kernel_error = peek_at_last_error();
    return kernel_error == cudaErrorLaunchFailure ? kernel_error : cudaSuccess;
}

} // namespace

bool is_device_memory(const void *pointer, size_t bytes) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    const Allocation *allocation = find_allocation(pointer, bytes ? bytes : 1, nullptr);
    return allocation != nullptr && allocation->kind == AllocationKind::kDevice;
}

bool is_device_accessible(const void *pointer, size_t bytes) {
    std::lock_guard<std::mutex> lock(registry_mutex);
    const Allocation *allocation = find_allocation(pointer, bytes ? bytes : 1, nullptr);
    return allocation != nullptr && allocation->kind != AllocationKind::kHostPinned;
}

std::string last_refusal() { return refusal; }

cudaError_t refuse(cudaError_t error, const std::string &message) {
    refusal = message;
    std::fprintf(stderr, "vae_cuda_host: %s\n", message.c_str());
    note_error(error);
    return error;
}

} // namespace vae_cuda_host

using namespace vae_cuda_host;

// ------------------------------------------------------------------ errors

// The runtime's error and the kernels' (launch configuration, barriers).
cudaError_t cudaGetLastError(void) {
    cudaError_t error = runtime_last_error;
    runtime_last_error = cudaSuccess;
    const cudaError_t kernel_error = get_last_error();
    return error != cudaSuccess ? error : kernel_error;
}

cudaError_t cudaPeekAtLastError(void) {
    return runtime_last_error != cudaSuccess ? runtime_last_error : peek_at_last_error();
}

const char *cudaGetErrorName(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    default: return "cudaErrorUnknown";
    }
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNotSupported: return "operation not supported";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorIllegalState: return "the resource is in an illegal state";
    default: return "unknown error";
    }
}

// ------------------------------------------------------------------ device

cudaError_t cudaGetDeviceCount(int *count) {
    if (count == nullptr) return refuse(cudaErrorInvalidValue, "cudaGetDeviceCount: count is NULL");
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device != 0) return refuse(cudaErrorInvalidDevice, "cudaSetDevice: only device 0 exists");
    current_device = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (device == nullptr) return refuse(cudaErrorInvalidValue, "cudaGetDevice: device is NULL");
    *device = current_device;
    return cudaSuccess;
}

// An H100 SXM's figures, the ones a backend sizes launches by.
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *properties, int device) {
    if (properties == nullptr) return refuse(cudaErrorInvalidValue, "cudaGetDeviceProperties: properties is NULL");
    if (device != 0) return refuse(cudaErrorInvalidDevice, "cudaGetDeviceProperties: only device 0 exists");
    std::memset(properties, 0, sizeof *properties);
    std::snprintf(properties->name, sizeof properties->name, "NVIDIA H100 80GB HBM3 (vae_cuda_host)");
    properties->major = 9;
    properties->minor = 0;
    properties->multiProcessorCount = 132;
    properties->sharedMemPerMultiprocessor = 228 * 1024;
    properties->sharedMemPerBlock = 48 * 1024;
    properties->sharedMemPerBlockOptin = 227 * 1024;
    properties->totalGlobalMem = (size_t)80 << 30;
    properties->warpSize = 32;
    properties->maxThreadsPerBlock = 1024;
    properties->maxThreadsPerMultiProcessor = 2048;
    properties->maxThreadsDim[0] = properties->maxThreadsDim[1] = 1024;
    properties->maxThreadsDim[2] = 64;
    properties->maxGridSize[0] = 2147483647;
    properties->maxGridSize[1] = properties->maxGridSize[2] = 65535;
    properties->regsPerBlock = 65536;
    properties->canMapHostMemory = 1;
    properties->unifiedAddressing = 1;
    return cudaSuccess;
}

cudaError_t cudaDriverGetVersion(int *version) {
    if (version == nullptr) return refuse(cudaErrorInvalidValue, "cudaDriverGetVersion: version is NULL");
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int *version) {
    if (version == nullptr) return refuse(cudaErrorInvalidValue, "cudaRuntimeGetVersion: version is NULL");
    *version = 13000;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize(void) { return synchronize(nullptr, "cudaDeviceSynchronize"); }

// ------------------------------------------------------------------ memory

cudaError_t cudaMalloc(void **pointer, size_t bytes) {
    return allocate(pointer, bytes, AllocationKind::kDevice, "cudaMalloc");
}

cudaError_t cudaFree(void *pointer) { return release(pointer, false, "cudaFree"); }

cudaError_t cudaMallocHost(void **pointer, size_t bytes) {
    return allocate(pointer, bytes, AllocationKind::kHostPinned, "cudaMallocHost");
}

cudaError_t cudaHostAlloc(void **pointer, size_t bytes, unsigned int flags) {
    return allocate(pointer, bytes, (flags & cudaHostAllocMapped) ? AllocationKind::kHostMapped
                                                                  : AllocationKind::kHostPinned,
                    "cudaHostAlloc");
}

cudaError_t cudaFreeHost(void *pointer) { return release(pointer, true, "cudaFreeHost"); }

// With unified addressing a mapped allocation's device pointer is its host
// pointer.
cudaError_t cudaHostGetDevicePointer(void **device, void *host, unsigned int flags) {
    if (device == nullptr || flags != 0)
        return refuse(cudaErrorInvalidValue, "cudaHostGetDevicePointer: device is NULL or flags are not 0");
    *device = nullptr;
    std::lock_guard<std::mutex> lock(registry_mutex);
    auto it = allocations.find(reinterpret_cast<uintptr_t>(host));
    if (it == allocations.end() || it->second.kind != AllocationKind::kHostMapped)
        return refuse(cudaErrorInvalidValue, "cudaHostGetDevicePointer: " + describe(host, 0) +
                                                 " is not a cudaHostAlloc(cudaHostAllocMapped) allocation");
    *device = host;
    return cudaSuccess;
}

cudaError_t cudaMemcpy(void *destination, const void *source, size_t bytes, cudaMemcpyKind kind) {
    return copy(destination, source, bytes, kind, nullptr, "cudaMemcpy");
}

cudaError_t cudaMemcpyAsync(void *destination, const void *source, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream) {
    return copy(destination, source, bytes, kind, stream, "cudaMemcpyAsync");
}

cudaError_t cudaMemset(void *destination, int value, size_t bytes) {
    return fill(destination, value, bytes, nullptr, "cudaMemset");
}

cudaError_t cudaMemsetAsync(void *destination, int value, size_t bytes, cudaStream_t stream) {
    return fill(destination, value, bytes, stream, "cudaMemsetAsync");
}

// ------------------------------------------------------------------ streams

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags) {
    (void)flags; // one host thread runs everything: no default-stream synchronization to model
    if (stream == nullptr) return refuse(cudaErrorInvalidValue, "cudaStreamCreateWithFlags: stream is NULL");
    *stream = new CUstream_st;
    return cudaSuccess;
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, cudaStreamDefault); }

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    if (stream == nullptr) return refuse(cudaErrorInvalidValue, "cudaStreamDestroy: the null stream");
    if (stream->capturing) return refuse(cudaErrorIllegalState, "cudaStreamDestroy: the stream is capturing");
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) { return synchronize(stream, "cudaStreamSynchronize"); }

// ------------------------------------------------------------------ graphs

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, enum cudaStreamCaptureMode mode) {
    if (stream == nullptr) return refuse(cudaErrorStreamCaptureUnsupported, "cudaStreamBeginCapture: the null stream");
    if (mode != cudaStreamCaptureModeThreadLocal && mode != cudaStreamCaptureModeGlobal &&
        mode != cudaStreamCaptureModeRelaxed)
        return refuse(cudaErrorInvalidValue, "cudaStreamBeginCapture: unknown mode");
    if (stream->capturing) return refuse(cudaErrorIllegalState, "cudaStreamBeginCapture: already capturing");
    stream->capturing = true;
    stream->capture_invalidated = false;
    stream->recorded.clear();
    capturing_streams.push_back(stream);
    return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t *graph) {
    if (graph == nullptr) return refuse(cudaErrorInvalidValue, "cudaStreamEndCapture: graph is NULL");
    *graph = nullptr;
    if (stream == nullptr || !stream->capturing)
        return refuse(cudaErrorIllegalState, "cudaStreamEndCapture: the stream is not capturing");
    stream->capturing = false;
    for (size_t i = 0; i < capturing_streams.size(); ++i)
        if (capturing_streams[i] == stream) capturing_streams.erase(capturing_streams.begin() + (long)i);
    std::vector<Work> work = std::move(stream->recorded);
    stream->recorded.clear();
    if (stream->capture_invalidated)
        return refuse(cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture: an unsafe call invalidated the capture");
    *graph = new CUgraph_st{std::move(work)};
    return cudaSuccess;
}

cudaError_t cudaStreamIsCapturing(cudaStream_t stream, enum cudaStreamCaptureStatus *status) {
    if (status == nullptr) return refuse(cudaErrorInvalidValue, "cudaStreamIsCapturing: status is NULL");
    *status = stream_capturing(stream) ? (stream->capture_invalidated ? cudaStreamCaptureStatusInvalidated
                                                                      : cudaStreamCaptureStatusActive)
                                       : cudaStreamCaptureStatusNone;
    return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t *executable, cudaGraph_t graph, unsigned long long flags) {
    if (executable == nullptr || graph == nullptr || flags != 0)
        return refuse(cudaErrorInvalidValue, "cudaGraphInstantiate: executable or graph is NULL, or flags are not 0");
    *executable = new CUgraphExec_st{graph->work};
    return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
    if (graph == nullptr) return refuse(cudaErrorInvalidValue, "cudaGraphDestroy: graph is NULL");
    delete graph;
    return cudaSuccess;
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t executable) {
    if (executable == nullptr) return refuse(cudaErrorInvalidValue, "cudaGraphExecDestroy: executable is NULL");
    delete executable;
    return cudaSuccess;
}

// The recorded work with its recorded values, in capture order.
cudaError_t cudaGraphLaunch(cudaGraphExec_t executable, cudaStream_t stream) {
    if (executable == nullptr) return refuse(cudaErrorInvalidValue, "cudaGraphLaunch: executable is NULL");
    for (const Work &work : executable->work) enqueue(stream, work);
    return cudaSuccess;
}
