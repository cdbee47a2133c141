// The CUDA kernels (kernels/*.cu, through their C launchers in
// vae_kernels.h) run on the host execution target (tests/cuda_host, issue
// 23) against the CPU backend's operations, with the tolerances
// test_backend_ops.cpp gives the CUDA backend. Every "device" buffer is its
// own heap block: under AddressSanitizer (scripts/sanitize.sh) a kernel
// reading or writing past one is reported; elsewhere a guard of known bytes
// after each buffer catches writes past it.
//
// Each test runs under one order of blocks (forward, reversed, shuffled) and
// threads within a block (forward, reversed), the test's parameter, and
// again in the reference order (both forward): the kernels' reductions are
// fixed-order trees, so the two results must be equal bit for bit. A
// missing __syncthreads gives a wrong result in at least one thread order.
//
// Sizes give several blocks, a partial last block, sizes that are not
// multiples of 32, and rows longer than a block (loops within a thread).
// Inputs are random with fixed seeds, so a failure repeats.
//
// Without the CUDA toolkit's headers (VAE_HAVE_CUDA_HOST unset) the tests
// skip and say why.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#ifdef VAE_HAVE_CUDA_HOST
#include "vae_cuda_host_runtime.h"
#include "vae_kernels.h"

extern "C" {
#include "backends/backend.h"
}

namespace vae_cuda_host {
// For gtest's messages: the order's name, not its bytes.
void PrintTo(const Order &order, std::ostream *stream) { *stream << order_name(order); }
} // namespace vae_cuda_host

namespace {

using vae_cuda_host::BlockOrder;
using vae_cuda_host::Order;
using vae_cuda_host::ThreadOrder;

#if defined(__SANITIZE_ADDRESS__)
constexpr size_t kGuardBytes = 0; // exact sizes: AddressSanitizer sees every overrun
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr size_t kGuardBytes = 0;
#else
constexpr size_t kGuardBytes = 64;
#endif
#else
constexpr size_t kGuardBytes = 64;
#endif
constexpr unsigned char kGuardByte = 0xa5;

// "Device" memory of the host target: count values in their own heap block,
// value-initialised (zero), then kGuardBytes of kGuardByte.
template <typename T> class DeviceBuffer {
  public:
    explicit DeviceBuffer(size_t count)
        : count_(count), bytes_(std::make_unique<unsigned char[]>(count * sizeof(T) + kGuardBytes)) {
        for (size_t k = 0; k < kGuardBytes; ++k) bytes_[count * sizeof(T) + k] = kGuardByte;
    }
    DeviceBuffer(const std::vector<T> &values) : DeviceBuffer(values.size()) {
        if (!values.empty()) std::memcpy(bytes_.get(), values.data(), values.size() * sizeof(T));
    }
    T *data() { return reinterpret_cast<T *>(bytes_.get()); }
    std::vector<T> values() const {
        std::vector<T> out(count_);
        if (count_ > 0) std::memcpy(out.data(), bytes_.get(), count_ * sizeof(T));
        return out;
    }
    bool guard_intact() const {
        for (size_t k = 0; k < kGuardBytes; ++k)
            if (bytes_[count_ * sizeof(T) + k] != kGuardByte) return false;
        return true;
    }

  private:
    size_t count_;
    std::unique_ptr<unsigned char[]> bytes_;
};

// Named outputs, each value as a double (floats convert exactly, so equal
// doubles are equal floats, bit for bit).
struct Output {
    std::string name;
    std::vector<double> values;
};
using Outputs = std::vector<Output>;

template <typename T> Output output(const std::string &name, const std::vector<T> &values) {
    return Output{name, std::vector<double>(values.begin(), values.end())};
}

template <typename T> void expect_guard(const DeviceBuffer<T> &buffer, const char *name) {
    EXPECT_TRUE(buffer.guard_intact()) << "a kernel wrote past the end of " << name;
}

// ||a - b|| / ||b|| over the finite elements; non-finite ones must match.
double normalized_error(const std::vector<double> &a, const std::vector<double> &b) {
    double difference = 0.0, norm = 0.0;
    for (size_t i = 0; i < a.size(); ++i) {
        if (!std::isfinite(a[i]) || !std::isfinite(b[i])) {
            const bool same = (std::isnan(a[i]) && std::isnan(b[i])) || a[i] == b[i];
            if (!same) return INFINITY;
            continue;
        }
        difference += (a[i] - b[i]) * (a[i] - b[i]);
        norm += b[i] * b[i];
    }
    return norm > 0.0 ? std::sqrt(difference / norm) : std::sqrt(difference);
}

double mismatch_fraction(const std::vector<double> &a, const std::vector<double> &b) {
    size_t differing = 0;
    for (size_t i = 0; i < a.size(); ++i) differing += std::memcmp(&a[i], &b[i], sizeof(double)) != 0;
    return a.empty() ? 0.0 : (double)differing / (double)a.size();
}

bool bitwise_equal(const std::vector<double> &a, const std::vector<double> &b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0);
}

void expect_cuda_success(cudaError_t status, const char *what) {
    EXPECT_EQ(status, cudaSuccess) << what << " returned " << (int)status;
}

std::vector<float> uniform_values(size_t count, float low, float high, uint32_t seed) {
    std::mt19937 random(seed);
    std::uniform_real_distribution<float> distribution(low, high);
    std::vector<float> values(count);
    for (float &value : values) value = distribution(random);
    return values;
}

Order reference_order() { return Order{}; }

bool same_order(const Order &a, const Order &b) {
    return a.blocks == b.blocks && a.threads == b.threads && (a.blocks != BlockOrder::kShuffled || a.seed == b.seed);
}

class CudaHostKernels : public ::testing::TestWithParam<Order> {
  protected:
    void SetUp() override { ASSERT_EQ(vae_backend_create_cpu(&cpu_), VAE_OK) << vae_last_error(); }
    void TearDown() override {
        vae_backend_destroy(cpu_);
        vae_cuda_host::set_order(reference_order());
    }

    // Runs host_run in the reference order and in the test's order; the two
    // must be equal bit for bit, and the test's within tolerance of the CPU
    // backend's outputs (normalised error, or with mismatches the fraction
    // of elements that differ).
    void compare(const std::function<Outputs()> &host_run, const Outputs &cpu, double tolerance,
                 bool mismatches = false) {
        vae_cuda_host::set_order(reference_order());
        const Outputs reference = host_run();
        Outputs host = reference;
        if (!same_order(GetParam(), reference_order())) {
            vae_cuda_host::set_order(GetParam());
            host = host_run();
        }
        ASSERT_EQ(host.size(), cpu.size());
        for (size_t k = 0; k < host.size(); ++k) {
            ASSERT_EQ(host[k].values.size(), cpu[k].values.size()) << host[k].name;
            EXPECT_TRUE(bitwise_equal(host[k].values, reference[k].values))
                << host[k].name << ": " << vae_cuda_host::order_name(GetParam())
                << " differs from the reference order (mismatch fraction "
                << mismatch_fraction(host[k].values, reference[k].values) << ")";
            if (mismatches) {
                EXPECT_LE(mismatch_fraction(host[k].values, cpu[k].values), tolerance) << host[k].name;
            } else {
                EXPECT_LE(normalized_error(host[k].values, cpu[k].values), tolerance) << host[k].name;
            }
        }
    }

