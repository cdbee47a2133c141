// Whole-model loss and gradients of the engine's CPU reference against golden
// values from an independent autodiff framework (PyTorch, float64), written by
// tests/golden/make_golden.py into tests/golden/golden_cases.json (the ELBO)
// and by tests/golden/make_golden_iwae.py into golden_iwae_cases.json (the
// importance-weighted objective, model.objective = iwae).
#include <gtest/gtest.h>

#include <cjson/cJSON.h>

#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "model/model.h"
#include "model/train_step.h"
}

namespace {

constexpr double kLossTolerance = 1e-5;      // relative
constexpr double kGradientTolerance = 1e-5;  // ||g - ref|| / ||ref|| per tensor

struct GoldenTensor {
    std::string name;
    size_t count = 0;
};

struct GoldenCase {
    std::string name, config;
    int input_dim = 0, rows = 0, samples = 0, latent_dim = 0;
    vae_image_shape image{0, 0, 0};     // convolutional cases: the images' [C, H, W]
    std::vector<GoldenTensor> tensors;  // engine order, packed one after another
    std::vector<float> x, eps, parameters;
    double loss = 0.0;
    std::vector<float> gradients;       // packed like parameters
};

const cJSON *required_field(const cJSON *object, const char *key, const std::string &where) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(object, key);
    if (item == nullptr) throw std::runtime_error(where + ": missing field \"" + key + "\"");
    return item;
}

double number_field(const cJSON *object, const char *key, const std::string &where) {
    const cJSON *item = required_field(object, key, where);
    if (!cJSON_IsNumber(item)) throw std::runtime_error(where + ": field \"" + key + "\" is not a number");
    return item->valuedouble;
}

std::string string_field(const cJSON *object, const char *key, const std::string &where) {
    const cJSON *item = required_field(object, key, where);
    if (!cJSON_IsString(item)) throw std::runtime_error(where + ": field \"" + key + "\" is not a string");
    return item->valuestring;
}

std::vector<float> float_array_field(const cJSON *object, const char *key, const std::string &where) {
    const cJSON *item = required_field(object, key, where);
    if (!cJSON_IsArray(item)) throw std::runtime_error(where + ": field \"" + key + "\" is not an array");
    std::vector<float> values;
    const cJSON *element = nullptr;
    cJSON_ArrayForEach(element, item) {
        if (!cJSON_IsNumber(element))
            throw std::runtime_error(where + ": field \"" + key + "\" holds a non-number");
        values.push_back((float)element->valuedouble);
    }
    return values;
}

std::vector<GoldenCase> load_golden_cases(const std::string &file) {
    const std::string path = std::string(VAE_SOURCE_DIR) + "/tests/golden/" + file;
    const std::string text = vae_test::read_file(path);
    cJSON *document = cJSON_Parse(text.c_str());
    if (document == nullptr) throw std::runtime_error(path + ": not valid JSON");
    std::vector<GoldenCase> cases;
    try {
        const cJSON *list = required_field(document, "cases", path);
        const cJSON *entry = nullptr;
        cJSON_ArrayForEach(entry, list) {
            GoldenCase golden;
            const std::string where = path + " case " + std::to_string(cases.size());
            golden.name = string_field(entry, "name", where);
            const std::string named = where + " (" + golden.name + ")";
            golden.config = string_field(entry, "config", named);
            golden.input_dim = (int)number_field(entry, "input_dim", named);
            golden.rows = (int)number_field(entry, "rows", named);
            golden.samples = (int)number_field(entry, "samples", named);
            golden.latent_dim = (int)number_field(entry, "latent_dim", named);
            if (cJSON_GetObjectItemCaseSensitive(entry, "image")) {
                std::vector<float> image = float_array_field(entry, "image", named);
                if (image.size() != 3) throw std::runtime_error(named + ": field \"image\" is not [C, H, W]");
                golden.image = {(int)image[0], (int)image[1], (int)image[2]};
            }
            golden.loss = number_field(entry, "loss", named);
            golden.x = float_array_field(entry, "x", named);
            golden.eps = float_array_field(entry, "eps", named);
            golden.parameters = float_array_field(entry, "parameters", named);
            golden.gradients = float_array_field(entry, "gradients", named);
            const cJSON *tensor = nullptr;
            cJSON_ArrayForEach(tensor, required_field(entry, "tensors", named)) {
                GoldenTensor described;
                described.name = string_field(tensor, "name", named);
                described.count = 1;
                const cJSON *extent = nullptr;
                cJSON_ArrayForEach(extent, required_field(tensor, "shape", named)) {
                    described.count *= (size_t)extent->valuedouble;
                }
                golden.tensors.push_back(described);
            }
            cases.push_back(std::move(golden));
        }
    } catch (...) {
        cJSON_Delete(document);
        throw;
    }
    cJSON_Delete(document);
    return cases;
}

