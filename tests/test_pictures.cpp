// Pictures and latents: encoding a split, reconstructions, interpolations,
// the latent manifold, the scatter plot, .npy export, the epoch grids, and
// the vae commands that draw them. A tiny model is trained on a synthetic
// 8x8 data set of two classes written by the test.
#include <gtest/gtest.h>

#include <png.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <map>
#include <string>
#include <vector>

#include "test_support.h"
#include "vae/latent.h"
#include "vae/vae.h"

extern "C" {
#include "training/normal_quantile.h"
#include "vae/output.h"
}

namespace {

constexpr int kSide = 8;
constexpr int kDim = kSide * kSide;
constexpr int kTrainCount = 200;
constexpr int kTestCount = 100;
constexpr int kEvalBatch = 32;  // 100 test examples: three full batches and a partial one

// Commands that load a checkpoint run on the CPU, as the API calls they are
// compared with.
using vae_test::CommandResult;
CommandResult run_vae(const std::string &arguments) {
    bool loads = arguments.find("--checkpoint") != std::string::npos && arguments.find("--device") == std::string::npos;
    return vae_test::run_vae(arguments + (loads ? " --device cpu" : ""));
}

// Class 0: the left half bright; class 1: the top half bright. Values are
// multiples of 1/255 so that a PNG of the inputs holds them exactly.
struct Split {
    std::vector<float> values;
    std::vector<int32_t> labels;
};

Split make_split(int count, uint64_t seed) {
    std::mt19937_64 generator(seed);
    std::uniform_int_distribution<int> bright(180, 255), dark(0, 50);
    Split split;
    split.values.resize((size_t)count * kDim);
    split.labels.resize(count);
    for (int i = 0; i < count; ++i) {
        int label = i % 2;  // consecutive pairs mix the classes
        split.labels[i] = label;
        for (int r = 0; r < kSide; ++r)
            for (int c = 0; c < kSide; ++c) {
                bool on = label == 0 ? c < kSide / 2 : r < kSide / 2;
                split.values[(size_t)i * kDim + r * kSide + c] = (float)(on ? bright(generator) : dark(generator)) / 255.0f;
            }
    }
    return split;
}

void write_split(const std::string &folder, const std::string &name, const Split &split, bool labels) {
    long count = (long)split.labels.size();
    // The input data go through test_support's NPY writer, independent of the
    // library's writer, which the tests check.
    std::string side = std::to_string(kSide);
    std::string shape = "(" + std::to_string(count) + ", " + side + ", " + side + ")";
    vae_test::write_file(folder + "/" + name + ".npy",
                         vae_test::npy_file(vae_test::npy_dict("<f4", shape), vae_test::raw_bytes(split.values)));
    if (labels)
        vae_test::write_file(folder + "/" + name + "_labels.npy",
                             vae_test::npy_file(vae_test::npy_dict("<i4", "(" + std::to_string(count) + ",)"),
                                                vae_test::raw_bytes(split.labels)));
}

struct Picture {
    int width = 0, height = 0, channels = 0;
    std::vector<unsigned char> pixels;
    unsigned char at(int x, int y, int channel = 0) const {
        return pixels[((size_t)y * width + x) * channels + channel];
    }
};

// Reads a PNG with libpng as grey (1 channel) or RGB (3 channels).
bool read_png(const std::string &path, int channels, Picture *picture) {
    png_image image;
    std::memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path.c_str())) return false;
    image.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    picture->width = (int)image.width;
    picture->height = (int)image.height;
    picture->channels = channels;
    picture->pixels.resize(PNG_IMAGE_SIZE(image));
    if (!png_image_finish_read(&image, nullptr, picture->pixels.data(), 0, nullptr)) {
        png_image_free(&image);
        return false;
    }
    return true;
}

int grey_level(float value) { return (int)std::lround(std::min(1.0f, std::max(0.0f, value)) * 255.0f); }

// The top-left pixel of grid cell (row, column) with margin m.
int cell_origin(int index, int margin) { return margin + index * (kSide + margin); }

struct NpyFile {
    std::string descr, shape;
    bool fortran = true;
    size_t data_offset = 0;
    std::string bytes;
};

