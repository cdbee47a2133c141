// The convolution operations of the CPU backend against golden values from
// PyTorch (F.conv2d, F.conv_transpose2d and their autograd gradients, float64),
// written by tests/golden/make_conv_golden.py into tests/golden/conv_golden.json:
// odd sizes, stride 1, 2 and 3, padding 0 and 1, 1, 3 and 5 channels, with and
// without bias. Each output and gradient must agree to 1e-5 (normalised
// error per tensor), the output size must be PyTorch's, and a change of one
// part in a thousand in any golden tensor must fail the comparison.
#include <gtest/gtest.h>

#include <cjson/cJSON.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "base/error.h"
}

namespace {

constexpr double kTolerance = 1e-5;  // ||engine - golden|| / ||golden|| per tensor

struct ConvGolden {
    std::string name;
    bool transposed = false, has_bias = false;
    int batch = 0;
    vae_conv_geometry geometry{};
    std::vector<float> x, weight, bias, dy, y, dx, dweight, dbias;
};

const cJSON *field(const cJSON *object, const char *key, const std::string &where) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (item == nullptr) throw std::runtime_error(where + ": missing field \"" + key + "\"");
    return item;
}

int int_field(const cJSON *object, const char *key, const std::string &where) {
    const cJSON *item = field(object, key, where);
    if (!cJSON_IsNumber(item)) throw std::runtime_error(where + ": field \"" + key + "\" is not a number");
    return (int)item->valuedouble;
}

// An array of numbers, or an empty vector for null.
std::vector<float> floats_field(const cJSON *object, const char *key, const std::string &where) {
    const cJSON *item = field(object, key, where);
    std::vector<float> values;
    if (cJSON_IsNull(item)) return values;
    if (!cJSON_IsArray(item)) throw std::runtime_error(where + ": field \"" + key + "\" is not an array");
    const cJSON *element = nullptr;
    cJSON_ArrayForEach(element, item) {
        if (!cJSON_IsNumber(element)) throw std::runtime_error(where + ": field \"" + key + "\" holds a non-number");
        values.push_back((float)element->valuedouble);
    }
    return values;
}

std::vector<ConvGolden> load_cases() {
    const std::string path = std::string(VAE_SOURCE_DIR) + "/tests/golden/conv_golden.json";
    const std::string text = vae_test::read_file(path);
    cJSON *document = cJSON_Parse(text.c_str());
    if (document == nullptr) throw std::runtime_error(path + ": not valid JSON");
    std::vector<ConvGolden> cases;
    try {
        const cJSON *entry = nullptr;
        cJSON_ArrayForEach(entry, field(document, "cases", path)) {
            ConvGolden golden;
            const std::string where = path + " case " + std::to_string(cases.size());
            const cJSON *name = field(entry, "name", where);
            if (!cJSON_IsString(name)) throw std::runtime_error(where + ": name is not a string");
            golden.name = name->valuestring;
            golden.transposed = cJSON_IsTrue(field(entry, "transposed", where));
            golden.batch = int_field(entry, "batch", where);
            vae_conv_geometry &g = golden.geometry;
            g.in_channels = int_field(entry, "in_channels", where);
            g.in_height = int_field(entry, "in_height", where);
            g.in_width = int_field(entry, "in_width", where);
            g.out_channels = int_field(entry, "out_channels", where);
            g.out_height = int_field(entry, "out_height", where);
            g.out_width = int_field(entry, "out_width", where);
            g.kernel_size = int_field(entry, "kernel_size", where);
            g.stride = int_field(entry, "stride", where);
            g.padding = int_field(entry, "padding", where);
            golden.x = floats_field(entry, "x", where);
            golden.weight = floats_field(entry, "weight", where);
            golden.bias = floats_field(entry, "bias", where);
            golden.has_bias = !golden.bias.empty();
            golden.dy = floats_field(entry, "dy", where);
            golden.y = floats_field(entry, "y", where);
            golden.dx = floats_field(entry, "dx", where);
            golden.dweight = floats_field(entry, "dweight", where);
            golden.dbias = floats_field(entry, "dbias", where);
            cases.push_back(std::move(golden));
        }
    } catch (...) {
        cJSON_Delete(document);
        throw;
    }
    cJSON_Delete(document);
    return cases;
}

struct EngineResult {
    std::vector<float> y, dx, dweight, dbias;
};

// Forward and backward on the CPU backend; failures are reported through gtest.
void run_engine(vae_backend *backend, const ConvGolden &golden, EngineResult *result) {
    const vae_conv_geometry &g = golden.geometry;
    const size_t x_count = (size_t)golden.batch * g.in_channels * g.in_height * g.in_width;
    const size_t y_count = (size_t)golden.batch * g.out_channels * g.out_height * g.out_width;
    const size_t weight_count = (size_t)g.in_channels * g.out_channels * g.kernel_size * g.kernel_size;
    ASSERT_EQ(golden.x.size(), x_count);
    ASSERT_EQ(golden.y.size(), y_count);
    ASSERT_EQ(golden.dy.size(), y_count);
    ASSERT_EQ(golden.dx.size(), x_count);
    ASSERT_EQ(golden.weight.size(), weight_count);
    ASSERT_EQ(golden.dweight.size(), weight_count);
    if (golden.has_bias) {
        ASSERT_EQ(golden.bias.size(), (size_t)g.out_channels);
        ASSERT_EQ(golden.dbias.size(), (size_t)g.out_channels);
    }
    std::vector<float> workspace(vae_conv_workspace_floats(&g, golden.batch), NAN);
    result->y.assign(y_count, NAN);
    result->dx.assign(x_count, NAN);
    result->dweight.assign(weight_count, NAN);
    result->dbias.assign(g.out_channels, NAN);
    const float *bias = golden.has_bias ? golden.bias.data() : nullptr;
    float *dbias = golden.has_bias ? result->dbias.data() : nullptr;
    vae_status forward, backward;
    if (golden.transposed) {
        forward = vae_backend_conv_transpose2d_forward(backend, &g, golden.batch, golden.x.data(),
                                                       golden.weight.data(), bias, result->y.data(), workspace.data());
        backward = vae_backend_conv_transpose2d_backward(backend, &g, golden.batch, golden.x.data(),
                                                         golden.weight.data(), golden.dy.data(), result->dx.data(),
                                                         result->dweight.data(), dbias, workspace.data());
    } else {
        forward = vae_backend_conv2d_forward(backend, &g, golden.batch, golden.x.data(), golden.weight.data(), bias,
                                             result->y.data(), workspace.data());
        backward = vae_backend_conv2d_backward(backend, &g, golden.batch, golden.x.data(), golden.weight.data(),
                                               golden.dy.data(), result->dx.data(), result->dweight.data(), dbias,
                                               workspace.data());
    }
    ASSERT_EQ(forward, VAE_OK) << vae_last_error();
    ASSERT_EQ(backward, VAE_OK) << vae_last_error();
}