    vae_backend *cpu_ = nullptr;
};

TEST_P(CudaHostKernels, Fill) {
    // A partial last block, and more values than the largest grid's threads
    // (vae_grid_for's 4096 blocks: the grid-stride loop wraps).
    for (size_t count : {(size_t)1000, (size_t)4096 * 256 + 1000}) {
        SCOPED_TRACE("count " + std::to_string(count));
        std::vector<float> expected(count);
        ASSERT_EQ(vae_backend_fill(cpu_, expected.data(), 0.375f, count), VAE_OK);
        compare(
            [&] {
                DeviceBuffer<float> destination(count);
                expect_cuda_success(vae_launch_fill(destination.data(), 0.375f, count, nullptr), "fill");
                expect_guard(destination, "destination");
                return Outputs{output("destination", destination.values())};
            },
            {output("destination", expected)}, 0.0);
    }
}

TEST_P(CudaHostKernels, BiasAdd) {
    const int rows = 7, width = 45;
    const std::vector<float> y = uniform_values((size_t)rows * width, -1.0f, 1.0f, 1);
    const std::vector<float> bias = uniform_values(width, -1.0f, 1.0f, 2);
    std::vector<float> expected = y;
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < width; ++c) expected[(size_t)r * width + c] += bias[c];
    compare(
        [&] {
            DeviceBuffer<float> device_y(y), device_bias(bias);
            expect_cuda_success(vae_launch_bias_add(device_y.data(), device_bias.data(), rows, width, nullptr),
                                "bias_add");
            expect_guard(device_y, "y");
            return Outputs{output("y", device_y.values())};
        },
        {output("y", expected)}, 0.0);
}

TEST_P(CudaHostKernels, BiasGradient) {
    const int rows = 77, width = 70; // three column blocks, the last partial; lanes with 2 or 3 rows
    const std::vector<float> dy = uniform_values((size_t)rows * width, -1.0f, 1.0f, 3);
    std::vector<double> expected(width, 0.0);
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < width; ++c) expected[c] += dy[(size_t)r * width + c];
    compare(
        [&] {
            DeviceBuffer<float> device_dy(dy), gradient(width);
            expect_cuda_success(vae_launch_bias_gradient(device_dy.data(), gradient.data(), rows, width, nullptr),
                                "bias_gradient");
            expect_guard(gradient, "bias_gradient");
            return Outputs{output("bias_gradient", gradient.values())};
        },
        {Output{"bias_gradient", expected}}, 1e-5);
}

TEST_P(CudaHostKernels, Activations) {
    const size_t count = 1000;
    const std::vector<float> pre = uniform_values(count, -6.0f, 6.0f, 4);
    const std::vector<float> dpost = uniform_values(count, -1.0f, 1.0f, 5);
    for (int activation : {VAE_ACTIVATION_RELU, VAE_ACTIVATION_TANH, VAE_ACTIVATION_SOFTPLUS, VAE_ACTIVATION_GELU,
                           VAE_ACTIVATION_IDENTITY}) {
        SCOPED_TRACE("activation " + std::to_string(activation));
        std::vector<float> post(count), dpre(count);
        ASSERT_EQ(vae_backend_activation_forward(cpu_, (vae_activation)activation, pre.data(), post.data(), count),
                  VAE_OK);
        ASSERT_EQ(vae_backend_activation_backward(cpu_, (vae_activation)activation, pre.data(), dpost.data(),
                                                  dpre.data(), count),
                  VAE_OK);
        compare(
            [&] {
                DeviceBuffer<float> device_pre(pre), device_dpost(dpost), device_post(count), device_dpre(count);
                expect_cuda_success(
                    vae_launch_activation_forward(activation, device_pre.data(), device_post.data(), count, nullptr),
                    "activation_forward");
                expect_cuda_success(vae_launch_activation_backward(activation, device_pre.data(), device_dpost.data(),
                                                                   device_dpre.data(), count, nullptr),
                                    "activation_backward");
                expect_guard(device_post, "post");
                expect_guard(device_dpre, "dpre");
                return Outputs{output("post", device_post.values()), output("dpre", device_dpre.values())};
            },
            {output("post", post), output("dpre", dpre)}, 1e-5);
    }
}

TEST_P(CudaHostKernels, RoundToBfloat16) {
    const size_t lines = 5, line_length = 77, stride = 80;
    const std::vector<float> source = uniform_values(lines * stride, -3.0f, 3.0f, 6);
    std::vector<uint16_t> expected(lines * line_length);
    for (size_t l = 0; l < lines; ++l)
        for (size_t p = 0; p < line_length; ++p)
            expected[l * line_length + p] = vae_bfloat16_bits(source[l * stride + p]);
    compare(
        [&] {
            // The last line ends at its length, not at the stride.
            DeviceBuffer<float> device_source(
                std::vector<float>(source.begin(), source.end() - (long)(stride - line_length)));
            DeviceBuffer<uint16_t> destination(lines * line_length);
            expect_cuda_success(vae_launch_round_to_bfloat16(device_source.data(), lines, line_length, stride,
                                                             destination.data(), nullptr),
                                "round_to_bfloat16");
            expect_guard(destination, "destination");
            return Outputs{output("destination", destination.values())};
        },
        {output("destination", expected)}, 0.0, true);
}

// c[m, n] = a[m, k] . b[k, n] (a transposed: a stored [k, m]), row-major, in
// double: the GEMM the CUDA backend gives cuBLAS between the conv kernels.
std::vector<float> matrix_product(const std::vector<float> &a, bool a_transposed, const std::vector<float> &b, int m,
                                  int k, int n) {
    std::vector<float> c((size_t)m * n);
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
            double sum = 0.0;
            for (int l = 0; l < k; ++l)
                sum += (double)(a_transposed ? a[(size_t)l * m + i] : a[(size_t)i * k + l]) * b[(size_t)l * n + j];
            c[(size_t)i * n + j] = (float)sum;
        }
    return c;
}

vae_conv_geometry conv_geometry(bool transposed) {
    vae_conv_geometry g{};
    g.kernel_size = 3;
    g.stride = 2;
    g.padding = 1;
    g.in_channels = transposed ? 5 : 3;
    g.out_channels = transposed ? 3 : 5;
    g.in_height = transposed ? 5 : 9;
    g.in_width = transposed ? 4 : 7;
    g.out_height =
        transposed ? vae_conv_transpose_output_size(g.in_height, 3, 2, 1) : vae_conv_output_size(g.in_height, 3, 2, 1);
    g.out_width =
        transposed ? vae_conv_transpose_output_size(g.in_width, 3, 2, 1) : vae_conv_output_size(g.in_width, 3, 2, 1);
    return g;
}