// Parses an NPY 1.0 header the way numpy documents it.
bool parse_npy(const std::string &path, NpyFile *npy) {
    npy->bytes = vae_test::read_file(path);
    const std::string &b = npy->bytes;
    if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0 || b[6] != 1 || b[7] != 0) return false;
    size_t header_length = (unsigned char)b[8] | ((size_t)(unsigned char)b[9] << 8);
    npy->data_offset = 10 + header_length;
    if (b.size() < npy->data_offset || b[npy->data_offset - 1] != '\n') return false;
    std::string header = b.substr(10, header_length);
    auto value_of = [&](const std::string &key) {
        size_t at = header.find("'" + key + "': ");
        if (at == std::string::npos) return std::string();
        at += key.size() + 4;
        size_t end = header[at] == '(' ? header.find(')', at) + 1 : header.find_first_of(",}", at);
        return header.substr(at, end - at);
    };
    npy->descr = value_of("descr");
    npy->shape = value_of("shape");
    npy->fortran = value_of("fortran_order") != "False";
    return true;
}

class Pictures : public ::testing::Test {
  protected:
    static std::string folder_, labelled_data_, unlabelled_data_, checkpoint_2d_, checkpoint_3d_, run_2d_;
    static Split train_, test_;
    static bool trained_;

    static vae_config tiny_config(const std::string &data, int latent_dim) {
        vae_config config;
        vae_config_defaults(&config);
        std::vector<std::string> settings = {
            "data.path=" + data, "data.binarize=none", "data.validation_size=0",
            "model.latent_dim=" + std::to_string(latent_dim), "model.hidden=32", "model.likelihood=bernoulli",
            "train.epochs=4", "train.batch_size=20", "train.eval_batch_size=" + std::to_string(kEvalBatch),
            "train.lr=0.01", "train.log_every_steps=10", "train.seed=7", "output.image_every_epochs=2"};
        for (const std::string &setting : settings)
            EXPECT_EQ(vae_config_set(&config, setting.c_str()), VAE_OK) << setting << ": " << vae_last_error();
        return config;
    }

