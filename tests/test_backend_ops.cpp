// Backend parity as a table, in the spirit of ggml's test-backend-ops: each
// line of cases() is one (operation, shapes, tolerance) case, and every case
// runs
//   1. on the CPU backend against a plain scalar reference of the operation
//      written below in double precision, so the table itself is exercised
//      on any machine and a planted bug in the CPU backend fails it;
//   2. on every other backend present (the CUDA backend) against the CPU
//      backend; without a usable GPU these cases are skipped, visibly.
// Sizes include real-model ones (dim 1000, latent 300, 300 rows, element-wise
// counts over 1.1 million) so that multi-block paths run on a GPU; the host
// execution target's build runs most of those at smaller sizes (see cases()).
//
// Timing mode: VAE_BACKEND_OPS_PERF=1 ./test_backend_ops
//   --gtest_filter=BackendOpsPerf.* prints every case's time per call on each
// backend present, side by side (the peers measured in the same run).
//
// A new case costs one line in cases(); a new operation one case builder
// (inputs, the call through the vae_backend_* wrappers, a scalar reference);
// a new backend one entry in other_backends().
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "vae_philox.h"
}

namespace {

using Values = std::vector<double>;
struct Output {
    std::string name;
    Values values;
};
using Outputs = std::vector<Output>;

// How outputs are compared: the normalised error ||a - b|| / ||b|| over the
// finite elements (non-finite ones must match exactly: both NaN or the same
// infinity), or the fraction of elements that differ at all (binarised data,
// where a uniform draw within rounding of the value may fall either way).
enum class Compare { kNormalized, kMismatches };
struct Tolerance {
    Compare mode;
    double value;
};
Tolerance normalized(double value) { return {Compare::kNormalized, value}; }
Tolerance mismatches(double fraction) { return {Compare::kMismatches, fraction}; }

void check(vae_status status, const char *what) {
    if (status != VAE_OK) throw std::runtime_error(std::string(what) + ": " + vae_last_error());
}

// The buffers of one case on one backend; freed with the arena.
class Arena {
  public:
    explicit Arena(vae_backend *backend) : backend_(backend) {}
    ~Arena() {
        for (void *pointer : pointers_) vae_backend_free(backend_, pointer);
    }
    Arena(const Arena &) = delete;
    Arena &operator=(const Arena &) = delete;
    vae_backend *backend() const { return backend_; }

    void *allocate(size_t bytes) {
        void *pointer = nullptr;
        check(vae_backend_alloc(backend_, bytes, &pointer), "alloc");
        pointers_.push_back(pointer);
        return pointer;
    }
    template <class T> T *upload(const std::vector<T> &values) {
        void *pointer = allocate(std::max<size_t>(1, values.size()) * sizeof(T));
        check(vae_backend_copy_to_device(backend_, pointer, values.data(), values.size() * sizeof(T)),
              "copy_to_device");
        return static_cast<T *>(pointer);
    }
    // Floats filled with NaN: an element an operation forgets to write fails
    // the comparison.
    float *floats(size_t count) {
        float *pointer = static_cast<float *>(allocate(std::max<size_t>(1, count) * sizeof(float)));
        check(vae_backend_fill(backend_, pointer, NAN, count), "fill");
        return pointer;
    }
    vae_step_counter *counter(uint64_t step) {
        return upload(std::vector<vae_step_counter>{{step, 0, 0}});
    }
    template <class T> Values download(const T *device, size_t count) {
        std::vector<T> host(count);
        check(vae_backend_copy_to_host(backend_, host.data(), device, count * sizeof(T)), "copy_to_host");
        return Values(host.begin(), host.end());
    }
    Values download_counter(const vae_step_counter *device) {
        std::vector<vae_step_counter> host(1);
        check(vae_backend_copy_to_host(backend_, host.data(), device, sizeof(vae_step_counter)), "copy_to_host");
        return {(double)host[0].step, (double)host[0].skipped_steps, (double)host[0].nonfinite_seen};
    }

  private:
    vae_backend *backend_;
    std::vector<void *> pointers_;
};

// A case made ready on one backend: launch enqueues the operation (the timed
// part), read brings its outputs back.
struct Prepared {
    std::function<void()> launch;
    std::function<Outputs()> read;
};

struct OpCase {
    std::string name;
    Tolerance reference_tolerance;  // CPU backend against the scalar reference
    Tolerance backend_tolerance;    // another backend against the CPU backend
    int launches;                   // calls per parity run (state-carrying operations: several steps)
    std::function<Prepared(Arena &)> prepare;
    std::function<Outputs()> reference;
};

// ------------------------------------------------------------------ inputs

std::vector<float> normal(size_t count, uint64_t seed, float scale = 1.0f) {
    return vae_test::random_normal(count, seed, scale);
}
std::vector<float> uniform(size_t count, uint64_t seed, float low, float high) {
    return vae_test::random_uniform(count, seed, low, high);
}
// [rows, 2*latent]: means, then log-variances in [-4, 4].
std::vector<float> mu_logvar_values(int rows, int latent, uint64_t seed) {
    std::vector<float> mus = normal((size_t)rows * latent, seed), logvars = uniform((size_t)rows * latent, seed + 1, -4, 4);
    std::vector<float> values((size_t)rows * 2 * latent);
    for (int b = 0; b < rows; ++b)
        for (int j = 0; j < latent; ++j) {
            values[(size_t)b * 2 * latent + j] = mus[(size_t)b * latent + j];
            values[(size_t)b * 2 * latent + latent + j] = logvars[(size_t)b * latent + j];
        }
    return values;
}
std::string shape(const std::string &operation, std::initializer_list<std::pair<const char *, long>> sizes) {
    std::string name = operation;
    for (const auto &size : sizes) name += std::string("_") + size.first + std::to_string(size.second);
    return name;
}

// ------------------------------------------------------------------ scalar reference math (double)

double softplus(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
double clamp_logvar(double logvar, double clamp) {
    return clamp > 0 ? std::min(clamp, std::max(-clamp, logvar)) : logvar;
}
double beta_at(uint64_t step, double beta, uint64_t warmup) {
    return warmup == 0 || step + 1 >= warmup ? beta : beta * (double)(step + 1) / (double)warmup;
}
const char *activation_name(vae_activation activation) {
    static const char *names[] = {"relu", "tanh", "softplus", "gelu", "identity"};
    return names[activation];
}
double activate(vae_activation activation, double x) {
    switch (activation) {
    case VAE_ACTIVATION_RELU: return x > 0 ? x : 0;
    case VAE_ACTIVATION_TANH: return std::tanh(x);
    case VAE_ACTIVATION_SOFTPLUS: return softplus(x);
    case VAE_ACTIVATION_GELU: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    default: return x;
    }
}
double activation_slope(vae_activation activation, double x) {
    switch (activation) {
    case VAE_ACTIVATION_RELU: return x > 0 ? 1 : 0;
    case VAE_ACTIVATION_TANH: return 1 - std::tanh(x) * std::tanh(x);
    case VAE_ACTIVATION_SOFTPLUS: return sigmoid(x);
    case VAE_ACTIVATION_GELU:
        return 0.5 * (1 + std::erf(x / std::sqrt(2.0))) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI);
    default: return 1;
    }
}
Values to_values(const std::vector<float> &values) { return Values(values.begin(), values.end()); }

// ------------------------------------------------------------------ case builders, one per operation

OpCase fill_case(size_t count) {
    OpCase c{shape("fill", {{"n", (long)count}}), normalized(0), normalized(0), 1, nullptr, nullptr};
    c.prepare = [count](Arena &arena) {
        float *destination = arena.floats(count);
        return Prepared{[&arena, destination, count] { check(vae_backend_fill(arena.backend(), destination, 0.375f, count), "fill"); },
                        [&arena, destination, count] { return Outputs{{"filled", arena.download(destination, count)}}; }};
    };
    c.reference = [count] { return Outputs{{"filled", Values(count, 0.375)}}; };
    return c;
}

// Copies the first `copied` floats of a buffer of `count` over a filled one.
OpCase copy_case(size_t count, size_t copied) {
    auto source = std::make_shared<std::vector<float>>(normal(count, 11));
    OpCase c{shape("copy", {{"n", (long)count}, {"copied", (long)copied}}), normalized(0), normalized(0), 1, nullptr,
             nullptr};
    c.prepare = [=](Arena &arena) {
        float *from = arena.upload(*source), *to = arena.floats(count);
        check(vae_backend_fill(arena.backend(), to, 0.25f, count), "fill");
        return Prepared{[&arena, from, to, copied] { check(vae_backend_copy(arena.backend(), to, from, copied * sizeof(float)), "copy"); },
                        [&arena, to, count] { return Outputs{{"destination", arena.download(to, count)}}; }};
    };
    c.reference = [=] {
        Values expected(count, 0.25);
        for (size_t i = 0; i < copied; ++i) expected[i] = (*source)[i];
        return Outputs{{"destination", expected}};
    };
    return c;
}

OpCase linear_forward_case(int rows, int in, int out, bool with_bias) {
    auto x = std::make_shared<std::vector<float>>(normal((size_t)rows * in, 21));
    auto weight = std::make_shared<std::vector<float>>(normal((size_t)out * in, 22, 1.0f / std::sqrt((float)in)));
    auto bias = std::make_shared<std::vector<float>>(normal(out, 23));
    OpCase c{shape(with_bias ? "linear_forward" : "linear_forward_nobias", {{"rows", rows}, {"in", in}, {"out", out}}),
             normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *dx = arena.upload(*x), *dw = arena.upload(*weight), *db = with_bias ? arena.upload(*bias) : nullptr;
        float *y = arena.floats((size_t)rows * out);
        return Prepared{[=, &arena] { check(vae_backend_linear_forward(arena.backend(), dx, dw, db, y, rows, in, out), "linear_forward"); },
                        [=, &arena] { return Outputs{{"y", arena.download(y, (size_t)rows * out)}}; }};
    };
    c.reference = [=] {
        Values y((size_t)rows * out);
        for (int r = 0; r < rows; ++r)
            for (int o = 0; o < out; ++o) {
                double sum = with_bias ? (*bias)[o] : 0.0;
                for (int i = 0; i < in; ++i) sum += (double)(*x)[(size_t)r * in + i] * (*weight)[(size_t)o * in + i];
                y[(size_t)r * out + o] = sum;
            }
        return Outputs{{"y", y}};
    };
    return c;
}

OpCase linear_backward_case(int rows, int in, int out, bool with_dx) {
    auto x = std::make_shared<std::vector<float>>(normal((size_t)rows * in, 31));
    auto weight = std::make_shared<std::vector<float>>(normal((size_t)out * in, 32, 1.0f / std::sqrt((float)in)));
    auto dy = std::make_shared<std::vector<float>>(normal((size_t)rows * out, 33));
    OpCase c{shape(with_dx ? "linear_backward" : "linear_backward_nodx", {{"rows", rows}, {"in", in}, {"out", out}}),
             normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *dx_in = arena.upload(*x), *w = arena.upload(*weight), *g = arena.upload(*dy);
        float *dx = with_dx ? arena.floats((size_t)rows * in) : nullptr;
        float *dweight = arena.floats((size_t)out * in), *dbias = arena.floats(out);
        return Prepared{[=, &arena] {
                            check(vae_backend_linear_backward(arena.backend(), dx_in, w, g, dx, dweight, dbias, rows, in, out),
                                  "linear_backward");
                        },
                        [=, &arena] {
                            Outputs outputs{{"dweight", arena.download(dweight, (size_t)out * in)},
                                            {"dbias", arena.download(dbias, out)}};
                            if (with_dx) outputs.push_back({"dx", arena.download(dx, (size_t)rows * in)});
                            return outputs;
                        }};
    };
    c.reference = [=] {
        Values dweight((size_t)out * in, 0.0), dbias(out, 0.0), dx((size_t)rows * in, 0.0);
        for (int r = 0; r < rows; ++r)
            for (int o = 0; o < out; ++o) {
                double g = (*dy)[(size_t)r * out + o];
                dbias[o] += g;
                for (int i = 0; i < in; ++i) {
                    dweight[(size_t)o * in + i] += g * (*x)[(size_t)r * in + i];
                    dx[(size_t)r * in + i] += g * (*weight)[(size_t)o * in + i];
                }
            }
        Outputs outputs{{"dweight", dweight}, {"dbias", dbias}};
        if (with_dx) outputs.push_back({"dx", dx});
        return outputs;
    };
    return c;
}

// ------------------------------------------------------------------ convolutions
//
// The reference is the direct definition, in double, by scattering every
// (input pixel, kernel tap) product to the output pixel it feeds: no
// unfolding, nothing shared with kernels/vae_conv_geometry.h but the struct.
// conv2d:           y[b,o,oy,ox] += x[b,c,oy*s-p+i, ox*s-p+j] w[o,c,i,j]
// conv_transpose2d: y[b,o,iy*s-p+i, ix*s-p+j] += x[b,c,iy,ix] w[c,o,i,j]
struct ConvShape {
    bool transposed;
    int batch, in_channels, in_height, in_width, out_channels, kernel, stride, padding;