// One named slice of the engine's flat buffer.
struct EngineTensor {
    std::string name;
    size_t offset, count;
};

std::vector<EngineTensor> engine_tensors(const vae_model &model) {
    std::vector<EngineTensor> tensors;
    const int layer_count = model.encoder_layer_count + model.decoder_layer_count;
    for (int i = 0; i < layer_count; ++i) {
        const vae_layer &layer = model.layers[i];
        tensors.push_back({layer.weight_name, layer.weight_offset, layer.weight_count});
        tensors.push_back({layer.bias_name, layer.bias_offset, layer.bias_count});
    }
    return tensors;
}

// What the engine produced for one golden case.
struct EngineResult {
    vae_model model{};
    std::vector<EngineTensor> tensors;
    double loss = 0.0;
    std::vector<float> gradients;  // the engine's flat layout
};

// Builds the model from the case's config, places the golden parameters at the
// engine's offsets and runs vae_reference_loss_and_gradients. Fatal failures
// are reported through gtest and leave *result incomplete.
void run_engine(const GoldenCase &golden, EngineResult *result) {
    vae_config config;
    vae_config_defaults(&config);
    ASSERT_EQ(vae_config_load_string(&config, golden.config.c_str(), golden.name.c_str()), VAE_OK)
        << vae_last_error();
    const vae_image_shape *image = golden.image.channels ? &golden.image : nullptr;
    ASSERT_EQ(vae_model_build(&config, golden.input_dim, image, &result->model), VAE_OK) << vae_last_error();
    result->tensors = engine_tensors(result->model);
    ASSERT_EQ(result->tensors.size(), golden.tensors.size()) << "layer table differs from the golden tensor list";

    std::vector<float> parameters(result->model.parameter_count, 0.0f);
    size_t packed = 0;
    for (size_t t = 0; t < golden.tensors.size(); ++t) {
        const EngineTensor &engine = result->tensors[t];
        ASSERT_EQ(engine.name, golden.tensors[t].name) << "tensor " << t;
        ASSERT_EQ(engine.count, golden.tensors[t].count) << "tensor " << engine.name;
        ASSERT_LE(engine.offset + engine.count, parameters.size()) << "tensor " << engine.name;
        ASSERT_LE(packed + engine.count, golden.parameters.size()) << "tensor " << engine.name;
        std::copy(golden.parameters.begin() + (long)packed, golden.parameters.begin() + (long)(packed + engine.count),
                  parameters.begin() + (long)engine.offset);
        packed += engine.count;
    }
    ASSERT_EQ(packed, golden.parameters.size());
    ASSERT_EQ(golden.gradients.size(), golden.parameters.size());
    ASSERT_EQ(golden.x.size(), (size_t)golden.rows * (size_t)golden.input_dim);
    ASSERT_EQ(golden.eps.size(), (size_t)golden.samples * (size_t)golden.rows * (size_t)golden.latent_dim);
    ASSERT_EQ(config.samples, golden.samples) << "config text did not set model.samples";
    ASSERT_EQ(config.latent_dim, golden.latent_dim) << "config text did not set model.latent_dim";

    // NaN marks every float the engine should overwrite.
    result->gradients.assign(result->model.parameter_count, NAN);
    ASSERT_EQ(vae_reference_loss_and_gradients(&config, golden.input_dim, image, parameters.data(), golden.x.data(),
                                               golden.rows, golden.eps.data(), &result->loss,
                                               result->gradients.data()),
              VAE_OK)
        << vae_last_error();
}

struct Comparison {
    bool passed = true;
    std::string report;  // one line per failure, naming case and tensor
};