// conv2d forward as the CUDA backend computes it (unfold, GEMM, unstage with
// the bias) against the CPU backend's.
TEST_P(CudaHostKernels, Conv2dUnfoldAndUnstage) {
    const vae_conv_geometry g = conv_geometry(false);
    const int batch = 3;
    const vae_conv_unfolding unfolding = vae_conv2d_unfolding(&g);
    const int rows = (int)vae_conv_unfolded_rows(&unfolding);
    const int columns = batch * (int)vae_conv_positions(&unfolding);
    const std::vector<float> x = uniform_values((size_t)batch * g.in_channels * g.in_height * g.in_width, -1, 1, 7);
    const std::vector<float> weight = uniform_values((size_t)g.out_channels * rows, -1, 1, 8);
    const std::vector<float> bias = uniform_values(g.out_channels, -1, 1, 9);
    const size_t y_count = (size_t)batch * g.out_channels * g.out_height * g.out_width;
    std::vector<float> y(y_count), workspace(vae_conv_workspace_floats(&g, batch));
    ASSERT_EQ(
        vae_backend_conv2d_forward(cpu_, &g, batch, x.data(), weight.data(), bias.data(), y.data(), workspace.data()),
        VAE_OK)
        << vae_last_error();
    compare(
        [&] {
            DeviceBuffer<float> device_x(x), unfolded((size_t)rows * columns), device_bias(bias), device_y(y_count);
            expect_cuda_success(vae_launch_conv_unfold(unfolding, batch, device_x.data(), unfolded.data(), nullptr),
                                "conv_unfold");
            expect_guard(unfolded, "unfolded");
            DeviceBuffer<float> staged(matrix_product(weight, false, unfolded.values(), g.out_channels, rows, columns));
            expect_cuda_success(
                vae_launch_conv_unstage(unfolding, batch, staged.data(), device_bias.data(), device_y.data(), nullptr),
                "conv_unstage");
            expect_guard(device_y, "y");
            return Outputs{output("y", device_y.values())};
        },
        {output("y", y)}, 1e-5);
}

// conv_transpose2d forward as the CUDA backend computes it (stage, GEMM,
// fold with the bias) against the CPU backend's.
TEST_P(CudaHostKernels, ConvTranspose2dStageAndFold) {
    const vae_conv_geometry g = conv_geometry(true);
    const int batch = 3;
    const vae_conv_unfolding unfolding = vae_conv_transpose2d_unfolding(&g);
    const int rows = (int)vae_conv_unfolded_rows(&unfolding);
    const int columns = batch * (int)vae_conv_positions(&unfolding);
    const std::vector<float> x = uniform_values((size_t)batch * g.in_channels * g.in_height * g.in_width, -1, 1, 10);
    const std::vector<float> weight = uniform_values((size_t)g.in_channels * rows, -1, 1, 11);
    const std::vector<float> bias = uniform_values(g.out_channels, -1, 1, 12);
    const size_t y_count = (size_t)batch * g.out_channels * g.out_height * g.out_width;
    std::vector<float> y(y_count), workspace(vae_conv_workspace_floats(&g, batch));
    ASSERT_EQ(vae_backend_conv_transpose2d_forward(cpu_, &g, batch, x.data(), weight.data(), bias.data(), y.data(),
                                                   workspace.data()),
              VAE_OK)
        << vae_last_error();
    compare(
        [&] {
            DeviceBuffer<float> device_x(x), staged((size_t)g.in_channels * columns), device_bias(bias),
                device_y(y_count);
            expect_cuda_success(vae_launch_conv_stage(unfolding, batch, device_x.data(), staged.data(), nullptr),
                                "conv_stage");
            expect_guard(staged, "staged");
            DeviceBuffer<float> unfolded(matrix_product(weight, true, staged.values(), rows, g.in_channels, columns));
            expect_cuda_success(
                vae_launch_conv_fold(unfolding, batch, unfolded.data(), device_bias.data(), device_y.data(), nullptr),
                "conv_fold");
            expect_guard(device_y, "y");
            return Outputs{output("y", device_y.values())};
        },
        {output("y", y)}, 1e-5);
}

TEST_P(CudaHostKernels, ConvChannelSums) {
    const int batch = 3, channels = 5;
    const size_t plane = 11 * 9; // batch * plane = 297: more than a block
    const std::vector<float> values = uniform_values((size_t)batch * channels * plane, -1, 1, 13);
    std::vector<double> expected(channels, 0.0);
    for (int b = 0; b < batch; ++b)
        for (int c = 0; c < channels; ++c)
            for (size_t p = 0; p < plane; ++p) expected[c] += values[((size_t)b * channels + c) * plane + p];
    compare(
        [&] {
            DeviceBuffer<float> device_values(values), sums(channels);
            expect_cuda_success(
                vae_launch_conv_channel_sums(device_values.data(), batch, channels, plane, sums.data(), nullptr),
                "conv_channel_sums");
            expect_guard(sums, "sums");
            return Outputs{output("sums", sums.values())};
        },
        {Output{"sums", expected}}, 1e-5);
}

TEST_P(CudaHostKernels, GatherBatch) {
    const int dataset_rows = 50, dim = 70, rows = 20; // dim not a multiple of 4: a partial group per row
    std::mt19937 random(14);
    std::vector<uint8_t> dataset((size_t)dataset_rows * dim);
    for (uint8_t &value : dataset) value = (uint8_t)(random() % 256);
    std::vector<int32_t> permutation(2 * rows);
    for (int32_t &slot : permutation) slot = (int32_t)(random() % dataset_rows);
    vae_step_counter counter{};
    counter.step = 3;
    for (int binarize : {VAE_BINARIZE_NONE, VAE_BINARIZE_STATIC, VAE_BINARIZE_DYNAMIC}) {
        SCOPED_TRACE("binarize " + std::to_string(binarize));
        vae_gather_settings settings{};
        settings.dtype = VAE_DTYPE_U8;
        settings.scale = 1.0f / 255.0f;
        settings.binarize = binarize;
        settings.threshold = 0.5f;
        settings.seed = 1234;
        settings.random_purpose = VAE_RANDOM_BINARIZE;
        settings.steps_per_epoch = 2;
        const int64_t first_row[2] = {0, dataset_rows};
        const void *segment_values[1] = {dataset.data()};
        const vae_row_segments segments{1, first_row, segment_values};
        std::vector<float> x((size_t)rows * dim);
        ASSERT_EQ(
            vae_backend_gather_batch(cpu_, &segments, permutation.data(), dim, rows, &settings, &counter, x.data()),
            VAE_OK)
            << vae_last_error();
        compare(
            [&] {
                DeviceBuffer<uint8_t> device_dataset(dataset);
                DeviceBuffer<int32_t> device_permutation(permutation);
                DeviceBuffer<vae_step_counter> device_counter(std::vector<vae_step_counter>{counter});
                DeviceBuffer<float> device_x((size_t)rows * dim);
                expect_cuda_success(vae_launch_gather_batch(device_dataset.data(), device_permutation.data(), dim, rows,
                                                            settings, device_counter.data(), device_x.data(), nullptr),
                                    "gather_batch");
                expect_guard(device_x, "x");
                return Outputs{output("x", device_x.values())};
            },
            {output("x", x)}, binarize == VAE_BINARIZE_DYNAMIC ? 1e-4 : 0.0, true);
    }
}