    int out_size(int in) const {
        return transposed ? (in - 1) * stride - 2 * padding + kernel : (in + 2 * padding - kernel) / stride + 1;
    }
    vae_conv_geometry geometry() const {
        return {in_channels, in_height, in_width, out_channels, out_size(in_height), out_size(in_width), kernel, stride,
                padding};
    }
    size_t x_count() const { return (size_t)batch * in_channels * in_height * in_width; }
    size_t y_count() const { return (size_t)batch * out_channels * out_size(in_height) * out_size(in_width); }
    size_t weight_count() const { return (size_t)in_channels * out_channels * kernel * kernel; }
    std::string name(const std::string &operation) const {
        return shape(std::string(transposed ? "conv_transpose2d_" : "conv2d_") + operation,
                     {{"b", batch}, {"c", in_channels}, {"h", in_height}, {"w", in_width}, {"o", out_channels},
                      {"k", kernel}, {"s", stride}, {"p", padding}});
    }
    // Calls visit(x index, weight index, y index) for every product of the layer.
    template <class Visit> void for_each_product(Visit visit) const {
        const int oh = out_size(in_height), ow = out_size(in_width);
        for (int b = 0; b < batch; ++b)
            for (int c = 0; c < in_channels; ++c)
                for (int o = 0; o < out_channels; ++o)
                    for (int i = 0; i < kernel; ++i)
                        for (int j = 0; j < kernel; ++j) {
                            const size_t w = transposed ? (((size_t)c * out_channels + o) * kernel + i) * kernel + j
                                                        : (((size_t)o * in_channels + c) * kernel + i) * kernel + j;
                            if (transposed) {
                                for (int iy = 0; iy < in_height; ++iy)
                                    for (int ix = 0; ix < in_width; ++ix) {
                                        const int oy = iy * stride - padding + i, ox = ix * stride - padding + j;
                                        if (oy < 0 || oy >= oh || ox < 0 || ox >= ow) continue;
                                        visit((((size_t)b * in_channels + c) * in_height + iy) * in_width + ix, w,
                                              (((size_t)b * out_channels + o) * oh + oy) * ow + ox);
                                    }
                            } else {
                                for (int oy = 0; oy < oh; ++oy)
                                    for (int ox = 0; ox < ow; ++ox) {
                                        const int iy = oy * stride - padding + i, ix = ox * stride - padding + j;
                                        if (iy < 0 || iy >= in_height || ix < 0 || ix >= in_width) continue;
                                        visit((((size_t)b * in_channels + c) * in_height + iy) * in_width + ix, w,
                                              (((size_t)b * out_channels + o) * oh + oy) * ow + ox);
                                    }
                            }
                        }
    }
    size_t plane() const { return (size_t)out_size(in_height) * out_size(in_width); }
};

vae_status conv_forward(const ConvShape &s, vae_backend *backend, const vae_conv_geometry *g, const float *x,
                        const float *w, const float *bias, float *y, float *workspace) {
    return s.transposed ? vae_backend_conv_transpose2d_forward(backend, g, s.batch, x, w, bias, y, workspace)
                        : vae_backend_conv2d_forward(backend, g, s.batch, x, w, bias, y, workspace);
}
vae_status conv_backward(const ConvShape &s, vae_backend *backend, const vae_conv_geometry *g, const float *x,
                         const float *w, const float *dy, float *dx, float *dweight, float *dbias, float *workspace) {
    return s.transposed ? vae_backend_conv_transpose2d_backward(backend, g, s.batch, x, w, dy, dx, dweight, dbias, workspace)
                        : vae_backend_conv2d_backward(backend, g, s.batch, x, w, dy, dx, dweight, dbias, workspace);
}

OpCase conv_forward_case(ConvShape s, bool with_bias) {
    auto x = std::make_shared<std::vector<float>>(normal(s.x_count(), 141));
    auto weight = std::make_shared<std::vector<float>>(
        normal(s.weight_count(), 142, 1.0f / std::sqrt((float)(s.in_channels * s.kernel * s.kernel))));
    auto bias = std::make_shared<std::vector<float>>(normal(s.out_channels, 143));
    OpCase c{s.name(with_bias ? "forward" : "forward_nobias"), normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const vae_conv_geometry g = s.geometry();
        const float *dx = arena.upload(*x), *dw = arena.upload(*weight), *db = with_bias ? arena.upload(*bias) : nullptr;
        float *y = arena.floats(s.y_count()), *workspace = arena.floats(vae_conv_workspace_floats(&g, s.batch));
        return Prepared{[=, &arena] { check(conv_forward(s, arena.backend(), &g, dx, dw, db, y, workspace), "conv forward"); },
                        [=, &arena] { return Outputs{{"y", arena.download(y, s.y_count())}}; }};
    };
    c.reference = [=] {
        Values y(s.y_count(), 0.0);
        for (size_t i = 0; i < y.size(); ++i) y[i] = with_bias ? (*bias)[i / s.plane() % s.out_channels] : 0.0;
        s.for_each_product([&](size_t xi, size_t wi, size_t yi) { y[yi] += (double)(*x)[xi] * (*weight)[wi]; });
        return Outputs{{"y", y}};
    };
    return c;
}

// The gradients wanted: dx, dweight, dbias (each may be left out).
OpCase conv_backward_case(ConvShape s, bool with_dx, bool with_dweight, bool with_dbias) {
    auto x = std::make_shared<std::vector<float>>(normal(s.x_count(), 151));
    auto weight = std::make_shared<std::vector<float>>(
        normal(s.weight_count(), 152, 1.0f / std::sqrt((float)(s.in_channels * s.kernel * s.kernel))));
    auto dy = std::make_shared<std::vector<float>>(normal(s.y_count(), 153));
    std::string variant = "backward";
    if (!with_dx) variant += "_nodx";
    if (!with_dweight) variant += "_nodweight";
    if (!with_dbias) variant += "_nodbias";
    OpCase c{s.name(variant), normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const vae_conv_geometry g = s.geometry();
        const float *in = arena.upload(*x), *w = arena.upload(*weight), *gradient = arena.upload(*dy);
        float *dx = with_dx ? arena.floats(s.x_count()) : nullptr;
        float *dweight = with_dweight ? arena.floats(s.weight_count()) : nullptr;
        float *dbias = with_dbias ? arena.floats(s.out_channels) : nullptr;
        float *workspace = arena.floats(vae_conv_workspace_floats(&g, s.batch));
        return Prepared{[=, &arena] {
                            check(conv_backward(s, arena.backend(), &g, in, w, gradient, dx, dweight, dbias, workspace),
                                  "conv backward");
                        },
                        [=, &arena] {
                            Outputs outputs;
                            if (with_dx) outputs.push_back({"dx", arena.download(dx, s.x_count())});
                            if (with_dweight) outputs.push_back({"dweight", arena.download(dweight, s.weight_count())});
                            if (with_dbias) outputs.push_back({"dbias", arena.download(dbias, s.out_channels)});
                            return outputs;
                        }};
    };
    c.reference = [=] {
        Values dx(s.x_count(), 0.0), dweight(s.weight_count(), 0.0), dbias(s.out_channels, 0.0);
        for (size_t i = 0; i < dy->size(); ++i) dbias[i / s.plane() % s.out_channels] += (*dy)[i];
        s.for_each_product([&](size_t xi, size_t wi, size_t yi) {
            dx[xi] += (double)(*dy)[yi] * (*weight)[wi];
            dweight[wi] += (double)(*dy)[yi] * (*x)[xi];
        });
        Outputs outputs;
        if (with_dx) outputs.push_back({"dx", dx});
        if (with_dweight) outputs.push_back({"dweight", dweight});
        if (with_dbias) outputs.push_back({"dbias", dbias});
        return outputs;
    };
    return c;
}

OpCase activation_forward_case(vae_activation activation, size_t count) {
    auto pre = std::make_shared<std::vector<float>>(normal(count, 41 + activation, 3.0f));
    OpCase c{shape(std::string("activation_forward_") + activation_name(activation), {{"n", (long)count}}),
             normalized(1e-6), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *p = arena.upload(*pre);
        float *post = arena.floats(count);
        return Prepared{[=, &arena] { check(vae_backend_activation_forward(arena.backend(), activation, p, post, count), "activation_forward"); },
                        [=, &arena] { return Outputs{{"post", arena.download(post, count)}}; }};
    };
    c.reference = [=] {
        Values post(count);
        for (size_t i = 0; i < count; ++i) post[i] = activate(activation, (*pre)[i]);
        return Outputs{{"post", post}};
    };
    return c;
}

// in_place: dpre aliases dpost, as the training step calls it.
// non_finite: every seventh gradient is +inf, -inf or NaN in turn. A unit
// that is off passes none of it back (ReLU selects; a product with its
// derivative 0 would give NaN).
OpCase activation_backward_case(vae_activation activation, size_t count, bool in_place, bool non_finite = false) {
    auto pre = std::make_shared<std::vector<float>>(normal(count, 51 + activation, 3.0f));
    auto dpost = std::make_shared<std::vector<float>>(normal(count, 52));
    const float specials[3] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN()};
    if (non_finite)
        for (size_t i = 0; i < count; i += 7) (*dpost)[i] = specials[i / 7 % 3];
    OpCase c{shape(std::string(in_place ? "activation_backward_inplace_" : "activation_backward_") +
                       activation_name(activation) + (non_finite ? "_nonfinite" : ""),
                   {{"n", (long)count}}),
             normalized(1e-6), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *p = arena.upload(*pre);
        float *gradient = arena.upload(*dpost);
        float *dpre = in_place ? gradient : arena.floats(count);
        // In place, a repeated launch (timing) multiplies again: fine for timing, one launch for parity.
        return Prepared{[=, &arena] {
                            check(vae_backend_activation_backward(arena.backend(), activation, p, gradient, dpre, count),
                                  "activation_backward");
                        },
                        [=, &arena] { return Outputs{{"dpre", arena.download(dpre, count)}}; }};
    };
    c.reference = [=] {
        Values dpre(count);
        for (size_t i = 0; i < count; ++i) {
            const bool off = activation == VAE_ACTIVATION_RELU && !((*pre)[i] > 0.0f);
            dpre[i] = off ? 0.0 : (double)(*dpost)[i] * activation_slope(activation, (*pre)[i]);
        }
        return Outputs{{"dpre", dpre}};
    };
    return c;
}

