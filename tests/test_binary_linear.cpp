// Dense layers on binary inputs (src/backends/cpu_binary_linear.c): the
// tiled sums against a scalar float loop that adds the same terms in the same
// order (so bitwise equal: a dropped, doubled or misplaced term shows), and
// against the dense definition in double; random binary batches with an
// all-zero and an all-one row, batch sizes 1..513, widths that leave partial
// tiles, bf16 rounding, any thread count. Then the CPU backend's choice: a
// binary input sparse enough takes the sums, anything else the dense GEMM.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "backends/cpu_binary_linear.h"
#include "vae_math.h"
}

namespace {

struct Layer {
    int rows, in, out;
    std::vector<float> x, weight, bias, dy;
};

// Row 0 all zero and row 1 all one (when there are rows enough), the others
// set with probability `density`.
Layer make_layer(int rows, int in, int out, uint64_t seed, double density = 0.29) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::bernoulli_distribution pixel(density);
    Layer layer{rows, in, out, std::vector<float>((size_t)rows * in), std::vector<float>((size_t)out * in),
                std::vector<float>(out), std::vector<float>((size_t)rows * out)};
    for (int r = 0; r < rows; ++r)
        for (int p = 0; p < in; ++p)
            layer.x[(size_t)r * in + p] = r == 0 ? 0.0f : (r == 1 || pixel(rng)) ? 1.0f : 0.0f;
    for (float &v : layer.weight) v = uniform(rng);
    for (float &v : layer.bias) v = uniform(rng);
    for (float &v : layer.dy) v = uniform(rng);
    return layer;
}

// A packed input with its own arrays.
struct Packed {
    std::vector<uint64_t> words;
    std::vector<int32_t> row_offsets, input_offsets, row_inputs, input_rows;
    vae_binary_input input{};
    int ok = 0;
};

Packed pack_values(const std::vector<float> &x, int rows, int in) {
    Packed packed;
    packed.words.assign(vae_binary_words(rows, in), ~0ull);
    packed.row_offsets.assign(rows + 1, -1);
    packed.input_offsets.assign(in + 1, -1);
    packed.row_inputs.assign((size_t)rows * in, -1);
    packed.input_rows.assign((size_t)rows * in, -1);
    packed.input = vae_binary_input{0, 0, 0, packed.row_offsets.data(), packed.row_inputs.data(),
                                    packed.input_offsets.data(), packed.input_rows.data()};
    long long set = vae_binary_input_scan(x.data(), rows, in, packed.words.data());
    packed.ok = set >= 0;
    if (packed.ok) vae_binary_input_from_words(packed.words.data(), rows, in, set, &packed.input);
    return packed;
}

Packed pack(const Layer &layer) {
    Packed packed = pack_values(layer.x, layer.rows, layer.in);
    EXPECT_EQ(packed.ok, 1);
    long long expected = 0;
    for (float v : layer.x) expected += v == 1.0f;
    EXPECT_EQ(packed.input.set, expected);
    return packed;
}

float maybe_rounded(float value, bool round) { return round ? vae_round_to_bfloat16(value) : value; }

// The header's order: term t into partial t mod 4, then (s0 + s1) + (s2 + s3).
struct OrderedSum {
    float partial[4] = {0, 0, 0, 0};
    int terms = 0;
    void add(float term) { partial[terms++ % 4] += term; }
    float total() const { return (partial[0] + partial[1]) + (partial[2] + partial[3]); }
};

// The forward in float, term by term in input order: what the blocks must equal bitwise.
std::vector<float> forward_in_order(const Layer &layer, bool with_bias, bool round) {
    std::vector<float> y((size_t)layer.rows * layer.out);
    for (int r = 0; r < layer.rows; ++r)
        for (int o = 0; o < layer.out; ++o) {
            OrderedSum sum;
            for (int p = 0; p < layer.in; ++p)
                if (layer.x[(size_t)r * layer.in + p] == 1.0f)
                    sum.add(maybe_rounded(layer.weight[(size_t)o * layer.in + p], round));
            y[(size_t)r * layer.out + o] = (with_bias ? layer.bias[o] : 0.0f) + sum.total();
        }
    return y;
}