// mu_logvar[rows, 2*latent] with logvars in [-6, 6], so that a clamp of 4
// applies to some.
std::vector<float> posterior(int rows, int latent, uint32_t seed) {
    std::vector<float> mu_logvar = uniform_values((size_t)rows * 2 * latent, -1.5f, 1.5f, seed);
    std::mt19937 random(seed + 1000);
    std::uniform_real_distribution<float> logvar(-6.0f, 6.0f);
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < latent; ++j) mu_logvar[(size_t)r * 2 * latent + latent + j] = logvar(random);
    return mu_logvar;
}

TEST_P(CudaHostKernels, ReparamKlForwardAndBackward) {
    const int rows = 37, latent = 267, samples = 3; // latent > a block, not a multiple of 4
    const float clamp = 4.0f, beta = 0.7f;
    const uint64_t warmup = 10;
    const std::vector<float> mu_logvar = posterior(rows, latent, 15);
    const size_t z_count = (size_t)samples * rows * latent;
    const std::vector<float> dz = uniform_values(z_count, -1, 1, 16);
    vae_noise_settings noise{};
    noise.seed = 99;
    noise.random_purpose = VAE_RANDOM_EPS;
    noise.step_offset = 2;
    vae_step_counter counter{};
    counter.step = 5;
    for (bool override_eps : {false, true}) {
        SCOPED_TRACE(override_eps ? "eps given" : "eps from Philox");
        const std::vector<float> eps = uniform_values(z_count, -2, 2, 17);
        const float *cpu_eps = override_eps ? eps.data() : nullptr;
        std::vector<float> z(z_count), kl(rows), dmu_logvar(mu_logvar.size());
        ASSERT_EQ(vae_backend_reparam_kl_forward(cpu_, mu_logvar.data(), z.data(), kl.data(), rows, latent, samples,
                                                 &noise, &counter, cpu_eps, clamp),
                  VAE_OK);
        ASSERT_EQ(vae_backend_reparam_kl_backward(cpu_, mu_logvar.data(), z.data(), dz.data(), dmu_logvar.data(), rows,
                                                  latent, samples, beta, warmup, &counter, clamp),
                  VAE_OK);
        compare(
            [&] {
                DeviceBuffer<float> device_mu_logvar(mu_logvar), device_z(z_count), device_kl(rows), device_dz(dz),
                    device_eps(eps), device_dmu_logvar(mu_logvar.size());
                DeviceBuffer<vae_step_counter> device_counter(std::vector<vae_step_counter>{counter});
                expect_cuda_success(
                    vae_launch_reparam_kl_forward(device_mu_logvar.data(), device_z.data(), device_kl.data(), rows,
                                                  latent, samples, noise, device_counter.data(),
                                                  override_eps ? device_eps.data() : nullptr, clamp, nullptr),
                    "reparam_kl_forward");
                expect_cuda_success(vae_launch_reparam_kl_backward(device_mu_logvar.data(), device_z.data(),
                                                                   device_dz.data(), device_dmu_logvar.data(), rows,
                                                                   latent, samples, beta, warmup, device_counter.data(),
                                                                   clamp, nullptr),
                                    "reparam_kl_backward");
                expect_guard(device_z, "z");
                expect_guard(device_kl, "kl");
                expect_guard(device_dmu_logvar, "dmu_logvar");
                return Outputs{output("z", device_z.values()), output("kl", device_kl.values()),
                               output("dmu_logvar", device_dmu_logvar.values())};
            },
            {output("z", z), output("kl", kl), output("dmu_logvar", dmu_logvar)}, 1e-5);
    }
}

TEST_P(CudaHostKernels, GaussianKl) {
    const int rows = 21, latent = 300;
    const float clamp = 4.0f, beta = 0.5f;
    const std::vector<float> q = posterior(rows, latent, 18), p = posterior(rows, latent, 19);
    const std::vector<float> dq0 = uniform_values(q.size(), -1, 1, 20), dp0 = uniform_values(p.size(), -1, 1, 21);
    vae_step_counter counter{};
    counter.step = 3;
    // Free bits halfway between the two middle rows' KLs (the CPU's): rows
    // below the floor get no gradient, rows above get it.
    std::vector<float> sorted_kl(rows);
    ASSERT_EQ(vae_backend_gaussian_kl(cpu_, q.data(), p.data(), sorted_kl.data(), nullptr, nullptr, rows, latent, beta,
                                      8, &counter, clamp, 0.0f),
              VAE_OK);
    std::sort(sorted_kl.begin(), sorted_kl.end());
    const float middle = 0.5f * (sorted_kl[rows / 2 - 1] + sorted_kl[rows / 2]);
    ASSERT_GT(sorted_kl[rows / 2] - sorted_kl[rows / 2 - 1], 1e-3f * middle) << "two rows too close to split";
    for (float free_bits : {0.0f, middle})
    for (bool gradients : {true, false}) {
        SCOPED_TRACE(std::string(gradients ? "with gradients" : "the KL alone") + ", free bits " +
                     std::to_string(free_bits));
        std::vector<float> kl(rows), dq = dq0, dp = dp0;
        ASSERT_EQ(vae_backend_gaussian_kl(cpu_, q.data(), p.data(), kl.data(), gradients ? dq.data() : nullptr,
                                          gradients ? dp.data() : nullptr, rows, latent, beta, 8, &counter, clamp,
                                          free_bits),
                  VAE_OK);
        if (free_bits > 0 && gradients) {
            // The CPU's own rows: untouched below the floor, moved above it.
            int below = 0, above = 0;
            for (int r = 0; r < rows; ++r) {
                const size_t start = (size_t)r * 2 * latent, end = start + 2 * (size_t)latent;
                const bool untouched = std::equal(dq.begin() + start, dq.begin() + end, dq0.begin() + start) &&
                                       std::equal(dp.begin() + start, dp.begin() + end, dp0.begin() + start);
                EXPECT_EQ(untouched, kl[r] < free_bits) << "row " << r;
                (kl[r] < free_bits ? below : above) += 1;
            }
            EXPECT_GT(below, 0);
            EXPECT_GT(above, 0);
        }
        compare(
            [&] {
                DeviceBuffer<float> device_q(q), device_p(p), device_kl(rows), device_dq(dq0), device_dp(dp0);
                DeviceBuffer<vae_step_counter> device_counter(std::vector<vae_step_counter>{counter});
                expect_cuda_success(vae_launch_gaussian_kl(device_q.data(), device_p.data(), device_kl.data(),
                                                           gradients ? device_dq.data() : nullptr,
                                                           gradients ? device_dp.data() : nullptr, rows, latent,
                                                           beta, 8, device_counter.data(), clamp, free_bits, nullptr),
                                    "gaussian_kl");
                expect_guard(device_kl, "kl");
                expect_guard(device_dq, "dq");
                expect_guard(device_dp, "dp");
                return Outputs{output("kl", device_kl.values()), output("dq", device_dq.values()),
                               output("dp", device_dp.values())};
            },
            {output("kl", kl), output("dq", dq), output("dp", dp)}, 1e-5);
    }
}

