// The CUDA backend beyond operation parity (which is the table of
// tests/test_backend_ops.cpp): creation, argument checks, bitwise-repeatable
// runs and CUDA-graph replay, on fresh random inputs (the seed is printed; set
// VAE_TEST_SEED to repeat a run), at sizes that are not multiples of any block
// size. Without a usable GPU every test is skipped visibly. The same file
// builds for the host execution target (tests/cuda_host,
// test_cuda_backend_cuda_host, VAE_CUDA_HOST_TARGET), where the backend is
// always there and a skip of the fixture's tests is a failure.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "backends/backend_cuda.h"
}

namespace {

// Sizes that divide no block size.
constexpr int kRows = 37, kIn = 101, kOut = 67, kLatent = 13, kSamples = 3;

uint64_t choose_seed() {
    const char *fixed = std::getenv("VAE_TEST_SEED");
    uint64_t seed = fixed ? std::strtoull(fixed, nullptr, 10) : ((uint64_t)std::random_device{}() << 32 | std::random_device{}());
    std::printf("[   SEED   ] VAE_TEST_SEED=%llu\n", (unsigned long long)seed);
    return seed;
}

// One buffer on each backend: side 0 is the CPU, side 1 the GPU.
struct Pair {
    void *side[2] = {nullptr, nullptr};
    float *f(int s) const { return static_cast<float *>(side[s]); }
    template <class T> T *as(int s) const { return static_cast<T *>(side[s]); }
};

class CudaBackendTest : public ::testing::Test {
  protected:
    void SetUp() override {
#ifdef VAE_CUDA_HOST_TARGET
        ASSERT_TRUE(vae_backend_cuda_available()) << "the host target's CUDA backend is not available";
#endif
        if (!vae_backend_cuda_available()) GTEST_SKIP() << "no CUDA GPU (vae_backend_cuda_available() is 0)";
        seed_ = choose_seed();
        RecordProperty("seed", std::to_string(seed_));
        ASSERT_EQ(vae_backend_create_cpu(&backends_[0]), VAE_OK) << vae_last_error();
        ASSERT_EQ(vae_backend_create_cuda(&backends_[1], VAE_PRECISION_FP32), VAE_OK) << vae_last_error();
        std::printf("[  DEVICE  ] %s\n", backends_[1]->device_name);
    }

    void TearDown() override {
        for (auto &allocation : allocations_) vae_backend_free(allocation.first, allocation.second);
        for (vae_backend *backend : backends_)
            if (backend) vae_backend_destroy(backend);
    }

    vae_backend *backend(int s) { return backends_[s]; }

    std::vector<float> normal(size_t count, float scale = 1.0f) {
        return vae_test::random_normal(count, seed_ + (++draws_), scale);
    }