std::vector<float> weight_gradient_in_order(const Layer &layer, bool round) {
    std::vector<float> dweight((size_t)layer.out * layer.in);
    for (int o = 0; o < layer.out; ++o)
        for (int p = 0; p < layer.in; ++p) {
            OrderedSum sum;
            for (int r = 0; r < layer.rows; ++r)
                if (layer.x[(size_t)r * layer.in + p] == 1.0f)
                    sum.add(maybe_rounded(layer.dy[(size_t)r * layer.out + o], round));
            dweight[(size_t)o * layer.in + p] = sum.total();
        }
    return dweight;
}

void expect_bitwise_equal(const std::vector<float> &actual, const std::vector<float> &expected, const char *what) {
    ASSERT_EQ(actual.size(), expected.size());
    for (size_t i = 0; i < actual.size(); ++i)
        ASSERT_EQ(vae_test::float_bits(actual[i]), vae_test::float_bits(expected[i]))
            << what << " differs at " << i << ": " << actual[i] << " against " << expected[i];
}

void check_layer(const Layer &layer, bool round = false) {
    Packed packed = pack(layer);
    std::vector<float> scratch(vae_binary_linear_scratch_floats(layer.rows, layer.in, layer.out), NAN);
    std::vector<float> y((size_t)layer.rows * layer.out, NAN);
    vae_binary_linear_forward(&packed.input, layer.out, layer.weight.data(), layer.bias.data(), round, scratch.data(),
                              y.data());
    expect_bitwise_equal(y, forward_in_order(layer, true, round), "y");
    std::vector<float> dweight((size_t)layer.out * layer.in, NAN);
    vae_binary_linear_weight_gradient(&packed.input, layer.out, layer.dy.data(), round, scratch.data(),
                                      dweight.data());
    expect_bitwise_equal(dweight, weight_gradient_in_order(layer, round), "dweight");

    // The definition, in double: x W^T + b and dy^T x.
    for (int r = 0; r < layer.rows; ++r)
        for (int o = 0; o < layer.out; ++o) {
            double sum = layer.bias[o], magnitude = std::fabs(layer.bias[o]);
            for (int p = 0; p < layer.in; ++p) {
                double term = (double)layer.x[(size_t)r * layer.in + p] *
                              maybe_rounded(layer.weight[(size_t)o * layer.in + p], round);
                sum += term;
                magnitude += std::fabs(term);
            }
            ASSERT_NEAR(y[(size_t)r * layer.out + o], sum, 1e-5 * magnitude) << "row " << r << " output " << o;
        }
}

TEST(BinaryLinear, PackingListsEverySetInputBothWaysAndRefusesOtherValues) {
    Layer layer = make_layer(5, 37, 3, 11);
    Packed packed = pack(layer);
    const vae_binary_input &input = packed.input;
    for (int r = 0; r < layer.rows; ++r) {
        std::vector<int32_t> expected, listed(input.row_inputs + input.row_offsets[r],
                                              input.row_inputs + input.row_offsets[r + 1]);
        for (int p = 0; p < layer.in; ++p)
            if (layer.x[(size_t)r * layer.in + p] == 1.0f) expected.push_back(p);
        EXPECT_EQ(listed, expected) << "row " << r;
    }
    for (int p = 0; p < layer.in; ++p) {
        std::vector<int32_t> expected, listed(input.input_rows + input.input_offsets[p],
                                              input.input_rows + input.input_offsets[p + 1]);
        for (int r = 0; r < layer.rows; ++r)
            if (layer.x[(size_t)r * layer.in + p] == 1.0f) expected.push_back(r);
        EXPECT_EQ(listed, expected) << "input " << p;
    }
    // The words: bit j of word w is input 64 w + j, zero past the row's end.
    for (int r = 0; r < layer.rows; ++r)
        for (int p = 0; p < 64; ++p) {
            bool bit = (packed.words[r] >> p) & 1;
            ASSERT_EQ(bit, p < layer.in && layer.x[(size_t)r * layer.in + p] == 1.0f) << "row " << r << " bit " << p;
        }
    for (float other : {0.5f, -1.0f, 2.0f, NAN, INFINITY}) {
        std::vector<float> x = layer.x;
        x[(size_t)3 * layer.in + 20] = other;
        EXPECT_EQ(pack_values(x, layer.rows, layer.in).ok, 0) << other;
    }
}