// alias: 0 y is its own buffer, 1 y is a, 2 y is b. The same bits on every
// backend (vae_add_scaled is one fused multiply-add everywhere).
OpCase add_scaled_case(size_t count, int alias) {
    static const char *aliases[] = {"add_scaled", "add_scaled_into_a", "add_scaled_into_b"};
    auto a = std::make_shared<std::vector<float>>(normal(count, 61));
    auto b = std::make_shared<std::vector<float>>(normal(count, 62));
    const float scale = -0.6180339f;
    OpCase c{shape(aliases[alias], {{"n", (long)count}}), normalized(1e-7), normalized(0), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        float *as = arena.upload(*a), *bs = arena.upload(*b);
        float *y = alias == 1 ? as : alias == 2 ? bs : arena.floats(count);
        // Aliased, a repeated launch (timing) adds again: fine for timing, one launch for parity.
        return Prepared{[=, &arena] { check(vae_backend_add_scaled(arena.backend(), as, bs, scale, y, count), "add_scaled"); },
                        [=, &arena] { return Outputs{{"y", arena.download(y, count)}}; }};
    };
    c.reference = [=] {
        Values y(count);
        for (size_t i = 0; i < count; ++i) y[i] = (double)(*a)[i] + (double)scale * (*b)[i];
        return Outputs{{"y", y}};
    };
    return c;
}

// row_offset and batch_rows > rows: this process's share of a data-parallel batch.
OpCase gather_case(vae_dtype dtype, vae_binarize binarize, int rows, int dim, int row_offset = 0, int batch_rows = 0) {
    const int global_rows = batch_rows ? batch_rows : rows, steps_per_epoch = 3;
    const int dataset_rows = global_rows * steps_per_epoch + 5;
    const uint64_t step = 7, seed = 0x5bd1e995u;  // batch 7 % 3 = 1 of its epoch
    auto bytes = std::make_shared<std::vector<uint8_t>>((size_t)dataset_rows * dim);
    for (size_t i = 0; i < bytes->size(); ++i) (*bytes)[i] = (uint8_t)((i * 2654435761u) >> 13);
    auto values = std::make_shared<std::vector<float>>(uniform((size_t)dataset_rows * dim, 61, 0.0f, 2.0f));
    auto permutation = std::make_shared<std::vector<int32_t>>(dataset_rows);
    for (int i = 0; i < dataset_rows; ++i) (*permutation)[i] = (int32_t)((i * 7 + 3) % dataset_rows);
    vae_gather_settings settings = {};
    settings.dtype = dtype;
    settings.scale = dtype == VAE_DTYPE_U8 ? 1.0f / 255.0f : 0.5f;
    settings.binarize = binarize;
    settings.threshold = 0.5f;
    settings.seed = seed;
    settings.random_purpose = VAE_RANDOM_BINARIZE;
    settings.steps_per_epoch = steps_per_epoch;
    settings.row_offset = row_offset;
    settings.batch_rows = batch_rows;
    static const char *modes[] = {"none", "static", "dynamic"};
    const bool exact = binarize != VAE_BINARIZE_DYNAMIC;
    OpCase c{shape(std::string("gather_") + (dtype == VAE_DTYPE_U8 ? "u8_" : "f32_") + modes[binarize],
                   {{"rows", rows}, {"dim", dim}, {"offset", row_offset}, {"batch", global_rows}}),
             mismatches(0), mismatches(exact ? 0 : 1e-4), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const void *dataset = dtype == VAE_DTYPE_U8 ? (const void *)arena.upload(*bytes) : (const void *)arena.upload(*values);
        const int32_t *order = arena.upload(*permutation);
        const vae_step_counter *counter = arena.counter(step);
        float *x = arena.floats((size_t)rows * dim);
        return Prepared{[=, &arena] {
                            // The data set as one segment (the table lives for the call).
                            const int64_t first_row[2] = {0, dataset_rows};
                            const void *segment_values[1] = {dataset};
                            const vae_row_segments segments = {1, first_row, segment_values};
                            check(vae_backend_gather_batch(arena.backend(), &segments, order, dim, rows, &settings,
                                                           counter, x),
                                  "gather_batch");
                        },
                        [=, &arena] { return Outputs{{"x", arena.download(x, (size_t)rows * dim)}}; }};
    };
    c.reference = [=] {
        Values x((size_t)rows * dim);
        const uint64_t batch = step % steps_per_epoch;
        for (int r = 0; r < rows; ++r) {
            const int source = (*permutation)[batch * global_rows + row_offset + r];
            for (int j = 0; j < dim; ++j) {
                float value = dtype == VAE_DTYPE_U8 ? (float)(*bytes)[(size_t)source * dim + j] * settings.scale
                                                    : (*values)[(size_t)source * dim + j] * settings.scale;
                if (binarize == VAE_BINARIZE_STATIC) value = value > 0.5f ? 1.0f : 0.0f;
                if (binarize == VAE_BINARIZE_DYNAMIC) {
                    float u[4];
                    vae_uniform4(seed, vae_philox_subsequence(step, VAE_RANDOM_BINARIZE, (uint32_t)(row_offset + r)),
                                 (uint64_t)(j / 4 * 4), u);
                    value = u[j % 4] < value ? 1.0f : 0.0f;
                }
                x[(size_t)r * dim + j] = value;
            }
        }
        return Outputs{{"x", x}};
    };
    return c;
}

// The noise of sample l of row b: Philox at (seed, subsequence(step, purpose, l*rows+b), column).
double philox_normal(uint64_t seed, uint64_t step, uint32_t purpose, uint32_t row, int column) {
    float eps[4];
    vae_normal4(seed, vae_philox_subsequence(step, purpose, row), (uint64_t)(column / 4 * 4), eps);
    return eps[column % 4];
}

// The Philox row of call row b's sample l, written out from the layout the
// settings describe: with rows_hold_samples S > 1 call row b is sample
// b / (rows/S) of data row b % (rows/S); data row d of this process is global
// row row_offset + d of a batch of batch_rows (0: the local batch).
uint32_t noise_row(const vae_noise_settings &noise, int rows, int l, int b) {
    long samples_in_rows = noise.rows_hold_samples > 1 ? noise.rows_hold_samples : 1;
    long local = rows / samples_in_rows, sample = (long)l * samples_in_rows + b / local, data_row = b % local;
    long global = noise.batch_rows ? (long)noise.batch_rows : local;
    return (uint32_t)(sample * global + noise.row_offset + data_row);
}

// groups: the settings of a hierarchical model's deeper group (a column
// offset that is not a multiple of 4, rows that hold 3 samples, a share of a
// data-parallel batch); rows is then a multiple of 3 and samples 1.
OpCase reparam_kl_forward_case(int rows, int latent, int samples, float clamp, bool eps_override,
                               bool groups = false) {
    auto mu_logvar = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 71));
    auto eps = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * latent, 72));
    const uint64_t step = 5;
    vae_noise_settings noise = {0x1234abcdull, VAE_RANDOM_EVAL_EPS, 4, 0, 0};
    if (groups) {
        noise.column_offset = 7;
        noise.rows_hold_samples = 3;
        noise.row_offset = 5;
        noise.batch_rows = (uint32_t)(rows / 3) * 2 + 5;
    }
    const size_t z_count = (size_t)samples * rows * latent;
    OpCase c{shape(eps_override ? "reparam_kl_forward_eps" : groups ? "reparam_kl_forward_groups" : "reparam_kl_forward",
                   {{"rows", rows}, {"latent", latent}, {"samples", samples}, {"clamp", (long)(clamp * 10)}}),
             normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *ml = arena.upload(*mu_logvar), *e = eps_override ? arena.upload(*eps) : nullptr;
        const vae_step_counter *counter = arena.counter(step);
        float *z = arena.floats(z_count), *kl = arena.floats(rows);
        return Prepared{[=, &arena] {
                            check(vae_backend_reparam_kl_forward(arena.backend(), ml, z, kl, rows, latent, samples, &noise,
                                                                 counter, e, clamp),
                                  "reparam_kl_forward");
                        },
                        [=, &arena] { return Outputs{{"z", arena.download(z, z_count)}, {"kl", arena.download(kl, rows)}}; }};
    };
    c.reference = [=] {
        Values z(z_count), kl(rows, 0.0);
        for (int b = 0; b < rows; ++b) {
            const float *mu = mu_logvar->data() + (size_t)b * 2 * latent, *logvar = mu + latent;
            for (int j = 0; j < latent; ++j) {
                double lv = clamp_logvar(logvar[j], clamp);
                kl[b] += 0.5 * ((double)mu[j] * mu[j] + std::exp(lv) - 1 - lv);
                for (int l = 0; l < samples; ++l) {
                    size_t z_row = (size_t)l * rows + b;
                    double e = eps_override ? (*eps)[z_row * latent + j]
                                            : philox_normal(noise.seed, step + noise.step_offset, noise.random_purpose,
                                                            noise_row(noise, rows, l, b), (int)noise.column_offset + j);
                    z[z_row * latent + j] = mu[j] + std::exp(0.5 * lv) * e;
                }
            }
        }
        return Outputs{{"z", z}, {"kl", kl}};
    };
    return c;
}

OpCase reparam_kl_backward_case(int rows, int latent, int samples, float clamp) {
    auto mu_logvar = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 81));
    auto z = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * latent, 82));
    auto dz = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * latent, 83));
    const uint64_t step = 3, warmup = 10;
    const float beta = 0.7f;
    OpCase c{shape("reparam_kl_backward", {{"rows", rows}, {"latent", latent}, {"samples", samples}, {"clamp", (long)(clamp * 10)}}),
             normalized(1e-6), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *ml = arena.upload(*mu_logvar), *zs = arena.upload(*z), *g = arena.upload(*dz);
        const vae_step_counter *counter = arena.counter(step);
        float *gradient = arena.floats((size_t)rows * 2 * latent);
        return Prepared{[=, &arena] {
                            check(vae_backend_reparam_kl_backward(arena.backend(), ml, zs, g, gradient, rows, latent, samples,
                                                                  beta, warmup, counter, clamp),
                                  "reparam_kl_backward");
                        },
                        [=, &arena] { return Outputs{{"dmu_logvar", arena.download(gradient, (size_t)rows * 2 * latent)}}; }};
    };
    c.reference = [=] {
        Values gradient((size_t)rows * 2 * latent);
        const double kl_scale = beta_at(step, beta, warmup) / rows;
        for (int b = 0; b < rows; ++b) {
            const float *mu = mu_logvar->data() + (size_t)b * 2 * latent, *logvar = mu + latent;
            for (int j = 0; j < latent; ++j) {
                double lv = clamp_logvar(logvar[j], clamp);
                double dmu = kl_scale * mu[j], dlv = kl_scale * 0.5 * std::expm1(lv);
                for (int l = 0; l < samples; ++l) {
                    size_t i = ((size_t)l * rows + b) * latent + j;
                    dmu += (*dz)[i];
                    dlv += (double)(*dz)[i] * 0.5 * ((double)(*z)[i] - mu[j]);
                }
                if (clamp > 0 && std::fabs(logvar[j]) > clamp) dlv = 0;
                gradient[(size_t)b * 2 * latent + j] = dmu;
                gradient[(size_t)b * 2 * latent + latent + j] = dlv;
            }
        }
        return Outputs{{"dmu_logvar", gradient}};
    };
    return c;
}