    Pair allocate_bytes(size_t bytes) {
        Pair pair;
        for (int s = 0; s < 2; ++s) {
            void *pointer = nullptr;
            EXPECT_EQ(vae_backend_alloc(backend(s), bytes, &pointer), VAE_OK) << vae_last_error();
            pair.side[s] = pointer;
            allocations_.push_back({backend(s), pointer});
        }
        return pair;
    }
    // Floats filled with NaN, so an element an operation forgets to write
    // makes the comparison fail.
    Pair allocate_floats(size_t count) {
        Pair pair = allocate_bytes(count * sizeof(float));
        for (int s = 0; s < 2; ++s)
            EXPECT_EQ(vae_backend_fill(backend(s), pair.f(s), NAN, count), VAE_OK) << vae_last_error();
        return pair;
    }
    Pair upload_bytes(const void *host, size_t bytes) {
        Pair pair = allocate_bytes(bytes);
        for (int s = 0; s < 2; ++s)
            EXPECT_EQ(vae_backend_copy_to_device(backend(s), pair.side[s], host, bytes), VAE_OK)
                << vae_last_error();
        return pair;
    }
    template <class T> Pair upload(const std::vector<T> &values) {
        return upload_bytes(values.data(), values.size() * sizeof(T));
    }
    Pair upload_counter(uint64_t step) {
        vae_step_counter counter = {step, 0, 0};
        return upload_bytes(&counter, sizeof counter);
    }
    template <class T> std::vector<T> download(const Pair &pair, int s, size_t count) {
        std::vector<T> host(count);
        EXPECT_EQ(vae_backend_copy_to_host(backend(s), host.data(), pair.side[s], count * sizeof(T)), VAE_OK)
            << vae_last_error();
        return host;
    }
    uint64_t seed_ = 0;
    uint64_t draws_ = 0;
    vae_backend *backends_[2] = {nullptr, nullptr};
    std::vector<std::pair<vae_backend *, void *>> allocations_;
};

TEST(CudaBackendAvailability, CreateSucceedsOrFailsWithAClearMessage) {
    vae_backend *backend = nullptr;
    vae_status status = vae_backend_create_cuda(&backend, VAE_PRECISION_FP32);
    if (vae_backend_cuda_available()) {
        ASSERT_EQ(status, VAE_OK) << vae_last_error();
        EXPECT_EQ(std::string(backend->device_name).rfind("cuda:0 (", 0), 0u) << backend->device_name;
        vae_backend_destroy(backend);
    } else {
        EXPECT_EQ(status, VAE_ERROR_DEVICE);
        EXPECT_EQ(backend, nullptr);
        EXPECT_NE(std::string(vae_last_error()).find("CUDA"), std::string::npos) << vae_last_error();
        void *graph = reinterpret_cast<void *>(1);
        EXPECT_NE(vae_cuda_graph_capture_end(nullptr, &graph), VAE_OK);
        EXPECT_EQ(graph, nullptr);
    }
}

TEST_F(CudaBackendTest, RejectsBadArguments) {
    vae_backend *gpu = backend(1);
    EXPECT_EQ(vae_backend_linear_forward(gpu, nullptr, nullptr, nullptr, nullptr, 0, kIn, kOut),
              VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("rows 0"), std::string::npos) << vae_last_error();
    vae_backend *other = nullptr;
    EXPECT_EQ(vae_backend_create_cuda(&other, (vae_precision)7), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_cuda_graph_capture_begin(backend(0)), VAE_ERROR_INVALID_ARGUMENT) << "the CPU backend has no graphs";
}

// train.precision = bf16: the GPU's linear layer (its bfloat16 conversion
// kernel, then cublasGemmEx with float accumulation) against the CPU's
// emulation, at a real model's size (784 -> 512, 300 rows, so the conversion
// runs on many blocks). Each output may differ by float summation order only:
// 1e-5 of the sum of |products| it adds. fp32 GEMMs differ from the emulation
// by far more, which the test checks too, so a GPU that skipped the rounding
// (or rounded otherwise) fails.
TEST(CudaBackendBfloat16, LinearLayerMatchesTheCpuEmulation) {
    if (!vae_backend_cuda_available()) GTEST_SKIP() << "no CUDA GPU (vae_backend_cuda_available() is 0)";
    const int rows = 300, in = 784, out = 512;
    const uint64_t seed = choose_seed();
    std::vector<float> x = vae_test::random_normal((size_t)rows * in, seed + 1);
    std::vector<float> weight = vae_test::random_normal((size_t)out * in, seed + 2, 0.05f);
    std::vector<float> bias = vae_test::random_normal(out, seed + 3), dy = vae_test::random_normal((size_t)rows * out, seed + 4);
    vae_backend *sides[3] = {nullptr, nullptr, nullptr}; // CPU bf16, GPU bf16, CPU fp32
    ASSERT_EQ(vae_backend_create_cpu_precision(&sides[0], VAE_PRECISION_BF16), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_create_cuda(&sides[1], VAE_PRECISION_BF16), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_create_cpu(&sides[2]), VAE_OK) << vae_last_error();
    std::vector<float> results[3][3]; // y, dx, dweight per side
    for (int s = 0; s < 3; ++s) {
        vae_backend *backend = sides[s];
        auto upload = [&](const std::vector<float> &host) {
            void *device = nullptr;
            EXPECT_EQ(vae_backend_alloc(backend, host.size() * sizeof(float), &device), VAE_OK) << vae_last_error();
            EXPECT_EQ(vae_backend_copy_to_device(backend, device, host.data(), host.size() * sizeof(float)), VAE_OK);
            return static_cast<float *>(device);
        };
        float *x_d = upload(x), *weight_d = upload(weight), *bias_d = upload(bias), *dy_d = upload(dy);
        float *y_d = upload(std::vector<float>((size_t)rows * out, NAN)), *dx_d = upload(std::vector<float>((size_t)rows * in, NAN));
        float *dweight_d = upload(std::vector<float>((size_t)out * in, NAN)), *dbias_d = upload(std::vector<float>(out, NAN));
        ASSERT_EQ(vae_backend_linear_forward(backend, x_d, weight_d, bias_d, y_d, rows, in, out), VAE_OK) << vae_last_error();
        ASSERT_EQ(vae_backend_linear_backward(backend, x_d, weight_d, dy_d, dx_d, dweight_d, dbias_d, rows, in, out), VAE_OK)
            << vae_last_error();
        const float *outputs[3] = {y_d, dx_d, dweight_d};
        const size_t counts[3] = {(size_t)rows * out, (size_t)rows * in, (size_t)out * in};
        for (int o = 0; o < 3; ++o) {
            results[s][o].resize(counts[o]);
            ASSERT_EQ(vae_backend_copy_to_host(backend, results[s][o].data(), outputs[o], counts[o] * sizeof(float)), VAE_OK);
        }
        for (float *pointer : {x_d, weight_d, bias_d, dy_d, y_d, dx_d, dweight_d, dbias_d}) vae_backend_free(backend, pointer);
    }
    // Sums of |products| per output, from the rounded operands, in double.
    auto rounded = [](float value) { return std::fabs((double)vae_round_to_bfloat16(value)); };
    std::vector<double> bounds[3] = {std::vector<double>((size_t)rows * out, 0.0), std::vector<double>((size_t)rows * in, 0.0),
                                     std::vector<double>((size_t)out * in, 0.0)};
    for (int r = 0; r < rows; ++r)
        for (int o = 0; o < out; ++o)
            for (int i = 0; i < in; ++i) {
                const double xw = rounded(x[(size_t)r * in + i]) * rounded(weight[(size_t)o * in + i]);
                const double dyw = rounded(dy[(size_t)r * out + o]) * rounded(weight[(size_t)o * in + i]);
                const double dyx = rounded(dy[(size_t)r * out + o]) * rounded(x[(size_t)r * in + i]);
                bounds[0][(size_t)r * out + o] += xw;
                bounds[1][(size_t)r * in + i] += dyw;
                bounds[2][(size_t)o * in + i] += dyx;
            }
    for (int r = 0; r < rows; ++r)
        for (int o = 0; o < out; ++o) bounds[0][(size_t)r * out + o] += std::fabs((double)bias[o]);
    const char *names[3] = {"y", "dx", "dweight"};
    for (int o = 0; o < 3; ++o) {
        double worst_gpu = 0, worst_fp32 = 0;
        for (size_t i = 0; i < bounds[o].size(); ++i) {
            const double bound = 1e-5 * bounds[o][i] + 1e-30;
            worst_gpu = std::max(worst_gpu, std::fabs((double)results[1][o][i] - results[0][o][i]) / bound);
            worst_fp32 = std::max(worst_fp32, std::fabs((double)results[2][o][i] - results[0][o][i]) / bound);
        }
        std::printf("bf16 %s: GPU vs CPU emulation %.3g of the bound, fp32 vs emulation %.3g\n", names[o], worst_gpu,
                    worst_fp32);
        EXPECT_LE(worst_gpu, 1.0) << names[o];
        EXPECT_GT(worst_fp32, 10.0) << names[o] << ": the bound would not tell bf16 from fp32";
    }
    for (vae_backend *backend : sides) vae_backend_destroy(backend);
}

// The bf16 operand scratch cannot grow inside a graph capture (no allocation
// there): a capture before any eager bf16 GEMM is refused with a message that
// says what to do, and after one eager run the captured GEMM replays it bit
// for bit.
TEST(CudaBackendBfloat16, CaptureNeedsOneEagerRunAndThenReplaysIt) {
    if (!vae_backend_cuda_available()) GTEST_SKIP() << "no CUDA GPU (vae_backend_cuda_available() is 0)";
    const int rows = 130, in = 300, out = 70;
    const uint64_t seed = choose_seed();
    vae_backend *gpu = nullptr;
    ASSERT_EQ(vae_backend_create_cuda(&gpu, VAE_PRECISION_BF16), VAE_OK) << vae_last_error();
    std::vector<void *> allocations;
    auto upload = [&](const std::vector<float> &host) {
        void *device = nullptr;
        EXPECT_EQ(vae_backend_alloc(gpu, host.size() * sizeof(float), &device), VAE_OK) << vae_last_error();
        EXPECT_EQ(vae_backend_copy_to_device(gpu, device, host.data(), host.size() * sizeof(float)), VAE_OK);
        allocations.push_back(device);
        return static_cast<float *>(device);
    };
    float *x = upload(vae_test::random_normal((size_t)rows * in, seed + 1));
    float *weight = upload(vae_test::random_normal((size_t)out * in, seed + 2, 0.05f));
    float *bias = upload(vae_test::random_normal(out, seed + 3));
    float *y = upload(std::vector<float>((size_t)rows * out, NAN));
    auto read_y = [&] {
        std::vector<float> host((size_t)rows * out);
        EXPECT_EQ(vae_backend_copy_to_host(gpu, host.data(), y, host.size() * sizeof(float)), VAE_OK) << vae_last_error();
        return host;
    };

    ASSERT_EQ(vae_backend_graph_capture_begin(gpu), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_backend_linear_forward(gpu, x, weight, bias, y, rows, in, out), VAE_ERROR_DEVICE);
    EXPECT_NE(std::string(vae_last_error()).find("run the captured work once eagerly first"), std::string::npos)
        << vae_last_error();
    void *refused = nullptr;
    vae_backend_graph_capture_end(gpu, &refused);  // may fail: the capture is abandoned either way
    vae_backend_graph_destroy(gpu, refused);

    ASSERT_EQ(vae_backend_linear_forward(gpu, x, weight, bias, y, rows, in, out), VAE_OK) << vae_last_error();
    const std::vector<float> eager = read_y();
    ASSERT_EQ(vae_backend_fill(gpu, y, NAN, (size_t)rows * out), VAE_OK) << vae_last_error();
    void *graph = nullptr;
    ASSERT_EQ(vae_backend_graph_capture_begin(gpu), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_linear_forward(gpu, x, weight, bias, y, rows, in, out), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_graph_capture_end(gpu, &graph), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_graph_launch(gpu, graph), VAE_OK) << vae_last_error();
    const std::vector<float> replayed = read_y();
    EXPECT_EQ(std::memcmp(eager.data(), replayed.data(), eager.size() * sizeof(float)), 0)
        << "the replayed bf16 GEMM differs from the eager one";
    EXPECT_TRUE(std::isfinite(replayed[0]) && std::isfinite(replayed.back()));
    vae_backend_graph_destroy(gpu, graph);
    for (void *pointer : allocations) vae_backend_free(gpu, pointer);
    vae_backend_destroy(gpu);
}

// Runs a chain of GPU operations and returns every output's bytes.
std::vector<float> run_gpu_chain(vae_backend *gpu, const std::vector<float> &inputs, uint64_t seed) {
    std::vector<float> results;
    auto check = [](vae_status status) {
        if (status != VAE_OK) throw std::runtime_error(vae_last_error());
    };
    const size_t in_count = (size_t)kRows * kIn, weight_count = (size_t)kOut * kIn;
    std::vector<void *> allocations;
    auto allocate = [&](size_t floats) {
        void *pointer = nullptr;
        check(vae_backend_alloc(gpu, floats * sizeof(float), &pointer));
        allocations.push_back(pointer);
        return static_cast<float *>(pointer);
    };
    float *x = allocate(in_count), *weight = allocate(weight_count), *y = allocate((size_t)kRows * kOut);
    float *dweight = allocate(weight_count), *dbias = allocate(kOut), *dx = allocate(in_count);
    float *norm = allocate(1), *kl = allocate(kRows), *z = allocate((size_t)kSamples * kRows * kLatent);
    float *logp = allocate((size_t)kSamples * kRows), *result = allocate(kRows);
    float *dmu_logvar = allocate((size_t)kRows * 2 * kLatent);
    vae_step_counter counter_host = {2, 0, 0};
    auto *counter = reinterpret_cast<vae_step_counter *>(allocate(sizeof(vae_step_counter) / sizeof(float)));
    check(vae_backend_copy_to_device(gpu, counter, &counter_host, sizeof counter_host));
    check(vae_backend_copy_to_device(gpu, x, inputs.data(), in_count * sizeof(float)));
    check(vae_backend_copy_to_device(gpu, weight, inputs.data() + in_count, weight_count * sizeof(float)));
    check(vae_backend_linear_forward(gpu, x, weight, nullptr, y, kRows, kIn, kOut));
    check(vae_backend_linear_backward(gpu, x, weight, y, dx, dweight, dbias, kRows, kIn, kOut));
    check(vae_backend_sum_of_squares(gpu, dweight, weight_count, norm));
    // tanh of y's first rows*2*latent values as [mu | logvar].
    vae_noise_settings noise = {seed, VAE_RANDOM_EPS, 0};
    float *mu_logvar = allocate((size_t)kRows * 2 * kLatent);
    check(vae_backend_activation_forward(gpu, VAE_ACTIVATION_TANH, y, mu_logvar, (size_t)kRows * 2 * kLatent));
    check(vae_backend_reparam_kl_forward(gpu, mu_logvar, z, kl, kRows, kLatent, kSamples, &noise, counter, nullptr, 0.0f));
    // z as the logits of a Bernoulli likelihood over kLatent "pixels" of 0.5.
    float *targets = allocate((size_t)kRows * kLatent);
    check(vae_backend_fill(gpu, targets, 0.5f, (size_t)kRows * kLatent));
    float *logits = allocate((size_t)kSamples * kRows * kLatent);
    check(vae_backend_copy(gpu, logits, z, (size_t)kSamples * kRows * kLatent * sizeof(float)));
    check(vae_backend_likelihood(gpu, VAE_LIKELIHOOD_BERNOULLI, targets, logits, logp, kRows, kSamples, kLatent, 0.0f, 1));
    check(vae_backend_reparam_kl_backward(gpu, mu_logvar, z, logits, dmu_logvar, kRows, kLatent, kSamples, 1.0f, 0,
                                        counter, 0.0f));
    check(vae_backend_importance_log_mean(gpu, logp, mu_logvar, z, result, kRows, kLatent, kSamples, 0.0f));
    auto append = [&](const float *device, size_t floats) {
        std::vector<float> host(floats);
        check(vae_backend_copy_to_host(gpu, host.data(), device, floats * sizeof(float)));
        results.insert(results.end(), host.begin(), host.end());
    };
    append(y, (size_t)kRows * kOut);
    append(dweight, weight_count);
    append(dbias, kOut);
    append(dx, in_count);
    append(norm, 1);
    append(z, (size_t)kSamples * kRows * kLatent);
    append(kl, kRows);
    append(logits, (size_t)kSamples * kRows * kLatent);
    append(logp, (size_t)kSamples * kRows);
    append(dmu_logvar, (size_t)kRows * 2 * kLatent);
    append(result, kRows);
    for (void *pointer : allocations) vae_backend_free(gpu, pointer);
    return results;
}

TEST_F(CudaBackendTest, RunsAreBitwiseRepeatable) {
    std::vector<float> inputs = normal((size_t)kRows * kIn + (size_t)kOut * kIn, 0.3f);
    std::vector<float> first, second;
    ASSERT_NO_THROW(first = run_gpu_chain(backend(1), inputs, seed_));
    ASSERT_NO_THROW(second = run_gpu_chain(backend(1), inputs, seed_));
    ASSERT_EQ(first.size(), second.size());
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0)
        << "two runs of the same operations differ";
    for (float value : first) ASSERT_TRUE(std::isfinite(value));
}