TEST(BinaryLinear, MatchesTheOrderedSumsOverBatchSizes) {
    uint64_t seed = 100;
    for (int rows : {1, 2, 3, 17, 64, 128, 255, 513}) {
        SCOPED_TRACE(rows);
        check_layer(make_layer(rows, 784, 40, seed++));
    }
}

TEST(BinaryLinear, PartialTilesAtEveryEdge) {
    uint64_t seed = 200;
    for (int in : {1, 13, 16, 17, 33, 784})
        for (int out : {1, 15, 16, 17, 400}) {
            SCOPED_TRACE(::testing::Message() << "in " << in << " out " << out);
            check_layer(make_layer(19, in, out, seed++));
        }
}

TEST(BinaryLinear, NoBiasAndAllZeroRows) {
    Layer layer = make_layer(9, 50, 21, 300);
    Packed packed = pack(layer);
    std::vector<float> scratch(vae_binary_linear_scratch_floats(layer.rows, layer.in, layer.out));
    std::vector<float> y((size_t)layer.rows * layer.out, NAN);
    vae_binary_linear_forward(&packed.input, layer.out, layer.weight.data(), nullptr, 0, scratch.data(), y.data());
    expect_bitwise_equal(y, forward_in_order(layer, false, false), "y without bias");
    for (int o = 0; o < layer.out; ++o) EXPECT_EQ(vae_test::float_bits(y[o]), 0u) << "row 0 has no set input";
}

TEST(BinaryLinear, Bfloat16RoundsEachWeightAndGradientFirst) {
    Layer layer = make_layer(33, 100, 24, 400);
    check_layer(layer, true);
    // The rounding changed something: unrounded weights give other sums.
    Packed packed = pack(layer);
    std::vector<float> scratch(vae_binary_linear_scratch_floats(layer.rows, layer.in, layer.out));
    std::vector<float> rounded((size_t)layer.rows * layer.out), plain((size_t)layer.rows * layer.out);
    vae_binary_linear_forward(&packed.input, layer.out, layer.weight.data(), layer.bias.data(), 1, scratch.data(),
                              rounded.data());
    vae_binary_linear_forward(&packed.input, layer.out, layer.weight.data(), layer.bias.data(), 0, scratch.data(),
                              plain.data());
    EXPECT_GT(vae_test::relative_error(rounded, plain), 1e-4);
}

// OpenMP's own calls (the library links libgomp; the tests are not compiled with -fopenmp).
extern "C" void omp_set_num_threads(int) __attribute__((weak));
extern "C" int omp_get_max_threads(void) __attribute__((weak));

TEST(BinaryLinear, OneThreadAndTwoGiveTheSameBits) {
    if (!omp_set_num_threads || !omp_get_max_threads) GTEST_SKIP() << "built without OpenMP";
    Layer layer = make_layer(70, 784, 50, 500);
    Packed packed = pack(layer);
    std::vector<float> scratch(vae_binary_linear_scratch_floats(layer.rows, layer.in, layer.out));
    std::vector<float> y[2], dweight[2];
    int saved = omp_get_max_threads();
    for (int threads = 1; threads <= 2; ++threads) {
        omp_set_num_threads(threads);
        y[threads - 1].assign((size_t)layer.rows * layer.out, NAN);
        dweight[threads - 1].assign((size_t)layer.out * layer.in, NAN);
        vae_binary_linear_forward(&packed.input, layer.out, layer.weight.data(), layer.bias.data(), 0,
                                  scratch.data(), y[threads - 1].data());
        vae_binary_linear_weight_gradient(&packed.input, layer.out, layer.dy.data(), 0, scratch.data(),
                                          dweight[threads - 1].data());
    }
    omp_set_num_threads(saved);
    expect_bitwise_equal(y[1], y[0], "y");
    expect_bitwise_equal(dweight[1], dweight[0], "dweight");
}