// The KL of q from a conditional prior p (hierarchical latents), against the
// textbook form 0.5 (log s_p^2 / s_q^2 + (s_q^2 + d^2) / s_p^2 - 1) in double
// and its derivatives written from it; the gradients are added to values
// already in dq and dp.
double textbook_gaussian_kl_row(const std::vector<float> &q, const std::vector<float> &p, int b, int latent,
                                double clamp) {
    double kl = 0;
    for (int j = 0; j < latent; ++j) {
        const size_t mu = (size_t)b * 2 * latent + j, logvar = mu + latent;
        const double q_var = std::exp(clamp_logvar(q[logvar], clamp)), p_var = std::exp(clamp_logvar(p[logvar], clamp));
        const double d = (double)q[mu] - p[mu];
        kl += 0.5 * (std::log(p_var / q_var) + (q_var + d * d) / p_var - 1.0);
    }
    return kl;
}

// Free bits halfway between the two middle rows' KLs: about half the rows
// below (no gradient), half above, none within float rounding of the floor.
float free_bits_between_rows(const std::vector<float> &q, const std::vector<float> &p, int rows, int latent,
                             double clamp) {
    std::vector<double> kls;
    for (int b = 0; b < rows; ++b) kls.push_back(textbook_gaussian_kl_row(q, p, b, latent, clamp));
    std::sort(kls.begin(), kls.end());
    return (float)(0.5 * (kls[rows / 2 - 1] + kls[rows / 2]));
}

OpCase gaussian_kl_case(int rows, int latent, float clamp, bool with_gradient, bool with_free_bits = false) {
    auto q = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 91));
    auto p = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 93));
    auto dq_start = std::make_shared<std::vector<float>>(normal((size_t)rows * 2 * latent, 95));
    auto dp_start = std::make_shared<std::vector<float>>(normal((size_t)rows * 2 * latent, 96));
    const uint64_t step = 3, warmup = 10;
    const float beta = 0.7f;
    const float free_bits = with_free_bits ? free_bits_between_rows(*q, *p, rows, latent, clamp) : 0.0f;
    const size_t count = (size_t)rows * 2 * latent;
    OpCase c{shape(std::string(with_gradient ? "gaussian_kl_backward" : "gaussian_kl") + (with_free_bits ? "_freebits" : ""),
                   {{"rows", rows}, {"latent", latent}, {"clamp", (long)(clamp * 10)}}),
             normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *qs = arena.upload(*q), *ps = arena.upload(*p);
        float *dq = with_gradient ? arena.upload(*dq_start) : nullptr;
        float *dp = with_gradient ? arena.upload(*dp_start) : nullptr;
        const vae_step_counter *counter = arena.counter(step);
        float *kl = arena.floats(rows);
        return Prepared{[=, &arena] {
                            check(vae_backend_gaussian_kl(arena.backend(), qs, ps, kl, dq, dp, rows, latent, beta, warmup,
                                                          counter, clamp, free_bits),
                                  "gaussian_kl");
                        },
                        [=, &arena] {
                            Outputs outputs{{"kl", arena.download(kl, rows)}};
                            if (with_gradient) {
                                outputs.push_back({"dq", arena.download(dq, count)});
                                outputs.push_back({"dp", arena.download(dp, count)});
                            }
                            return outputs;
                        }};
    };
    c.reference = [=] {
        Values kl(rows, 0.0), dq(dq_start->begin(), dq_start->end()), dp(dp_start->begin(), dp_start->end());
        const double kl_scale = beta_at(step, beta, warmup) / rows;
        int below = 0, above = 0;
        for (int b = 0; b < rows; ++b) {
            kl[b] = textbook_gaussian_kl_row(*q, *p, b, latent, clamp);
            if (free_bits > 0) {
                // No row so near the floor that float sums could fall on the other side.
                EXPECT_GT(std::fabs(kl[b] - free_bits), 1e-4 * free_bits) << "row " << b;
                if (kl[b] < free_bits) {
                    ++below;
                    continue;  // the floor is a constant: no gradient
                }
                ++above;
            }
            for (int j = 0; j < latent; ++j) {
                const size_t mu = (size_t)b * 2 * latent + j, logvar = mu + latent;
                const double q_var = std::exp(clamp_logvar((*q)[logvar], clamp));
                const double p_var = std::exp(clamp_logvar((*p)[logvar], clamp));
                const double d = (double)(*q)[mu] - (*p)[mu];
                dq[mu] += kl_scale * d / p_var;
                dp[mu] -= kl_scale * d / p_var;
                if (!(clamp > 0 && std::fabs((*q)[logvar]) > clamp)) dq[logvar] += kl_scale * 0.5 * (q_var / p_var - 1.0);
                if (!(clamp > 0 && std::fabs((*p)[logvar]) > clamp))
                    dp[logvar] += kl_scale * 0.5 * (1.0 - (q_var + d * d) / p_var);
            }
        }
        if (free_bits > 0) {
            EXPECT_GT(below, 0) << "free bits: no row below the floor";
            EXPECT_GT(above, 0) << "free bits: no row above the floor";
        }
        Outputs outputs{{"kl", kl}};
        if (with_gradient) {
            outputs.push_back({"dq", dq});
            outputs.push_back({"dp", dp});
        }
        return outputs;
    };
    return c;
}

// log p(z) - log q(z) per row, against the textbook log densities in double;
// accumulate: added to values already in out.
double log_normal_density(double x, double mean, double logvar) {
    return -0.5 * (std::log(2 * M_PI) + logvar + (x - mean) * (x - mean) / std::exp(logvar));
}

OpCase gaussian_log_ratio_case(int rows, int latent, float clamp, bool accumulate) {
    auto z = std::make_shared<std::vector<float>>(normal((size_t)rows * latent, 101, 1.5f));
    auto q = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 102));
    auto p = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 104));
    auto out_start = std::make_shared<std::vector<float>>(normal(rows, 106, 30.0f));
    OpCase c{shape(accumulate ? "gaussian_log_ratio_accumulate" : "gaussian_log_ratio",
                   {{"rows", rows}, {"latent", latent}, {"clamp", (long)(clamp * 10)}}),
             normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *zs = arena.upload(*z), *qs = arena.upload(*q), *ps = arena.upload(*p);
        float *out = accumulate ? arena.upload(*out_start) : arena.floats(rows);
        // Accumulating, a repeated launch (timing) adds again: fine for timing, one launch for parity.
        return Prepared{[=, &arena] {
                            check(vae_backend_gaussian_log_ratio(arena.backend(), zs, qs, ps, out, rows, latent, clamp,
                                                                 accumulate ? 1 : 0),
                                  "gaussian_log_ratio");
                        },
                        [=, &arena] { return Outputs{{"out", arena.download(out, rows)}}; }};
    };
    c.reference = [=] {
        Values out(rows, 0.0);
        for (int b = 0; b < rows; ++b) {
            if (accumulate) out[b] = (*out_start)[b];
            for (int j = 0; j < latent; ++j) {
                const size_t mu = (size_t)b * 2 * latent + j, logvar = mu + latent;
                const double zj = (*z)[(size_t)b * latent + j];
                out[b] += log_normal_density(zj, (*p)[mu], clamp_logvar((*p)[logvar], clamp)) -
                          log_normal_density(zj, (*q)[mu], clamp_logvar((*q)[logvar], clamp));
            }
        }
        return Outputs{{"out", out}};
    };
    return c;
}

// The backward of log p(z) - log q(z) in the IWAE objective with latent
// groups: per row the coefficient -w_r beta_t / mean_rows on the partial
// derivatives of the two log densities (written here from the textbook
// density: d/dx log N(x; m, e^lv) = -(x - m) e^-lv, d/dm = (x - m) e^-lv,
// d/dlv = ((x - m)^2 e^-lv - 1) / 2); dz accumulates, dq and dp are written
// (they start as NaN).
OpCase gaussian_log_ratio_backward_case(int rows, int latent, float clamp, int mean_rows) {
    auto z = std::make_shared<std::vector<float>>(normal((size_t)rows * latent, 121, 1.5f));
    auto q = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 122));
    auto p = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 124));
    auto weight = std::make_shared<std::vector<float>>(uniform(rows, 126, 0.05f, 1.0f));
    auto dz_start = std::make_shared<std::vector<float>>(normal((size_t)rows * latent, 127, 0.1f));
    const uint64_t step = 3, warmup = 10;
    const float beta = 0.7f;
    const size_t count = (size_t)rows * 2 * latent;
    OpCase c{shape("gaussian_log_ratio_backward",
                   {{"rows", rows}, {"latent", latent}, {"clamp", (long)(clamp * 10)}, {"mean", mean_rows}}),
             normalized(1e-6), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *zs = arena.upload(*z), *qs = arena.upload(*q), *ps = arena.upload(*p), *w = arena.upload(*weight);
        float *dz = arena.upload(*dz_start), *dq = arena.floats(count), *dp = arena.floats(count);
        const vae_step_counter *counter = arena.counter(step);
        // dz accumulates: one launch for parity, a repeated one (timing) adds again.
        return Prepared{[=, &arena] {
                            check(vae_backend_gaussian_log_ratio_backward(arena.backend(), zs, qs, ps, w, dz, dq, dp,
                                                                          rows, latent, beta, warmup, counter,
                                                                          mean_rows, clamp),
                                  "gaussian_log_ratio_backward");
                        },
                        [=, &arena] {
                            return Outputs{{"dz", arena.download(dz, (size_t)rows * latent)},
                                           {"dq", arena.download(dq, count)},
                                           {"dp", arena.download(dp, count)}};
                        }};
    };
    c.reference = [=] {
        Values dz = to_values(*dz_start), dq(count), dp(count);
        const double scale = beta_at(step, beta, warmup) / mean_rows;
        for (int b = 0; b < rows; ++b) {
            // d loss / d [log p(z) - log q(z)] of the row
            const double coefficient = -scale * (*weight)[b];
            for (int j = 0; j < latent; ++j) {
                const size_t mu = (size_t)b * 2 * latent + j, logvar = mu + latent, zi = (size_t)b * latent + j;
                const double zj = (*z)[zi];
                const double q_var = std::exp(clamp_logvar((*q)[logvar], clamp));
                const double p_var = std::exp(clamp_logvar((*p)[logvar], clamp));
                const double q_diff = zj - (*q)[mu], p_diff = zj - (*p)[mu];
                // log p(z) - log q(z): + d log N(z; p), - d log N(z; q)
                dz[zi] += coefficient * (-p_diff / p_var + q_diff / q_var);
                dp[mu] = coefficient * (p_diff / p_var);
                dq[mu] = -coefficient * (q_diff / q_var);
                dp[logvar] = coefficient * 0.5 * (p_diff * p_diff / p_var - 1.0);
                dq[logvar] = -coefficient * 0.5 * (q_diff * q_diff / q_var - 1.0);
                if (clamp > 0 && std::fabs((*p)[logvar]) > clamp) dp[logvar] = 0;
                if (clamp > 0 && std::fabs((*q)[logvar]) > clamp) dq[logvar] = 0;
            }
        }
        return Outputs{{"dz", dz}, {"dq", dq}, {"dp", dp}};
    };
    return c;
}

