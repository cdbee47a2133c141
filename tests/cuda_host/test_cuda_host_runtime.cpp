// The host CUDA runtime and cuBLAS subsets (vae_cuda_host_runtime): graph
// capture records argument values and replays them, the allocation registry
// refuses host and freed pointers where device memory is expected, cuBLAS
// checks its arguments, and the CUDA backend runs a captured Adam step on
// the host as on a GPU.
#include <gtest/gtest.h>

#include <cublas_v2.h>
#include <vae_cuda_host.h>
// vae_cuda_host.h points the kernels' cudaGetLastError at the scheduler's
// errors alone; this test asks the runtime subset's, which include them.
#undef cudaGetLastError

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "backends/backend.h"
#include "backends/backend_cuda.h"
}

namespace {

__global__ void add_value(float *out, float value, int count) {
    const int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < count) out[i] += value;
}

class Stream {
  public:
    Stream() { EXPECT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess); }
    ~Stream() { (void)cudaStreamDestroy(stream_); }
    cudaStream_t get() const { return stream_; }

  private:
    cudaStream_t stream_ = nullptr;
};

std::vector<float> download(const float *device, size_t count) {
    std::vector<float> host(count);
    EXPECT_EQ(cudaMemcpy(host.data(), device, count * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
}

TEST(CudaHostRuntime, GraphReplayUsesTheCapturedArgumentValues) {
    Stream stream;
    const int count = 40;
    float *out = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&out), count * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(out, 0, count * sizeof(float), stream.get()), cudaSuccess);

    ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    float value = 1.0f;
    vae_cuda_host::launch(add_value, dim3(2), dim3(32), 0, stream.get())(out, value, count);
    value = 5.0f; // after the capture: a graph keeps the value it was captured with
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
    // Captured, not run.
    for (float got : download(out, count)) ASSERT_EQ(got, 0.0f);

    cudaGraphExec_t executable = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&executable, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaGraphDestroy(graph), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(executable, stream.get()), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(executable, stream.get()), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream.get()), cudaSuccess);
    for (float got : download(out, count)) ASSERT_EQ(got, 2.0f) << "replay used the host variable's new value";
    // A launch outside a capture runs at once, with its own value.
    vae_cuda_host::launch(add_value, dim3(2), dim3(32), 0, stream.get())(out, value, count);
    for (float got : download(out, count)) ASSERT_EQ(got, 7.0f);
    EXPECT_EQ(cudaGraphExecDestroy(executable), cudaSuccess);
    EXPECT_EQ(cudaFree(out), cudaSuccess);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST(CudaHostRuntime, CapturedCopiesAndMemsetsReplayInOrder) {
    Stream stream;
    float *device = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&device), 4 * sizeof(float)), cudaSuccess);
    std::vector<float> host = {1, 2, 3, 4};
    ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(device, 0, 4 * sizeof(float), stream.get()), cudaSuccess);
    ASSERT_EQ(cudaMemcpyAsync(device, host.data(), 2 * sizeof(float), cudaMemcpyHostToDevice, stream.get()),
              cudaSuccess);
    cudaGraph_t graph = nullptr;
    ASSERT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaSuccess);
    cudaGraphExec_t executable = nullptr;
    ASSERT_EQ(cudaGraphInstantiate(&executable, graph, 0), cudaSuccess);
    (void)cudaGraphDestroy(graph);
    host[0] = 9; // a captured copy reads its source at replay, as on a GPU
    ASSERT_EQ(cudaGraphLaunch(executable, stream.get()), cudaSuccess);
    EXPECT_EQ(download(device, 4), (std::vector<float>{9, 2, 0, 0}));
    (void)cudaGraphExecDestroy(executable);
    EXPECT_EQ(cudaFree(device), cudaSuccess);
}