// Every scan kernel this CPU has gives the scalar loop's words and count and
// refuses the same inputs: rows that end inside a 64-input word, inside a
// 16- and an 8-float vector, other values at the first, a middle and the
// last position of a row (a vector's masked-off lanes must not count).
TEST(BinaryLinear, EveryScanKernelGivesTheScalarWords) {
    const vae_binary_scan_kernel kernels[] = {VAE_BINARY_SCAN_AVX2, VAE_BINARY_SCAN_AVX512};
    int tested = 0;
    for (vae_binary_scan_kernel kernel : kernels) {
        if (!vae_binary_scan_kernel_available(kernel)) {
            std::printf("scan kernel %d: not on this CPU\n", (int)kernel);
            continue;
        }
        ++tested;
        for (int in : {1, 7, 37, 64, 100, 784}) {
            Layer layer = make_layer(9, in, 1, 40 + in);
            std::vector<uint64_t> scalar(vae_binary_words(9, in), ~0ull), vector(scalar.size(), ~0ull);
            const long long scalar_set = vae_binary_input_scan_with(VAE_BINARY_SCAN_SCALAR, layer.x.data(), 9, in,
                                                                    scalar.data());
            ASSERT_GE(scalar_set, 0);
            EXPECT_EQ(vae_binary_input_scan_with(kernel, layer.x.data(), 9, in, vector.data()), scalar_set)
                << "kernel " << kernel << ", " << in << " inputs";
            EXPECT_EQ(vector, scalar) << "kernel " << kernel << ", " << in << " inputs";
            for (int position : {0, in / 2, in - 1})
                for (float other : {0.5f, -0.0f, NAN, 2.0f}) {
                    std::vector<float> x = layer.x;
                    x[(size_t)4 * in + position] = other;
                    const long long expected = vae_binary_input_scan_with(VAE_BINARY_SCAN_SCALAR, x.data(), 9, in,
                                                                          scalar.data());
                    EXPECT_EQ(vae_binary_input_scan_with(kernel, x.data(), 9, in, vector.data()), expected)
                        << "kernel " << kernel << ", " << in << " inputs, " << other << " at " << position;
                }
        }
    }
    if (tested == 0) GTEST_SKIP() << "no vector scan kernel on this CPU";
}

// The packing runs in parallel from 32 rows: the words and both lists are the
// same at one thread and two (and list every set input, as the 5-row test
// above checks on the serial path), over batch sizes with partial chunks.
TEST(BinaryLinear, PackingAtOneThreadAndTwoGivesTheSameLists) {
    if (!omp_set_num_threads || !omp_get_max_threads) GTEST_SKIP() << "built without OpenMP";
    int saved = omp_get_max_threads();
    for (int rows : {31, 32, 97, 513}) {
        Layer layer = make_layer(rows, 784, 16, 900 + rows);
        Packed packed[2];
        for (int threads = 1; threads <= 2; ++threads) {
            omp_set_num_threads(threads);
            packed[threads - 1] = pack(layer);
        }
        const vae_binary_input &one = packed[0].input, &two = packed[1].input;
        EXPECT_EQ(packed[1].words, packed[0].words) << rows << " rows";
        EXPECT_EQ(packed[1].row_offsets, packed[0].row_offsets) << rows << " rows";
        EXPECT_EQ(packed[1].input_offsets, packed[0].input_offsets) << rows << " rows";
        EXPECT_EQ(packed[1].row_inputs, packed[0].row_inputs) << rows << " rows";
        EXPECT_EQ(packed[1].input_rows, packed[0].input_rows) << rows << " rows";
        // spot checks against x itself: the last row's inputs and the last input's rows
        std::vector<int32_t> last_row, last_input;
        for (int p = 0; p < layer.in; ++p)
            if (layer.x[(size_t)(rows - 1) * layer.in + p] == 1.0f) last_row.push_back(p);
        for (int r = 0; r < rows; ++r)
            if (layer.x[(size_t)r * layer.in + layer.in - 1] == 1.0f) last_input.push_back(r);
        EXPECT_EQ(std::vector<int32_t>(two.row_inputs + two.row_offsets[rows - 1], two.row_inputs + two.row_offsets[rows]),
                  last_row);
        EXPECT_EQ(std::vector<int32_t>(two.input_rows + two.input_offsets[layer.in - 1],
                                       two.input_rows + two.input_offsets[layer.in]),
                  last_input);
        EXPECT_EQ(one.set, two.set);
        // another value in the last row is found by whichever thread scans it
        std::vector<float> x = layer.x;
        x[(size_t)(rows - 1) * layer.in + 700] = 0.5f;
        EXPECT_EQ(pack_values(x, rows, layer.in).ok, 0) << rows << " rows";
    }
    omp_set_num_threads(saved);
}

