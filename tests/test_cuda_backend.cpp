// The CUDA backend against the CPU reference backend: every operation of the
// backend table on fresh random inputs (the seed is printed; set
// VAE_TEST_SEED to repeat a run), at sizes that are not multiples of any
// block size. Without a usable GPU every test is skipped visibly.
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
#include "vae_philox.h"
}

namespace {

// Normalised-error thresholds (vae_test::relative_error). A planted
// off-by-one (wrong row, column or sample) gives errors of order 1.
constexpr double kElementwiseTolerance = 1e-5;
constexpr double kGemmTolerance = 1e-5;
constexpr double kReductionTolerance = 1e-6;
constexpr double kDoubleTolerance = 1e-10;  // accumulators summed in double on both sides

// Sizes that divide no block size.
constexpr int kRows = 37, kIn = 101, kOut = 67, kLatent = 13, kSamples = 3, kDim = 101;

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
    std::vector<float> uniform(size_t count, float low, float high) {
        return vae_test::random_uniform(count, seed_ + (++draws_), low, high);
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
    // GPU result against the CPU reference.
    void expect_close(const Pair &pair, size_t count, double tolerance, const std::string &what) {
        std::vector<float> gpu = download<float>(pair, 1, count), cpu = download<float>(pair, 0, count);
        double error = vae_test::relative_error(gpu, cpu);
        EXPECT_LE(error, tolerance) << what << ": normalised error " << error;
    }
    // Runs an operation on both backends: call(backend, side).
    template <class F> void both(F call, const std::string &what) {
        for (int s = 0; s < 2; ++s) {
            vae_status status = call(backend(s), s);
            ASSERT_EQ(status, VAE_OK) << what << " on " << (s ? "cuda" : "cpu") << ": " << vae_last_error();
        }
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

TEST_F(CudaBackendTest, FillAndCopy) {
    Pair source = upload(normal(kDim * kRows));
    Pair filled = allocate_floats(kDim * kRows);
    both([&](vae_backend *b, int s) { return vae_backend_fill(b, filled.f(s), 0.25f, kDim * kRows); }, "fill");
    expect_close(filled, kDim * kRows, 0.0, "fill");
    both([&](vae_backend *b, int s) { return vae_backend_copy(b, filled.f(s), source.f(s), sizeof(float) * 50); }, "copy");
    std::vector<float> gpu = download<float>(filled, 1, kDim * kRows), host = download<float>(source, 1, kDim * kRows);
    EXPECT_EQ(std::memcmp(gpu.data(), host.data(), sizeof(float) * 50), 0);
    EXPECT_EQ(gpu[50], 0.25f) << "copy wrote past its byte count";
}

TEST_F(CudaBackendTest, LinearForwardMatchesCpu) {
    Pair x = upload(normal((size_t)kRows * kIn));
    Pair weight = upload(normal((size_t)kOut * kIn, 0.1f));
    Pair bias = upload(normal(kOut));
    Pair y = allocate_floats((size_t)kRows * kOut);
    both([&](vae_backend *b, int s) {
        return vae_backend_linear_forward(b, x.f(s), weight.f(s), bias.f(s), y.f(s), kRows, kIn, kOut);
    }, "linear_forward");
    expect_close(y, (size_t)kRows * kOut, kGemmTolerance, "y = x W^T + b");
}

TEST_F(CudaBackendTest, LinearBackwardMatchesCpu) {
    Pair x = upload(normal((size_t)kRows * kIn));
    Pair weight = upload(normal((size_t)kOut * kIn, 0.1f));
    Pair dy = upload(normal((size_t)kRows * kOut));
    Pair dx = allocate_floats((size_t)kRows * kIn);
    Pair dweight = allocate_floats((size_t)kOut * kIn);
    Pair dbias = allocate_floats(kOut);
    both([&](vae_backend *b, int s) {
        return vae_backend_linear_backward(b, x.f(s), weight.f(s), dy.f(s), dx.f(s), dweight.f(s), dbias.f(s), kRows, kIn,
                                       kOut);
    }, "linear_backward");
    expect_close(dx, (size_t)kRows * kIn, kGemmTolerance, "dx = dy W");
    expect_close(dweight, (size_t)kOut * kIn, kGemmTolerance, "dW = dy^T x");
    expect_close(dbias, kOut, kReductionTolerance, "db = column sums of dy");

    // Without dx (the first layer): the weight gradient is still right.
    Pair dweight_only = allocate_floats((size_t)kOut * kIn);
    both([&](vae_backend *b, int s) {
        return vae_backend_linear_backward(b, x.f(s), weight.f(s), dy.f(s), nullptr, dweight_only.f(s), dbias.f(s), kRows,
                                       kIn, kOut);
    }, "linear_backward without dx");
    expect_close(dweight_only, (size_t)kOut * kIn, kGemmTolerance, "dW without dx");
}

TEST_F(CudaBackendTest, ActivationsMatchCpu) {
    const size_t count = (size_t)kRows * kOut;
    Pair pre = upload(normal(count, 3.0f));
    Pair dpost_values = upload(normal(count));
    const char *names[] = {"relu", "tanh", "softplus", "gelu", "identity"};
    for (int activation = VAE_ACTIVATION_RELU; activation <= VAE_ACTIVATION_IDENTITY; ++activation) {
        SCOPED_TRACE(names[activation]);
        Pair post = allocate_floats(count), dpre = allocate_floats(count);
        both([&](vae_backend *b, int s) { return vae_backend_activation_forward(b, (vae_activation)activation, pre.f(s), post.f(s), count); },
             "activation_forward");
        expect_close(post, count, kElementwiseTolerance, "post = act(pre)");
        both([&](vae_backend *b, int s) {
            return vae_backend_activation_backward(b, (vae_activation)activation, pre.f(s), dpost_values.f(s), dpre.f(s), count);
        }, "activation_backward");
        expect_close(dpre, count, kElementwiseTolerance, "dpre = dpost act'(pre)");
        // In place (dpre aliases dpost), as the step uses it.
        Pair in_place = allocate_floats(count);
        both([&](vae_backend *b, int s) { return vae_backend_copy(b, in_place.f(s), dpost_values.f(s), count * sizeof(float)); },
             "copy");
        both([&](vae_backend *b, int s) {
            return vae_backend_activation_backward(b, (vae_activation)activation, pre.f(s), in_place.f(s), in_place.f(s), count);
        }, "activation_backward in place");
        std::vector<float> aliased = download<float>(in_place, 1, count), separate = download<float>(dpre, 1, count);
        EXPECT_EQ(std::memcmp(aliased.data(), separate.data(), count * sizeof(float)), 0) << "in place differs";
    }
}

TEST_F(CudaBackendTest, GatherBatchMatchesCpu) {
    const int dataset_rows = 120, steps_per_epoch = 3;  // 3 * 37 = 111 <= 120
    std::vector<uint8_t> bytes(dataset_rows * (size_t)kDim);
    std::mt19937_64 generator(seed_ + 1000);
    for (auto &value : bytes) value = (uint8_t)(generator() & 0xff);
    std::vector<float> values = uniform(dataset_rows * (size_t)kDim, 0.0f, 2.0f);  // scaled by 0.5 below
    std::vector<int32_t> permutation(dataset_rows);
    for (int i = 0; i < dataset_rows; ++i) permutation[i] = i;
    std::shuffle(permutation.begin(), permutation.end(), generator);
    Pair dataset_u8 = upload(bytes), dataset_f32 = upload(values), order = upload(permutation);
    const uint64_t step = 7;  // batch 7 % 3 = 1 of the epoch
    Pair counter = upload_counter(step);
    const char *modes[] = {"none", "static", "dynamic"};

    for (int dtype = VAE_DTYPE_U8; dtype <= VAE_DTYPE_F32; ++dtype) {
        for (int binarize = VAE_BINARIZE_NONE; binarize <= VAE_BINARIZE_DYNAMIC; ++binarize) {
            SCOPED_TRACE(std::string(dtype == VAE_DTYPE_U8 ? "u8 " : "f32 ") + modes[binarize]);
            vae_gather_settings settings = {};
            settings.dtype = dtype;
            settings.scale = dtype == VAE_DTYPE_U8 ? 1.0f / 255.0f : 0.5f;
            settings.binarize = binarize;
            settings.threshold = 0.5f;
            settings.seed = seed_ ^ 0x5bd1e995u;
            settings.random_purpose = VAE_RANDOM_BINARIZE;
            settings.steps_per_epoch = steps_per_epoch;
            const Pair &dataset = dtype == VAE_DTYPE_U8 ? dataset_u8 : dataset_f32;
            Pair x = allocate_floats((size_t)kRows * kDim);
            both([&](vae_backend *b, int s) {
                return vae_backend_gather_batch(b, dataset.side[s], order.as<int32_t>(s), kDim, kRows, &settings,
                                            counter.as<vae_step_counter>(s), x.f(s));
            }, "gather_batch");
            std::vector<float> gpu = download<float>(x, 1, (size_t)kRows * kDim), cpu = download<float>(x, 0, (size_t)kRows * kDim);
            int mismatches = 0, ones = 0;
            for (int r = 0; r < kRows; ++r) {
                int source = permutation[(step % steps_per_epoch) * kRows + r];
                for (int j = 0; j < kDim; ++j) {
                    size_t i = (size_t)r * kDim + j;
                    float scaled = dtype == VAE_DTYPE_U8 ? (float)bytes[(size_t)source * kDim + j] * settings.scale
                                                         : values[(size_t)source * kDim + j] * settings.scale;
                    if (binarize == VAE_BINARIZE_NONE) {
                        ASSERT_EQ(gpu[i], scaled) << "row " << r << " column " << j;
                    }
                    if (binarize == VAE_BINARIZE_STATIC) {
                        ASSERT_EQ(gpu[i], scaled > 0.5f ? 1.0f : 0.0f) << "row " << r << " column " << j;
                    }
                    if (binarize == VAE_BINARIZE_DYNAMIC) {
                        ASSERT_TRUE(gpu[i] == 0.0f || gpu[i] == 1.0f);
                        ones += gpu[i] == 1.0f;
                    }
                    if (binarize != VAE_BINARIZE_DYNAMIC) {
                        ASSERT_EQ(gpu[i], cpu[i]) << "row " << r << " column " << j;
                    } else if (gpu[i] != cpu[i]) {
                        // Only a uniform draw within rounding of x may differ.
                        float u[4];
                        vae_uniform4(settings.seed, vae_philox_subsequence(step, VAE_RANDOM_BINARIZE, (uint32_t)r),
                                     (uint64_t)(j / 4 * 4), u);
                        EXPECT_LT(std::fabs(u[j % 4] - scaled), 1e-6f) << "row " << r << " column " << j;
                        ++mismatches;
                    }
                }
            }
            EXPECT_LE(mismatches, 2);
            if (binarize == VAE_BINARIZE_DYNAMIC) {
                EXPECT_GT(ones, kRows * kDim / 10) << "dynamic binarisation gave almost no ones";
                EXPECT_LT(ones, kRows * kDim * 9 / 10) << "dynamic binarisation gave almost all ones";
            }
        }
    }
}

TEST_F(CudaBackendTest, NoiseStreamIsTheCpuPhiloxStream) {
    // mu = 0, logvar = 0: z = eps, at step counter.step + step_offset.
    std::vector<float> zeros((size_t)kRows * 2 * kLatent, 0.0f);
    Pair mu_logvar = upload(zeros);
    Pair counter = upload_counter(5);
    vae_noise_settings noise = {seed_, VAE_RANDOM_EVAL_EPS, 4};
    const size_t count = (size_t)kSamples * kRows * kLatent;
    Pair z = allocate_floats(count), kl = allocate_floats(kRows);
    both([&](vae_backend *b, int s) {
        return vae_backend_reparam_kl_forward(b, mu_logvar.f(s), z.f(s), kl.f(s), kRows, kLatent, kSamples, &noise,
                                          counter.as<vae_step_counter>(s), nullptr, 0.0f);
    }, "reparam_kl_forward");
    std::vector<float> gpu = download<float>(z, 1, count), cpu = download<float>(z, 0, count);
    double max_error = 0.0;
    for (int z_row = 0; z_row < kSamples * kRows; ++z_row) {
        for (int j = 0; j < kLatent; j += 4) {
            float expected[4];
            vae_normal4(noise.seed, vae_philox_subsequence(5 + 4, VAE_RANDOM_EVAL_EPS, (uint32_t)z_row), (uint64_t)j,
                        expected);
            for (int k = 0; k < 4 && j + k < kLatent; ++k) {
                size_t i = (size_t)z_row * kLatent + j + k;
                // __sincosf on the GPU: about 1e-6 of error per unit of |eps|.
                double tolerance = 1e-5 * std::max(1.0, std::fabs((double)expected[k]));
                ASSERT_NEAR(gpu[i], expected[k], tolerance) << "z row " << z_row << " column " << j + k;
                ASSERT_NEAR(cpu[i], expected[k], 1e-6 * std::max(1.0, std::fabs((double)expected[k])));
                max_error = std::max(max_error, std::fabs((double)gpu[i] - cpu[i]));
            }
        }
    }
    std::printf("[   INFO   ] largest |eps_gpu - eps_cpu| = %.3g\n", max_error);
    std::vector<float> kl_gpu = download<float>(kl, 1, kRows);
    for (float value : kl_gpu) EXPECT_EQ(value, 0.0f) << "KL of N(0,1) is 0";

    // Another step draws other numbers.
    Pair later = upload_counter(6);
    Pair z_later = allocate_floats(count);
    ASSERT_EQ(vae_backend_reparam_kl_forward(backend(1), mu_logvar.f(1), z_later.f(1), kl.f(1), kRows, kLatent,
                                                  kSamples, &noise, later.as<vae_step_counter>(1), nullptr, 0.0f),
              VAE_OK);
    std::vector<float> other = download<float>(z_later, 1, count);
    EXPECT_GT(vae_test::relative_error(other, gpu), 0.5);
}

TEST_F(CudaBackendTest, ReparamKlForwardAndBackwardMatchCpu) {
    std::vector<float> mu_logvar_host((size_t)kRows * 2 * kLatent);
    std::vector<float> mus = normal(mu_logvar_host.size()), logvars = uniform(mu_logvar_host.size(), -4.0f, 4.0f);
    for (int b = 0; b < kRows; ++b)
        for (int j = 0; j < kLatent; ++j) {
            mu_logvar_host[(size_t)b * 2 * kLatent + j] = mus[(size_t)b * kLatent + j];
            mu_logvar_host[(size_t)b * 2 * kLatent + kLatent + j] = logvars[(size_t)b * kLatent + j];
        }
    Pair mu_logvar = upload(mu_logvar_host);
    Pair counter = upload_counter(3);
    const size_t z_count = (size_t)kSamples * kRows * kLatent;
    Pair dz = upload(normal(z_count));
    Pair eps = upload(normal(z_count));
    vae_noise_settings noise = {seed_ + 17, VAE_RANDOM_EPS, 0};
    for (float clamp : {0.0f, 2.5f}) {
        for (bool override_eps : {false, true}) {
            SCOPED_TRACE("logvar_clamp " + std::to_string(clamp) + (override_eps ? " with eps_override" : ""));
            Pair z = allocate_floats(z_count), kl = allocate_floats(kRows);
            Pair dmu_logvar = allocate_floats((size_t)kRows * 2 * kLatent);
            both([&](vae_backend *b, int s) {
                return vae_backend_reparam_kl_forward(b, mu_logvar.f(s), z.f(s), kl.f(s), kRows, kLatent, kSamples, &noise,
                                                  counter.as<vae_step_counter>(s), override_eps ? eps.f(s) : nullptr,
                                                  clamp);
            }, "reparam_kl_forward");
            expect_close(z, z_count, override_eps ? 1e-6 : kElementwiseTolerance, "z");
            expect_close(kl, kRows, kReductionTolerance, "kl");
            // The CPU's z as input to both backwards: only the backward is compared.
            std::vector<float> cpu_z = download<float>(z, 0, z_count);
            ASSERT_EQ(vae_backend_copy_to_device(backend(1), z.f(1), cpu_z.data(), z_count * sizeof(float)), VAE_OK);
            both([&](vae_backend *b, int s) {
                return vae_backend_reparam_kl_backward(b, mu_logvar.f(s), z.f(s), dz.f(s), dmu_logvar.f(s), kRows, kLatent,
                                                   kSamples, 0.7f, 10, counter.as<vae_step_counter>(s), clamp);
            }, "reparam_kl_backward");
            expect_close(dmu_logvar, (size_t)kRows * 2 * kLatent, kElementwiseTolerance, "d[mu | logvar]");
            if (clamp > 0.0f) {
                std::vector<float> gradient = download<float>(dmu_logvar, 1, (size_t)kRows * 2 * kLatent);
                int clamped = 0;
                for (int b = 0; b < kRows; ++b)
                    for (int j = 0; j < kLatent; ++j)
                        if (std::fabs(logvars[(size_t)b * kLatent + j]) > clamp) {
                            ++clamped;
                            EXPECT_EQ(gradient[(size_t)b * 2 * kLatent + kLatent + j], 0.0f);
                        }
                EXPECT_GT(clamped, 0) << "the inputs exercise the clamp";
            }
        }
    }
}

TEST_F(CudaBackendTest, LikelihoodsMatchCpu) {
    Pair x = upload(uniform((size_t)kRows * kDim, 0.0f, 1.0f));
    const char *names[] = {"bernoulli", "gaussian", "gaussian_fixed"};
    for (int likelihood = VAE_LIKELIHOOD_BERNOULLI; likelihood <= VAE_LIKELIHOOD_GAUSSIAN_FIXED; ++likelihood) {
        for (int write_gradient = 0; write_gradient <= 1; ++write_gradient) {
            SCOPED_TRACE(std::string(names[likelihood]) + (write_gradient ? " with gradient" : ""));
            const int width = likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * kDim : kDim;
            const size_t count = (size_t)kSamples * kRows * width;
            std::vector<float> outputs = normal(count, 2.0f);
            Pair out = upload(outputs);
            Pair logp = allocate_floats((size_t)kSamples * kRows);
            both([&](vae_backend *b, int s) {
                return vae_backend_likelihood(b, (vae_likelihood)likelihood, x.f(s), out.f(s), logp.f(s), kRows, kSamples, kDim, -0.7f,
                                          write_gradient);
            }, "likelihood");
            expect_close(logp, (size_t)kSamples * kRows, kReductionTolerance, "log p per row");
            if (write_gradient) {
                expect_close(out, count, kElementwiseTolerance, "d loss / d outputs");
            } else {
                std::vector<float> untouched = download<float>(out, 1, count);
                EXPECT_EQ(std::memcmp(untouched.data(), outputs.data(), count * sizeof(float)), 0)
                    << "outputs changed without write_gradient";
            }
        }
    }
}

TEST_F(CudaBackendTest, AccumulateLossMatchesCpu) {
    Pair logp = upload(normal((size_t)kSamples * kRows, 50.0f));
    Pair kl = upload(uniform(kRows, 0.0f, 30.0f));
    Pair counter = upload_counter(3);
    std::vector<double> start = {1.5, -2.0, 3.25, 10.0};
    Pair accumulator = upload(start);
    for (int repeat = 0; repeat < 2; ++repeat)
        both([&](vae_backend *b, int s) {
            return vae_backend_accumulate_loss(b, logp.f(s), kl.f(s), kRows, kSamples, 0.8f, 10,
                                           counter.as<vae_step_counter>(s), accumulator.as<double>(s));
        }, "accumulate_loss");
    std::vector<double> gpu = download<double>(accumulator, 1, VAE_LOSS_SLOTS);
    std::vector<double> cpu = download<double>(accumulator, 0, VAE_LOSS_SLOTS);
    for (int slot = 0; slot < VAE_LOSS_SLOTS; ++slot)
        EXPECT_NEAR(gpu[slot], cpu[slot], kDoubleTolerance * std::max(1.0, std::fabs(cpu[slot]))) << "slot " << slot;
    EXPECT_EQ(gpu[VAE_LOSS_COUNT], 10.0 + 2 * kRows);
}

TEST_F(CudaBackendTest, ImportanceLogMeanMatchesCpu) {
    std::vector<float> mu_logvar_host = normal((size_t)kRows * 2 * kLatent);
    Pair mu_logvar = upload(mu_logvar_host);
    for (int samples : {kSamples, 300}) {  // 300: more samples than threads in a block
        for (float clamp : {0.0f, 0.5f}) {
            SCOPED_TRACE("samples " + std::to_string(samples) + " clamp " + std::to_string(clamp));
            Pair logp = upload(normal((size_t)samples * kRows, 20.0f));
            Pair z = upload(normal((size_t)samples * kRows * kLatent));
            Pair result = allocate_floats(kRows);
            both([&](vae_backend *b, int s) {
                return vae_backend_importance_log_mean(b, logp.f(s), mu_logvar.f(s), z.f(s), result.f(s), kRows, kLatent,
                                                   samples, clamp);
            }, "importance_log_mean");
            expect_close(result, kRows, kReductionTolerance, "log mean of importance weights");
        }
    }
}

TEST_F(CudaBackendTest, SumOfSquaresMatchesCpu) {
    for (size_t count : {(size_t)0, (size_t)5, (size_t)1000003}) {
        SCOPED_TRACE("count " + std::to_string(count));
        Pair values = upload(normal(count ? count : 1));
        Pair result = allocate_floats(1);
        both([&](vae_backend *b, int s) { return vae_backend_sum_of_squares(b, values.f(s), count, result.f(s)); },
             "sum_of_squares");
        expect_close(result, 1, kReductionTolerance, "sum of squares");
        if (count == 0) {
            EXPECT_EQ(download<float>(result, 1, 1)[0], 0.0f);
        }
    }
}

TEST_F(CudaBackendTest, AdamStepsMatchCpuAndSkipNonFiniteGradients) {
    const size_t count = 10007;
    Pair params = upload(normal(count));
    Pair grads = upload(normal(count));
    std::vector<float> zeros(count, 0.0f);
    Pair m = upload(zeros), v = upload(zeros);
    Pair norm = allocate_floats(1);
    Pair counter = upload_counter(0);
    for (int decoupled = 1; decoupled >= 0; --decoupled) {
        vae_adam_settings settings = {};
        settings.lr = 0.01f;
        settings.lr_min = 0.001f;
        settings.beta1 = 0.9f;
        settings.beta2 = 0.999f;
        settings.epsilon = 1e-8f;
        settings.weight_decay = 0.01f;
        settings.decoupled_weight_decay = decoupled;
        settings.lr_schedule = VAE_LR_COSINE;
        settings.warmup_steps = 2;
        settings.total_steps = 8;
        settings.clip_norm = 1.0f;  // the random gradient's norm is about 100: clipping is active
        for (int step = 0; step < 4; ++step) {
            both([&](vae_backend *b, int s) { return vae_backend_sum_of_squares(b, grads.f(s), count, norm.f(s)); },
                 "sum_of_squares");
            both([&](vae_backend *b, int s) {
                return vae_backend_adam_step(b, params.f(s), grads.f(s), m.f(s), v.f(s), count, &settings, norm.f(s),
                                         counter.as<vae_step_counter>(s));
            }, "adam_step");
        }
        SCOPED_TRACE(decoupled ? "adamw" : "adam");
        expect_close(params, count, kReductionTolerance, "parameters");
        expect_close(m, count, kReductionTolerance, "first moment");
        expect_close(v, count, kReductionTolerance, "second moment");
    }
    std::vector<vae_step_counter> gpu_counter = download<vae_step_counter>(counter, 1, 1);
    EXPECT_EQ(gpu_counter[0].step, 8u);
    EXPECT_EQ(gpu_counter[0].skipped_steps, 0u);
    EXPECT_EQ(gpu_counter[0].nonfinite_seen, 0u);

    // A NaN gradient: nothing moves, the step is counted as skipped.
    std::vector<float> before = download<float>(params, 1, count);
    std::vector<float> bad = normal(count);
    bad[count / 2] = NAN;
    Pair bad_grads = upload(bad);
    vae_adam_settings settings = {};
    settings.lr = 0.01f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    both([&](vae_backend *b, int s) { return vae_backend_sum_of_squares(b, bad_grads.f(s), count, norm.f(s)); },
         "sum_of_squares");
    both([&](vae_backend *b, int s) {
        return vae_backend_adam_step(b, params.f(s), bad_grads.f(s), m.f(s), v.f(s), count, &settings, norm.f(s),
                                 counter.as<vae_step_counter>(s));
    }, "adam_step");
    std::vector<float> after = download<float>(params, 1, count);
    EXPECT_EQ(std::memcmp(before.data(), after.data(), count * sizeof(float)), 0) << "a NaN gradient moved parameters";
    for (int s = 0; s < 2; ++s) {
        vae_step_counter c = download<vae_step_counter>(counter, s, 1)[0];
        EXPECT_EQ(c.step, 9u) << "side " << s;
        EXPECT_EQ(c.skipped_steps, 1u) << "side " << s;
        EXPECT_EQ(c.nonfinite_seen, 1u) << "side " << s;
    }
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