TEST_P(CudaHostKernels, GaussianLogRatio) {
    const int rows = 21, latent = 300; // a row longer than a block
    const float clamp = 4.0f;
    const std::vector<float> q = posterior(rows, latent, 40), p = posterior(rows, latent, 41);
    const std::vector<float> z = uniform_values((size_t)rows * latent, -3, 3, 42);
    const std::vector<float> out0 = uniform_values(rows, -50, 50, 43);
    for (int accumulate : {0, 1}) {
        SCOPED_TRACE(accumulate ? "accumulated" : "overwritten");
        std::vector<float> out = out0;
        ASSERT_EQ(vae_backend_gaussian_log_ratio(cpu_, z.data(), q.data(), p.data(), out.data(), rows, latent, clamp,
                                                 accumulate),
                  VAE_OK);
        compare(
            [&] {
                DeviceBuffer<float> device_z(z), device_q(q), device_p(p), device_out(out0);
                expect_cuda_success(vae_launch_gaussian_log_ratio(device_z.data(), device_q.data(), device_p.data(),
                                                                  device_out.data(), rows, latent, clamp, accumulate,
                                                                  nullptr),
                                    "gaussian_log_ratio");
                expect_guard(device_out, "out");
                return Outputs{output("out", device_out.values())};
            },
            {output("out", out)}, 1e-5);
    }
}

TEST_P(CudaHostKernels, AddScaled) {
    const float scale = -0.6180339f;
    // A partial last block; y its own buffer, a itself, b itself.
    for (size_t count : {(size_t)1000, (size_t)70001})
        for (int alias : {0, 1, 2}) {
            SCOPED_TRACE("count " + std::to_string(count) + ", alias " + std::to_string(alias));
            const std::vector<float> a = uniform_values(count, -2, 2, 44), b = uniform_values(count, -2, 2, 45);
            std::vector<float> cpu_a = a, cpu_b = b, cpu_y(count);
            float *y = alias == 1 ? cpu_a.data() : alias == 2 ? cpu_b.data() : cpu_y.data();
            ASSERT_EQ(vae_backend_add_scaled(cpu_, cpu_a.data(), cpu_b.data(), scale, y, count), VAE_OK);
            const std::vector<float> expected(y, y + count);
            compare(
                [&] {
                    DeviceBuffer<float> device_a(a), device_b(b), device_y(count);
                    DeviceBuffer<float> &target = alias == 1 ? device_a : alias == 2 ? device_b : device_y;
                    expect_cuda_success(vae_launch_add_scaled(device_a.data(), device_b.data(), scale, target.data(),
                                                              count, nullptr),
                                        "add_scaled");
                    expect_guard(target, "y");
                    return Outputs{output("y", target.values())};
                },
                {output("y", expected)}, 0.0); // the same bits as the CPU
        }
}

// The noise layout of a hierarchical model's groups on the kernels: rows
// that hold S samples (sample-major copies of the batch, drawn once each)
// give bitwise the z of the batch with samples = S, also as two halves of a
// data-parallel batch; a column offset gives the columns of a wider call.
// And each call within tolerance of the CPU backend's.
TEST_P(CudaHostKernels, ReparamNoiseLayoutOfLatentGroups) {
    const int batch = 10, samples = 3, latent = 13, wide = 7 + latent + 2;
    const float clamp = 4.0f;
    vae_step_counter counter{};
    counter.step = 4;
    const std::vector<float> wide_mu_logvar = posterior(batch, wide, 46);
    auto columns = [&](int offset) { // columns offset.. of wide_mu_logvar, as a latent-wide posterior
        std::vector<float> narrow((size_t)batch * 2 * latent);
        for (int b = 0; b < batch; ++b)
            for (int j = 0; j < latent; ++j) {
                narrow[(size_t)b * 2 * latent + j] = wide_mu_logvar[(size_t)b * 2 * wide + offset + j];
                narrow[(size_t)b * 2 * latent + latent + j] = wide_mu_logvar[(size_t)b * 2 * wide + wide + offset + j];
            }
        return narrow;
    };
    // Data rows [first, first + count) of mu_logvar, copied `copies` times sample-major.
    auto rows_of = [&](const std::vector<float> &mu_logvar, int first, int count, int copies) {
        std::vector<float> out;
        for (int s = 0; s < copies; ++s)
            out.insert(out.end(), mu_logvar.begin() + (size_t)first * 2 * latent,
                       mu_logvar.begin() + (size_t)(first + count) * 2 * latent);
        return out;
    };
    // z of one launch on the host target.
    auto host_z = [&](const std::vector<float> &mu_logvar, int rows, int columns_wide, int draws,
                      const vae_noise_settings &noise) {
        DeviceBuffer<float> device_mu_logvar(mu_logvar), device_z((size_t)draws * rows * columns_wide),
            device_kl(rows);
        DeviceBuffer<vae_step_counter> device_counter(std::vector<vae_step_counter>{counter});
        expect_cuda_success(vae_launch_reparam_kl_forward(device_mu_logvar.data(), device_z.data(), device_kl.data(),
                                                          rows, columns_wide, draws, noise, device_counter.data(),
                                                          nullptr, clamp, nullptr),
                            "reparam_kl_forward");
        expect_guard(device_z, "z");
        return device_z.values();
    };
    auto cpu_z = [&](const std::vector<float> &mu_logvar, int rows, int columns_wide, int draws,
                     const vae_noise_settings &noise) {
        std::vector<float> z((size_t)draws * rows * columns_wide), kl(rows);
        EXPECT_EQ(vae_backend_reparam_kl_forward(cpu_, mu_logvar.data(), z.data(), kl.data(), rows, columns_wide,
                                                 draws, &noise, &counter, nullptr, clamp),
                  VAE_OK)
            << vae_last_error();
        return z;
    };
    vae_noise_settings plain{};
    plain.seed = 77;
    plain.random_purpose = VAE_RANDOM_EPS;
    plain.step_offset = 1;

    for (int offset : {0, 4, 7}) {
        SCOPED_TRACE("column offset " + std::to_string(offset));
        const std::vector<float> mu_logvar = columns(offset);
        vae_noise_settings shifted = plain;
        shifted.column_offset = (uint32_t)offset;
        // The reference: the batch with samples = S, offset columns of the wide call.
        vae_cuda_host::set_order(reference_order());
        const std::vector<float> wide_z = host_z(wide_mu_logvar, batch, wide, samples, plain);
        const std::vector<float> z = host_z(mu_logvar, batch, latent, samples, shifted);
        for (size_t r = 0; r < (size_t)samples * batch; ++r)
            for (int j = 0; j < latent; ++j)
                ASSERT_EQ(z[r * latent + j], wide_z[r * wide + offset + j]) << "z row " << r << ", column " << j;
        // S sample-major copies, drawn once each; and as two halves of a data-parallel batch.
        vae_noise_settings held = shifted;
        held.rows_hold_samples = samples;
        const std::vector<float> copies = rows_of(mu_logvar, 0, batch, samples);
        compare([&] { return Outputs{output("z", host_z(copies, samples * batch, latent, 1, held))}; },
                {output("z", cpu_z(copies, samples * batch, latent, 1, held))}, 1e-5);
        vae_cuda_host::set_order(reference_order());
        EXPECT_EQ(host_z(copies, samples * batch, latent, 1, held), z) << "rows holding samples";
        for (int half : {0, 1}) {
            SCOPED_TRACE("half " + std::to_string(half));
            const int share = batch / 2;
            vae_noise_settings part = held;
            part.batch_rows = batch;
            part.row_offset = (uint32_t)(half * share);
            const std::vector<float> part_rows = rows_of(mu_logvar, half * share, share, samples);
            compare([&] { return Outputs{output("z", host_z(part_rows, samples * share, latent, 1, part))}; },
                    {output("z", cpu_z(part_rows, samples * share, latent, 1, part))}, 1e-5);
            vae_cuda_host::set_order(reference_order());
            const std::vector<float> part_z = host_z(part_rows, samples * share, latent, 1, part);
            for (int s = 0; s < samples; ++s)
                for (int d = 0; d < share; ++d)
                    for (int j = 0; j < latent; ++j)
                        ASSERT_EQ(part_z[((size_t)s * share + d) * latent + j],
                                  z[((size_t)s * batch + half * share + d) * latent + j])
                            << "sample " << s << ", row " << d << ", column " << j;
        }
    }
}