// Compares an engine result against (possibly modified) golden loss and gradients.
Comparison compare(const GoldenCase &golden, const EngineResult &result, double golden_loss,
                   const std::vector<float> &golden_gradients) {
    Comparison comparison;
    std::ostringstream report;
    const double loss_error = std::fabs(result.loss - golden_loss) / std::max(std::fabs(golden_loss), 1e-30);
    if (!(loss_error <= kLossTolerance)) {
        comparison.passed = false;
        report << golden.name << ": loss " << result.loss << " vs golden " << golden_loss << " (relative error "
               << loss_error << ")\n";
    }
    size_t packed = 0;
    for (size_t t = 0; t < result.tensors.size(); ++t) {
        const EngineTensor &tensor = result.tensors[t];
        const double error = vae_test::relative_error(result.gradients.data() + tensor.offset,
                                                      golden_gradients.data() + packed, tensor.count);
        packed += tensor.count;
        if (!(error <= kGradientTolerance)) {
            comparison.passed = false;
            report << golden.name << ": gradient of " << tensor.name << " has normalised error " << error << "\n";
        }
    }
    comparison.report = report.str();
    return comparison;
}

// One golden file: golden_cases.json (ELBO) or golden_iwae_cases.json.
struct GoldenFile {
    const char *file;
    vae_objective objective;  // every case's config must select it
};

void PrintTo(const GoldenFile &file, std::ostream *os) { *os << file.file; }

class GoldenTest : public ::testing::TestWithParam<GoldenFile> {
  protected:
    void SetUp() override {
        try {
            cases_ = load_golden_cases(GetParam().file);
        } catch (const std::exception &error) {
            FAIL() << error.what();
        }
        ASSERT_GE(cases_.size(), 6u) << GetParam().file << " should hold the cases its generator writes";
        for (const GoldenCase &golden : cases_) {
            vae_config config;
            vae_config_defaults(&config);
            ASSERT_EQ(vae_config_load_string(&config, golden.config.c_str(), golden.name.c_str()), VAE_OK)
                << vae_last_error();
            ASSERT_EQ(config.objective, GetParam().objective) << golden.name << ": the config selects another objective";
        }
    }
    std::vector<GoldenCase> cases_;
};

TEST_P(GoldenTest, LossAndGradientsMatchPyTorch) {
    for (const GoldenCase &golden : cases_) {
        SCOPED_TRACE("golden case " + golden.name);
        EngineResult result;
        run_engine(golden, &result);
        if (HasFatalFailure()) return;
        const Comparison comparison = compare(golden, result, golden.loss, golden.gradients);
        EXPECT_TRUE(comparison.passed) << comparison.report;
    }
}

// The tolerance must catch a gradient off by 1e-3 in one value: perturb the
// largest-magnitude entry of each tensor in turn and expect the comparison to
// fail, naming that tensor. Likewise for the loss.
TEST_P(GoldenTest, ComparisonDetectsAPerturbationOfOnePartInAThousand) {
    for (const GoldenCase &golden : cases_) {
        SCOPED_TRACE("golden case " + golden.name);
        EngineResult result;
        run_engine(golden, &result);
        if (HasFatalFailure()) return;
        ASSERT_TRUE(compare(golden, result, golden.loss, golden.gradients).passed)
            << "the unmodified case must pass before perturbations mean anything";

        size_t packed = 0;
        for (const EngineTensor &tensor : result.tensors) {
            size_t largest = packed;
            for (size_t i = packed; i < packed + tensor.count; ++i)
                if (std::fabs(golden.gradients[i]) > std::fabs(golden.gradients[largest])) largest = i;
            packed += tensor.count;
            if (golden.gradients[largest] == 0.0f) continue;  // an all-zero gradient has no relative scale
            std::vector<float> perturbed = golden.gradients;
            perturbed[largest] *= 1.0f + 1e-3f;
            const Comparison comparison = compare(golden, result, golden.loss, perturbed);
            EXPECT_FALSE(comparison.passed) << "perturbing " << tensor.name << " went unnoticed";
            EXPECT_NE(comparison.report.find(tensor.name), std::string::npos) << comparison.report;
        }
        const Comparison loss_comparison = compare(golden, result, golden.loss * (1.0 + 1e-3), golden.gradients);
        EXPECT_FALSE(loss_comparison.passed) << "perturbing the loss went unnoticed";
    }
}

INSTANTIATE_TEST_SUITE_P(Objectives, GoldenTest,
                         ::testing::Values(GoldenFile{"golden_cases.json", VAE_OBJECTIVE_ELBO},
                                           GoldenFile{"golden_iwae_cases.json", VAE_OBJECTIVE_IWAE}),
                         [](const ::testing::TestParamInfo<GoldenFile> &info) {
                             return info.param.objective == VAE_OBJECTIVE_IWAE ? std::string("iwae")
                                                                                : std::string("elbo");
                         });

}  // namespace
