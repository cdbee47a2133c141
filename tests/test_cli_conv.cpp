// A convolutional VAE through the vae command line, on a tiny IDX data set
// written here (1x12x12 images): train, eval with IWAE, sample, reconstruct,
// interpolate, encode, manifold, bench, all from the checkpoint without the
// data where the command allows; layer lists that do not fit the images
// refused before training; a checkpoint for another architecture refused
// naming the tensor.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

extern "C" {
#include "io/checkpoint.h"
}
#include "test_support.h"

namespace {

using Result = vae_test::CommandResult;
Result run(const std::string &arguments) { return vae_test::run_vae(arguments); }

const int kSide = 12;

// Bright squares of random size and place on a dark background, so that the
// model has something to learn.
std::string images(int count, uint32_t seed) {
    std::string pixels((size_t)count * kSide * kSide, '\0');
    uint32_t state = seed;
    auto next = [&state]() { state = state * 1664525u + 1013904223u; return state >> 8; };
    for (int n = 0; n < count; ++n) {
        int size = 3 + (int)(next() % 6), top = (int)(next() % (kSide - size)), left = (int)(next() % (kSide - size));
        for (int y = top; y < top + size; ++y)
            for (int x = left; x < left + size; ++x) pixels[((size_t)n * kSide + y) * kSide + x] = (char)200;
    }
    return pixels;
}

std::string labels(int count) {
    std::string values((size_t)count, '\0');
    for (int n = 0; n < count; ++n) values[(size_t)n] = (char)(n % 10);
    return values;
}

// The data folder (IDX, as Fashion-MNIST ships) and a config for it.
std::string write_data_and_config(const std::string &folder) {
    std::string data = folder + "/data";
    std::filesystem::create_directories(data);
    const uint32_t side = kSide;
    vae_test::write_file(data + "/train-images-idx3-ubyte", vae_test::idx_file(0x803, {240, side, side}, images(240, 7)));
    vae_test::write_file(data + "/train-labels-idx1-ubyte", vae_test::idx_file(0x801, {240}, labels(240)));
    vae_test::write_file(data + "/t10k-images-idx3-ubyte", vae_test::idx_file(0x803, {60, side, side}, images(60, 8)));
    vae_test::write_file(data + "/t10k-labels-idx1-ubyte", vae_test::idx_file(0x801, {60}, labels(60)));
    std::string config = folder + "/conv.ini";
    vae_test::write_file(config, "[data]\npath = " + data +
                                     "\nbinarize = dynamic\nvalidation_size = 40\n"
                                     "[model]\nlatent_dim = 2\n"
                                     "encoder = conv 4 k3 s2 p1, conv 6 k3 s2 p1, dense 16\n"
                                     "decoder = dense 6x3x3, convt 4 k4 s2 p1, convt out k4 s2 p1\n"
                                     "[train]\nepochs = 3\nbatch_size = 20\nseed = 3\nlr = 3e-3\n"
                                     "log_every_steps = 5\neval_batch_size = 25\n"
                                     "[output]\nimage_every_epochs = 1\n");
    return config;
}

bool is_png(const std::string &path) {
    std::string bytes = vae_test::read_file_or_empty(path);
    return bytes.size() > 8 && bytes.substr(1, 3) == "PNG";
}

TEST(CliConv, EveryCommandWorksOnAConvolutionalModel) {
    std::string folder = vae_test::temporary_folder("cli_conv");
    std::string config = write_data_and_config(folder);
    std::string run_folder = folder + "/run";
    Result train = run("train --config " + config + " --device cpu --quiet --out " + run_folder);
    ASSERT_EQ(train.exit_code, 0) << train.output;
    std::string checkpoint = run_folder + "/checkpoint.safetensors";
    ASSERT_TRUE(std::filesystem::exists(checkpoint));
    EXPECT_TRUE(is_png(run_folder + "/samples_epoch_003.png"));
    EXPECT_TRUE(is_png(run_folder + "/reconstructions_epoch_003.png"));

    // The names PyTorch's nn.Sequential gives (src/model/model.h) and the conv weight layouts.
    vae_test::CheckpointTensors tensors = vae_test::read_checkpoint_tensors(checkpoint);
    std::vector<std::string> parameters;
    for (const std::string &name : tensors.names)
        if (name.rfind("optimizer.", 0) != 0) parameters.push_back(name);
    EXPECT_EQ(parameters, (std::vector<std::string>{"encoder.1.weight", "encoder.1.bias", "encoder.3.weight",
                                                    "encoder.3.bias", "encoder.6.weight", "encoder.6.bias",
                                                    "encoder.8.weight", "encoder.8.bias", "decoder.0.weight",
                                                    "decoder.0.bias", "decoder.3.weight", "decoder.3.bias",
                                                    "decoder.5.weight", "decoder.5.bias"}));

    Result eval = run("eval --checkpoint " + checkpoint + " --split test --iwae-k 5 --device cpu");
    ASSERT_EQ(eval.exit_code, 0) << eval.output;
    for (const char *key : {"\"iwae_k\":5", "\"points\":60", "\"log_likelihood\":", "\"split\":\"test\""})
        EXPECT_NE(eval.output.find(key), std::string::npos) << key << " in " << eval.output;
    EXPECT_EQ(eval.output.find("nan"), std::string::npos) << eval.output;

    // The pictures and latents come from the checkpoint; sample and manifold need no data at all.
    std::filesystem::rename(folder + "/data", folder + "/data_moved");
    Result sample = run("sample --checkpoint " + checkpoint + " --out " + folder + "/samples.png --n 9 --device cpu");
    EXPECT_EQ(sample.exit_code, 0) << sample.output;
    EXPECT_TRUE(is_png(folder + "/samples.png"));
    Result manifold = run("manifold --checkpoint " + checkpoint + " --out " + folder + "/manifold.png --n 5 --device cpu");
    EXPECT_EQ(manifold.exit_code, 0) << manifold.output;
    EXPECT_TRUE(is_png(folder + "/manifold.png"));
    std::filesystem::rename(folder + "/data_moved", folder + "/data");

    Result reconstruct = run("reconstruct --checkpoint " + checkpoint + " --out " + folder +
                             "/reconstructions.png --split test --n 8 --device cpu");
    EXPECT_EQ(reconstruct.exit_code, 0) << reconstruct.output;
    EXPECT_TRUE(is_png(folder + "/reconstructions.png"));
    Result interpolate = run("interpolate --checkpoint " + checkpoint + " --out " + folder +
                             "/interpolation.png --split test --pairs 2 --device cpu");
    EXPECT_EQ(interpolate.exit_code, 0) << interpolate.output;
    EXPECT_TRUE(is_png(folder + "/interpolation.png"));
    Result scatter = run("scatter --checkpoint " + checkpoint + " --out " + folder + "/scatter.png --split test --device cpu");
    EXPECT_EQ(scatter.exit_code, 0) << scatter.output;
    EXPECT_TRUE(is_png(folder + "/scatter.png"));
    Result encode = run("encode --checkpoint " + checkpoint + " --out " + folder + "/z.npy --split test --device cpu");
    EXPECT_EQ(encode.exit_code, 0) << encode.output;
    std::string npy = vae_test::read_file_or_empty(folder + "/z.npy");
    EXPECT_NE(npy.find("'shape': (60, "), std::string::npos) << npy.substr(0, 128);

    Result bench = run("bench --config " + config + " --device cpu --steps 3 --warmup-steps 1");
    ASSERT_EQ(bench.exit_code, 0) << bench.output;
    EXPECT_NE(bench.output.find("\"samples_per_s\":"), std::string::npos) << bench.output;
}

TEST(CliConv, LayersThatDoNotFitTheImagesAreRefusedBeforeTraining) {
    std::string folder = vae_test::temporary_folder("cli_conv_shapes");
    std::string config = write_data_and_config(folder);
    // 12 -> 6 -> 3, then a 5x5 kernel on 3x3 without padding
    Result kernel = run("train --config " + config + " --device cpu --quiet --out " + folder +
                        "/run --set 'model.encoder=conv 4 k3 s2 p1, conv 6 k3 s2 p1, conv 8 k5'");
    EXPECT_EQ(kernel.exit_code, 2) << kernel.output;
    for (const char *fragment : {"encoder layer 3", "conv 8 k5", "6x3x3"})
        EXPECT_NE(kernel.output.find(fragment), std::string::npos) << fragment << " in " << kernel.output;
    EXPECT_FALSE(std::filesystem::exists(folder + "/run/checkpoint.safetensors"));
    // the decoder ends at 1x6x6, the images are 1x12x12
    Result end = run("train --config " + config + " --device cpu --quiet --out " + folder +
                     "/run --set 'model.decoder=dense 6x3x3, convt out k4 s2 p1'");
    EXPECT_EQ(end.exit_code, 2) << end.output;
    for (const char *fragment : {"decoder layer 2", "1x6x6", "1x12x12"})
        EXPECT_NE(end.output.find(fragment), std::string::npos) << fragment << " in " << end.output;
}

TEST(CliConv, ACheckpointForAnotherArchitectureIsRefusedNamingTheTensor) {
    std::string folder = vae_test::temporary_folder("cli_conv_foreign");
    std::string config = write_data_and_config(folder);
    Result train = run("train --config " + config + " --device cpu --quiet --out " + folder +
                       "/run --set train.epochs=1");
    ASSERT_EQ(train.exit_code, 0) << train.output;
    vae_checkpoint original;
    ASSERT_EQ(vae_checkpoint_read((folder + "/run/checkpoint.safetensors").c_str(), &original), VAE_OK)
        << vae_last_error();
    std::vector<const char *> keys, values;
    for (int i = 0; i < original.metadata_count; ++i) {
        if (std::string(original.metadata[i].key) == "checksum" || std::string(original.metadata[i].key) == "format")
            continue;  // the writer adds its own
        keys.push_back(original.metadata[i].key);
        values.push_back(original.metadata[i].value);
    }
    // One: the first conv's weight stored as a dense layer's [out, in] (a 4x9 matrix).
    std::vector<vae_checkpoint_tensor> reshaped(original.tensors, original.tensors + original.tensor_count);
    for (vae_checkpoint_tensor &tensor : reshaped)
        if (std::string(tensor.name) == "encoder.1.weight") {
            tensor.rank = 2;
            tensor.shape[0] = 4;
            tensor.shape[1] = 9;
        }
    std::string path = folder + "/reshaped.safetensors";
    ASSERT_EQ(vae_checkpoint_write(path.c_str(), reshaped.data(), (int)reshaped.size(), keys.data(), values.data(),
                                   (int)keys.size()),
              VAE_OK)
        << vae_last_error();
    Result shape = run("sample --checkpoint " + path + " --out " + folder + "/x.png");
    EXPECT_NE(shape.exit_code, 0);
    for (const char *fragment : {"encoder.1.weight", "[4, 9]", "[4, 1, 3, 3]"})
        EXPECT_NE(shape.output.find(fragment), std::string::npos) << fragment << " in " << shape.output;
    // Two: the tensors a ModuleList model would have (encoder.0 for encoder.1).
    std::vector<vae_checkpoint_tensor> renamed(original.tensors, original.tensors + original.tensor_count);
    for (vae_checkpoint_tensor &tensor : renamed)
        if (std::string(tensor.name) == "encoder.1.weight") snprintf(tensor.name, sizeof tensor.name, "encoder.0.weight");
    path = folder + "/renamed.safetensors";
    ASSERT_EQ(vae_checkpoint_write(path.c_str(), renamed.data(), (int)renamed.size(), keys.data(), values.data(),
                                   (int)keys.size()),
              VAE_OK)
        << vae_last_error();
    vae_checkpoint_free(&original);
    Result missing = run("sample --checkpoint " + path + " --out " + folder + "/x.png");
    EXPECT_NE(missing.exit_code, 0);
    EXPECT_NE(missing.output.find("encoder.1.weight"), std::string::npos) << missing.output;
}

}  // namespace