TEST_P(CudaHostKernels, Likelihood) {
    const int rows = 13, samples = 2, dim = 300;
    const std::vector<float> x = uniform_values((size_t)rows * dim, 0, 1, 22);
    for (int likelihood : {VAE_LIKELIHOOD_BERNOULLI, VAE_LIKELIHOOD_GAUSSIAN, VAE_LIKELIHOOD_GAUSSIAN_FIXED})
        for (int write_gradient : {1, 0}) {
            SCOPED_TRACE("likelihood " + std::to_string(likelihood) + ", write_gradient " +
                         std::to_string(write_gradient));
            const size_t width = likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * (size_t)dim : (size_t)dim;
            const std::vector<float> out0 = uniform_values((size_t)samples * rows * width, -2, 2, 23);
            std::vector<float> out = out0, logp((size_t)samples * rows);
            ASSERT_EQ(vae_backend_likelihood(cpu_, (vae_likelihood)likelihood, x.data(), out.data(), logp.data(),
                                             rows, samples, dim, -1.5f, write_gradient),
                      VAE_OK);
            compare(
                [&] {
                    DeviceBuffer<float> device_x(x), device_out(out0), device_logp((size_t)samples * rows);
                    expect_cuda_success(vae_launch_likelihood(likelihood, device_x.data(), device_out.data(),
                                                              device_logp.data(), rows, samples, dim, -1.5f,
                                                              write_gradient, nullptr),
                                        "likelihood");
                    expect_guard(device_out, "out");
                    expect_guard(device_logp, "logp");
                    return Outputs{output("out", device_out.values()), output("logp", device_logp.values())};
                },
                {output("out", out), output("logp", logp)}, 1e-5);
        }
}

TEST_P(CudaHostKernels, AccumulateLoss) {
    const int rows = 300, samples = 2; // rows > a block
    const std::vector<float> logp = uniform_values((size_t)samples * rows, -200, -50, 24);
    const std::vector<float> kl = uniform_values(rows, 0, 30, 25);
    const std::vector<double> accumulator0 = {10.0, -20.0, 30.0, 64.0};
    vae_step_counter counter{};
    counter.step = 4;
    std::vector<double> accumulator = accumulator0;
    ASSERT_EQ(vae_backend_accumulate_loss(cpu_, logp.data(), kl.data(), rows, samples, 0.8f, 10, &counter,
                                          accumulator.data()),
              VAE_OK);
    compare(
        [&] {
            DeviceBuffer<float> device_logp(logp), device_kl(kl);
            DeviceBuffer<double> device_accumulator(accumulator0);
            DeviceBuffer<vae_step_counter> device_counter(std::vector<vae_step_counter>{counter});
            expect_cuda_success(vae_launch_accumulate_loss(device_logp.data(), device_kl.data(), rows, samples, 0.8f,
                                                           10, device_counter.data(), device_accumulator.data(),
                                                           nullptr),
                                "accumulate_loss");
            expect_guard(device_accumulator, "accumulator");
            return Outputs{output("accumulator", device_accumulator.values())};
        },
        {output("accumulator", accumulator)}, 1e-10);
}

// Sample-major z [samples*rows, latent] near the posterior means.
std::vector<float> draws(const std::vector<float> &mu_logvar, int rows, int latent, int samples, uint32_t seed) {
    const std::vector<float> eps = uniform_values((size_t)samples * rows * latent, -2, 2, seed);
    std::vector<float> z(eps.size());
    for (int l = 0; l < samples; ++l)
        for (int b = 0; b < rows; ++b)
            for (int j = 0; j < latent; ++j) {
                const size_t index = ((size_t)l * rows + b) * latent + j;
                z[index] = mu_logvar[(size_t)b * 2 * latent + j] + 0.5f * eps[index];
            }
    return z;
}

TEST_P(CudaHostKernels, ImportanceLogMean) {
    const int rows = 9, latent = 5, samples = 300; // samples > a block
    const std::vector<float> mu_logvar = posterior(rows, latent, 26);
    const std::vector<float> z = draws(mu_logvar, rows, latent, samples, 27);
    const std::vector<float> logp = uniform_values((size_t)samples * rows, -120, -80, 28);
    std::vector<float> result(rows);
    ASSERT_EQ(vae_backend_importance_log_mean(cpu_, logp.data(), mu_logvar.data(), z.data(), result.data(), rows,
                                              latent, samples, 4.0f),
              VAE_OK);
    compare(
        [&] {
            DeviceBuffer<float> device_logp(logp), device_mu_logvar(mu_logvar), device_z(z), device_result(rows);
            expect_cuda_success(vae_launch_importance_log_mean(device_logp.data(), device_mu_logvar.data(),
                                                               device_z.data(), device_result.data(), rows, latent,
                                                               samples, 4.0f, nullptr),
                                "importance_log_mean");
            expect_guard(device_result, "result");
            return Outputs{output("result", device_result.values())};
        },
        {output("result", result)}, 1e-6);
}