// A miniature training step at real-model sizes (several blocks per kernel,
// grid-stride loops wrapping) with every kernel the training step uses:
// gather with dynamic binarisation, GEMMs with bias add, activation forward
// and backward, the reparameterisation and KL forward and backward, the
// likelihood with its gradient, the loss accumulator, the bias gradient,
// device copies and fills, the gradient norm and Adam. Three eager steps
// against three replays of one captured step: bitwise equal, and the step
// counter in device memory moves the random numbers on.
TEST_F(CudaBackendTest, CapturedGraphReplaysLikeEagerSteps) {
    vae_backend *gpu = backend(1);
    ASSERT_TRUE(vae_backend_has_graphs(gpu));
    const int rows = 300, dim = 1003, hidden = 301, latent = 300, samples = 1;
    const int dataset_rows = 2 * rows, steps_per_epoch = 2;
    const size_t weight_count = (size_t)hidden * dim;

    std::vector<uint8_t> bytes((size_t)dataset_rows * dim);
    std::mt19937_64 generator(seed_ + 2000);
    for (auto &value : bytes) value = (uint8_t)(generator() & 0xff);
    std::vector<int32_t> permutation(dataset_rows);
    for (int i = 0; i < dataset_rows; ++i) permutation[i] = i;
    std::shuffle(permutation.begin(), permutation.end(), generator);
    Pair dataset = upload(bytes), order = upload(permutation);
    // The data set on the GPU as one segment, as gather_batch takes it.
    const int64_t first_row[2] = {0, dataset_rows};
    const void *segment_values[1] = {dataset.side[1]};
    const vae_row_segments gpu_rows = {1, first_row, segment_values};
    vae_gather_settings gather = {};
    gather.dtype = VAE_DTYPE_U8;
    gather.scale = 1.0f / 255.0f;
    gather.binarize = VAE_BINARIZE_DYNAMIC;
    gather.seed = seed_ ^ 0x5bd1e995u;
    gather.random_purpose = VAE_RANDOM_BINARIZE;
    gather.steps_per_epoch = steps_per_epoch;

    std::vector<float> weight1_host = normal(weight_count, 0.03f), zeros(weight_count, 0.0f);
    Pair bias1 = upload(normal(hidden, 0.1f)), weight2 = upload(normal((size_t)dim * hidden, 0.05f));
    Pair bias2 = upload(normal(dim, 0.1f));
    Pair mu_logvar = upload(normal((size_t)rows * 2 * latent, 0.5f)), dz = upload(normal((size_t)rows * latent));
    vae_noise_settings noise = {seed_, VAE_RANDOM_EPS, 0};
    vae_adam_settings settings = {};
    settings.lr = 0.01f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    settings.lr_schedule = VAE_LR_CONSTANT;
    settings.clip_norm = 5.0f;

    struct StepBuffers {
        Pair weight1, m, v, norm, x, h_pre, h, logits, saved_gradient, logp, z, kl, dmu_logvar, dh, dweight1, dbias1,
            dweight2, dbias2, accumulator, counter;
    };
    auto make = [&]() {
        StepBuffers b{upload(weight1_host), upload(zeros), upload(zeros), allocate_floats(1),
                      allocate_floats((size_t)rows * dim), allocate_floats((size_t)rows * hidden),
                      allocate_floats((size_t)rows * hidden), allocate_floats((size_t)rows * dim),
                      allocate_floats((size_t)rows * dim), allocate_floats(rows),
                      allocate_floats((size_t)rows * latent), allocate_floats(rows),
                      allocate_floats((size_t)rows * 2 * latent), allocate_floats((size_t)rows * hidden),
                      allocate_floats(weight_count), allocate_floats(hidden),
                      allocate_floats((size_t)dim * hidden), allocate_floats(dim),
                      allocate_bytes(VAE_LOSS_SLOTS * sizeof(double)), upload_counter(0)};
        return b;
    };
    StepBuffers eager = make(), graphed = make();
    auto issue = [&](StepBuffers &b) -> vae_status {
        vae_step_counter *counter = b.counter.as<vae_step_counter>(1);
        vae_status status = vae_backend_fill(gpu, b.accumulator.f(1), 0.0f, 2 * VAE_LOSS_SLOTS);
        if (status == VAE_OK)
            status = vae_backend_gather_batch(gpu, &gpu_rows, order.as<int32_t>(1), dim, rows, &gather, counter, b.x.f(1));
        if (status == VAE_OK)
            status = vae_backend_linear_forward(gpu, b.x.f(1), b.weight1.f(1), bias1.f(1), b.h_pre.f(1), rows, dim, hidden);
        if (status == VAE_OK)
            status = vae_backend_activation_forward(gpu, VAE_ACTIVATION_TANH, b.h_pre.f(1), b.h.f(1), (size_t)rows * hidden);
        if (status == VAE_OK)
            status = vae_backend_linear_forward(gpu, b.h.f(1), weight2.f(1), bias2.f(1), b.logits.f(1), rows, hidden, dim);
        if (status == VAE_OK)
            status = vae_backend_reparam_kl_forward(gpu, mu_logvar.f(1), b.z.f(1), b.kl.f(1), rows, latent, samples, &noise,
                                             counter, nullptr, 0.0f);
        if (status == VAE_OK)
            status = vae_backend_likelihood(gpu, VAE_LIKELIHOOD_BERNOULLI, b.x.f(1), b.logits.f(1), b.logp.f(1), rows,
                                     samples, dim, 0.0f, 1);
        if (status == VAE_OK)
            status = vae_backend_accumulate_loss(gpu, b.logp.f(1), b.kl.f(1), rows, samples, 1.0f, 0, counter,
                                          b.accumulator.as<double>(1));
        if (status == VAE_OK)
            status = vae_backend_copy(gpu, b.saved_gradient.f(1), b.logits.f(1), sizeof(float) * (size_t)rows * dim);
        if (status == VAE_OK)
            status = vae_backend_linear_backward(gpu, b.h.f(1), weight2.f(1), b.logits.f(1), b.dh.f(1), b.dweight2.f(1),
                                          b.dbias2.f(1), rows, hidden, dim);
        if (status == VAE_OK)
            status = vae_backend_activation_backward(gpu, VAE_ACTIVATION_TANH, b.h_pre.f(1), b.dh.f(1), b.dh.f(1),
                                              (size_t)rows * hidden);
        if (status == VAE_OK)
            status = vae_backend_linear_backward(gpu, b.x.f(1), b.weight1.f(1), b.dh.f(1), nullptr, b.dweight1.f(1),
                                          b.dbias1.f(1), rows, dim, hidden);
        if (status == VAE_OK)
            status = vae_backend_reparam_kl_backward(gpu, mu_logvar.f(1), b.z.f(1), dz.f(1), b.dmu_logvar.f(1), rows, latent,
                                              samples, 1.0f, 10, counter, 0.0f);
        if (status == VAE_OK) status = vae_backend_sum_of_squares(gpu, b.dweight1.f(1), weight_count, b.norm.f(1));
        if (status == VAE_OK)
            status = vae_backend_adam_step(gpu, b.weight1.f(1), b.dweight1.f(1), b.m.f(1), b.v.f(1), weight_count, &settings,
                                    b.norm.f(1), counter);
        return status;
    };
    const int steps = 3;
    for (int step = 0; step < steps; ++step) ASSERT_EQ(issue(eager), VAE_OK) << vae_last_error();

    ASSERT_EQ(vae_backend_graph_capture_begin(gpu), VAE_OK) << vae_last_error();
    vae_status issued = issue(graphed);
    void *graph = nullptr;
    ASSERT_EQ(vae_backend_graph_capture_end(gpu, &graph), VAE_OK) << vae_last_error();
    ASSERT_EQ(issued, VAE_OK);
    ASSERT_NE(graph, nullptr);
    // Capturing ran nothing.
    EXPECT_EQ(download<vae_step_counter>(graphed.counter, 1, 1)[0].step, 0u);
    for (int step = 0; step < steps; ++step) ASSERT_EQ(vae_backend_graph_launch(gpu, graph), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_synchronize(gpu), VAE_OK) << vae_last_error();
    vae_backend_graph_destroy(gpu, graph);

    EXPECT_EQ(download<vae_step_counter>(graphed.counter, 1, 1)[0].step, (uint64_t)steps);
    struct Compared { Pair StepBuffers::*member; size_t floats; const char *name; };
    const Compared compared[] = {
        {&StepBuffers::weight1, weight_count, "weight1 after Adam"}, {&StepBuffers::m, weight_count, "adam m"},
        {&StepBuffers::v, weight_count, "adam v"}, {&StepBuffers::norm, 1, "gradient norm"},
        {&StepBuffers::x, (size_t)rows * dim, "gathered batch"}, {&StepBuffers::h, (size_t)rows * hidden, "activation"},
        {&StepBuffers::saved_gradient, (size_t)rows * dim, "likelihood gradient"}, {&StepBuffers::logp, (size_t)rows, "log p"},
        {&StepBuffers::z, (size_t)rows * latent, "z"}, {&StepBuffers::kl, (size_t)rows, "kl"},
        {&StepBuffers::dmu_logvar, (size_t)rows * 2 * latent, "d mu_logvar"},
        {&StepBuffers::dh, (size_t)rows * hidden, "activation backward"},
        {&StepBuffers::dweight1, weight_count, "d weight1"}, {&StepBuffers::dbias1, (size_t)hidden, "d bias1"},
        {&StepBuffers::dweight2, (size_t)dim * hidden, "d weight2"}, {&StepBuffers::dbias2, (size_t)dim, "d bias2"}};
    for (const Compared &c : compared) {
        std::vector<float> a = download<float>(eager.*c.member, 1, c.floats);
        std::vector<float> b = download<float>(graphed.*c.member, 1, c.floats);
        EXPECT_EQ(std::memcmp(a.data(), b.data(), c.floats * sizeof(float)), 0)
            << c.name << ": graph replay differs from eager steps";
        size_t finite = 0;
        for (float value : a) finite += std::isfinite(value) ? 1 : 0;
        EXPECT_EQ(finite, c.floats) << c.name << " has values never written or not finite";
    }
    std::vector<double> eager_loss = download<double>(eager.accumulator, 1, VAE_LOSS_SLOTS);
    std::vector<double> graphed_loss = download<double>(graphed.accumulator, 1, VAE_LOSS_SLOTS);
    EXPECT_EQ(std::memcmp(eager_loss.data(), graphed_loss.data(), VAE_LOSS_SLOTS * sizeof(double)), 0)
        << "loss accumulator: graph replay differs from eager steps";
    EXPECT_EQ(graphed_loss[VAE_LOSS_COUNT], (double)rows) << "the fill at the start of the step did not run";
    EXPECT_TRUE(std::isfinite(graphed_loss[VAE_LOSS_SUM_LOSS]));
    // The last replay drew the noise and binarisation of step 2, not step 0.
    Pair first_step_z = allocate_floats((size_t)rows * latent), kl = allocate_floats(rows), step0 = upload_counter(0);
    Pair first_step_x = allocate_floats((size_t)rows * dim);
    ASSERT_EQ(vae_backend_reparam_kl_forward(gpu, mu_logvar.f(1), first_step_z.f(1), kl.f(1), rows, latent, samples,
                                           &noise, step0.as<vae_step_counter>(1), nullptr, 0.0f),
              VAE_OK);
    ASSERT_EQ(vae_backend_gather_batch(gpu, &gpu_rows, order.as<int32_t>(1), dim, rows, &gather,
                                     step0.as<vae_step_counter>(1), first_step_x.f(1)),
              VAE_OK);
    EXPECT_GT(vae_test::relative_error(download<float>(first_step_z, 1, (size_t)rows * latent),
                                       download<float>(graphed.z, 1, (size_t)rows * latent)),
              1e-3);
    EXPECT_GT(vae_test::relative_error(download<float>(first_step_x, 1, (size_t)rows * dim),
                                       download<float>(graphed.x, 1, (size_t)rows * dim)),
              1e-3);
}

}  // namespace