TEST(CudaHostRuntime, AHostPointerWhereDeviceMemoryIsExpectedIsRefused) {
    std::vector<float> host(8, 1.0f), other(8, 0.0f);
    EXPECT_EQ(cudaMemcpy(other.data(), host.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_NE(vae_cuda_host::last_refusal().find("destination"), std::string::npos) << vae_cuda_host::last_refusal();
    EXPECT_NE(vae_cuda_host::last_refusal().find("is not device memory"), std::string::npos);
    EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);
    EXPECT_EQ(cudaGetLastError(), cudaSuccess); // not sticky

    float *device = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&device), 8 * sizeof(float)), cudaSuccess);
    // Past the allocation's end.
    EXPECT_EQ(cudaMemcpy(device + 4, host.data(), 8 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    // Device memory where the kind says host memory.
    EXPECT_EQ(cudaMemcpy(device, device, 8 * sizeof(float), cudaMemcpyHostToDevice), cudaErrorInvalidValue);
    EXPECT_NE(vae_cuda_host::last_refusal().find("is device memory"), std::string::npos);
    ASSERT_EQ(cudaFree(device), cudaSuccess);
    // Freed: no longer device memory, and not freed twice.
    EXPECT_EQ(cudaMemcpy(host.data(), device, 8 * sizeof(float), cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
    EXPECT_EQ(cudaMemset(device, 0, 8), cudaErrorInvalidValue);
    EXPECT_EQ(cudaFree(device), cudaErrorInvalidValue);
    EXPECT_NE(vae_cuda_host::last_refusal().find("not a live cudaMalloc allocation"), std::string::npos);
    EXPECT_EQ(cudaFree(host.data()), cudaErrorInvalidValue);
    (void)cudaGetLastError();
}

TEST(CudaHostRuntime, UnsafeCallsInvalidateACapture) {
    Stream stream;
    ASSERT_EQ(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    void *pointer = nullptr;
    EXPECT_EQ(cudaMalloc(&pointer, 16), cudaErrorStreamCaptureUnsupported);
    EXPECT_EQ(cudaStreamSynchronize(stream.get()), cudaErrorStreamCaptureUnsupported);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    EXPECT_EQ(cudaStreamIsCapturing(stream.get(), &status), cudaSuccess);
    EXPECT_EQ(status, cudaStreamCaptureStatusInvalidated);
    cudaGraph_t graph = nullptr;
    EXPECT_EQ(cudaStreamEndCapture(stream.get(), &graph), cudaErrorStreamCaptureInvalidated);
    EXPECT_EQ(graph, nullptr);
    (void)cudaGetLastError();
}

TEST(CudaHostRuntime, TheDeviceLooksLikeAnH100) {
    int count = 0;
    ASSERT_EQ(cudaGetDeviceCount(&count), cudaSuccess);
    EXPECT_EQ(count, 1);
    cudaDeviceProp properties;
    ASSERT_EQ(cudaGetDeviceProperties(&properties, 0), cudaSuccess);
    EXPECT_NE(std::string(properties.name).find("H100"), std::string::npos);
    EXPECT_EQ(properties.multiProcessorCount, 132);
    EXPECT_EQ(properties.sharedMemPerMultiprocessor, (size_t)228 * 1024);
    EXPECT_EQ(properties.major * 10 + properties.minor, 90);
}

TEST(CudaHostCublas, GemmChecksItsArgumentsAndComputesColumnMajor) {
    cublasHandle_t handle = nullptr;
    ASSERT_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
    // A [2, 3] column-major, B [3, 2]: C = A B [2, 2].
    const std::vector<float> a = {1, 4, 2, 5, 3, 6}, b = {1, 0, 1, 0, 1, 1};
    float *da = nullptr, *db = nullptr, *dc = nullptr;
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&da), a.size() * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&db), b.size() * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&dc), 4 * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(db, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    const float one = 1.0f, zero = 0.0f;
    // C starts as NaN bytes: beta 0 must not read it.
    ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, da, 2, db, 3, &zero, dc, 2),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(dc, 4), (std::vector<float>{4, 10, 5, 11}));
    // lda less than A's rows.
    EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, da, 1, db, 3, &zero, dc, 2),
              CUBLAS_STATUS_INVALID_VALUE);
    // A host matrix.
    EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, a.data(), 2, db, 3, &zero, dc, 2),
              CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_NE(vae_cuda_host::last_refusal().find("not in one live device allocation"), std::string::npos);
    // B's extent past its allocation (ldb 4 over 2 columns needs 7 floats).
    EXPECT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 3, &one, da, 2, db, 4, &zero, dc, 2),
              CUBLAS_STATUS_INVALID_VALUE);
    (void)cudaGetLastError();
    // TF32: operands rounded to 10 mantissa bits.
    ASSERT_EQ(cublasSetMathMode(handle, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    const std::vector<float> fine = {1.0f + 1.0f / 4096, 0, 0, 0, 0, 0};
    ASSERT_EQ(cudaMemcpy(da, fine.data(), fine.size() * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, da, 1, da, 1, &zero, dc, 1),
              CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(download(dc, 1)[0], 1.0f);
    EXPECT_EQ(cublasDestroy(handle), CUBLAS_STATUS_SUCCESS);
    for (float *pointer : {da, db, dc}) EXPECT_EQ(cudaFree(pointer), cudaSuccess);
}

// The trainer's use of the backend: an Adam step captured once and replayed
// matches the same steps run eagerly (the step is read from device memory;
// taken by value, every replay would repeat the captured step's schedule).
TEST(CudaHostBackend, AGraphOfAdamStepsMatchesEagerSteps) {
    ASSERT_TRUE(vae_backend_cuda_available());
    vae_backend *cuda = nullptr;
    ASSERT_EQ(vae_backend_create_cuda(&cuda, VAE_PRECISION_FP32), VAE_OK) << vae_last_error();
    EXPECT_NE(std::string(cuda->device_name).find("H100"), std::string::npos) << cuda->device_name;
    const size_t count = 700;
    vae_adam_settings settings{};
    settings.lr = 0.01f;
    settings.lr_min = 0.001f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    settings.lr_schedule = VAE_LR_COSINE;
    settings.warmup_steps = 2;
    settings.total_steps = 6;
    std::vector<float> params(count), grads(count);
    for (size_t i = 0; i < count; ++i) {
        params[i] = std::sin((float)i);
        grads[i] = std::cos(0.3f * (float)i);
    }
    const int steps = 4;
    std::vector<float> results[2];
    vae_step_counter counters[2];
    for (int graph_run = 0; graph_run < 2; ++graph_run) {
        float *p = nullptr, *g = nullptr, *m = nullptr, *v = nullptr, *norm = nullptr;
        vae_step_counter *counter = nullptr;
        for (float **buffer : {&p, &g, &m, &v})
            ASSERT_EQ(vae_backend_alloc(cuda, count * sizeof(float), reinterpret_cast<void **>(buffer)), VAE_OK);
        ASSERT_EQ(vae_backend_alloc(cuda, sizeof(float), reinterpret_cast<void **>(&norm)), VAE_OK);
        ASSERT_EQ(vae_backend_alloc(cuda, sizeof *counter, reinterpret_cast<void **>(&counter)), VAE_OK);
        const vae_step_counter zero_counter{};
        const std::vector<float> zeros(count, 0.0f);
        ASSERT_EQ(vae_backend_copy_to_device(cuda, p, params.data(), count * sizeof(float)), VAE_OK);
        ASSERT_EQ(vae_backend_copy_to_device(cuda, g, grads.data(), count * sizeof(float)), VAE_OK);
        ASSERT_EQ(vae_backend_copy_to_device(cuda, m, zeros.data(), count * sizeof(float)), VAE_OK);
        ASSERT_EQ(vae_backend_copy_to_device(cuda, v, zeros.data(), count * sizeof(float)), VAE_OK);
        ASSERT_EQ(vae_backend_copy_to_device(cuda, counter, &zero_counter, sizeof zero_counter), VAE_OK);
        auto step = [&] {
            EXPECT_EQ(vae_backend_sum_of_squares(cuda, g, count, norm), VAE_OK) << vae_last_error();
            EXPECT_EQ(vae_backend_adam_step(cuda, p, g, m, v, count, &settings, norm, counter), VAE_OK)
                << vae_last_error();
        };
        if (graph_run) {
            ASSERT_EQ(vae_backend_graph_capture_begin(cuda), VAE_OK) << vae_last_error();
            step();
            void *graph = nullptr;
            ASSERT_EQ(vae_backend_graph_capture_end(cuda, &graph), VAE_OK) << vae_last_error();
            for (int i = 0; i < steps; ++i) ASSERT_EQ(vae_backend_graph_launch(cuda, graph), VAE_OK);
            vae_backend_graph_destroy(cuda, graph);
        } else {
            for (int i = 0; i < steps; ++i) step();
        }
        results[graph_run].resize(count);
        ASSERT_EQ(vae_backend_copy_to_host(cuda, results[graph_run].data(), p, count * sizeof(float)), VAE_OK);
        ASSERT_EQ(vae_backend_copy_to_host(cuda, &counters[graph_run], counter, sizeof *counter), VAE_OK);
        for (void *buffer : std::initializer_list<void *>{p, g, m, v, norm, counter}) vae_backend_free(cuda, buffer);
    }
    EXPECT_EQ(counters[0].step, (uint64_t)steps);
    EXPECT_EQ(counters[1].step, (uint64_t)steps);
    EXPECT_EQ(results[1], results[0]) << "the replayed steps differ from the eager ones";
    vae_backend_destroy(cuda);
}

} // namespace