// "" when every tensor agrees within the tolerance, else which do not.
std::string compare(const ConvGolden &golden, const EngineResult &engine, const std::vector<float> &y,
                    const std::vector<float> &dx, const std::vector<float> &dweight, const std::vector<float> &dbias) {
    std::string report;
    auto one = [&](const char *name, const std::vector<float> &got, const std::vector<float> &want) {
        const double error = vae_test::relative_error(got, want);
        if (!(error <= kTolerance)) report += golden.name + ": " + name + " normalised error " + std::to_string(error) + "\n";
    };
    one("y", engine.y, y);
    one("dx", engine.dx, dx);
    one("dweight", engine.dweight, dweight);
    if (golden.has_bias) one("dbias", engine.dbias, dbias);
    return report;
}

class ConvGoldenTest : public ::testing::Test {
  protected:
    void SetUp() override {
        try {
            cases_ = load_cases();
        } catch (const std::exception &error) {
            FAIL() << error.what();
        }
        ASSERT_GE(cases_.size(), 8u) << "conv_golden.json should hold the cases make_conv_golden.py writes";
        ASSERT_EQ(vae_backend_create_cpu(&backend_), VAE_OK) << vae_last_error();
    }
    void TearDown() override { vae_backend_destroy(backend_); }
    std::vector<ConvGolden> cases_;
    vae_backend *backend_ = nullptr;
};

TEST_F(ConvGoldenTest, OutputSizesArePyTorchs) {
    for (const ConvGolden &golden : cases_) {
        SCOPED_TRACE(golden.name);
        const vae_conv_geometry &g = golden.geometry;
        auto size = [&](int in) {
            return golden.transposed ? vae_conv_transpose_output_size(in, g.kernel_size, g.stride, g.padding)
                                     : vae_conv_output_size(in, g.kernel_size, g.stride, g.padding);
        };
        EXPECT_EQ(size(g.in_height), g.out_height);
        EXPECT_EQ(size(g.in_width), g.out_width);
    }
}

TEST_F(ConvGoldenTest, ForwardAndGradientsMatchPyTorch) {
    int transposed = 0, strided = 0, unpadded = 0;
    for (const ConvGolden &golden : cases_) {
        SCOPED_TRACE(golden.name);
        EngineResult engine;
        run_engine(backend_, golden, &engine);
        if (HasFatalFailure()) return;
        const std::string report = compare(golden, engine, golden.y, golden.dx, golden.dweight, golden.dbias);
        EXPECT_TRUE(report.empty()) << report;
        transposed += golden.transposed;
        strided += golden.geometry.stride > 1;
        unpadded += golden.geometry.padding == 0;
    }
    // The file covers both operations, stride > 1 and padding 0.
    EXPECT_GE(transposed, 3);
    EXPECT_GE(strided, 3);
    EXPECT_GE(unpadded, 2);
}

// The tolerance must notice one value off by one part in a thousand: the
// largest element of each golden tensor in turn.
TEST_F(ConvGoldenTest, ComparisonDetectsAPerturbationOfOnePartInAThousand) {
    for (const ConvGolden &golden : cases_) {
        SCOPED_TRACE(golden.name);
        EngineResult engine;
        run_engine(backend_, golden, &engine);
        if (HasFatalFailure()) return;
        ASSERT_TRUE(compare(golden, engine, golden.y, golden.dx, golden.dweight, golden.dbias).empty());
        auto perturbed = [](std::vector<float> values) {
            size_t largest = 0;
            for (size_t i = 0; i < values.size(); ++i)
                if (std::fabs(values[i]) > std::fabs(values[largest])) largest = i;
            values[largest] *= 1.0f + 1e-3f;
            return values;
        };
        EXPECT_NE(compare(golden, engine, perturbed(golden.y), golden.dx, golden.dweight, golden.dbias).find(": y "),
                  std::string::npos);
        EXPECT_NE(compare(golden, engine, golden.y, perturbed(golden.dx), golden.dweight, golden.dbias).find(": dx "),
                  std::string::npos);
        EXPECT_NE(compare(golden, engine, golden.y, golden.dx, perturbed(golden.dweight), golden.dbias).find(": dweight "),
                  std::string::npos);
        if (golden.has_bias) {
            EXPECT_NE(compare(golden, engine, golden.y, golden.dx, golden.dweight, perturbed(golden.dbias)).find(": dbias "),
                      std::string::npos);
        }
    }
}

}  // namespace