// ---------------------------------------------------------------- the CPU backend's choice
struct BackendRun {
    std::vector<float> y, dx, dweight, dbias;
};

// The backend with VAE_CPU_BINARY_INPUTS=sums or =dense: the sums are tested
// on every CPU, whatever auto would choose there.
BackendRun run_backend(const Layer &layer, const std::vector<float> &x, bool dense) {
    setenv("VAE_CPU_BINARY_INPUTS", dense ? "dense" : "sums", 1);
    vae_backend *backend = nullptr;
    EXPECT_EQ(vae_backend_create_cpu(&backend), VAE_OK) << vae_last_error();
    unsetenv("VAE_CPU_BINARY_INPUTS");
    BackendRun run;
    if (!backend) return run;
    EXPECT_NE(std::strstr(backend->device_name, dense ? "VAE_CPU_BINARY_INPUTS=dense" : "VAE_CPU_BINARY_INPUTS=sums"),
              nullptr)
        << backend->device_name;
    run.y.assign((size_t)layer.rows * layer.out, NAN);
    run.dx.assign((size_t)layer.rows * layer.in, NAN);
    run.dweight.assign((size_t)layer.out * layer.in, NAN);
    run.dbias.assign(layer.out, NAN);
    EXPECT_EQ(vae_backend_linear_forward(backend, x.data(), layer.weight.data(), layer.bias.data(), run.y.data(),
                                         layer.rows, layer.in, layer.out),
              VAE_OK);
    EXPECT_EQ(vae_backend_linear_backward(backend, x.data(), layer.weight.data(), layer.dy.data(), run.dx.data(),
                                          run.dweight.data(), run.dbias.data(), layer.rows, layer.in, layer.out),
              VAE_OK);
    vae_backend_destroy(backend);
    return run;
}

TEST(BinaryLinearBackend, BinaryInputsTakeTheSumsAndAgreeWithTheDenseGemm) {
    Layer layer = make_layer(64, 784, 400, 600);
    BackendRun sums = run_backend(layer, layer.x, false), dense = run_backend(layer, layer.x, true);
    // The sums path is the ordered sum bitwise; the GEMM differs in rounding only.
    expect_bitwise_equal(sums.y, forward_in_order(layer, true, false), "backend y");
    expect_bitwise_equal(sums.dweight, weight_gradient_in_order(layer, false), "backend dweight");
    EXPECT_LT(vae_test::relative_error(sums.y, dense.y), 1e-6);
    EXPECT_LT(vae_test::relative_error(sums.dweight, dense.dweight), 1e-6);
    EXPECT_GT(vae_test::relative_error(sums.y, dense.y) + vae_test::relative_error(sums.dweight, dense.dweight), 0.0)
        << "the backend did not take the sums (bitwise the GEMM's result)";
    expect_bitwise_equal(sums.dx, dense.dx, "dx (always the GEMM)");
    expect_bitwise_equal(sums.dbias, dense.dbias, "dbias");
}

