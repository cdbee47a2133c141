// The convolutions beyond parity (tests/test_backend_ops.cpp holds the
// parity table against a direct reference):
//   - the geometry of kernels/vae_conv_geometry.h: PyTorch's output sizes,
//     the per-axis mapping and its inverse, the unfolded entry and the
//     gathered fold pixel (what the CUDA kernels run) against direct
//     definitions written here, the workspace size;
//   - finite differences of every gradient of both operations on the CPU
//     backend: loss = sum(dy * y) in double, central differences;
//   - argument errors refused by the vae_backend_conv* wrappers with a
//     message naming the operation and what is wrong;
//   - train.precision = bf16 on the CPU: each convolution is, bit for bit,
//     the fp32 one of bfloat16-rounded operands.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "base/error.h"
}

namespace {

// ------------------------------------------------------------------ geometry

TEST(ConvGeometry, OutputSizesFollowPyTorch) {
    // nn.Conv2d (in, k, s, p) -> out, as torch computes them.
    EXPECT_EQ(vae_conv_output_size(28, 4, 2, 1), 14);
    EXPECT_EQ(vae_conv_output_size(14, 4, 2, 1), 7);
    EXPECT_EQ(vae_conv_output_size(5, 3, 2, 1), 3);
    EXPECT_EQ(vae_conv_output_size(7, 3, 2, 0), 3);
    EXPECT_EQ(vae_conv_output_size(8, 3, 2, 0), 3);  // floor: the last column is not covered
    EXPECT_EQ(vae_conv_output_size(7, 5, 1, 2), 7);
    EXPECT_EQ(vae_conv_output_size(3, 3, 1, 0), 1);
    EXPECT_LE(vae_conv_output_size(2, 3, 1, 0), 0);  // the kernel does not fit
    EXPECT_LE(vae_conv_output_size(1, 4, 2, 1), 0);
    EXPECT_LE(vae_conv_output_size(5, 3, 0, 1), 0);  // no stride
    // nn.ConvTranspose2d (output_padding 0).
    EXPECT_EQ(vae_conv_transpose_output_size(7, 4, 2, 1), 14);
    EXPECT_EQ(vae_conv_transpose_output_size(14, 4, 2, 1), 28);
    EXPECT_EQ(vae_conv_transpose_output_size(3, 3, 2, 1), 5);
    EXPECT_EQ(vae_conv_transpose_output_size(4, 3, 2, 0), 9);
    EXPECT_EQ(vae_conv_transpose_output_size(5, 3, 1, 1), 5);
}

// vae_conv_pixel (position, offset) -> pixel and its inverse
// (vae_conv_positions_covering, vae_conv_offset) enumerate exactly the same
// pairs, for every size, kernel, stride and padding up to small bounds.
TEST(ConvGeometry, PositionsCoveringIsTheExactInverseOfPixel) {
    for (int size = 1; size <= 9; ++size)
        for (int k = 1; k <= 5; ++k)
            for (int s = 1; s <= 3; ++s)
                for (int p = 0; p <= 3; ++p) {
                    const int positions = vae_conv_output_size(size, k, s, p);
                    if (positions <= 0) continue;
                    SCOPED_TRACE("size " + std::to_string(size) + " k" + std::to_string(k) + " s" +
                                 std::to_string(s) + " p" + std::to_string(p));
                    std::vector<std::vector<std::pair<int, int>>> forward(size);  // pixel -> (position, offset)
                    for (int q = 0; q < positions; ++q)
                        for (int o = 0; o < k; ++o) {
                            const int pixel = vae_conv_pixel(q, o, s, p);
                            EXPECT_EQ(pixel, q * s - p + o);
                            if (pixel >= 0 && pixel < size) forward[pixel].push_back({q, o});
                        }
                    for (int pixel = 0; pixel < size; ++pixel) {
                        int first = 0, last = -1;
                        vae_conv_positions_covering(pixel, k, s, p, positions, &first, &last);
                        std::vector<std::pair<int, int>> inverse;
                        for (int q = std::max(first, 0); q <= last; ++q) {
                            const int offset = vae_conv_offset(pixel, q, s, p);
                            ASSERT_GE(offset, 0);
                            ASSERT_LT(offset, k);
                            inverse.push_back({q, offset});
                        }
                        EXPECT_GE(first, 0);
                        EXPECT_EQ(inverse, forward[pixel]) << "pixel " << pixel;
                    }
                }
}

struct Unfold {
    bool transposed;
    int batch;
    vae_conv_geometry geometry;
};

// (transposed, batch, in channels, height, width, out channels, k, s, p):
// the output size from the formulas.
Unfold unfold_shape(bool transposed, int batch, int in_channels, int height, int width, int out_channels, int k,
                    int s, int p) {
    auto size = [&](int in) {
        return transposed ? vae_conv_transpose_output_size(in, k, s, p) : vae_conv_output_size(in, k, s, p);
    };
    return {transposed, batch, {in_channels, height, width, out_channels, size(height), size(width), k, s, p}};
}

std::vector<Unfold> unfold_shapes() {
    return {
        unfold_shape(false, 2, 3, 7, 5, 4, 3, 2, 1), unfold_shape(false, 3, 2, 6, 7, 5, 3, 1, 1),
        unfold_shape(false, 2, 1, 9, 8, 2, 4, 2, 0), unfold_shape(false, 2, 2, 8, 7, 3, 2, 3, 1),
        unfold_shape(true, 2, 4, 3, 4, 3, 3, 2, 1),  unfold_shape(true, 3, 2, 4, 3, 3, 4, 2, 0),
        unfold_shape(true, 2, 3, 3, 2, 2, 5, 3, 2),
    };
}

// The larger image's pixel (b, c, y, x) at unfolded entry (row (c, i, j),
// column (b, py, px)), written out directly.
long direct_source(const vae_conv_unfolding &u, int batch, long row, long column) {
    const int k = u.kernel_size;
    const int c = (int)(row / (k * k)), i = (int)(row / k % k), j = (int)(row % k);
    const long positions = (long)u.positions_height * u.positions_width;
    const int b = (int)(column / positions), py = (int)(column % positions / u.positions_width),
              px = (int)(column % u.positions_width);
    const int y = py * u.stride - u.padding + i, x = px * u.stride - u.padding + j;
    (void)batch;
    if (y < 0 || y >= u.height || x < 0 || x >= u.width) return -1;
    return (((long)b * u.channels + c) * u.height + y) * u.width + x;
}

TEST(ConvGeometry, UnfoldedSourceAndGatheredFoldMatchDirectDefinitions) {
    for (const Unfold &shape : unfold_shapes()) {
        const vae_conv_geometry &g = shape.geometry;
        ASSERT_GT(g.out_height, 0);
        ASSERT_GT(g.out_width, 0);
        const vae_conv_unfolding u = shape.transposed ? vae_conv_transpose2d_unfolding(&g) : vae_conv2d_unfolding(&g);
        SCOPED_TRACE(std::string(shape.transposed ? "transposed " : "conv2d ") + std::to_string(u.channels) + "x" +
                     std::to_string(u.height) + "x" + std::to_string(u.width) + " positions " +
                     std::to_string(u.positions_height) + "x" + std::to_string(u.positions_width));
        const long rows = (long)vae_conv_unfolded_rows(&u);
        const long columns = (long)shape.batch * vae_conv_positions(&u);
        ASSERT_EQ(rows, (long)u.channels * g.kernel_size * g.kernel_size);
        for (long row = 0; row < rows; ++row)
            for (long column = 0; column < columns; ++column)
                ASSERT_EQ(vae_conv_unfolded_source(&u, row, column), direct_source(u, shape.batch, row, column))
                    << "row " << row << " column " << column;

        // Fold: each entry scattered to its pixel (direct) against the
        // gathered pixel the CUDA kernel computes.
        std::vector<float> unfolded = vae_test::random_normal((size_t)(rows * columns), 7);
        const size_t pixels = (size_t)shape.batch * u.channels * u.height * u.width;
        std::vector<double> scattered(pixels, 0.0);
        for (long row = 0; row < rows; ++row)
            for (long column = 0; column < columns; ++column) {
                const long source = direct_source(u, shape.batch, row, column);
                if (source >= 0) scattered[(size_t)source] += unfolded[(size_t)(row * columns + column)];
            }
        for (size_t pixel = 0; pixel < pixels; ++pixel) {
            const float start = 0.25f * (float)(pixel % 3);
            EXPECT_NEAR(vae_conv_fold_pixel(&u, shape.batch, unfolded.data(), start, pixel), start + scattered[pixel],
                        1e-5)
                << "pixel " << pixel;
        }

        // The staged matrix [channels, batch * positions].
        const long positions = (long)vae_conv_positions(&u);
        for (int b = 0; b < shape.batch; ++b)
            for (int c = 0; c < u.staged_channels; ++c)
                for (long p = 0; p < positions; ++p)
                    ASSERT_EQ(vae_conv_staged_offset(&u, shape.batch, b, c, p), (c * shape.batch + b) * positions + p);

        // The workspace holds the unfolded and the staged matrix (exactly,
        // unless the sizes fit both kinds: stride 1, padding (k-1)/2).
        const size_t need = (size_t)(rows * columns + (long)u.staged_channels * columns);
        if (g.stride == 1 && 2 * g.padding == g.kernel_size - 1)
            EXPECT_GE(vae_conv_workspace_floats(&g, shape.batch), need);
        else
            EXPECT_EQ(vae_conv_workspace_floats(&g, shape.batch), need);
    }
}

TEST(ConvGeometry, WorkspaceCoversBothKindsWhereTheSizesFitBoth) {
    // Stride 1, padding (k-1)/2: the output size is both nn.Conv2d's and
    // nn.ConvTranspose2d's; the workspace must serve either operation.
    const vae_conv_geometry g = {3, 6, 5, 8, 6, 5, 3, 1, 1};
    const vae_conv_unfolding forward = vae_conv2d_unfolding(&g), transposed = vae_conv_transpose2d_unfolding(&g);
    const size_t need = std::max(vae_conv_unfolding_floats(&forward, 4), vae_conv_unfolding_floats(&transposed, 4));
    EXPECT_EQ(vae_conv_workspace_floats(&g, 4), need);
    EXPECT_GT(vae_conv_unfolding_floats(&transposed, 4), vae_conv_unfolding_floats(&forward, 4));
}

// ------------------------------------------------------------------ finite differences

class ConvOps : public ::testing::Test {
  protected:
    void SetUp() override { ASSERT_EQ(vae_backend_create_cpu(&backend_), VAE_OK) << vae_last_error(); }
    void TearDown() override { vae_backend_destroy(backend_); }
    vae_backend *backend_ = nullptr;
};

struct Layer {
    bool transposed;
    int batch;
    vae_conv_geometry geometry;
    size_t x_count() const { return (size_t)batch * geometry.in_channels * geometry.in_height * geometry.in_width; }
    size_t y_count() const { return (size_t)batch * geometry.out_channels * geometry.out_height * geometry.out_width; }
    size_t weight_count() const {
        return (size_t)geometry.in_channels * geometry.out_channels * geometry.kernel_size * geometry.kernel_size;
    }
};

std::vector<Layer> gradient_layers() {
    return {
        {false, 2, {3, 5, 7, 5, 3, 4, 3, 2, 1}},  // odd sizes, stride 2, padding 1
        {false, 2, {2, 6, 5, 3, 2, 2, 3, 2, 0}},  // padding 0, uncovered last row and column
        {false, 3, {1, 6, 6, 3, 6, 6, 5, 1, 2}},  // stride 1, k5
        {true, 2, {3, 3, 4, 5, 5, 7, 3, 2, 1}},   // transposed, stride 2, padding 1
        {true, 2, {2, 3, 2, 3, 8, 6, 4, 2, 0}},   // transposed, padding 0
        {true, 3, {5, 4, 3, 2, 4, 3, 3, 1, 1}},   // transposed, stride 1
    };
}

vae_status run_forward(vae_backend *backend, const Layer &layer, const std::vector<float> &x,
                       const std::vector<float> &weight, const std::vector<float> &bias, std::vector<float> &y,
                       std::vector<float> &workspace) {
    return layer.transposed ? vae_backend_conv_transpose2d_forward(backend, &layer.geometry, layer.batch, x.data(),
                                                                   weight.data(), bias.data(), y.data(),
                                                                   workspace.data())
                            : vae_backend_conv2d_forward(backend, &layer.geometry, layer.batch, x.data(),
                                                         weight.data(), bias.data(), y.data(), workspace.data());
}

// ||a - b|| / ||b|| and the largest element difference relative to max |b|.
void expect_close(const std::vector<float> &analytic, const std::vector<double> &numeric, const std::string &what) {
    double difference = 0, norm = 0, worst = 0, largest = 0;
    for (size_t i = 0; i < analytic.size(); ++i) {
        difference += (analytic[i] - numeric[i]) * (analytic[i] - numeric[i]);
        norm += numeric[i] * numeric[i];
        worst = std::max(worst, std::fabs(analytic[i] - numeric[i]));
        largest = std::max(largest, std::fabs(numeric[i]));
    }
    ASSERT_GT(largest, 0.0) << what << ": an all-zero gradient checks nothing";
    EXPECT_LT(std::sqrt(difference / norm), 1e-4) << what;
    EXPECT_LT(worst / largest, 1e-3) << what << ": worst element off by " << worst << " (largest " << largest << ")";
}

// loss = sum(dy * y) in double; y is linear in each of x, weight and bias,
// so the central difference is exact but for float rounding, and a step of
// 0.5 keeps that rounding far below the tolerance.
TEST_F(ConvOps, GradientsMatchCentralDifferences) {
    for (const Layer &layer : gradient_layers()) {
        const vae_conv_geometry &g = layer.geometry;
        SCOPED_TRACE(std::string(layer.transposed ? "conv_transpose2d " : "conv2d ") + std::to_string(g.in_channels) +
                     "x" + std::to_string(g.in_height) + "x" + std::to_string(g.in_width) + " -> " +
                     std::to_string(g.out_channels) + "x" + std::to_string(g.out_height) + "x" +
                     std::to_string(g.out_width) + " k" + std::to_string(g.kernel_size) + " s" +
                     std::to_string(g.stride) + " p" + std::to_string(g.padding));
        std::vector<float> x = vae_test::random_normal(layer.x_count(), 201);
        std::vector<float> weight = vae_test::random_normal(layer.weight_count(), 202, 0.5f);
        std::vector<float> bias = vae_test::random_normal(g.out_channels, 203);
        const std::vector<float> dy = vae_test::random_normal(layer.y_count(), 204);
        std::vector<float> y(layer.y_count()), workspace(vae_conv_workspace_floats(&g, layer.batch));
        std::vector<float> dx(layer.x_count(), NAN), dweight(layer.weight_count(), NAN), dbias(g.out_channels, NAN);
        const vae_status status =
            layer.transposed
                ? vae_backend_conv_transpose2d_backward(backend_, &g, layer.batch, x.data(), weight.data(), dy.data(),
                                                        dx.data(), dweight.data(), dbias.data(), workspace.data())
                : vae_backend_conv2d_backward(backend_, &g, layer.batch, x.data(), weight.data(), dy.data(),
                                              dx.data(), dweight.data(), dbias.data(), workspace.data());
        ASSERT_EQ(status, VAE_OK) << vae_last_error();

        auto loss = [&]() {
            EXPECT_EQ(run_forward(backend_, layer, x, weight, bias, y, workspace), VAE_OK) << vae_last_error();
            double sum = 0;
            for (size_t i = 0; i < y.size(); ++i) sum += (double)dy[i] * y[i];
            return sum;
        };
        const float step = 0.5f;
        auto numeric = [&](std::vector<float> &values) {
            std::vector<double> gradient(values.size());
            for (size_t i = 0; i < values.size(); ++i) {
                const float saved = values[i];
                values[i] = saved + step;
                const double up = loss();
                values[i] = saved - step;
                const double down = loss();
                values[i] = saved;
                gradient[i] = (up - down) / (2.0 * step);
            }
            return gradient;
        };
        expect_close(dx, numeric(x), "dx");
        expect_close(dweight, numeric(weight), "dweight");
        expect_close(dbias, numeric(bias), "dbias");
    }
}

// Gradients are overwritten, never accumulated, and the ones not asked for
// (NULL) leave the others unchanged.
TEST_F(ConvOps, GradientsAreOverwrittenAndMayBeLeftOut) {
    for (const Layer &layer : gradient_layers()) {
        const vae_conv_geometry &g = layer.geometry;
        const std::vector<float> x = vae_test::random_normal(layer.x_count(), 211);
        const std::vector<float> weight = vae_test::random_normal(layer.weight_count(), 212);
        const std::vector<float> dy = vae_test::random_normal(layer.y_count(), 213);
        std::vector<float> workspace(vae_conv_workspace_floats(&g, layer.batch));
        auto backward = [&](float *dx, float *dweight, float *dbias) {
            const vae_status status =
                layer.transposed ? vae_backend_conv_transpose2d_backward(backend_, &g, layer.batch, x.data(),
                                                                         weight.data(), dy.data(), dx, dweight, dbias,
                                                                         workspace.data())
                                 : vae_backend_conv2d_backward(backend_, &g, layer.batch, x.data(), weight.data(),
                                                               dy.data(), dx, dweight, dbias, workspace.data());
            ASSERT_EQ(status, VAE_OK) << vae_last_error();
        };
        std::vector<float> dx(layer.x_count()), dweight(layer.weight_count()), dbias(g.out_channels);
        backward(dx.data(), dweight.data(), dbias.data());
        std::vector<float> dx2(layer.x_count(), 123.0f), dweight2(layer.weight_count(), -7.0f),
            dbias2(g.out_channels, 99.0f);
        backward(dx2.data(), nullptr, nullptr);
        backward(nullptr, dweight2.data(), nullptr);
        backward(nullptr, nullptr, dbias2.data());
        EXPECT_EQ(dx2, dx);
        EXPECT_EQ(dweight2, dweight);
        EXPECT_EQ(dbias2, dbias);
    }
}

// ------------------------------------------------------------------ argument errors

struct Call {
    std::string description;
    std::function<vae_status()> call;
    std::string expected;  // a part of the message
};

TEST_F(ConvOps, BadArgumentsAreRefusedWithClearMessages) {
    const vae_conv_geometry good = {3, 7, 5, 4, 4, 3, 3, 2, 1};       // conv2d: (7 + 2 - 3) / 2 + 1 = 4, 3
    const vae_conv_geometry transposed = {4, 4, 3, 3, 7, 5, 3, 2, 1}; // (4 - 1) 2 - 2 + 3 = 7, 5
    const int batch = 2;
    std::vector<float> buffer(4096, 0.0f), workspace(vae_conv_workspace_floats(&good, batch) +
                                                     vae_conv_workspace_floats(&transposed, batch));
    float *b = buffer.data(), *w = workspace.data();
    vae_backend *cpu = backend_;
    ASSERT_EQ(vae_backend_conv2d_forward(cpu, &good, batch, b, b, b, b, w), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_conv_transpose2d_forward(cpu, &transposed, batch, b, b, nullptr, b, w), VAE_OK)
        << vae_last_error();
    ASSERT_EQ(vae_backend_conv2d_backward(cpu, &good, batch, b, b, b, nullptr, nullptr, b, w), VAE_OK);

    auto with = [&](std::function<void(vae_conv_geometry &)> change) {
        vae_conv_geometry g = good;
        change(g);
        return g;
    };
    const vae_conv_geometry off_by_one = with([](vae_conv_geometry &g) { g.out_height = 5; });
    const vae_conv_geometry negative_padding = with([](vae_conv_geometry &g) { g.padding = -1; });
    const vae_conv_geometry zero_stride = with([](vae_conv_geometry &g) { g.stride = 0; });
    const vae_conv_geometry zero_channels = with([](vae_conv_geometry &g) { g.in_channels = 0; });
    const vae_conv_geometry no_output = with([](vae_conv_geometry &g) { g.out_width = 0; });
    const vae_conv_geometry too_big_kernel = {3, 2, 2, 4, 1, 1, 5, 1, 1};  // 2 + 2 < 5
    const vae_conv_geometry huge = with([](vae_conv_geometry &g) { g.in_height = 1 << 20; });
    const vae_conv_geometry wide_channels = {1 << 30, 7, 5, 4, 4, 3, 3, 2, 1};  // rows 9 * 2^30 > 2^31
    const std::vector<Call> calls = {
        {"no backend", [&] { return vae_backend_conv2d_forward(nullptr, &good, batch, b, b, b, b, w); }, "no backend"},
        {"NULL geometry", [&] { return vae_backend_conv2d_forward(cpu, nullptr, batch, b, b, b, b, w); },
         "conv2d_forward: the geometry is NULL"},
        {"batch 0", [&] { return vae_backend_conv2d_forward(cpu, &good, 0, b, b, b, b, w); },
         "batch must be positive, got 0"},
        {"output off by one", [&] { return vae_backend_conv2d_forward(cpu, &off_by_one, batch, b, b, b, b, w); },
         "output 5x3 does not fit a 7x5 input with k3 s2 p1: (in + 2p - k) / s + 1 gives 4x3"},
        {"conv2d sizes given to the transposed op",
         [&] { return vae_backend_conv_transpose2d_forward(cpu, &good, batch, b, b, b, b, w); },
         "conv_transpose2d_forward: output 4x3 does not fit a 7x5 input with k3 s2 p1: (in - 1) s - 2p + k gives "
         "13x9"},
        {"transposed sizes given to conv2d",
         [&] { return vae_backend_conv2d_backward(cpu, &transposed, batch, b, b, b, b, b, b, w); },
         "conv2d_backward: output 7x5 does not fit"},
        {"negative padding", [&] { return vae_backend_conv2d_forward(cpu, &negative_padding, batch, b, b, b, b, w); },
         "padding must not be negative, got -1"},
        {"zero stride", [&] { return vae_backend_conv2d_forward(cpu, &zero_stride, batch, b, b, b, b, w); },
         "kernel size and stride must be positive, got k3 s0"},
        {"zero channels",
         [&] { return vae_backend_conv_transpose2d_backward(cpu, &zero_channels, batch, b, b, b, b, b, b, w); },
         "input channels, height and width must be positive, got 0x7x5"},
        {"no output", [&] { return vae_backend_conv2d_forward(cpu, &no_output, batch, b, b, b, b, w); },
         "output channels, height and width must be positive, got 4x4x0"},
        {"kernel larger than the padded input",
         [&] { return vae_backend_conv2d_forward(cpu, &too_big_kernel, batch, b, b, b, b, w); },
         "a 2x2 input with k5 s1 p1 has no output"},
        {"size over the limit", [&] { return vae_backend_conv2d_forward(cpu, &huge, batch, b, b, b, b, w); },
         "a size above 32768"},
        {"unfolded rows over int", [&] { return vae_backend_conv2d_forward(cpu, &wide_channels, batch, b, b, b, b, w); },
         "too large for int GEMM sizes"},
        {"NULL workspace", [&] { return vae_backend_conv2d_forward(cpu, &good, batch, b, b, b, b, nullptr); },
         "no workspace (needs vae_conv_workspace_floats"},
        {"NULL x", [&] { return vae_backend_conv2d_forward(cpu, &good, batch, nullptr, b, b, b, w); },
         "NULL pointer (x, weight or y)"},
        {"NULL weight",
         [&] { return vae_backend_conv_transpose2d_forward(cpu, &transposed, batch, b, nullptr, b, b, w); },
         "conv_transpose2d_forward: NULL pointer (x, weight or y)"},
        {"NULL dy", [&] { return vae_backend_conv2d_backward(cpu, &good, batch, b, b, nullptr, b, b, b, w); },
         "NULL pointer (x, weight or dy)"},
        {"nothing to compute",
         [&] { return vae_backend_conv2d_backward(cpu, &good, batch, b, b, b, nullptr, nullptr, nullptr, w); },
         "dx, dweight and dbias are all NULL"},
        {"nothing to compute (transposed)",
         [&] {
             return vae_backend_conv_transpose2d_backward(cpu, &transposed, batch, b, b, b, nullptr, nullptr, nullptr,
                                                          w);
         },
         "conv_transpose2d_backward: dx, dweight and dbias are all NULL"},
        {"NULL workspace (backward)",
         [&] { return vae_backend_conv_transpose2d_backward(cpu, &transposed, batch, b, b, b, b, b, b, nullptr); },
         "conv_transpose2d_backward: no workspace"},
    };
    for (const Call &call : calls) {
        SCOPED_TRACE(call.description);
        vae_error_clear();
        EXPECT_EQ(call.call(), VAE_ERROR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(vae_last_error()).find(call.expected), std::string::npos)
            << "message: " << vae_last_error() << "\nexpected to contain: " << call.expected;
    }
}

// bf16 on the CPU: the convolutions' GEMMs take bfloat16-rounded operands
// (src/backends/cpu_gemm.h). The unfold, stage and fold steps only move
// values, so each result equals, bit for bit, the fp32 backend's on rounded
// x, weight and dy; the bias gradient (a sum, not a GEMM) stays fp32. The
// layers include a batch of 100 28x28 images, whose unfolding spans two
// chunks (the weight gradient adds chunk products).
TEST(ConvBfloat16, CpuConvolutionsAreFp32OnesOfRoundedOperands) {
    vae_backend *bf16 = nullptr, *fp32 = nullptr;
    ASSERT_EQ(vae_backend_create_cpu_precision(&bf16, VAE_PRECISION_BF16), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_backend_create_cpu(&fp32), VAE_OK) << vae_last_error();
    std::vector<Layer> layers = gradient_layers();
    layers.push_back({false, 100, {1, 28, 28, 8, 14, 14, 4, 2, 1}});
    layers.push_back({true, 100, {8, 14, 14, 1, 28, 28, 4, 2, 1}});
    auto rounded = [](std::vector<float> values) {
        for (float &value : values) value = vae_round_to_bfloat16(value);
        return values;
    };
    auto same_bits = [](const std::vector<float> &a, const std::vector<float> &b) {
        return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    };
    for (const Layer &layer : layers) {
        const vae_conv_geometry &g = layer.geometry;
        SCOPED_TRACE(std::string(layer.transposed ? "conv_transpose2d" : "conv2d") + " batch " +
                     std::to_string(layer.batch) + " in " + std::to_string(g.in_channels) + "x" +
                     std::to_string(g.in_height) + "x" + std::to_string(g.in_width));
        const std::vector<float> x = vae_test::random_normal(layer.x_count(), 301);
        const std::vector<float> weight = vae_test::random_normal(layer.weight_count(), 302, 0.5f);
        const std::vector<float> bias = vae_test::random_normal(g.out_channels, 303);
        const std::vector<float> dy = vae_test::random_normal(layer.y_count(), 304);
        std::vector<float> workspace(vae_conv_workspace_floats(&g, layer.batch));
        std::vector<float> y(layer.y_count()), y_rounded(layer.y_count()), y_fp32(layer.y_count());
        ASSERT_EQ(run_forward(bf16, layer, x, weight, bias, y, workspace), VAE_OK) << vae_last_error();
        ASSERT_EQ(run_forward(fp32, layer, rounded(x), rounded(weight), bias, y_rounded, workspace), VAE_OK);
        ASSERT_EQ(run_forward(fp32, layer, x, weight, bias, y_fp32, workspace), VAE_OK);
        EXPECT_TRUE(same_bits(y, y_rounded)) << "forward";
        EXPECT_GT(vae_test::relative_error(y, y_fp32), 1e-4) << "bf16 rounding left no trace";

        struct Gradients {
            std::vector<float> dx, dweight, dbias;
        };
        auto backward = [&](vae_backend *backend, const std::vector<float> &xs, const std::vector<float> &ws,
                            const std::vector<float> &dys) {
            Gradients out{std::vector<float>(layer.x_count(), NAN), std::vector<float>(layer.weight_count(), NAN),
                          std::vector<float>(g.out_channels, NAN)};
            const vae_status status =
                layer.transposed
                    ? vae_backend_conv_transpose2d_backward(backend, &g, layer.batch, xs.data(), ws.data(), dys.data(),
                                                            out.dx.data(), out.dweight.data(), out.dbias.data(),
                                                            workspace.data())
                    : vae_backend_conv2d_backward(backend, &g, layer.batch, xs.data(), ws.data(), dys.data(),
                                                  out.dx.data(), out.dweight.data(), out.dbias.data(),
                                                  workspace.data());
            EXPECT_EQ(status, VAE_OK) << vae_last_error();
            return out;
        };
        const Gradients emulated = backward(bf16, x, weight, dy);
        const Gradients on_rounded = backward(fp32, rounded(x), rounded(weight), rounded(dy));
        const Gradients plain = backward(fp32, x, weight, dy);
        EXPECT_TRUE(same_bits(emulated.dx, on_rounded.dx)) << "dx";
        EXPECT_TRUE(same_bits(emulated.dweight, on_rounded.dweight)) << "dweight";
        EXPECT_TRUE(same_bits(emulated.dbias, plain.dbias)) << "dbias is fp32";
        EXPECT_GT(vae_test::relative_error(emulated.dweight, plain.dweight), 1e-4);
    }
    vae_backend_destroy(bf16);
    vae_backend_destroy(fp32);
}

}  // namespace