// The backward of gaussian_log_ratio in the IWAE objective (latent groups):
// dz accumulated, dq and dp written, weights per row, the warm-up's beta_t.
TEST_P(CudaHostKernels, GaussianLogRatioBackward) {
    const int rows = 21, latent = 300, mean_rows = 7;  // more elements than a block, a row longer than a block
    const float clamp = 4.0f, beta = 0.8f;
    const uint64_t warmup = 8;
    const std::vector<float> q = posterior(rows, latent, 44), p = posterior(rows, latent, 45);
    const std::vector<float> z = uniform_values((size_t)rows * latent, -3, 3, 46);
    const std::vector<float> weight = uniform_values(rows, 0.05f, 1.0f, 47);
    const std::vector<float> dz0 = uniform_values((size_t)rows * latent, -1, 1, 48);
    vae_step_counter counter{};
    counter.step = 3;
    std::vector<float> dz = dz0, dq(q.size()), dp(p.size());
    ASSERT_EQ(vae_backend_gaussian_log_ratio_backward(cpu_, z.data(), q.data(), p.data(), weight.data(), dz.data(),
                                                      dq.data(), dp.data(), rows, latent, beta, warmup, &counter,
                                                      mean_rows, clamp),
              VAE_OK);
    compare(
        [&] {
            DeviceBuffer<float> device_z(z), device_q(q), device_p(p), device_weight(weight), device_dz(dz0),
                device_dq(q.size()), device_dp(p.size());
            DeviceBuffer<vae_step_counter> device_counter(std::vector<vae_step_counter>{counter});
            expect_cuda_success(vae_launch_gaussian_log_ratio_backward(
                                    device_z.data(), device_q.data(), device_p.data(), device_weight.data(),
                                    device_dz.data(), device_dq.data(), device_dp.data(), rows, latent, beta, warmup,
                                    device_counter.data(), mean_rows, clamp, nullptr),
                                "gaussian_log_ratio_backward");
            expect_guard(device_dz, "dz");
            expect_guard(device_dq, "dq");
            expect_guard(device_dp, "dp");
            return Outputs{output("dz", device_dz.values()), output("dq", device_dq.values()),
                           output("dp", device_dp.values())};
        },
        {output("dz", dz), output("dq", dq), output("dp", dp)}, 1e-5);
}

TEST_P(CudaHostKernels, IwaeObjectiveAndLatentBackward) {
    const int rows = 9, latent = 5, samples = 300, width = 20;
    const float beta = 0.9f, clamp = 4.0f;
    const uint64_t warmup = 6;
    const std::vector<float> mu_logvar = posterior(rows, latent, 29);
    const std::vector<float> z = draws(mu_logvar, rows, latent, samples, 30);
    const std::vector<float> logp = uniform_values((size_t)samples * rows, -120, -80, 31);
    const std::vector<float> kl = uniform_values(rows, 0, 10, 32);
    const std::vector<float> out0 = uniform_values((size_t)samples * rows * width, -1, 1, 33);
    const std::vector<float> dz = uniform_values(z.size(), -1, 1, 34);
    // a hierarchy's lower groups' log p - log q per draw
    const std::vector<float> log_ratio = uniform_values((size_t)samples * rows, -3, 3, 35);
    const std::vector<double> accumulator0 = {1.0, 2.0, 3.0, 4.0};
    vae_step_counter counter{};
    counter.step = 2;
    std::vector<float> out = out0, weight((size_t)samples * rows), row_loss(rows), dmu_logvar(mu_logvar.size());
    std::vector<double> accumulator = accumulator0;
    ASSERT_EQ(vae_backend_iwae_objective(cpu_, logp.data(), mu_logvar.data(), z.data(), log_ratio.data(), kl.data(),
                                         out.data(),
                                         weight.data(), row_loss.data(), rows, latent, samples, width, beta, warmup,
                                         &counter, clamp, accumulator.data()),
              VAE_OK);
    ASSERT_EQ(vae_backend_iwae_latent_backward(cpu_, mu_logvar.data(), z.data(), dz.data(), weight.data(),
                                               dmu_logvar.data(), rows, latent, samples, beta, warmup, &counter, clamp),
              VAE_OK);
    compare(
        [&] {
            DeviceBuffer<float> device_logp(logp), device_mu_logvar(mu_logvar), device_z(z), device_kl(kl),
                device_log_ratio(log_ratio),
                device_out(out0), device_weight((size_t)samples * rows), device_row_loss(rows), device_dz(dz),
                device_dmu_logvar(mu_logvar.size());
            DeviceBuffer<double> device_accumulator(accumulator0);
            DeviceBuffer<vae_step_counter> device_counter(std::vector<vae_step_counter>{counter});
            expect_cuda_success(vae_launch_iwae_objective(device_logp.data(), device_mu_logvar.data(), device_z.data(),
                                                          device_log_ratio.data(), device_kl.data(), device_out.data(),
                                                          device_weight.data(), device_row_loss.data(), rows, latent,
                                                          samples, width, beta, warmup, device_counter.data(), clamp,
                                                          device_accumulator.data(), nullptr),
                                "iwae_objective");
            expect_cuda_success(vae_launch_iwae_latent_backward(device_mu_logvar.data(), device_z.data(),
                                                                device_dz.data(), device_weight.data(),
                                                                device_dmu_logvar.data(), rows, latent, samples, beta,
                                                                warmup, device_counter.data(), clamp, nullptr),
                                "iwae_latent_backward");
            expect_guard(device_out, "out");
            expect_guard(device_weight, "weight");
            expect_guard(device_row_loss, "row_loss");
            expect_guard(device_dmu_logvar, "dmu_logvar");
            expect_guard(device_accumulator, "accumulator");
            return Outputs{output("out", device_out.values()), output("weight", device_weight.values()),
                           output("row_loss", device_row_loss.values()),
                           output("dmu_logvar", device_dmu_logvar.values()),
                           output("accumulator", device_accumulator.values())};
        },
        {output("out", out), output("weight", weight), output("row_loss", row_loss), output("dmu_logvar", dmu_logvar),
         output("accumulator", accumulator)},
        1e-5);
}

TEST_P(CudaHostKernels, SumOfSquares) {
    // Fewer values than threads in the grid (most blocks add nothing), and
    // more (blocks loop), each not a multiple of 32.
    for (size_t count : {(size_t)1001, (size_t)VAE_REDUCTION_BLOCKS * 256 + 4097}) {
        SCOPED_TRACE("count " + std::to_string(count));
        const std::vector<float> values = uniform_values(count, -2, 2, 35);
        float expected = 0.0f;
        ASSERT_EQ(vae_backend_sum_of_squares(cpu_, values.data(), count, &expected), VAE_OK);
        compare(
            [&] {
                DeviceBuffer<float> device_values(values), result(1);
                DeviceBuffer<vae_kernel_scratch> scratch(1);
                // Twice on the same scratch: the last block's reset of its
                // count must leave it ready for the next launch.
                for (int launch = 0; launch < 2; ++launch)
                    expect_cuda_success(
                        vae_launch_sum_of_squares(device_values.data(), count, result.data(), scratch.data(), nullptr),
                        "sum_of_squares");
                expect_guard(result, "result");
                EXPECT_EQ(scratch.values()[0].sum_of_squares_blocks_done, 0u);
                return Outputs{output("result", result.values())};
            },
            {output("result", std::vector<float>{expected})}, 1e-6);
    }
}