OpCase likelihood_case(vae_likelihood likelihood, int rows, int samples, int dim, bool write_gradient) {
    static const char *names[] = {"bernoulli", "gaussian", "gaussianfixed"};
    const int width = likelihood == VAE_LIKELIHOOD_GAUSSIAN ? 2 * dim : dim;
    const size_t out_count = (size_t)samples * rows * width;
    const float fixed_logvar = -0.7f;
    auto x = std::make_shared<std::vector<float>>(uniform((size_t)rows * dim, 91, 0.0f, 1.0f));
    auto outputs = std::make_shared<std::vector<float>>(normal(out_count, 92, 2.0f));
    if (likelihood == VAE_LIKELIHOOD_GAUSSIAN) {  // log-variances in [-3, 3]
        std::vector<float> logvars = uniform(out_count, 93, -3.0f, 3.0f);
        for (size_t row = 0; row < (size_t)samples * rows; ++row)
            for (int j = 0; j < dim; ++j) (*outputs)[row * width + dim + j] = logvars[row * width + j];
    }
    OpCase c{shape(std::string("likelihood_") + names[likelihood] + (write_gradient ? "_gradient" : ""),
                   {{"rows", rows}, {"samples", samples}, {"dim", dim}}),
             normalized(1e-5), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *target = arena.upload(*x);
        float *out = arena.upload(*outputs), *logp = arena.floats((size_t)samples * rows);
        return Prepared{[=, &arena] {
                            check(vae_backend_likelihood(arena.backend(), likelihood, target, out, logp, rows, samples, dim,
                                                         fixed_logvar, write_gradient),
                                  "likelihood");
                        },
                        [=, &arena] {
                            return Outputs{{"logp", arena.download(logp, (size_t)samples * rows)},
                                           {write_gradient ? "gradient" : "outputs (untouched)", arena.download(out, out_count)}};
                        }};
    };
    c.reference = [=] {
        Values logp((size_t)samples * rows, 0.0), out = to_values(*outputs);
        const double scale = 1.0 / ((double)rows * samples);
        for (int row = 0; row < samples * rows; ++row) {
            const float *target = x->data() + (size_t)(row % rows) * dim;
            const float *o = outputs->data() + (size_t)row * width;
            double *g = out.data() + (size_t)row * width;
            for (int j = 0; j < dim; ++j) {
                double t = target[j];
                if (likelihood == VAE_LIKELIHOOD_BERNOULLI) {
                    logp[row] += t * o[j] - softplus(o[j]);
                    if (write_gradient) g[j] = scale * (sigmoid(o[j]) - t);
                } else {
                    double mean = o[j], lv = likelihood == VAE_LIKELIHOOD_GAUSSIAN ? o[dim + j] : fixed_logvar;
                    double diff = t - mean;
                    logp[row] += -0.5 * (std::log(2 * M_PI) + lv + diff * diff * std::exp(-lv));
                    if (write_gradient) {
                        g[j] = scale * (mean - t) * std::exp(-lv);
                        if (likelihood == VAE_LIKELIHOOD_GAUSSIAN) g[dim + j] = scale * 0.5 * (1 - diff * diff * std::exp(-lv));
                    }
                }
            }
        }
        return Outputs{{"logp", logp}, {write_gradient ? "gradient" : "outputs (untouched)", out}};
    };
    return c;
}

OpCase accumulate_loss_case(int rows, int samples) {
    auto logp = std::make_shared<std::vector<float>>(normal((size_t)samples * rows, 101, 50.0f));
    auto kl = std::make_shared<std::vector<float>>(uniform(rows, 102, 0.0f, 30.0f));
    const std::vector<double> start = {1.5, -2.0, 3.25, 10.0};
    const uint64_t step = 3, warmup = 10;
    const float beta = 0.8f;
    OpCase c{shape("accumulate_loss", {{"rows", rows}, {"samples", samples}}), normalized(1e-7), normalized(1e-10), 1,
             nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *lp = arena.upload(*logp), *k = arena.upload(*kl);
        const vae_step_counter *counter = arena.counter(step);
        double *accumulator = arena.upload(start);
        return Prepared{[=, &arena] {
                            check(vae_backend_accumulate_loss(arena.backend(), lp, k, rows, samples, beta, warmup, counter,
                                                              accumulator),
                                  "accumulate_loss");
                        },
                        [=, &arena] { return Outputs{{"accumulator", arena.download(accumulator, VAE_LOSS_SLOTS)}}; }};
    };
    c.reference = [=] {
        Values sums = start;
        const double beta_now = beta_at(step, beta, warmup);
        for (int b = 0; b < rows; ++b) {
            double reconstruction = 0;
            for (int l = 0; l < samples; ++l) reconstruction += (*logp)[(size_t)l * rows + b];
            reconstruction /= samples;
            sums[VAE_LOSS_SUM_LOSS] += -reconstruction + beta_now * (*kl)[b];
            sums[VAE_LOSS_SUM_RECONSTRUCTION] += reconstruction;
            sums[VAE_LOSS_SUM_KL] += (*kl)[b];
            sums[VAE_LOSS_COUNT] += 1;
        }
        return Outputs{{"accumulator", sums}};
    };
    return c;
}

// nonfinite: some log p are NaN, +inf or -inf (the rule of vae_step_math.h).
OpCase importance_log_mean_case(int rows, int latent, int samples, float clamp, bool nonfinite) {
    auto mu_logvar = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 111));
    auto logp = std::make_shared<std::vector<float>>(normal((size_t)samples * rows, 112, 20.0f));
    auto z = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * latent, 113));
    if (nonfinite) {
        const float specials[] = {NAN, INFINITY, -INFINITY};
        for (int b = 0; b < rows; b += 2) (*logp)[(size_t)(b % samples) * rows + b] = specials[(b / 2) % 3];
        for (int l = 0; l < samples; ++l) (*logp)[(size_t)l * rows + 1] = -INFINITY;  // row 1: every weight -inf
    }
    OpCase c{shape(nonfinite ? "importance_log_mean_nonfinite" : "importance_log_mean",
                   {{"rows", rows}, {"latent", latent}, {"samples", samples}, {"clamp", (long)(clamp * 10)}}),
             normalized(1e-6), normalized(1e-6), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *lp = arena.upload(*logp), *ml = arena.upload(*mu_logvar), *zs = arena.upload(*z);
        float *result = arena.floats(rows);
        return Prepared{[=, &arena] {
                            check(vae_backend_importance_log_mean(arena.backend(), lp, ml, zs, result, rows, latent, samples,
                                                                  clamp),
                                  "importance_log_mean");
                        },
                        [=, &arena] { return Outputs{{"log_mean", arena.download(result, rows)}}; }};
    };
    c.reference = [=] {
        Values result(rows);
        for (int b = 0; b < rows; ++b) {
            const float *mu = mu_logvar->data() + (size_t)b * 2 * latent, *logvar = mu + latent;
            Values weights(samples);
            bool any_nan = false, any_positive_infinity = false;
            for (int l = 0; l < samples; ++l) {
                size_t z_row = (size_t)l * rows + b;
                double w = (*logp)[z_row];
                for (int j = 0; j < latent; ++j) {
                    double zj = (*z)[z_row * latent + j], lv = clamp_logvar(logvar[j], clamp), diff = zj - mu[j];
                    w += -0.5 * zj * zj + 0.5 * (lv + diff * diff * std::exp(-lv));
                }
                weights[l] = w;
                any_nan |= std::isnan(w);
                any_positive_infinity |= w == INFINITY;
            }
            double largest = *std::max_element(weights.begin(), weights.end());
            if (any_nan) result[b] = NAN;
            else if (any_positive_infinity) result[b] = INFINITY;
            else if (largest == -INFINITY) result[b] = -INFINITY;
            else {
                double sum = 0;
                for (double w : weights) sum += std::exp(w - largest);
                result[b] = largest + std::log(sum / samples);
            }
        }
        return Outputs{{"log_mean", result}};
    };
    return c;
}

// The IWAE objective's forward part (vae_step_math.h): log weights, normalised
// weights, row losses, the rescaled likelihood gradient and the sums.
// nonfinite: some log p are NaN, +inf or -inf (the loss follows the
// evaluation's rule, the weights are NaN). with_gradient: out is rescaled
// (else NULL).
// tolerance: the log weights add one float term per latent dimension, so a
// weight's relative error grows with latent (300: about 1e-6).
// with_log_ratio: a hierarchical model's lower groups' log p - log q per
// draw, added to the (top group's) latent term before beta_t.
OpCase iwae_objective_case(int rows, int latent, int samples, int width, float clamp, bool nonfinite,
                           bool with_gradient = true, double tolerance = 1e-6, bool with_log_ratio = false) {
    auto mu_logvar = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 141));
    auto logp = std::make_shared<std::vector<float>>(normal((size_t)samples * rows, 142, 3.0f));
    auto z = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * latent, 143));
    auto kl = std::make_shared<std::vector<float>>(uniform(rows, 144, 0.0f, 30.0f));
    auto outputs = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * width, 145));
    auto log_ratio = std::make_shared<std::vector<float>>(normal((size_t)samples * rows, 146, 4.0f));
    if (nonfinite) {
        const float specials[] = {NAN, INFINITY, -INFINITY};
        for (int b = 0; b < rows; b += 2) (*logp)[(size_t)(b % samples) * rows + b] = specials[(b / 2) % 3];
        for (int l = 0; l < samples; ++l) (*logp)[(size_t)l * rows + 1] = -INFINITY;  // row 1: every weight -inf
    }
    const std::vector<double> start = {1.5, -2.0, 3.25, 10.0};
    const uint64_t step = 3, warmup = 10;
    const float beta = 0.8f;
    const size_t draws = (size_t)samples * rows, out_count = draws * width;
    OpCase c{shape(std::string(nonfinite ? "iwae_objective_nonfinite" : "iwae_objective") +
                       (with_gradient ? "" : "_nogradient") + (with_log_ratio ? "_groups" : ""),
                   {{"rows", rows}, {"latent", latent}, {"samples", samples}, {"width", width},
                    {"clamp", (long)(clamp * 10)}}),
             normalized(tolerance), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *lp = arena.upload(*logp), *ml = arena.upload(*mu_logvar), *zs = arena.upload(*z);
        const float *k = arena.upload(*kl);
        const float *ratio = with_log_ratio ? arena.upload(*log_ratio) : nullptr;
        float *out = with_gradient ? arena.upload(*outputs) : nullptr;
        float *weight = arena.floats(draws), *row_loss = arena.floats(rows);
        const vae_step_counter *counter = arena.counter(step);
        double *accumulator = arena.upload(start);
        return Prepared{[=, &arena] {
                            check(vae_backend_iwae_objective(arena.backend(), lp, ml, zs, ratio, k, out, weight,
                                                             row_loss, rows, latent, samples, width, beta, warmup,
                                                             counter, clamp, accumulator),
                                  "iwae_objective");
                        },
                        [=, &arena] {
                            Outputs outputs_read{{"weight", arena.download(weight, draws)},
                                                 {"row_loss", arena.download(row_loss, rows)},
                                                 {"accumulator", arena.download(accumulator, VAE_LOSS_SLOTS)}};
                            if (with_gradient) outputs_read.push_back({"out", arena.download(out, out_count)});
                            return outputs_read;
                        }};
    };
    c.reference = [=] {
        Values weight(draws), row_loss(rows), sums = start, out = to_values(*outputs);
        const double beta_now = beta_at(step, beta, warmup);
        for (int b = 0; b < rows; ++b) {
            const float *mu = mu_logvar->data() + (size_t)b * 2 * latent, *logvar = mu + latent;
            Values a(samples);
            bool any_nan = false;
            for (int l = 0; l < samples; ++l) {
                size_t z_row = (size_t)l * rows + b;
                double prior_minus_posterior = 0;
                for (int j = 0; j < latent; ++j) {
                    double zj = (*z)[z_row * latent + j], lv = clamp_logvar(logvar[j], clamp), diff = zj - mu[j];
                    // log N(z; 0, 1) - log N(z; mu, e^lv)
                    prior_minus_posterior += -0.5 * zj * zj + 0.5 * (lv + diff * diff * std::exp(-lv));
                }
                if (with_log_ratio) prior_minus_posterior += (*log_ratio)[z_row];  // the other groups' terms
                a[l] = (*logp)[z_row] + beta_now * prior_minus_posterior;
                any_nan |= std::isnan(a[l]);
            }
            double largest = any_nan ? NAN : *std::max_element(a.begin(), a.end());
            double sum = 0;
            if (std::isfinite(largest))
                for (double value : a) sum += std::exp(value - largest);
            row_loss[b] = std::isfinite(largest) ? -(largest + std::log(sum / samples)) : -largest;
            double reconstruction = 0;
            for (int l = 0; l < samples; ++l) {
                size_t z_row = (size_t)l * rows + b;
                weight[z_row] = std::isfinite(largest) ? std::exp(a[l] - largest) / sum : NAN;
                for (int j = 0; j < width; ++j) out[z_row * width + j] *= samples * weight[z_row];
                reconstruction += (*logp)[z_row];
            }
            sums[VAE_LOSS_SUM_LOSS] += row_loss[b];
            sums[VAE_LOSS_SUM_RECONSTRUCTION] += reconstruction / samples;
            sums[VAE_LOSS_SUM_KL] += (*kl)[b];
            sums[VAE_LOSS_COUNT] += 1;
        }
        Outputs expected{{"weight", weight}, {"row_loss", row_loss}, {"accumulator", sums}};
        if (with_gradient) expected.push_back({"out", out});
        return expected;
    };
    return c;
}

