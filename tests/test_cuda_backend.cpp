// The CUDA backend beyond operation parity (which is the table of
// tests/test_backend_ops.cpp): creation, argument checks, bitwise-repeatable
// runs and CUDA-graph replay, on fresh random inputs (the seed is printed; set
// VAE_TEST_SEED to repeat a run), at sizes that are not multiples of any block
// size. Without a usable GPU every test is skipped visibly.
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

TEST_F(CudaBackendTest, CapturedGraphReplaysLikeEagerSteps) {
    vae_backend *gpu = backend(1);
    ASSERT_TRUE(vae_backend_has_graphs(gpu));
    const size_t count = 4099, z_count = (size_t)kSamples * kRows * kLatent;
    std::vector<float> params_host = normal(count), grads_host = normal(count), zeros(count, 0.0f);
    Pair mu_logvar = upload(normal((size_t)kRows * 2 * kLatent));
    Pair grads = upload(grads_host);
    vae_noise_settings noise = {seed_, VAE_RANDOM_EPS, 0};
    vae_adam_settings settings = {};
    settings.lr = 0.01f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    settings.lr_schedule = VAE_LR_CONSTANT;
    settings.clip_norm = 5.0f;
    // A cuBLAS GEMM in the graph too (the captured training step has them).
    Pair x = upload(normal((size_t)kRows * kIn)), weight = upload(normal((size_t)kOut * kIn, 0.1f));
    Pair bias = upload(normal(kOut));
    const size_t y_count = (size_t)kRows * kOut;
    struct StepBuffers { Pair params, m, v, norm, z, kl, counter, y; };
    auto make = [&]() {
        return StepBuffers{upload(params_host), upload(zeros), upload(zeros), allocate_floats(1),
                           allocate_floats(z_count), allocate_floats(kRows), upload_counter(0),
                           allocate_floats(y_count)};
    };
    StepBuffers eager = make(), graphed = make();
    auto issue = [&](StepBuffers &buffers) -> vae_status {
        vae_step_counter *counter = buffers.counter.as<vae_step_counter>(1);
        vae_status status = vae_backend_reparam_kl_forward(gpu, mu_logvar.f(1), buffers.z.f(1), buffers.kl.f(1), kRows,
                                                         kLatent, kSamples, &noise, counter, nullptr, 0.0f);
        if (status == VAE_OK)
            status = vae_backend_linear_forward(gpu, x.f(1), weight.f(1), bias.f(1), buffers.y.f(1), kRows, kIn, kOut);
        if (status == VAE_OK) status = vae_backend_sum_of_squares(gpu, grads.f(1), count, buffers.norm.f(1));
        if (status == VAE_OK)
            status = vae_backend_adam_step(gpu, buffers.params.f(1), grads.f(1), buffers.m.f(1), buffers.v.f(1), count,
                                         &settings, buffers.norm.f(1), counter);
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
    for (auto member : {&StepBuffers::params, &StepBuffers::m, &StepBuffers::v, &StepBuffers::z, &StepBuffers::y}) {
        size_t floats = member == &StepBuffers::z ? z_count : member == &StepBuffers::y ? y_count : count;
        std::vector<float> a = download<float>(eager.*member, 1, floats), b = download<float>(graphed.*member, 1, floats);
        EXPECT_EQ(std::memcmp(a.data(), b.data(), floats * sizeof(float)), 0) << "graph replay differs from eager steps";
    }
    // The last replay drew the noise of step 2, not of step 0.
    Pair first_step_z = allocate_floats(z_count), kl = allocate_floats(kRows), step0 = upload_counter(0);
    ASSERT_EQ(vae_backend_reparam_kl_forward(gpu, mu_logvar.f(1), first_step_z.f(1), kl.f(1), kRows, kLatent, kSamples,
                                           &noise, step0.as<vae_step_counter>(1), nullptr, 0.0f),
              VAE_OK);
    EXPECT_GT(vae_test::relative_error(download<float>(first_step_z, 1, z_count), download<float>(graphed.z, 1, z_count)),
              1e-3);
}

}  // namespace