TEST_P(CudaHostKernels, AdamStep) {
    const size_t count = 5000; // 20 blocks, the last partial
    const int steps = 3;
    vae_adam_settings settings{};
    settings.lr = 1e-3f;
    settings.lr_min = 1e-5f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    settings.weight_decay = 0.01f;
    settings.decoupled_weight_decay = 1;
    settings.clip_norm = 1.0f;
    const std::vector<float> params0 = uniform_values(count, -1, 1, 36);
    std::vector<std::vector<float>> grads;
    std::vector<float> norms;
    for (int s = 0; s < steps; ++s) {
        grads.push_back(uniform_values(count, -0.1f, 0.1f, 37 + s));
        double sum = 0.0;
        for (float g : grads.back()) sum += (double)g * g;
        norms.push_back(s == 1 ? NAN : (float)sum); // the middle step is skipped (non-finite norm)
    }
    std::vector<float> params = params0, m(count), v(count);
    vae_step_counter counter{};
    for (int s = 0; s < steps; ++s)
        ASSERT_EQ(vae_backend_adam_step(cpu_, params.data(), grads[s].data(), m.data(), v.data(), count, &settings,
                                        &norms[s], &counter),
                  VAE_OK);
    const std::vector<double> counter_values = {(double)counter.step, (double)counter.skipped_steps,
                                                (double)counter.nonfinite_seen};
    compare(
        [&] {
            DeviceBuffer<float> device_params(params0), device_m(count), device_v(count);
            DeviceBuffer<vae_step_counter> device_counter(1);
            DeviceBuffer<vae_kernel_scratch> scratch(1);
            for (int s = 0; s < steps; ++s) {
                DeviceBuffer<float> device_grads(grads[s]), norm(std::vector<float>{norms[s]});
                expect_cuda_success(vae_launch_adam_step(device_params.data(), device_grads.data(), device_m.data(),
                                                         device_v.data(), count, settings, norm.data(),
                                                         device_counter.data(), scratch.data(), nullptr),
                                    "adam_step");
            }
            expect_guard(device_params, "params");
            expect_guard(device_m, "m");
            expect_guard(device_v, "v");
            const vae_step_counter c = device_counter.values()[0];
            return Outputs{output("params", device_params.values()), output("m", device_m.values()),
                           output("v", device_v.values()),
                           Output{"counter", {(double)c.step, (double)c.skipped_steps, (double)c.nonfinite_seen}}};
        },
        {output("params", params), output("m", m), output("v", v), Output{"counter", counter_values}}, 1e-5);
}

// The scheduler itself, through run_grid with plain thread bodies.
struct BarrierProbe {
    std::vector<unsigned int> written; // [blocks * threads]: what each thread read after the barrier
    unsigned int shared[64];           // the block's "shared memory"
    bool diverge = false;
};

TEST(CudaHostRuntime, BarrierSeparatesWritesFromReads) {
    for (ThreadOrder threads : {ThreadOrder::kForward, ThreadOrder::kReversed}) {
        vae_cuda_host::set_order(Order{BlockOrder::kReversed, threads, 0});
        BarrierProbe probe;
        probe.written.assign(3 * 64, 0);
        vae_cuda_host::run_grid(
            dim3(3), dim3(16, 4), 0, nullptr,
            [](void *context) {
                BarrierProbe &p = *static_cast<BarrierProbe *>(context);
                const uint3 thread = vae_cuda_host::thread_index();
                const unsigned int block = vae_cuda_host::block_index().x;
                const unsigned int t = thread.y * 16 + thread.x;
                p.shared[t] = block * 1000 + t;
                vae_cuda_host::syncthreads(__FILE__, __LINE__);
                p.written[block * 64 + t] = p.shared[(t + 1) % 64];
            },
            &probe);
        EXPECT_EQ(vae_cuda_host::get_last_error(), cudaSuccess);
        for (unsigned int b = 0; b < 3; ++b)
            for (unsigned int t = 0; t < 64; ++t) EXPECT_EQ(probe.written[b * 64 + t], b * 1000 + (t + 1) % 64);
    }
    vae_cuda_host::set_order(Order{});
}

TEST(CudaHostRuntime, DivergentBarriersAreAnError) {
    BarrierProbe probe;
    vae_cuda_host::run_grid(
        dim3(2), dim3(64), 0, nullptr,
        [](void *) {
            if (vae_cuda_host::thread_index().x < 32) vae_cuda_host::syncthreads(__FILE__, __LINE__);
            else vae_cuda_host::syncthreads(__FILE__, __LINE__);
        },
        &probe);
    EXPECT_EQ(vae_cuda_host::get_last_error(), cudaErrorLaunchFailure);
    EXPECT_EQ(vae_cuda_host::get_last_error(), cudaSuccess); // read once, then cleared
}

TEST(CudaHostRuntime, InvalidConfigurationIsAnError) {
    vae_cuda_host::run_grid(
        dim3(1), dim3(1025), 0, nullptr, [](void *) {}, nullptr);
    EXPECT_EQ(vae_cuda_host::get_last_error(), cudaErrorInvalidConfiguration);
    vae_cuda_host::run_grid(
        dim3(0), dim3(32), 0, nullptr, [](void *) {}, nullptr);
    EXPECT_EQ(vae_cuda_host::get_last_error(), cudaErrorInvalidConfiguration);
    std::vector<float> values(4);
    EXPECT_EQ(vae_launch_fill(values.data(), 1.0f, 0, nullptr), cudaSuccess); // nothing to launch
    Order order;
    order.blocks = BlockOrder::kShuffled;
    order.seed = 5;
    order.threads = ThreadOrder::kReversed;
    EXPECT_EQ(vae_cuda_host::order_name(order), "blocks_shuffled_5_threads_reversed");
}

std::vector<Order> orders() {
    std::vector<Order> all;
    for (ThreadOrder threads : {ThreadOrder::kForward, ThreadOrder::kReversed}) {
        all.push_back(Order{BlockOrder::kForward, threads, 0});
        all.push_back(Order{BlockOrder::kReversed, threads, 0});
        all.push_back(Order{BlockOrder::kShuffled, threads, 20261207});
    }
    return all;
}

INSTANTIATE_TEST_SUITE_P(Orders, CudaHostKernels, ::testing::ValuesIn(orders()),
                         [](const ::testing::TestParamInfo<Order> &info) {
                             return vae_cuda_host::order_name(info.param);
                         });

} // namespace

#else

TEST(CudaHostKernels, SkippedWithoutCudaHeaders) {
    GTEST_SKIP() << "the CUDA toolkit's headers (cuda_runtime.h, curand_philox4x32_x.h) were not found at "
                    "configure time: the host execution target of the kernels is not built";
}

#endif