// auto (the default) takes the sums exactly where the CPU has AVX-512, and
// the device line says which; anything else in the variable is refused.
TEST(BinaryLinearBackend, AutoTakesTheSumsWithAvx512AndBadSettingsAreRefused) {
    __builtin_cpu_init();
    const bool avx512 = __builtin_cpu_supports("avx512f") != 0;
    for (const char *setting : {static_cast<const char *>(nullptr), "auto"}) {
        if (setting) setenv("VAE_CPU_BINARY_INPUTS", setting, 1);
        else unsetenv("VAE_CPU_BINARY_INPUTS");
        vae_backend *backend = nullptr;
        ASSERT_EQ(vae_backend_create_cpu(&backend), VAE_OK) << vae_last_error();
        EXPECT_EQ(std::strstr(backend->device_name, "sums over the set inputs") != nullptr, avx512)
            << backend->device_name;
        EXPECT_EQ(std::strstr(backend->device_name, "no AVX-512") != nullptr, !avx512) << backend->device_name;
        vae_backend_destroy(backend);
    }
    setenv("VAE_CPU_BINARY_INPUTS", "sparse", 1);
    vae_backend *backend = nullptr;
    EXPECT_EQ(vae_backend_create_cpu(&backend), VAE_ERROR_INVALID_ARGUMENT);
    unsetenv("VAE_CPU_BINARY_INPUTS");
    EXPECT_EQ(backend, nullptr);
    EXPECT_NE(std::strstr(vae_last_error(), "VAE_CPU_BINARY_INPUTS=sparse: expected auto, sums or dense"), nullptr)
        << vae_last_error();
}

TEST(BinaryLinearBackend, OtherInputsAndDenseOnesTakeTheGemm) {
    Layer layer = make_layer(32, 200, 48, 700);
    std::vector<float> grey = layer.x;
    grey[5 * 200 + 7] = 0.5f; // one value not 0 or 1
    Layer crowded = make_layer(32, 200, 48, 701, 0.9);
    for (const auto &[x, what] : {std::make_pair(grey, "a non-binary input"), std::make_pair(crowded.x, "90% set")}) {
        SCOPED_TRACE(what);
        Layer same = layer;
        BackendRun chosen = run_backend(same, x, false), dense = run_backend(same, x, true);
        expect_bitwise_equal(chosen.y, dense.y, "y");
        expect_bitwise_equal(chosen.dweight, dense.dweight, "dweight");
    }
}

// The backend keeps a packed input's lists while the bits stay the same: a
// forward of one batch, a forward of another, then the first's backward must
// use the first's lists again, not the second's.
TEST(BinaryLinearBackend, ListsFollowTheInputWhenBatchesAlternate) {
    Layer first = make_layer(40, 300, 33, 800), second = make_layer(40, 300, 33, 801);
    second.weight = first.weight;
    second.bias = first.bias;
    second.dy = first.dy;
    vae_backend *backend = nullptr;
    setenv("VAE_CPU_BINARY_INPUTS", "sums", 1);
    ASSERT_EQ(vae_backend_create_cpu(&backend), VAE_OK) << vae_last_error();
    unsetenv("VAE_CPU_BINARY_INPUTS");
    std::vector<float> y((size_t)40 * 33), dweight((size_t)33 * 300), dbias(33);
    auto forward = [&](const Layer &layer) {
        ASSERT_EQ(vae_backend_linear_forward(backend, layer.x.data(), layer.weight.data(), layer.bias.data(),
                                             y.data(), 40, 300, 33),
                  VAE_OK);
        expect_bitwise_equal(y, forward_in_order(layer, true, false), "y");
    };
    auto backward = [&](const Layer &layer) {
        ASSERT_EQ(vae_backend_linear_backward(backend, layer.x.data(), layer.weight.data(), layer.dy.data(), nullptr,
                                              dweight.data(), dbias.data(), 40, 300, 33),
                  VAE_OK);
        expect_bitwise_equal(dweight, weight_gradient_in_order(layer, false), "dweight");
    };
    forward(first);
    forward(second);
    backward(first); // the second's lists are kept: the first's bits differ
    backward(first); // now kept
    forward(second);
    backward(second);
    vae_backend_destroy(backend);
}

} // namespace