// The IWAE objective's latent backward pass: dz plus the prior's term through
// the reparameterisation, plus log q's direct logvar term.
OpCase iwae_latent_backward_case(int rows, int latent, int samples, float clamp) {
    auto mu_logvar = std::make_shared<std::vector<float>>(mu_logvar_values(rows, latent, 151));
    auto z = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * latent, 152));
    auto dz = std::make_shared<std::vector<float>>(normal((size_t)samples * rows * latent, 153, 0.1f));
    auto weight = std::make_shared<std::vector<float>>(uniform((size_t)samples * rows, 154, 0.05f, 1.0f));
    for (int b = 0; b < rows; ++b) {  // normalised per row, as iwae_objective writes them
        double total = 0;
        for (int l = 0; l < samples; ++l) total += (*weight)[(size_t)l * rows + b];
        for (int l = 0; l < samples; ++l) (*weight)[(size_t)l * rows + b] = (float)((*weight)[(size_t)l * rows + b] / total);
    }
    const uint64_t step = 3, warmup = 10;
    const float beta = 0.7f;
    OpCase c{shape("iwae_latent_backward",
                   {{"rows", rows}, {"latent", latent}, {"samples", samples}, {"clamp", (long)(clamp * 10)}}),
             normalized(1e-6), normalized(1e-5), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *ml = arena.upload(*mu_logvar), *zs = arena.upload(*z), *g = arena.upload(*dz);
        const float *w = arena.upload(*weight);
        const vae_step_counter *counter = arena.counter(step);
        float *gradient = arena.floats((size_t)rows * 2 * latent);
        return Prepared{[=, &arena] {
                            check(vae_backend_iwae_latent_backward(arena.backend(), ml, zs, g, w, gradient, rows, latent,
                                                                   samples, beta, warmup, counter, clamp),
                                  "iwae_latent_backward");
                        },
                        [=, &arena] { return Outputs{{"dmu_logvar", arena.download(gradient, (size_t)rows * 2 * latent)}}; }};
    };
    c.reference = [=] {
        Values gradient((size_t)rows * 2 * latent);
        const double prior_scale = beta_at(step, beta, warmup) / rows;
        for (int b = 0; b < rows; ++b) {
            const float *mu = mu_logvar->data() + (size_t)b * 2 * latent, *logvar = mu + latent;
            for (int j = 0; j < latent; ++j) {
                // d/dlogvar of -sum_k w_k beta (-log q) with eps fixed: -beta/2 per row (weights sum to 1).
                double dmu = 0, dlv = -0.5 * prior_scale;
                for (int l = 0; l < samples; ++l) {
                    size_t i = ((size_t)l * rows + b) * latent + j;
                    double zi = (*z)[i];
                    double upstream = (*dz)[i] + prior_scale * (*weight)[(size_t)l * rows + b] * zi;  // log p(z) = -z^2/2
                    dmu += upstream;
                    dlv += upstream * 0.5 * (zi - mu[j]);
                }
                if (clamp > 0 && std::fabs(logvar[j]) > clamp) dlv = 0;
                gradient[(size_t)b * 2 * latent + j] = dmu;
                gradient[(size_t)b * 2 * latent + latent + j] = dlv;
            }
        }
        return Outputs{{"dmu_logvar", gradient}};
    };
    return c;
}

// Two launches on one backend over different values: the second must not
// see the first's state (on the GPU, the last-block count must be back at 0).
OpCase sum_of_squares_case(size_t count) {
    auto first = std::make_shared<std::vector<float>>(normal(count, 121));
    auto second = std::make_shared<std::vector<float>>(normal(count, 122, 2.0f));
    OpCase c{shape("sum_of_squares", {{"n", (long)count}}), normalized(1e-6), normalized(1e-6), 1, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        const float *a = arena.upload(*first), *b = arena.upload(*second);
        float *sums = arena.floats(2);
        return Prepared{[=, &arena] {
                            check(vae_backend_sum_of_squares(arena.backend(), a, count, sums), "sum_of_squares");
                            check(vae_backend_sum_of_squares(arena.backend(), b, count, sums + 1), "sum_of_squares");
                        },
                        [=, &arena] { return Outputs{{"sums", arena.download(sums, 2)}}; }};
    };
    c.reference = [=] {
        Values sums(2, 0.0);
        for (float v : *first) sums[0] += (double)v * v;
        for (float v : *second) sums[1] += (double)v * v;
        return Outputs{{"sums", sums}};
    };
    return c;
}

// Three steps of sum_of_squares + adam_step (bias correction, schedule,
// clipping, weight decay); nonfinite: a NaN gradient, so nothing moves and
// each step is counted as skipped; skip_norm: every step's norm (about
// sqrt(count)) is above it, so nothing moves and each step is skipped while
// nonfinite_seen stays 0.
OpCase adam_case(size_t count, bool decoupled, bool nonfinite, float skip_norm = 0.0f) {
    auto params = std::make_shared<std::vector<float>>(normal(count, 131));
    auto grads = std::make_shared<std::vector<float>>(normal(count, 132));
    if (nonfinite) (*grads)[count / 2] = NAN;
    vae_adam_settings settings = {};
    settings.lr = 0.01f;
    settings.lr_min = 0.001f;
    settings.beta1 = 0.9f;
    settings.beta2 = 0.999f;
    settings.epsilon = 1e-8f;
    settings.weight_decay = 0.01f;
    settings.decoupled_weight_decay = decoupled;
    settings.lr_schedule = VAE_LR_COSINE;
    settings.warmup_steps = 1;
    settings.total_steps = 5;
    settings.clip_norm = 1.0f;  // the random gradient's norm is sqrt(count): clipping is active
    settings.skip_norm = skip_norm;
    const int steps = 3;
    OpCase c{shape(std::string(decoupled ? "adamw" : "adam") + (nonfinite ? "_nonfinite" : "") +
                       (skip_norm > 0.0f ? "_outlier_skipped" : ""),
                   {{"n", (long)count}}),
             normalized(1e-5), normalized(1e-5), steps, nullptr, nullptr};
    c.prepare = [=](Arena &arena) {
        float *p = arena.upload(*params), *m = arena.upload(std::vector<float>(count, 0.0f));
        float *v = arena.upload(std::vector<float>(count, 0.0f)), *norm = arena.floats(1);
        const float *g = arena.upload(*grads);
        vae_step_counter *counter = arena.counter(0);
        return Prepared{[=, &arena] {
                            check(vae_backend_sum_of_squares(arena.backend(), g, count, norm), "sum_of_squares");
                            check(vae_backend_adam_step(arena.backend(), p, g, m, v, count, &settings, norm, counter),
                                  "adam_step");
                        },
                        [=, &arena] {
                            return Outputs{{"params", arena.download(p, count)},
                                           {"m", arena.download(m, count)},
                                           {"v", arena.download(v, count)},
                                           {"counter", arena.download_counter(counter)}};
                        }};
    };
    c.reference = [=] {
        Values p = to_values(*params), m(count, 0.0), v(count, 0.0);
        double norm_squared = 0;
        for (float g : *grads) norm_squared += (double)g * g;
        Values counter = {0, 0, 0};
        for (int step = 0; step < steps; ++step) {
            counter[0] += 1;
            if (!std::isfinite(norm_squared)) {
                counter[1] += 1;
                counter[2] = 1;
                continue;
            }
            if (skip_norm > 0.0f && std::sqrt(norm_squared) > skip_norm) {
                counter[1] += 1;
                continue;
            }
            double lr = settings.lr;
            if (step < (int)settings.warmup_steps) lr = settings.lr * (step + 1) / (double)settings.warmup_steps;
            else {
                double progress = std::min(1.0, (double)(step - settings.warmup_steps) /
                                                    (double)(settings.total_steps - settings.warmup_steps));
                lr = settings.lr_min + 0.5 * (settings.lr - settings.lr_min) * (1 + std::cos(M_PI * progress));
            }
            const double t = step + 1, clip = std::min(1.0, settings.clip_norm / (std::sqrt(norm_squared) + 1e-6));
            const double b1 = settings.beta1, b2 = settings.beta2, wd = settings.weight_decay;
            for (size_t i = 0; i < count; ++i) {
                double g = (*grads)[i] * clip + (decoupled ? 0.0 : wd * p[i]);
                if (decoupled) p[i] *= 1 - lr * wd;
                m[i] = b1 * m[i] + (1 - b1) * g;
                v[i] = b2 * v[i] + (1 - b2) * g * g;
                double denominator = std::sqrt(v[i]) / std::sqrt(1 - std::pow(b2, t)) + settings.epsilon;
                p[i] -= lr / (1 - std::pow(b1, t)) * m[i] / denominator;
            }
        }
        return Outputs{{"params", p}, {"m", m}, {"v", v}, {"counter", counter}};
    };
    return c;
}

// ------------------------------------------------------------------ the table

// The host execution target's build of this file (test_backend_ops_cuda_host,
// tests/cuda_host/) runs every GPU thread as a fiber, so a row of a million
// elements or a batch-128 convolution costs seconds there (tens under
// AddressSanitizer). There the real-model rows that are bigger copies of
// rows already in the table run at smaller sizes that keep what they add:
// several blocks, a partial last block, sizes no multiple of 32, and a
// block's loop over a row or a latent vector longer than its 256 threads
// (dim 1000, latent 300). The rows over 4096 blocks of 256 threads (1.2
// million elements: a grid-stride loop taking more than one turn) stay as
// they are. BackendOpsTable.HostTargetSizes prints what was replaced.
#ifdef VAE_BACKEND_OPS_HOST_TARGET
constexpr bool kHostTarget = true;
#else
constexpr bool kHostTarget = false;
#endif