    static void train(const vae_config &config, const std::string &out) {
        vae_trainer *trainer = nullptr;
        ASSERT_EQ(vae_trainer_create(&trainer, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
        vae_train_options options{};
        options.out_dir = out.c_str();
        options.quiet = 1;
        vae_status status = vae_trainer_train(trainer, &options);
        vae_trainer_destroy(trainer);
        ASSERT_EQ(status, VAE_OK) << vae_last_error();
    }

    static void SetUpTestSuite() {
        folder_ = vae_test::temporary_folder("pictures");
        labelled_data_ = folder_ + "/labelled";
        unlabelled_data_ = folder_ + "/unlabelled";
        std::filesystem::create_directories(labelled_data_);
        std::filesystem::create_directories(unlabelled_data_);
        train_ = make_split(kTrainCount, 11);
        test_ = make_split(kTestCount, 12);
        write_split(labelled_data_, "train", train_, true);
        write_split(labelled_data_, "test", test_, true);
        write_split(unlabelled_data_, "train", train_, false);
        write_split(unlabelled_data_, "test", test_, false);
        run_2d_ = folder_ + "/run_2d";
        std::string run_3d = folder_ + "/run_3d";
        train(tiny_config(labelled_data_, 2), run_2d_);
        train(tiny_config(unlabelled_data_, 3), run_3d);
        checkpoint_2d_ = run_2d_ + "/checkpoint.safetensors";
        checkpoint_3d_ = run_3d + "/checkpoint.safetensors";
        trained_ = std::filesystem::exists(checkpoint_2d_) && std::filesystem::exists(checkpoint_3d_);
    }

    void SetUp() override { ASSERT_TRUE(trained_) << "the tiny models did not train"; }

    static vae_trainer *load(const std::string &checkpoint) {
        vae_trainer *trainer = nullptr;
        EXPECT_EQ(vae_trainer_load(&trainer, checkpoint.c_str(), VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
        return trainer;
    }

    static std::vector<float> decode(vae_trainer *trainer, const std::vector<float> &z, int count) {
        std::vector<float> images((size_t)count * kDim);
        EXPECT_EQ(vae_trainer_decode(trainer, z.data(), count, images.data()), VAE_OK) << vae_last_error();
        return images;
    }
};

std::string Pictures::folder_, Pictures::labelled_data_, Pictures::unlabelled_data_, Pictures::checkpoint_2d_,
    Pictures::checkpoint_3d_, Pictures::run_2d_;
Split Pictures::train_, Pictures::test_;
bool Pictures::trained_ = false;

double max_abs_difference(const float *a, const float *b, size_t count) {
    double worst = 0;
    for (size_t i = 0; i < count; ++i) worst = std::max(worst, (double)std::fabs(a[i] - b[i]));
    return worst;
}

TEST(NormalQuantile, MatchesKnownQuantiles) {
    EXPECT_NEAR(vae_normal_quantile(0.975), 1.959964, 1e-6);
    EXPECT_NEAR(vae_normal_quantile(0.5), 0.0, 1e-6);
    EXPECT_NEAR(vae_normal_quantile(0.05), -1.644854, 1e-6);
    // Both tail formulas and the centre, against values of the normal table.
    EXPECT_NEAR(vae_normal_quantile(0.001), -3.090232306167813, 1e-9);
    EXPECT_NEAR(vae_normal_quantile(0.02), -2.053748910631823, 1e-9);
    EXPECT_NEAR(vae_normal_quantile(0.99), 2.326347874040841, 1e-9);
    EXPECT_NEAR(vae_normal_quantile(0.3), -0.524400512708041, 1e-9);
    EXPECT_NEAR(vae_normal_quantile(1e-10), -6.361340902404056, 1e-7);
    // Phi(quantile(p)) == p over the whole range.
    for (double p = 0.001; p < 1.0; p += 0.0137)
        EXPECT_NEAR(0.5 * std::erfc(-vae_normal_quantile(p) / std::sqrt(2.0)), p, 1e-13) << p;
    EXPECT_TRUE(std::isinf(vae_normal_quantile(0.0)) && vae_normal_quantile(0.0) < 0);
    EXPECT_TRUE(std::isinf(vae_normal_quantile(1.0)) && vae_normal_quantile(1.0) > 0);
    EXPECT_TRUE(std::isnan(vae_normal_quantile(-0.1)));
    EXPECT_TRUE(std::isnan(vae_normal_quantile(1.5)));
    EXPECT_TRUE(std::isnan(vae_normal_quantile(NAN)));
}

TEST(NpyWrite, HeaderAndValuesReadBack) {
    std::string folder = vae_test::temporary_folder("pictures_npy");
    std::vector<float> values = {1.5f, -2.25f, 0.0f, 3e-8f, 1e30f, -0.0f};
    ASSERT_EQ(vae_npy_write_f32((folder + "/a.npy").c_str(), values.data(), 3, 2), VAE_OK) << vae_last_error();
    NpyFile npy;
    ASSERT_TRUE(parse_npy(folder + "/a.npy", &npy));
    EXPECT_EQ(npy.descr, "'<f4'");
    EXPECT_EQ(npy.shape, "(3, 2)");
    EXPECT_FALSE(npy.fortran);
    EXPECT_EQ(npy.data_offset % 64, 0u);
    ASSERT_EQ(npy.bytes.size(), npy.data_offset + values.size() * 4);
    EXPECT_EQ(std::memcmp(npy.bytes.data() + npy.data_offset, values.data(), values.size() * 4), 0);
    std::vector<int32_t> labels = {3, -1, 7};
    ASSERT_EQ(vae_npy_write_i32((folder + "/l.npy").c_str(), labels.data(), 3), VAE_OK);
    ASSERT_TRUE(parse_npy(folder + "/l.npy", &npy));
    EXPECT_EQ(npy.descr, "'<i4'");
    EXPECT_EQ(npy.shape, "(3,)");
    EXPECT_EQ(std::memcmp(npy.bytes.data() + npy.data_offset, labels.data(), 12), 0);
    // No temporary file is left behind.
    int files = 0;
    for (const auto &entry : std::filesystem::directory_iterator(folder)) files += entry.is_regular_file();
    EXPECT_EQ(files, 2);
    // An unwritable path fails with the path and the reason.
    std::string bad = folder + "/no/such/folder/x.npy";
    EXPECT_EQ(vae_npy_write_f32(bad.c_str(), values.data(), 3, 2), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(bad), std::string::npos) << vae_last_error();
    EXPECT_NE(std::string(vae_last_error()).find("No such file"), std::string::npos) << vae_last_error();
}

TEST_F(Pictures, EncodeGivesFiniteMeansBatchedLikeOneByOne) {
    vae_trainer *trainer = load(checkpoint_2d_);
    ASSERT_NE(trainer, nullptr);
    long count = 0;
    ASSERT_EQ(vae_trainer_split_size(trainer, "test", &count), VAE_OK);
    ASSERT_EQ(count, kTestCount);
    std::vector<float> mu((size_t)count * 2), logvar((size_t)count * 2);
    std::vector<int32_t> labels(count, -7);
    ASSERT_EQ(vae_trainer_encode(trainer, "test", 0, count, mu.data(), logvar.data(), labels.data()), VAE_OK)
        << vae_last_error();
    for (float v : mu) ASSERT_TRUE(std::isfinite(v));
    for (float v : logvar) ASSERT_TRUE(std::isfinite(v));
    EXPECT_EQ(labels, test_.labels);
    // Every example, encoded alone at its offset, gives the batched result:
    // batches (with the partial last one) and offsets line up.
    for (long i = 0; i < count; i += 7) {
        float one_mu[2], one_logvar[2];
        ASSERT_EQ(vae_trainer_encode(trainer, "test", i, 1, one_mu, one_logvar, nullptr), VAE_OK);
        EXPECT_LT(max_abs_difference(one_mu, &mu[(size_t)i * 2], 2), 1e-5) << i;
        EXPECT_LT(max_abs_difference(one_logvar, &logvar[(size_t)i * 2], 2), 1e-5) << i;
    }
    // The trained encoder separates the two classes along some direction.
    double mean[2][2] = {{0, 0}, {0, 0}};
    for (long i = 0; i < count; ++i)
        for (int j = 0; j < 2; ++j) mean[labels[i]][j] += mu[(size_t)i * 2 + j] / (count / 2);
    EXPECT_GT(std::hypot(mean[0][0] - mean[1][0], mean[0][1] - mean[1][1]), 0.5);
    // Bad ranges and splits are errors, not crashes.
    EXPECT_EQ(vae_trainer_encode(trainer, "test", 95, 10, mu.data(), nullptr, nullptr), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("100"), std::string::npos) << vae_last_error();
    EXPECT_EQ(vae_trainer_encode(trainer, "test", -1, 1, mu.data(), nullptr, nullptr), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_trainer_encode(trainer, "test", 0, 0, mu.data(), nullptr, nullptr), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_trainer_encode(trainer, "tset", 0, 1, mu.data(), nullptr, nullptr), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("tset"), std::string::npos);
    EXPECT_EQ(vae_trainer_encode(trainer, "validation", 0, 1, mu.data(), nullptr, nullptr), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("validation split has no examples"), std::string::npos)
        << vae_last_error();
    vae_trainer_destroy(trainer);
}

TEST_F(Pictures, InputsFollowTheBinarisation) {
    vae_config config = tiny_config(labelled_data_, 2);
    std::vector<float> inputs(3 * kDim);
    for (const char *mode : {"none", "dynamic", "static"}) {
        ASSERT_EQ(vae_config_set(&config, (std::string("data.binarize=") + mode).c_str()), VAE_OK);
        vae_trainer *trainer = nullptr;
        ASSERT_EQ(vae_trainer_create(&trainer, &config, VAE_DEVICE_CPU), VAE_OK) << vae_last_error();
        ASSERT_EQ(vae_trainer_inputs(trainer, "train", 5, 3, inputs.data()), VAE_OK);
        for (int i = 0; i < 3 * kDim; ++i) {
            float data = train_.values[5 * kDim + i];
            // Dynamic: the grey level, the mean of the Bernoulli draw.
            float expected = std::string(mode) == "static" ? (data > 0.5f ? 1.0f : 0.0f) : data;
            ASSERT_EQ(inputs[i], expected) << mode << " " << i;
        }
        vae_trainer_destroy(trainer);
    }
}

TEST_F(Pictures, ReconstructionIsTheDecodedMean) {
    vae_trainer *trainer = load(checkpoint_2d_);
    ASSERT_NE(trainer, nullptr);
    const int count = 12;
    std::vector<float> inputs(count * kDim), reconstructions(count * kDim), mu(count * 2);
    ASSERT_EQ(vae_trainer_reconstruct(trainer, "test", 10, count, inputs.data(), reconstructions.data()), VAE_OK);
    ASSERT_EQ(vae_trainer_encode(trainer, "test", 10, count, mu.data(), nullptr, nullptr), VAE_OK);
    std::vector<float> decoded = decode(trainer, mu, count);
    EXPECT_LT(max_abs_difference(reconstructions.data(), decoded.data(), decoded.size()), 1e-5);
    EXPECT_LT(max_abs_difference(inputs.data(), &test_.values[10 * kDim], inputs.size()), 0.0 + 1e-9);
    // A trained model reconstructs the class pattern better than the opposite class would.
    double own = 0, other = 0;
    for (int i = 0; i < count; ++i)
        for (int j = 0; j < kDim; ++j) {
            own += std::fabs(reconstructions[i * kDim + j] - test_.values[(10 + i) * kDim + j]);
            other += std::fabs(reconstructions[i * kDim + j] - test_.values[(10 + (i ^ 1)) * kDim + j]);
        }
    EXPECT_LT(own, 0.7 * other);
    vae_trainer_destroy(trainer);
}

TEST_F(Pictures, ReconstructCommandDrawsInputsAboveReconstructions) {
    std::string png = folder_ + "/reconstruct.png";
    CommandResult result = run_vae("reconstruct --checkpoint " + checkpoint_2d_ + " --out " + png +
                                   " --n 12 --device cpu");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    Picture picture;
    ASSERT_TRUE(read_png(png, 1, &picture));
    // 12 pictures, 8 per row: two blocks (inputs row, reconstructions row).
    const int margin = 2;
    EXPECT_EQ(picture.width, margin + 8 * (kSide + margin));
    EXPECT_EQ(picture.height, margin + 4 * (kSide + margin));
    vae_trainer *trainer = load(checkpoint_2d_);
    ASSERT_NE(trainer, nullptr);
    std::vector<float> reconstructions(12 * kDim);
    ASSERT_EQ(vae_trainer_reconstruct(trainer, "test", 0, 12, nullptr, reconstructions.data()), VAE_OK);
    vae_trainer_destroy(trainer);
    for (int i = 0; i < 12; ++i) {
        int block = i / 8, column = i % 8;
        int left = cell_origin(column, margin), input_top = cell_origin(2 * block, margin),
            reconstruction_top = cell_origin(2 * block + 1, margin);
        for (int r = 0; r < kSide; ++r)
            for (int c = 0; c < kSide; ++c) {
                ASSERT_EQ(picture.at(left + c, input_top + r), grey_level(test_.values[(size_t)i * kDim + r * kSide + c]))
                    << "input " << i;
                ASSERT_NEAR(picture.at(left + c, reconstruction_top + r),
                            grey_level(reconstructions[(size_t)i * kDim + r * kSide + c]), 1)
                    << "reconstruction " << i;
            }
    }
    // The partial second block's empty cells are margin grey.
    EXPECT_EQ(picture.at(cell_origin(6, margin) + 3, cell_origin(2, margin) + 3), 224);
    EXPECT_EQ(picture.at(cell_origin(7, margin) + 3, cell_origin(3, margin) + 3), 224);
}

TEST_F(Pictures, InterpolationEndsAtTheEndpointsDecodedMeans) {
    vae_trainer *trainer = load(checkpoint_2d_);
    ASSERT_NE(trainer, nullptr);
    const int pairs = 3, steps = 5, cells = steps + 2;
    std::vector<float> images((size_t)pairs * cells * kDim);
    ASSERT_EQ(vae_trainer_interpolate(trainer, "test", 4, pairs, steps, images.data()), VAE_OK) << vae_last_error();
    std::vector<float> mu(2 * pairs * 2);
    ASSERT_EQ(vae_trainer_encode(trainer, "test", 4, 2 * pairs, mu.data(), nullptr, nullptr), VAE_OK);
    std::vector<float> endpoints = decode(trainer, mu, 2 * pairs);
    for (int p = 0; p < pairs; ++p) {
        const float *row = &images[(size_t)p * cells * kDim];
        const float *a = &mu[(size_t)(2 * p) * 2], *b = a + 2;
        std::vector<float> midpoint = {0.5f * (a[0] + b[0]), 0.5f * (a[1] + b[1])};
        std::vector<float> middle = decode(trainer, midpoint, 1);
        EXPECT_EQ(std::memcmp(row, &test_.values[(size_t)(4 + 2 * p) * kDim], kDim * sizeof(float)), 0) << p;
        EXPECT_LT(max_abs_difference(row + kDim, &endpoints[(size_t)(2 * p) * kDim], kDim), 1e-5) << p;
        EXPECT_LT(max_abs_difference(row + (steps / 2 + 1) * kDim, middle.data(), kDim), 1e-5) << p;
        EXPECT_LT(max_abs_difference(row + steps * kDim, &endpoints[(size_t)(2 * p + 1) * kDim], kDim), 1e-5) << p;
        EXPECT_EQ(std::memcmp(row + (cells - 1) * kDim, &test_.values[(size_t)(5 + 2 * p) * kDim],
                              kDim * sizeof(float)), 0) << p;
        // The two endpoints differ (the pairs mix the classes), so the path moves.
        EXPECT_GT(max_abs_difference(row + kDim, row + steps * kDim, kDim), 0.05) << p;
    }
    EXPECT_EQ(vae_trainer_interpolate(trainer, "test", 0, 1, 1, images.data()), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_trainer_interpolate(trainer, "test", 0, 51, 2, images.data()), VAE_ERROR_INVALID_ARGUMENT);
    vae_trainer_destroy(trainer);

    std::string png = folder_ + "/interpolate.png";
    CommandResult result = run_vae("interpolate --checkpoint " + checkpoint_2d_ + " --out " + png +
                                   " --pairs 3 --steps 6 --device cpu");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    Picture picture;
    ASSERT_TRUE(read_png(png, 1, &picture));
    EXPECT_EQ(picture.width, 2 + 8 * (kSide + 2));  // 6 steps and the 2 inputs
    EXPECT_EQ(picture.height, 2 + 3 * (kSide + 2));
    // Row 1 starts with test example 2 and ends with test example 3.
    for (int r = 0; r < kSide; ++r)
        for (int c = 0; c < kSide; ++c) {
            ASSERT_EQ(picture.at(cell_origin(0, 2) + c, cell_origin(1, 2) + r),
                      grey_level(test_.values[2 * kDim + r * kSide + c]));
            ASSERT_EQ(picture.at(cell_origin(7, 2) + c, cell_origin(1, 2) + r),
                      grey_level(test_.values[3 * kDim + r * kSide + c]));
        }
    EXPECT_EQ(run_vae("interpolate --checkpoint " + checkpoint_2d_ + " --out " + png + " --steps 1").exit_code, 2);
    CommandResult too_many = run_vae("interpolate --checkpoint " + checkpoint_2d_ + " --out " + png + " --pairs 60");
    EXPECT_EQ(too_many.exit_code, 2);
    EXPECT_NE(too_many.output.find("test split"), std::string::npos) << too_many.output;
}

TEST_F(Pictures, ManifoldDecodesTheNormalQuantileGrid) {
    vae_trainer *trainer = load(checkpoint_2d_);
    ASSERT_NE(trainer, nullptr);
    const int n = 5;
    std::vector<float> images((size_t)n * n * kDim);
    ASSERT_EQ(vae_trainer_manifold(trainer, n, images.data()), VAE_OK) << vae_last_error();
    // Normal quantiles of 0.05, 0.275, 0.5, 0.725, 0.95 (from a normal table).
    double quantiles[n] = {-1.6448536269514729, -0.5977601260424784, 0.0, 0.5977601260424784, 1.6448536269514729};
    std::vector<float> z;
    for (int r = 0; r < n; ++r)
        for (int c = 0; c < n; ++c) {
            z.push_back((float)quantiles[c]);
            z.push_back((float)quantiles[n - 1 - r]);
        }
    std::vector<float> expected = decode(trainer, z, n * n);
    EXPECT_LT(max_abs_difference(images.data(), expected.data(), expected.size()), 1e-5);
    vae_trainer_destroy(trainer);

    std::string png = folder_ + "/manifold.png";
    CommandResult result = run_vae("manifold --checkpoint " + checkpoint_2d_ + " --out " + png + " --n 6");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    Picture picture;
    ASSERT_TRUE(read_png(png, 1, &picture));
    EXPECT_EQ(picture.width, 6 * kSide);
    EXPECT_EQ(picture.height, 6 * kSide);

    vae_trainer *three = load(checkpoint_3d_);
    ASSERT_NE(three, nullptr);
    EXPECT_EQ(vae_trainer_manifold(three, n, images.data()), VAE_ERROR_INVALID_ARGUMENT);
    vae_trainer_destroy(three);
    std::filesystem::remove(png);
    CommandResult refused = run_vae("manifold --checkpoint " + checkpoint_3d_ + " --out " + png);
    EXPECT_EQ(refused.exit_code, 2) << refused.output;
    EXPECT_NE(refused.output.find("latent_dim = 3"), std::string::npos) << refused.output;
    EXPECT_FALSE(std::filesystem::exists(png));
}

TEST_F(Pictures, ScatterColoursPointsByLabel) {
    std::string png = folder_ + "/scatter.png";
    CommandResult result = run_vae("scatter --checkpoint " + checkpoint_2d_ + " --out " + png + " --dims 1,0");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    Picture picture;
    ASSERT_TRUE(read_png(png, 3, &picture));
    ASSERT_EQ(picture.width, 800);
    ASSERT_EQ(picture.height, 800);
    std::map<std::vector<int>, int> colours;
    for (int y = 0; y < 800; ++y)
        for (int x = 0; x < 800; ++x) {
            std::vector<int> rgb = {picture.at(x, y, 0), picture.at(x, y, 1), picture.at(x, y, 2)};
            colours[rgb] += 1;
        }
    EXPECT_GT((colours[{255, 255, 255}]), 800 * 800 / 2);  // white background
    EXPECT_GE((colours[{0, 0, 0}]), 4 * 700);               // the frame
    EXPECT_EQ(picture.at(400, 20, 0) + picture.at(400, 20, 1) + picture.at(400, 20, 2), 0);
    EXPECT_EQ(picture.at(0, 0, 0), 255);
    // Dots: one colour per label (two classes), each drawn many times.
    int dot_colours = 0;
    for (const auto &[rgb, pixels] : colours) {
        if (rgb == std::vector<int>{255, 255, 255} || rgb == std::vector<int>{0, 0, 0}) continue;
        EXPECT_GE(pixels, 50) << rgb[0] << "," << rgb[1] << "," << rgb[2];
        ++dot_colours;
    }
    EXPECT_EQ(dot_colours, 2);

    CommandResult bad_dims = run_vae("scatter --checkpoint " + checkpoint_2d_ + " --out " + png + " --dims 0,2");
    EXPECT_EQ(bad_dims.exit_code, 2);
    EXPECT_NE(bad_dims.output.find("--dims"), std::string::npos) << bad_dims.output;
    EXPECT_EQ(run_vae("scatter --checkpoint " + checkpoint_2d_ + " --out " + png + " --dims 1,1").exit_code, 2);
    EXPECT_EQ(run_vae("scatter --checkpoint " + checkpoint_2d_ + " --out " + png + " --dims x").exit_code, 2);
    CommandResult unlabelled = run_vae("scatter --checkpoint " + checkpoint_3d_ + " --out " + png);
    EXPECT_EQ(unlabelled.exit_code, 2);
    EXPECT_NE(unlabelled.output.find("no labels"), std::string::npos) << unlabelled.output;
}

TEST_F(Pictures, EncodeCommandWritesNpyThatMatchesTheApi) {
    std::string mu_path = folder_ + "/mu.npy", logvar_path = folder_ + "/logvar.npy",
                labels_path = folder_ + "/labels.npy";
    CommandResult result = run_vae("encode --checkpoint " + checkpoint_2d_ + " --out " + mu_path + " --logvar " +
                                   logvar_path + " --labels " + labels_path + " --split test");
    ASSERT_EQ(result.exit_code, 0) << result.output;
    vae_trainer *trainer = load(checkpoint_2d_);
    ASSERT_NE(trainer, nullptr);
    std::vector<float> mu(kTestCount * 2), logvar(kTestCount * 2);
    ASSERT_EQ(vae_trainer_encode(trainer, "test", 0, kTestCount, mu.data(), logvar.data(), nullptr), VAE_OK);
    vae_trainer_destroy(trainer);
    NpyFile npy;
    ASSERT_TRUE(parse_npy(mu_path, &npy));
    EXPECT_EQ(npy.descr, "'<f4'");
    EXPECT_EQ(npy.shape, "(100, 2)");
    EXPECT_FALSE(npy.fortran);
    ASSERT_EQ(npy.bytes.size(), npy.data_offset + mu.size() * 4);
    EXPECT_LT(max_abs_difference(reinterpret_cast<const float *>(npy.bytes.data() + npy.data_offset), mu.data(),
                                 mu.size()), 1e-6);
    ASSERT_TRUE(parse_npy(logvar_path, &npy));
    EXPECT_EQ(npy.shape, "(100, 2)");
    EXPECT_LT(max_abs_difference(reinterpret_cast<const float *>(npy.bytes.data() + npy.data_offset), logvar.data(),
                                 logvar.size()), 1e-6);
    ASSERT_TRUE(parse_npy(labels_path, &npy));
    EXPECT_EQ(npy.descr, "'<i4'");
    EXPECT_EQ(npy.shape, "(100,)");
    ASSERT_EQ(npy.bytes.size(), npy.data_offset + kTestCount * 4);
    EXPECT_EQ(std::memcmp(npy.bytes.data() + npy.data_offset, test_.labels.data(), kTestCount * 4), 0);
    // numpy itself reads them, where /usr/bin/python3 has numpy.
    if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0) {
        std::string check = "/usr/bin/python3 -c \"import numpy as n; m = n.load('" + mu_path + "'); l = n.load('" +
                            labels_path + "'); assert m.shape == (100, 2) and m.dtype == n.float32 and "
                            "n.isfinite(m).all() and l.dtype == n.int32 and list(l[:4]) == [0, 1, 0, 1]\"";
        EXPECT_EQ(std::system(check.c_str()), 0);
    }
    // Labels of an unlabelled split: a clear usage-class error.
    CommandResult unlabelled = run_vae("encode --checkpoint " + checkpoint_3d_ + " --out " + mu_path + " --labels " +
                                       labels_path);
    EXPECT_EQ(unlabelled.exit_code, 2);
    EXPECT_NE(unlabelled.output.find("no labels"), std::string::npos) << unlabelled.output;
    CommandResult no_labels = run_vae("encode --checkpoint " + checkpoint_3d_ + " --out " + mu_path);
    EXPECT_EQ(no_labels.exit_code, 0) << no_labels.output;
    ASSERT_TRUE(parse_npy(mu_path, &npy));
    EXPECT_EQ(npy.shape, "(100, 3)");
    CommandResult unwritable = run_vae("encode --checkpoint " + checkpoint_2d_ + " --out /nonexistent/dir/mu.npy");
    EXPECT_EQ(unwritable.exit_code, 1);
    EXPECT_NE(unwritable.output.find("/nonexistent/dir/mu.npy"), std::string::npos) << unwritable.output;
}

TEST_F(Pictures, TrainingWritesEpochGrids) {
    // output.image_every_epochs = 2 over 4 epochs: epochs 2 and 4.
    for (const char *name : {"samples_epoch_002.png", "reconstructions_epoch_002.png", "samples_epoch_004.png",
                             "reconstructions_epoch_004.png"}) {
        Picture picture;
        ASSERT_TRUE(read_png(run_2d_ + "/" + name, 1, &picture)) << name;
        // 64 samples, 8 per row; 32 reconstructions under their 32 inputs.
        EXPECT_EQ(picture.width, 2 + 8 * (kSide + 2)) << name;
        EXPECT_EQ(picture.height, 2 + 8 * (kSide + 2)) << name;
    }
    EXPECT_FALSE(std::filesystem::exists(run_2d_ + "/samples_epoch_001.png"));
    EXPECT_FALSE(std::filesystem::exists(run_2d_ + "/samples_epoch_003.png"));
    Picture reconstructions;
    ASSERT_TRUE(read_png(run_2d_ + "/reconstructions_epoch_004.png", 1, &reconstructions));
    // The first row holds test examples 0..7 (no validation split here).
    for (int i = 0; i < 8; ++i)
        EXPECT_EQ(reconstructions.at(cell_origin(i, 2) + 1, cell_origin(0, 2) + 1),
                  grey_level(test_.values[(size_t)i * kDim + 1 * kSide + 1])) << i;
}

TEST(PicturesCli, HelpAndUsageErrors) {
    for (const char *command : {"reconstruct", "interpolate", "manifold", "scatter", "encode"}) {
        CommandResult help = run_vae(std::string(command) + " --help");
        EXPECT_EQ(help.exit_code, 0) << command;
        EXPECT_NE(help.output.find("usage: vae " + std::string(command)), std::string::npos) << command;
        CommandResult missing = run_vae(std::string(command) + " --checkpoint x.safetensors");
        EXPECT_EQ(missing.exit_code, 2) << command;
        EXPECT_NE(missing.output.find("--out"), std::string::npos) << command << ": " << missing.output;
        CommandResult absent = run_vae(std::string(command) + " --checkpoint /nonexistent/c.safetensors --out x");
        EXPECT_NE(absent.exit_code, 0) << command;
        EXPECT_NE(absent.output.find("/nonexistent/c.safetensors"), std::string::npos) << command;
    }
    CommandResult program = run_vae("--help");
    for (const char *command : {"reconstruct", "interpolate", "manifold", "scatter", "encode"})
        EXPECT_NE(program.output.find(command), std::string::npos) << command;
    EXPECT_EQ(run_vae("interpolate --checkpoint x --out y --pairs 0").exit_code, 2);
    EXPECT_EQ(run_vae("scatter --checkpoint x --out y --dims 0").exit_code, 2);
}

}  // namespace