// "real case -> the host target's case", one line per replaced row.
std::vector<std::string> &host_target_replacements() {
    static std::vector<std::string> replacements;
    return replacements;
}

const std::vector<OpCase> &cases() {
    // Small sizes divide no block size; the real-model sizes (dim 1000,
    // latent 300, 300 rows, over 1.1 million elements) run multi-block paths.
    static const std::vector<OpCase> table = [] {
        std::vector<OpCase> t;
        // A real-model row; on the host execution target the smaller one.
        auto real_model = [&t](const std::function<OpCase()> &real, const std::function<OpCase()> &host) {
            if (!kHostTarget) {
                t.push_back(real());
                return;
            }
            OpCase smaller = host();
            host_target_replacements().push_back(real().name + " -> " + smaller.name);
            t.push_back(std::move(smaller));
        };
        t.push_back(fill_case(3737));
        t.push_back(fill_case(1200007));
        t.push_back(copy_case(3737, 50));
        t.push_back(linear_forward_case(37, 101, 67, true));
        t.push_back(linear_forward_case(37, 101, 67, false));
        real_model([] { return linear_forward_case(300, 1000, 500, true); },
                   [] { return linear_forward_case(67, 257, 131, true); });
        t.push_back(linear_backward_case(37, 101, 67, true));
        t.push_back(linear_backward_case(37, 101, 67, false));
        real_model([] { return linear_backward_case(300, 1000, 500, true); },
                   [] { return linear_backward_case(67, 257, 131, true); });
        // Convolutions: odd sizes, stride 1, 2 and 3, padding 0, 1 and 2, kernels 1 to 5, channel counts
        // that are not powers of two, batch > 1; then the Fashion-MNIST conv model's layers at batch 128.
        const std::vector<ConvShape> conv_shapes = {
            {false, 3, 3, 7, 5, 5, 3, 1, 0},   {false, 3, 3, 7, 5, 5, 3, 2, 1},   {false, 2, 5, 9, 11, 3, 4, 2, 1},
            {false, 2, 1, 5, 7, 3, 5, 1, 2},   {false, 4, 2, 6, 6, 3, 1, 1, 0},   {false, 2, 3, 8, 7, 6, 2, 3, 1},
            {false, 2, 3, 5, 7, 5, 3, 2, 0},   {true, 3, 5, 4, 3, 3, 3, 2, 1},    {true, 2, 3, 3, 5, 5, 4, 2, 1},
            {true, 2, 5, 4, 3, 3, 3, 2, 0},    {true, 3, 3, 5, 4, 6, 3, 1, 1},    {true, 2, 2, 3, 4, 3, 5, 3, 2},
            {true, 4, 3, 2, 3, 1, 1, 1, 0},
        };
        for (const ConvShape &s : conv_shapes) {
            t.push_back(conv_forward_case(s, true));
            t.push_back(conv_backward_case(s, true, true, true));
        }
        t.push_back(conv_forward_case(conv_shapes[1], false));
        t.push_back(conv_forward_case(conv_shapes[7], false));
        for (const ConvShape &s : {conv_shapes[1], conv_shapes[7]}) {
            t.push_back(conv_backward_case(s, false, true, true));  // the first layer needs no dx
            t.push_back(conv_backward_case(s, true, true, false));
            t.push_back(conv_backward_case(s, true, false, false));
            t.push_back(conv_backward_case(s, false, false, true));
        }
        const std::vector<ConvShape> model_shapes = {{false, 128, 1, 28, 28, 32, 4, 2, 1},
                                                     {false, 128, 32, 14, 14, 64, 4, 2, 1},
                                                     {true, 128, 64, 7, 7, 32, 4, 2, 1},
                                                     {true, 128, 32, 14, 14, 1, 4, 2, 1}};
        for (const ConvShape &s : model_shapes) {
            // The host target: the same layers at batch 3 (the channel sums still loop past a block).
            ConvShape host = s;
            host.batch = 3;
            real_model([s] { return conv_forward_case(s, true); }, [host] { return conv_forward_case(host, true); });
            real_model([s] { return conv_backward_case(s, true, true, true); },
                       [host] { return conv_backward_case(host, true, true, true); });
        }
        for (vae_activation a : {VAE_ACTIVATION_RELU, VAE_ACTIVATION_TANH, VAE_ACTIVATION_SOFTPLUS, VAE_ACTIVATION_GELU,
                                 VAE_ACTIVATION_IDENTITY}) {
            t.push_back(activation_forward_case(a, 2479));
            t.push_back(activation_backward_case(a, 2479, false));
            t.push_back(activation_backward_case(a, 2479, true));
        }
        t.push_back(activation_forward_case(VAE_ACTIVATION_GELU, 1200007));
        t.push_back(activation_backward_case(VAE_ACTIVATION_SOFTPLUS, 1200007, true));
        t.push_back(activation_backward_case(VAE_ACTIVATION_RELU, 2479, false, true));
        for (int alias : {0, 1, 2}) t.push_back(add_scaled_case(2479, alias));
        t.push_back(add_scaled_case(1200007, 0));
        for (vae_dtype d : {VAE_DTYPE_U8, VAE_DTYPE_F32})
            for (vae_binarize b : {VAE_BINARIZE_NONE, VAE_BINARIZE_STATIC, VAE_BINARIZE_DYNAMIC})
                t.push_back(gather_case(d, b, 37, 101));
        t.push_back(gather_case(VAE_DTYPE_U8, VAE_BINARIZE_DYNAMIC, 17, 101, 9, 40));  // a data-parallel share
        real_model([] { return gather_case(VAE_DTYPE_U8, VAE_BINARIZE_DYNAMIC, 300, 1000); },
                   [] { return gather_case(VAE_DTYPE_U8, VAE_BINARIZE_DYNAMIC, 37, 1000); });
        t.push_back(reparam_kl_forward_case(37, 13, 3, 0.0f, false));
        t.push_back(reparam_kl_forward_case(37, 13, 3, 2.5f, false));
        t.push_back(reparam_kl_forward_case(37, 13, 3, 0.0f, true));
        real_model([] { return reparam_kl_forward_case(300, 300, 2, 0.0f, false); },
                   [] { return reparam_kl_forward_case(37, 300, 2, 0.0f, false); });
        t.push_back(reparam_kl_forward_case(111, 13, 1, 0.0f, false, true));
        real_model([] { return reparam_kl_forward_case(300, 300, 1, 0.0f, false, true); },
                   [] { return reparam_kl_forward_case(111, 300, 1, 0.0f, false, true); });
        t.push_back(reparam_kl_backward_case(37, 13, 3, 0.0f));
        t.push_back(reparam_kl_backward_case(37, 13, 3, 2.5f));
        real_model([] { return reparam_kl_backward_case(300, 300, 2, 0.0f); },
                   [] { return reparam_kl_backward_case(37, 300, 2, 0.0f); });
        for (bool gradient : {false, true}) t.push_back(gaussian_kl_case(37, 13, 0.0f, gradient));
        t.push_back(gaussian_kl_case(37, 13, 2.5f, true));
        real_model([] { return gaussian_kl_case(300, 300, 0.0f, true); },
                   [] { return gaussian_kl_case(37, 300, 0.0f, true); });
        t.push_back(gaussian_kl_case(37, 13, 0.0f, true, true));
        t.push_back(gaussian_kl_case(37, 13, 2.5f, true, true));
        real_model([] { return gaussian_kl_case(300, 300, 0.0f, true, true); },
                   [] { return gaussian_kl_case(37, 300, 0.0f, true, true); });
        for (bool accumulate : {false, true}) t.push_back(gaussian_log_ratio_case(37, 13, 0.0f, accumulate));
        t.push_back(gaussian_log_ratio_case(37, 13, 2.5f, true));
        real_model([] { return gaussian_log_ratio_case(300, 300, 0.0f, true); },
                   [] { return gaussian_log_ratio_case(37, 300, 0.0f, true); });
        t.push_back(gaussian_log_ratio_backward_case(37, 13, 0.0f, 37));
        t.push_back(gaussian_log_ratio_backward_case(111, 13, 2.5f, 37));  // 3 samples of 37 rows: the mean over 37
        // The host target: still several blocks (37 x 300 elements) and a row longer than a block.
        real_model([] { return gaussian_log_ratio_backward_case(1200, 300, 0.0f, 300); },
                   [] { return gaussian_log_ratio_backward_case(37, 300, 0.0f, 37); });
        for (vae_likelihood l : {VAE_LIKELIHOOD_BERNOULLI, VAE_LIKELIHOOD_GAUSSIAN, VAE_LIKELIHOOD_GAUSSIAN_FIXED})
            for (bool gradient : {false, true}) t.push_back(likelihood_case(l, 37, 3, 101, gradient));
        real_model([] { return likelihood_case(VAE_LIKELIHOOD_BERNOULLI, 300, 2, 1000, true); },
                   [] { return likelihood_case(VAE_LIKELIHOOD_BERNOULLI, 37, 2, 1000, true); });
        real_model([] { return likelihood_case(VAE_LIKELIHOOD_GAUSSIAN, 300, 1, 1000, true); },
                   [] { return likelihood_case(VAE_LIKELIHOOD_GAUSSIAN, 37, 1, 1000, true); });
        t.push_back(accumulate_loss_case(37, 3));
        t.push_back(accumulate_loss_case(300, 4));
        t.push_back(importance_log_mean_case(37, 13, 3, 0.0f, false));
        t.push_back(importance_log_mean_case(37, 13, 300, 0.5f, false));  // more samples than threads in a block
        t.push_back(importance_log_mean_case(37, 13, 5, 0.0f, true));
        real_model([] { return importance_log_mean_case(300, 300, 16, 0.0f, false); },
                   [] { return importance_log_mean_case(37, 300, 16, 0.0f, false); });
        t.push_back(iwae_objective_case(37, 13, 3, 101, 0.0f, false));
        t.push_back(iwae_objective_case(37, 13, 3, 101, 2.5f, false));
        t.push_back(iwae_objective_case(37, 13, 3, 101, 0.0f, false, false));
        t.push_back(iwae_objective_case(37, 13, 1, 101, 0.0f, false));
        t.push_back(iwae_objective_case(37, 13, 300, 7, 0.5f, false));  // more samples than threads in a block
        t.push_back(iwae_objective_case(37, 13, 5, 101, 0.0f, true));
        t.push_back(iwae_objective_case(37, 13, 3, 101, 0.0f, false, true, 1e-6, true));
        t.push_back(iwae_objective_case(37, 13, 3, 101, 2.5f, false, true, 1e-6, true));
        t.push_back(iwae_objective_case(37, 13, 5, 101, 0.0f, true, true, 1e-6, true));
        t.push_back(iwae_objective_case(128, 32, 5, 784, 0.0f, false));  // the default config's sizes, K = 5
        // The host target: over 256 rows still (the sums' loop over rows), 16 x 97 outputs a row.
        real_model([] { return iwae_objective_case(300, 300, 16, 1000, 0.0f, false, true, 1e-5); },
                   [] { return iwae_objective_case(259, 300, 16, 97, 0.0f, false, true, 1e-5); });
        t.push_back(iwae_latent_backward_case(37, 13, 3, 0.0f));
        t.push_back(iwae_latent_backward_case(37, 13, 3, 2.5f));
        t.push_back(iwae_latent_backward_case(37, 13, 1, 0.0f));
        t.push_back(iwae_latent_backward_case(128, 32, 5, 0.0f));
        real_model([] { return iwae_latent_backward_case(300, 300, 16, 0.0f); },
                   [] { return iwae_latent_backward_case(37, 300, 16, 0.0f); });
        t.push_back(sum_of_squares_case(0));
        t.push_back(sum_of_squares_case(5));
        t.push_back(sum_of_squares_case(1200007));
        t.push_back(adam_case(10007, true, false));
        t.push_back(adam_case(10007, false, false));
        t.push_back(adam_case(10007, false, true));
        t.push_back(adam_case(10007, false, false, 50.0f));
        t.push_back(adam_case(1200007, true, false));
        return t;
    }();
    return table;
}

// ------------------------------------------------------------------ running and comparing

struct NamedBackend {
    std::string name;
    vae_backend *backend;
    vae_precision precision;  // compared with a CPU backend of the same precision
};

// The backends other than the CPU present in this build and machine (empty
// without a GPU): CUDA in fp32, and in bf16 against the CPU's emulation of
// it. Created once, kept for the process.
const std::vector<NamedBackend> &other_backends() {
    // Destroyed at exit, so that a leak checker (the host target's device
    // memory under AddressSanitizer) sees every allocation freed.
    struct Owned {
        explicit Owned(std::vector<NamedBackend> backends) : list(std::move(backends)) {}
        ~Owned() {
            for (const NamedBackend &named : list) vae_backend_destroy(named.backend);
        }
        std::vector<NamedBackend> list;
    };
    static const Owned backends([] {
        std::vector<NamedBackend> list;
        if (!vae_backend_cuda_available()) return list;
        for (vae_precision precision : {VAE_PRECISION_FP32, VAE_PRECISION_BF16}) {
            vae_backend *cuda = nullptr;
            check(vae_backend_create_cuda(&cuda, precision), "create cuda");
            list.push_back({std::string("cuda-") + vae_precision_name(precision), cuda, precision});
        }
        return list;
    }());
    return backends.list;
}

vae_backend *cpu_backend(vae_precision precision = VAE_PRECISION_FP32) {
    static vae_backend *cpu[3] = {};
    if (!cpu[precision]) check(vae_backend_create_cpu_precision(&cpu[precision], precision), "create cpu");
    return cpu[precision];
}

// Precision changes only the GEMMs: the linear and convolution cases.
bool case_uses_gemm(const OpCase &c) {
    return c.name.rfind("linear_", 0) == 0 || c.name.rfind("conv", 0) == 0;
}

Outputs run_case(const OpCase &c, vae_backend *backend) {
    Arena arena(backend);
    Prepared prepared = c.prepare(arena);
    for (int i = 0; i < c.launches; ++i) prepared.launch();
    return prepared.read();
}

// The case's launch captured once as a graph and the graph replayed
// c.launches times, as the trainer replays its step: whatever a launch must
// read from device memory at run time (the step counter) and takes by value
// instead shows as a difference from the eager run. The caller has run the
// case eagerly on this backend first (bf16's operand scratch grows only
// outside a capture).
Outputs run_case_as_graph(const OpCase &c, vae_backend *backend) {
    Arena arena(backend);
    Prepared prepared = c.prepare(arena);
    check(vae_backend_graph_capture_begin(backend), "graph_capture_begin");
    void *graph = nullptr;
    try {
        prepared.launch();
    } catch (...) {
        (void)vae_backend_graph_capture_end(backend, &graph);
        vae_backend_graph_destroy(backend, graph);
        throw;
    }
    check(vae_backend_graph_capture_end(backend, &graph), "graph_capture_end");
    std::unique_ptr<void, std::function<void(void *)>> owned(graph,
                                                               [backend](void *g) { vae_backend_graph_destroy(backend, g); });
    for (int i = 0; i < c.launches; ++i) check(vae_backend_graph_launch(backend, graph), "graph_launch");
    return prepared.read();
}

// "" when got matches want within the tolerance, else what differs.
std::string compare(const Output &got, const Output &want, Tolerance tolerance) {
    if (got.values.size() != want.values.size())
        return got.name + ": " + std::to_string(got.values.size()) + " values, expected " +
               std::to_string(want.values.size());
    double difference = 0, norm = 0;
    size_t differing = 0, first_bad = SIZE_MAX;
    for (size_t i = 0; i < got.values.size(); ++i) {
        double a = got.values[i], b = want.values[i];
        if (!std::isfinite(a) || !std::isfinite(b)) {
            bool same = (std::isnan(a) && std::isnan(b)) || a == b;
            if (!same) return got.name + "[" + std::to_string(i) + "] = " + std::to_string(a) + ", expected " + std::to_string(b);
            continue;
        }
        difference += (a - b) * (a - b);
        norm += b * b;
        if (a != b) {
            ++differing;
            if (first_bad == SIZE_MAX) first_bad = i;
        }
    }
    if (tolerance.mode == Compare::kMismatches) {
        double allowed = tolerance.value * (double)got.values.size();
        if ((double)differing > allowed)
            return got.name + ": " + std::to_string(differing) + " of " + std::to_string(got.values.size()) +
                   " elements differ (allowed " + std::to_string((size_t)allowed) + "), first at " +
                   std::to_string(first_bad) + ": " + std::to_string(got.values[first_bad]) + " vs " +
                   std::to_string(want.values[first_bad]);
        return "";
    }
    double error = std::sqrt(difference) / std::max(std::sqrt(norm), 1e-30);
    if (error > tolerance.value) {
        char message[256];
        std::snprintf(message, sizeof message, "%s: normalised error %.3g > %.3g (first differing element %zu: %.9g vs %.9g)",
                      got.name.c_str(), error, tolerance.value, first_bad, got.values[first_bad], want.values[first_bad]);
        return message;
    }
    return "";
}

void expect_match(const Outputs &got, const Outputs &want, Tolerance tolerance) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i].name, want[i].name);
        std::string problem = compare(got[i], want[i], tolerance);
        EXPECT_TRUE(problem.empty()) << problem;
    }
}

class BackendOps : public ::testing::TestWithParam<size_t> {};

TEST_P(BackendOps, CpuMatchesScalarReference) {
    const OpCase &c = cases()[GetParam()];
    Outputs got, want = c.reference();
    ASSERT_NO_THROW(got = run_case(c, cpu_backend()));
    expect_match(got, want, c.reference_tolerance);
}

TEST_P(BackendOps, OtherBackendsMatchCpu) {
    const OpCase &c = cases()[GetParam()];
    if (other_backends().empty()) {
        // The host execution target's build (test_backend_ops_cuda_host)
        // always has the CUDA backend: a skip there is a failure.
        if (std::getenv("VAE_REQUIRE_OTHER_BACKENDS") != nullptr) FAIL() << "no backend besides the CPU";
        GTEST_SKIP() << "no backend besides the CPU here (no usable CUDA GPU)";
    }
    for (const NamedBackend &other : other_backends()) {
        if (other.precision != VAE_PRECISION_FP32 && !case_uses_gemm(c)) continue;
        SCOPED_TRACE(other.name);
        Outputs cpu, got;
        ASSERT_NO_THROW(cpu = run_case(c, cpu_backend(other.precision)));
        ASSERT_NO_THROW(got = run_case(c, other.backend)) << other.name;
        expect_match(got, cpu, c.backend_tolerance);
        if (vae_backend_has_graphs(other.backend)) {
            SCOPED_TRACE("as a graph replayed " + std::to_string(c.launches) + " times");
            Outputs replayed;
            ASSERT_NO_THROW(replayed = run_case_as_graph(c, other.backend)) << other.name;
            expect_match(replayed, cpu, c.backend_tolerance);
        }
    }
}

INSTANTIATE_TEST_SUITE_P(Table, BackendOps, ::testing::Range<size_t>(0, cases().size()),
                         [](const ::testing::TestParamInfo<size_t> &info) { return cases()[info.param].name; });

TEST(BackendOpsTable, NamesAreUniqueAndEveryOperationIsCovered) {
    std::vector<std::string> names;
    for (const OpCase &c : cases()) names.push_back(c.name);
    std::sort(names.begin(), names.end());
    EXPECT_EQ(std::adjacent_find(names.begin(), names.end()), names.end()) << "two cases share a name";
    for (const char *operation : {"fill", "copy", "linear_forward", "linear_backward", "conv2d_forward",
                                  "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
                                  "activation_forward",
                                  "activation_backward", "add_scaled", "gather", "reparam_kl_forward",
                                  "reparam_kl_backward", "gaussian_kl", "gaussian_log_ratio",
                                  "gaussian_log_ratio_backward", "likelihood", "accumulate_loss",
                                  "importance_log_mean", "iwae_objective",
                                  "iwae_latent_backward", "sum_of_squares", "adam"}) {
        bool found = false;
        for (const std::string &name : names) found |= name.rfind(operation, 0) == 0;
        EXPECT_TRUE(found) << "no case for " << operation;
    }
}

// What the host execution target's build runs in place of the real-model
// rows (printed; none elsewhere).
TEST(BackendOpsTable, HostTargetSizes) {
    const std::vector<std::string> &replaced = host_target_replacements();
    if (!kHostTarget) {
        EXPECT_TRUE(replaced.empty());
        return;
    }
    std::printf("host execution target: %zu rows, %zu real-model rows at smaller sizes:\n", cases().size(),
                replaced.size());
    for (const std::string &line : replaced) std::printf("  %s\n", line.c_str());
    EXPECT_FALSE(replaced.empty());
}

// ------------------------------------------------------------------ timing mode

// Seconds per launch: repeats until 50 ms have passed (at least 3 launches,
// at most 1000), after one warm-up launch, synchronising around the timed loop.
double seconds_per_launch(const OpCase &c, vae_backend *backend) {
    Arena arena(backend);
    Prepared prepared = c.prepare(arena);
    prepared.launch();
    check(vae_backend_synchronize(backend), "synchronize");
    int launches = 0;
    auto start = std::chrono::steady_clock::now();
    double elapsed = 0;
    while (launches < 3 || (elapsed < 0.05 && launches < 1000)) {
        prepared.launch();
        ++launches;
        if (launches >= 3) {
            check(vae_backend_synchronize(backend), "synchronize");
            elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        }
    }
    return elapsed / launches;
}

TEST(BackendOpsPerf, TimesEveryOperationOnEveryBackend) {
    if (!std::getenv("VAE_BACKEND_OPS_PERF"))
        GTEST_SKIP() << "timing mode: set VAE_BACKEND_OPS_PERF=1 to print each case's time per call per backend";
    std::printf("%-60s %14s", "case", "cpu us/call");
    for (const NamedBackend &other : other_backends()) std::printf(" %12s us/call %8s", other.name.c_str(), "cpu/it");
    std::printf("\n");
    for (const OpCase &c : cases()) {
        double cpu = 0;
        ASSERT_NO_THROW(cpu = seconds_per_launch(c, cpu_backend())) << c.name;
        std::printf("%-60s %14.1f", c.name.c_str(), cpu * 1e6);
        for (const NamedBackend &other : other_backends()) {
            double seconds = 0;
            ASSERT_NO_THROW(seconds = seconds_per_launch(c, other.backend)) << c.name << " on " << other.name;
            std::printf(" %20.1f %8.1f", seconds * 1e6, cpu / seconds);
        }
        std::printf("\n");
    }
}

}  // namespace
