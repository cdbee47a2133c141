// The INI config layer: defaults, shipped configs, round trips, every error
// class with its file:line:key message, --set overrides, and random input.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "vae/vae.h"
#include "vae_math.h"
}
#include "test_support.h"

namespace {

vae_config defaults() {
    vae_config config;
    vae_config_defaults(&config);
    return config;
}

std::string configs_folder() { return std::string(VAE_SOURCE_DIR) + "/configs"; }

std::vector<std::string> shipped_configs() {
    std::vector<std::string> paths;
    for (const auto &entry : std::filesystem::directory_iterator(configs_folder()))
        if (entry.path().extension() == ".ini") paths.push_back(entry.path().string());
    return paths;
}

// Every field, compared one by one (names the field that differs), then the
// bytes (padding and unused slots are zero after vae_config_defaults).
void expect_same_config(const vae_config &a, const vae_config &b) {
    EXPECT_STREQ(a.data_path, b.data_path);
    EXPECT_EQ(a.binarize, b.binarize);
    EXPECT_EQ(a.binarize_threshold, b.binarize_threshold);
    EXPECT_EQ(a.validation_size, b.validation_size);
    EXPECT_EQ(a.train_limit, b.train_limit);
    EXPECT_EQ(a.test_limit, b.test_limit);
    EXPECT_EQ(a.latent_dim, b.latent_dim);
    ASSERT_EQ(a.hidden_count, b.hidden_count);
    for (int i = 0; i < a.hidden_count; ++i) EXPECT_EQ(a.hidden[i], b.hidden[i]) << "hidden " << i;
    ASSERT_EQ(a.decoder_hidden_count, b.decoder_hidden_count);
    for (int i = 0; i < a.decoder_hidden_count; ++i) EXPECT_EQ(a.decoder_hidden[i], b.decoder_hidden[i]) << i;
    ASSERT_EQ(a.encoder_layer_count, b.encoder_layer_count);
    for (int i = 0; i < a.encoder_layer_count; ++i)
        EXPECT_EQ(std::memcmp(&a.encoder_layers[i], &b.encoder_layers[i], sizeof a.encoder_layers[i]), 0) << "encoder " << i;
    ASSERT_EQ(a.decoder_layer_count, b.decoder_layer_count);
    for (int i = 0; i < a.decoder_layer_count; ++i)
        EXPECT_EQ(std::memcmp(&a.decoder_layers[i], &b.decoder_layers[i], sizeof a.decoder_layers[i]), 0) << "decoder " << i;
    EXPECT_EQ(a.activation, b.activation);
    EXPECT_EQ(a.likelihood, b.likelihood);
    EXPECT_EQ(a.gaussian_fixed_logvar, b.gaussian_fixed_logvar);
    EXPECT_EQ(a.samples, b.samples);
    EXPECT_EQ(a.beta, b.beta);
    EXPECT_EQ(a.kl_warmup_steps, b.kl_warmup_steps);
    EXPECT_EQ(a.init_scale, b.init_scale);
    EXPECT_EQ(a.epochs, b.epochs);
    EXPECT_EQ(a.batch_size, b.batch_size);
    EXPECT_EQ(a.seed, b.seed);
    EXPECT_EQ(a.lr, b.lr);
    EXPECT_EQ(a.lr_min, b.lr_min);
    EXPECT_EQ(a.lr_schedule, b.lr_schedule);
    EXPECT_EQ(a.warmup_steps, b.warmup_steps);
    EXPECT_EQ(a.optimizer, b.optimizer);
    EXPECT_EQ(a.adam_beta1, b.adam_beta1);
    EXPECT_EQ(a.adam_beta2, b.adam_beta2);
    EXPECT_EQ(a.adam_epsilon, b.adam_epsilon);
    EXPECT_EQ(a.weight_decay, b.weight_decay);
    EXPECT_EQ(a.grad_clip, b.grad_clip);
    EXPECT_EQ(a.log_every_steps, b.log_every_steps);
    EXPECT_EQ(a.eval_every_epochs, b.eval_every_epochs);
    EXPECT_EQ(a.eval_batch_size, b.eval_batch_size);
    EXPECT_EQ(a.precision, b.precision);
    EXPECT_EQ(a.nonfinite_policy, b.nonfinite_policy);
    EXPECT_EQ(a.logvar_clamp, b.logvar_clamp);
    EXPECT_EQ(a.checkpoint_every_steps, b.checkpoint_every_steps);
    EXPECT_EQ(a.checkpoint_keep, b.checkpoint_keep);
    EXPECT_EQ(a.image_every_epochs, b.image_every_epochs);
    EXPECT_EQ(std::memcmp(&a, &b, sizeof a), 0) << "bytes differ (padding or unused slots)";
}

void set(vae_config *config, const std::string &assignment) {
    ASSERT_EQ(vae_config_set(config, assignment.c_str()), VAE_OK) << assignment << ": " << vae_last_error();
}

// A config with every key away from its default.
vae_config everything_changed() {
    vae_config config = defaults();
    const char *assignments[] = {
        "data.path=/tmp/some data/folder", "data.binarize=static", "data.binarize_threshold=0.3",
        "data.validation_size=100", "data.train_limit=1000", "data.test_limit=200",
        "model.latent_dim=7", "model.hidden=300, 200,100", "model.decoder_hidden=50,60",
        "model.activation=gelu", "model.likelihood=gaussian_fixed", "model.gaussian_fixed_logvar=-2.302585",
        "model.samples=3", "model.beta=0.333333343", "model.kl_warmup_steps=17", "model.init_scale=0.01",
        "model.objective=iwae",
        "train.epochs=3", "train.batch_size=64", "train.seed=18446744073709551615", "train.lr=0.1",
        "train.lr_min=1e-7", "train.lr_schedule=cosine", "train.warmup_steps=5", "train.optimizer=adamw",
        "train.adam_beta1=0.8", "train.adam_beta2=0.95", "train.adam_epsilon=1.5e-7", "train.weight_decay=0.01",
        "train.grad_clip=2.5", "train.log_every_steps=7", "train.eval_every_epochs=2", "train.eval_batch_size=77",
        "train.precision=tf32", "train.nonfinite=skip", "train.logvar_clamp=12", "checkpoint.every_steps=9",
        "checkpoint.keep=4", "output.image_every_epochs=2",
    };
    for (const char *assignment : assignments) set(&config, assignment);
    return config;
}

struct LoadResult {
    vae_status status;
    std::string message;
};

LoadResult load_file(const std::string &path, vae_config *config) {
    vae_status status = vae_config_load_file(config, path.c_str());
    return {status, vae_last_error()};
}

// Writes text as a file and loads it over the defaults.
LoadResult load_text_as_file(const std::string &text, std::string *path_out = nullptr) {
    std::string folder = vae_test::temporary_folder("config_errors");
    std::string path = folder + "/bad.ini";
    vae_test::write_file(path, text);
    if (path_out) *path_out = path;
    vae_config config = defaults();
    return load_file(path, &config);
}

void expect_contains(const std::string &message, const std::vector<std::string> &parts) {
    for (const auto &part : parts) EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
}

}  // namespace

TEST(Config, DefaultsAreTheDocumentedOnesAndValid) {
    vae_config config = defaults();
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
    EXPECT_STREQ(config.data_path, "/usr/share/datasets/fashion-mnist");
    EXPECT_EQ(config.binarize, VAE_BINARIZE_DYNAMIC);
    EXPECT_EQ(config.binarize_threshold, 0.5f);
    EXPECT_EQ(config.latent_dim, 20);
    ASSERT_EQ(config.hidden_count, 1);
    EXPECT_EQ(config.hidden[0], 400);
    ASSERT_EQ(config.decoder_hidden_count, 1);
    EXPECT_EQ(config.decoder_hidden[0], 400);
    EXPECT_EQ(config.activation, VAE_ACTIVATION_RELU);
    EXPECT_EQ(config.likelihood, VAE_LIKELIHOOD_BERNOULLI);
    EXPECT_EQ(config.samples, 1);
    EXPECT_EQ(config.beta, 1.0f);
    EXPECT_EQ(config.epochs, 10);
    EXPECT_EQ(config.batch_size, 128);
    EXPECT_EQ(config.seed, 1u);
    EXPECT_EQ(config.lr, 1e-3f);
    EXPECT_EQ(config.lr_schedule, VAE_LR_CONSTANT);
    EXPECT_EQ(config.optimizer, VAE_OPTIMIZER_ADAM);
    EXPECT_EQ(config.adam_beta1, 0.9f);
    EXPECT_EQ(config.adam_beta2, 0.999f);
    EXPECT_EQ(config.adam_epsilon, 1e-8f);
    EXPECT_EQ(config.log_every_steps, 100);
    EXPECT_EQ(config.eval_every_epochs, 1);
    EXPECT_EQ(config.eval_batch_size, 1000);
    EXPECT_EQ(config.precision, VAE_PRECISION_FP32);
    EXPECT_EQ(config.nonfinite_policy, VAE_NONFINITE_STOP);
    EXPECT_EQ(config.init_scale, 0.0f);
    EXPECT_EQ(config.objective, VAE_OBJECTIVE_ELBO);
}

TEST(Config, EveryShippedConfigLoadsValidatesAndRoundTrips) {
    std::vector<std::string> paths = shipped_configs();
    ASSERT_GE(paths.size(), 6u) << "configs/*.ini";
    std::string folder = vae_test::temporary_folder("config_shipped");
    for (const auto &path : paths) {
        SCOPED_TRACE(path);
        std::string text = vae_test::read_file(path);
        EXPECT_EQ(text.rfind("#", 0), 0u) << "a shipped config starts with a comment saying what it is";
        vae_config config = defaults();
        ASSERT_EQ(vae_config_load_file(&config, path.c_str()), VAE_OK) << vae_last_error();
        EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
        std::string written = folder + "/" + std::filesystem::path(path).filename().string();
        ASSERT_EQ(vae_config_write_file(&config, written.c_str()), VAE_OK) << vae_last_error();
        vae_config reloaded = defaults();
        ASSERT_EQ(vae_config_load_file(&reloaded, written.c_str()), VAE_OK) << vae_last_error();
        expect_same_config(config, reloaded);
    }
}

TEST(Config, ShippedConfigsSayWhatTheirCommentsSay) {
    vae_config config = defaults();
    ASSERT_EQ(vae_config_load_file(&config, (configs_folder() + "/fashion_mnist.ini").c_str()), VAE_OK);
    EXPECT_EQ(config.latent_dim, 32);
    ASSERT_EQ(config.hidden_count, 2);
    EXPECT_EQ(config.hidden[0], 512);
    EXPECT_EQ(config.hidden[1], 256);
    ASSERT_EQ(config.decoder_hidden_count, 2);  // the encoder mirrored
    EXPECT_EQ(config.decoder_hidden[0], 256);
    EXPECT_EQ(config.decoder_hidden[1], 512);
    EXPECT_EQ(config.binarize, VAE_BINARIZE_DYNAMIC);

    config = defaults();
    ASSERT_EQ(vae_config_load_file(&config, (configs_folder() + "/tiny_test.ini").c_str()), VAE_OK);
    EXPECT_EQ(config.train_limit, 2000);
    EXPECT_EQ(config.test_limit, 500);
    EXPECT_EQ(config.epochs, 2);
    EXPECT_EQ(config.hidden_count, 1);
    EXPECT_EQ(config.hidden[0], 64);
    EXPECT_EQ(config.latent_dim, 8);

    config = defaults();
    ASSERT_EQ(vae_config_load_file(&config, (configs_folder() + "/aevb_paper.ini").c_str()), VAE_OK);
    EXPECT_EQ(config.activation, VAE_ACTIVATION_TANH);
    EXPECT_EQ(config.hidden[0], 500);
    EXPECT_EQ(config.batch_size, 100);
    EXPECT_EQ(config.init_scale, 0.01f);
}

TEST(Config, WriteThenLoadGivesTheSameConfig) {
    vae_config config = everything_changed();
    ASSERT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
    std::string path = vae_test::temporary_folder("config_round_trip") + "/config.ini";
    ASSERT_EQ(vae_config_write_file(&config, path.c_str()), VAE_OK) << vae_last_error();
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp")) << "the temporary file is renamed away";

    vae_config reloaded = defaults();
    ASSERT_EQ(vae_config_load_file(&reloaded, path.c_str()), VAE_OK) << vae_last_error();
    expect_same_config(config, reloaded);
    EXPECT_EQ(reloaded.seed, UINT64_MAX);
    ASSERT_EQ(reloaded.hidden_count, 3);
    EXPECT_EQ(reloaded.hidden[2], 100);
    ASSERT_EQ(reloaded.decoder_hidden_count, 2);
    EXPECT_EQ(reloaded.decoder_hidden[1], 60);

    // vae_config_to_string gives the file's text, and loads the same way.
    char *text = nullptr;
    ASSERT_EQ(vae_config_to_string(&config, &text), VAE_OK) << vae_last_error();
    EXPECT_EQ(std::string(text), vae_test::read_file(path));
    vae_config from_string = defaults();
    ASSERT_EQ(vae_config_load_string(&from_string, text, "text"), VAE_OK) << vae_last_error();
    std::free(text);
    expect_same_config(config, from_string);
}

TEST(Config, FloatsRoundTripBitExact) {
    std::mt19937_64 generator(20240521);
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    std::uniform_real_distribution<float> exponent(-30.0f, 3.0f);
    for (int trial = 0; trial < 300; ++trial) {
        vae_config config = defaults();
        config.lr = std::pow(10.0f, exponent(generator)) * (1.0f + unit(generator));
        config.lr_min = config.lr * unit(generator);
        config.adam_beta1 = unit(generator) * 0.999f;
        config.adam_beta2 = std::nextafter(1.0f, 0.0f);  // the largest float below 1
        config.adam_epsilon = std::pow(10.0f, exponent(generator));
        config.beta = unit(generator) * 1000.0f;
        config.gaussian_fixed_logvar = (unit(generator) - 0.5f) * 60.0f;
        config.binarize_threshold = unit(generator);
        config.weight_decay = 1e-40f * unit(generator);  // subnormal
        char *text = nullptr;
        ASSERT_EQ(vae_config_to_string(&config, &text), VAE_OK) << vae_last_error();
        vae_config reloaded = defaults();
        ASSERT_EQ(vae_config_load_string(&reloaded, text, "floats"), VAE_OK) << vae_last_error() << "\n" << text;
        std::free(text);
        ASSERT_EQ(std::memcmp(&config, &reloaded, sizeof config), 0) << "trial " << trial << " lr " << config.lr;
    }
}

TEST(Config, CommentsBlanksIndentationAndLineEndings) {
    const char *text =
        "\xEF\xBB\xBF# a comment\r\n"
        "; another\r\n"
        "\r\n"
        "[model]   ; inline after a header\r\n"
        "   latent_dim = 9   ; inline comment\r\n"
        "\thidden=  30 ,40\r\n"
        "[train]\r\n"
        "lr: 0.5\r\n"
        "[model]\r\n"
        "samples = 2";  // no final newline, section reopened
    vae_config config = defaults();
    ASSERT_EQ(vae_config_load_string(&config, text, "crlf"), VAE_OK) << vae_last_error();
    EXPECT_EQ(config.latent_dim, 9);
    ASSERT_EQ(config.hidden_count, 2);
    EXPECT_EQ(config.hidden[1], 40);
    EXPECT_EQ(config.lr, 0.5f);
    EXPECT_EQ(config.samples, 2);
}

TEST(Config, DecoderFollowsTheEncoderUntilSetItself) {
    vae_config config = defaults();
    set(&config, "model.hidden=300,200");
    ASSERT_EQ(config.decoder_hidden_count, 2);
    EXPECT_EQ(config.decoder_hidden[0], 200);
    EXPECT_EQ(config.decoder_hidden[1], 300);
    set(&config, "model.decoder_hidden=50");
    set(&config, "model.hidden=10");  // an explicit decoder stays
    ASSERT_EQ(config.decoder_hidden_count, 1);
    EXPECT_EQ(config.decoder_hidden[0], 50);

    // In a file, order does not matter: decoder_hidden before hidden still wins.
    config = defaults();
    ASSERT_EQ(vae_config_load_string(&config, "[model]\ndecoder_hidden = 7, 8\nhidden = 1,2,3\n", "order"), VAE_OK)
        << vae_last_error();
    ASSERT_EQ(config.decoder_hidden_count, 2);
    EXPECT_EQ(config.decoder_hidden[0], 7);

    // An empty value means no hidden layer.
    config = defaults();
    ASSERT_EQ(vae_config_load_string(&config, "[model]\nhidden =\n", "empty"), VAE_OK) << vae_last_error();
    EXPECT_EQ(config.hidden_count, 0);
    EXPECT_EQ(config.decoder_hidden_count, 0);
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
    config = defaults();
    ASSERT_EQ(vae_config_load_string(&config, "[model]\nhidden = 64\ndecoder_hidden =\n", "none"), VAE_OK);
    EXPECT_EQ(config.hidden_count, 1);
    EXPECT_EQ(config.decoder_hidden_count, 0);
}

TEST(Config, EachErrorNamesFileLineAndKey) {
    struct Case {
        const char *what;
        std::string text;
        vae_status status;
        std::vector<std::string> parts;  // besides the file name
    };
    std::string seventeen = "1";
    for (int i = 1; i < 17; ++i) seventeen += ",1";
    const std::vector<Case> cases = {
        {"unknown section", "[data]\nbinarize = none\n[modle]\nlatent_dim = 3\n", VAE_ERROR_INVALID_ARGUMENT,
         {":3:", "modle"}},
        {"unknown key", "[model]\nlatent_dims = 3\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "latent_dims", "unknown key"}},
        {"bad integer", "[model]\n\nlatent_dim = abc\n", VAE_ERROR_INVALID_ARGUMENT,
         {":3:", "[model] latent_dim", "expected an integer in 1..65536", "got 'abc'"}},
        {"integer trailing junk", "# x\n[train]\nepochs = 20x\n", VAE_ERROR_INVALID_ARGUMENT, {":3:", "epochs", "20x"}},
        {"float trailing junk", "[train]\nlr = 1e-3abc\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "lr", "1e-3abc"}},
        {"fraction for an integer", "[train]\nbatch_size = 12.5\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "batch_size"}},
        {"integer overflow", "[train]\nepochs = 99999999999999999999999\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "epochs"}},
        {"float overflow", "[model]\nbeta = 1e39\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "beta"}},
        {"nan", "[train]\nlr = nan\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "lr"}},
        {"inf", "[train]\ngrad_clip = inf\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "grad_clip"}},
        {"empty number", "[train]\nlr =\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "lr"}},
        {"integer too small", "[model]\nlatent_dim = 0\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "latent_dim", "got '0'"}},
        {"integer too large", "[model]\nsamples = 4097\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "samples", "1..4096"}},
        {"negative count", "[data]\ntrain_limit = -1\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "train_limit", ">= 0"}},
        {"open bound", "[train]\nlr = 0\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "lr", "> 0"}},
        {"beta1 of 1", "[train]\nadam_beta1 = 1\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "adam_beta1", "[0, 1)"}},
        {"threshold above 1", "[data]\nbinarize_threshold = 1.5\n", VAE_ERROR_INVALID_ARGUMENT,
         {":2:", "binarize_threshold"}},
        {"negative seed", "[train]\nseed = -1\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "seed"}},
        {"seed overflow", "[train]\nseed = 18446744073709551616\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "seed"}},
        {"bad enum", "[model]\nactivation = ReLU\n", VAE_ERROR_INVALID_ARGUMENT,
         {":2:", "activation", "relu|tanh|softplus|gelu", "got 'ReLU'"}},
        {"bad enum 2", "[train]\noptimizer = sgd\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "optimizer", "adam|adamw"}},
        {"unknown objective", "[model]\nsamples = 5\nobjective = iwea\n", VAE_ERROR_INVALID_ARGUMENT,
         {":3:", "[model] objective", "expected one of elbo|iwae", "got 'iwea'"}},
        {"objective in the wrong section", "[train]\nobjective = iwae\n", VAE_ERROR_INVALID_ARGUMENT,
         {":2:", "objective", "unknown key"}},
        {"too many hidden layers", "[model]\nhidden = " + seventeen + "\n", VAE_ERROR_INVALID_ARGUMENT,
         {":2:", "hidden", "at most 16"}},
        {"empty width", "[model]\nhidden = 512,,256\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "hidden"}},
        {"trailing comma", "[model]\nhidden = 512,\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "hidden"}},
        {"zero width", "[model]\ndecoder_hidden = 0\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "decoder_hidden"}},
        {"duplicate key", "[model]\nlatent_dim = 3\nlatent_dim = 4\n", VAE_ERROR_INVALID_ARGUMENT,
         {":3:", "latent_dim", "line 2"}},
        {"key before any section", "latent_dim = 3\n", VAE_ERROR_INVALID_ARGUMENT, {":1:", "latent_dim"}},
        {"garbage line", "[model]\nlatent_dim = 3\nthis is not ini\n", VAE_ERROR_BAD_INPUT, {":3:", "this is not ini"}},
        {"unterminated header", "[model\nlatent_dim = 3\n", VAE_ERROR_BAD_INPUT, {":1:", "[model"}},
        {"junk after header", "[model] x\nlatent_dim = 3\n", VAE_ERROR_BAD_INPUT, {":1:"}},
        {"empty file", "", VAE_ERROR_BAD_INPUT, {"key = value"}},
        {"only comments", "# nothing\n[model]\n; here\n", VAE_ERROR_BAD_INPUT, {"key = value"}},
        {"line too long", "[data]\npath = /" + std::string(300, 'a') + "\n", VAE_ERROR_BAD_INPUT, {":2:", "199"}},
        {"path too long", "[data]\npath=/" + std::string(192, 'a') + "\n", VAE_ERROR_INVALID_ARGUMENT,
         {":2:", "path", "192"}},
        {"path read back as a comment", "[data]\npath =;x\n", VAE_ERROR_INVALID_ARGUMENT, {":2:", "path", "comment"}},
        {"NUL byte", std::string("[model]\nlatent_dim = 3\n\0\n", 24), VAE_ERROR_BAD_INPUT, {":3:", "NUL"}},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.what);
        std::string path;
        LoadResult result = load_text_as_file(c.text, &path);
        EXPECT_EQ(result.status, c.status) << result.message;
        expect_contains(result.message, c.parts);
        expect_contains(result.message, {path});
    }
}

TEST(Config, AFailedLoadLeavesTheConfigUnchanged) {
    vae_config config = defaults();
    set(&config, "model.latent_dim=5");
    vae_config before = config;
    EXPECT_EQ(vae_config_load_string(&config, "[model]\nlatent_dim = 6\nhidden = 8\nsamples = x\n", "partial"),
              VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(std::memcmp(&config, &before, sizeof config), 0) << "latent_dim and hidden must not be half-applied";
    EXPECT_EQ(vae_config_set(&config, "model.hidden=1,x"), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(std::memcmp(&config, &before, sizeof config), 0);
}

TEST(Config, MissingOrUnreadableFileIsAnIoError) {
    std::string folder = vae_test::temporary_folder("config_io");
    vae_config config = defaults();
    std::string missing = folder + "/does_not_exist.ini";
    LoadResult result = load_file(missing, &config);
    EXPECT_EQ(result.status, VAE_ERROR_IO);
    expect_contains(result.message, {missing});
    result = load_file(folder, &config);  // a folder, not a file
    EXPECT_EQ(result.status, VAE_ERROR_IO) << result.message;

    vae_config valid = defaults();
    std::string unwritable = folder + "/no/such/folder/config.ini";
    EXPECT_EQ(vae_config_write_file(&valid, unwritable.c_str()), VAE_ERROR_IO);
    expect_contains(vae_last_error(), {"no/such/folder"});
}

TEST(Config, SetAppliesOverridesAndReportsThem) {
    vae_config config = defaults();
    set(&config, "model.latent_dim=7");
    EXPECT_EQ(config.latent_dim, 7);
    set(&config, "  train.lr = 0.25  ");
    EXPECT_EQ(config.lr, 0.25f);
    set(&config, "data.path=/data/a=b.c");  // the value keeps later '=' and '.'
    EXPECT_STREQ(config.data_path, "/data/a=b.c");
    set(&config, "train.optimizer=adamw");
    EXPECT_EQ(config.optimizer, VAE_OPTIMIZER_ADAMW);
    set(&config, "model.objective=iwae");
    EXPECT_EQ(config.objective, VAE_OBJECTIVE_IWAE);

    struct Case {
        const char *assignment;
        std::vector<std::string> parts;
    };
    const std::vector<Case> cases = {
        {"model.latent_dim=abc", {"--set model.latent_dim=abc", "[model] latent_dim", "got 'abc'"}},
        {"model.latent_dim", {"--set model.latent_dim", "section.key=value"}},
        {"latent_dim=3", {"--set latent_dim=3", "section.key=value"}},
        {"model.no_such_key=1", {"no_such_key", "unknown key", "latent_dim"}},
        {"nowhere.latent_dim=1", {"nowhere", "unknown section"}},
        {"train.precision=fp16", {"precision", "fp32|tf32|bf16", "fp16"}},
        {"model.objective=IWAE", {"--set model.objective=IWAE", "[model] objective", "elbo|iwae", "got 'IWAE'"}},
        {"data.path=", {"path", "non-empty"}},
        {"data.path=/a ;b", {"path", "comment"}},
        {"data.path=;b", {"path", "comment"}},  // found by fuzzing: written as "path = ;b"
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.assignment);
        vae_config before = config;
        EXPECT_EQ(vae_config_set(&config, c.assignment), VAE_ERROR_INVALID_ARGUMENT);
        expect_contains(vae_last_error(), c.parts);
        EXPECT_EQ(std::memcmp(&config, &before, sizeof config), 0);
    }
}

TEST(Config, ValidateChecksFieldsAndCrossFieldRules) {
    struct Case {
        const char *what;
        void (*change)(vae_config *);
        std::vector<std::string> parts;
    };
    const std::vector<Case> cases = {
        {"lr_min above lr", [](vae_config *c) { c->lr_min = 0.1f; c->lr = 0.01f; }, {"lr_min", "lr"}},
        {"validation eats the training set",
         [](vae_config *c) { c->train_limit = 100; c->validation_size = 100; }, {"validation_size", "train_limit"}},
        {"warm-up longer than the run",
         [](vae_config *c) { c->train_limit = 1000; c->batch_size = 100; c->epochs = 2; c->warmup_steps = 21; },
         {"warmup_steps", "20"}},
        {"empty data path", [](vae_config *c) { c->data_path[0] = '\0'; }, {"path", "non-empty"}},
        {"unterminated data path", [](vae_config *c) { std::memset(c->data_path, 'a', VAE_PATH_MAX); }, {"path"}},
        {"too many layers", [](vae_config *c) { c->hidden_count = VAE_MAX_HIDDEN_LAYERS + 1; }, {"hidden"}},
        {"negative decoder count", [](vae_config *c) { c->decoder_hidden_count = -1; }, {"decoder_hidden"}},
        {"zero width", [](vae_config *c) { c->hidden[0] = 0; }, {"hidden"}},
        {"activation out of the enum", [](vae_config *c) { c->activation = VAE_ACTIVATION_IDENTITY; },
         {"activation"}},
        {"nan beta", [](vae_config *c) { c->beta = NAN; }, {"beta"}},
        {"zero batch", [](vae_config *c) { c->batch_size = 0; }, {"batch_size"}},
        {"huge sample rows", [](vae_config *c) { c->samples = 4096; c->batch_size = 1 << 20; }, {"samples"}},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.what);
        vae_config config = defaults();
        c.change(&config);
        EXPECT_EQ(vae_config_validate(&config), VAE_ERROR_INVALID_ARGUMENT);
        expect_contains(vae_last_error(), c.parts);
    }
    // The boundary of the warm-up rule is allowed.
    vae_config config = defaults();
    config.train_limit = 1000;
    config.batch_size = 100;
    config.epochs = 2;
    config.warmup_steps = 20;
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
}

TEST(Config, AnOverrideShorterThanTheWarmupShortensItAndAFileOrAnOverrideOfItsOwnIsStillRefused) {
    // The file: 1000 examples, batch 100, 20 epochs = 200 steps, warm-up 100.
    vae_config file = defaults();
    file.train_limit = 1000;
    file.batch_size = 100;
    file.epochs = 20;
    file.warmup_steps = 100;
    ASSERT_EQ(vae_config_validate(&file), VAE_OK) << vae_last_error();
    vae_config smoke = file;
    ASSERT_EQ(vae_config_set(&smoke, "train.epochs=1"), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_config_validate(&smoke), VAE_ERROR_INVALID_ARGUMENT);  // as an override leaves it
    char note[256] = "";
    EXPECT_EQ(vae_config_fit_warmup_to_overrides(&smoke, &file, note, sizeof note), 1);
    EXPECT_EQ(smoke.warmup_steps, 10);  // the 10 steps of one epoch
    expect_contains(note, {"warmup_steps", "100", "10"});
    EXPECT_EQ(vae_config_validate(&smoke), VAE_OK) << vae_last_error();
    // A warm-up that fits is left alone.
    vae_config fits = file;
    ASSERT_EQ(vae_config_set(&fits, "train.epochs=10"), VAE_OK);
    EXPECT_EQ(vae_config_fit_warmup_to_overrides(&fits, &file, note, sizeof note), 0);
    EXPECT_EQ(fits.warmup_steps, 100);
    // An override of the warm-up itself is refused, not cut.
    vae_config asked = file;
    ASSERT_EQ(vae_config_set(&asked, "train.warmup_steps=500"), VAE_OK);
    EXPECT_EQ(vae_config_fit_warmup_to_overrides(&asked, &file, note, sizeof note), 0);
    EXPECT_EQ(vae_config_validate(&asked), VAE_ERROR_INVALID_ARGUMENT);
    // A file whose own warm-up is longer than its run is still refused.
    vae_config wrong_file = file;
    wrong_file.warmup_steps = 300;
    vae_config wrong = wrong_file;
    ASSERT_EQ(vae_config_set(&wrong, "train.epochs=1"), VAE_OK);
    EXPECT_EQ(vae_config_fit_warmup_to_overrides(&wrong, &wrong_file, note, sizeof note), 0);
    EXPECT_EQ(vae_config_validate(&wrong), VAE_ERROR_INVALID_ARGUMENT);
}

TEST(Config, InvalidFieldsAreNotWritten) {
    vae_config config = defaults();
    config.hidden_count = 1000;  // would read past the array
    char *text = reinterpret_cast<char *>(1);
    EXPECT_EQ(vae_config_to_string(&config, &text), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(text, nullptr);
    std::string path = vae_test::temporary_folder("config_invalid") + "/config.ini";
    EXPECT_EQ(vae_config_write_file(&config, path.c_str()), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(Config, LongestPathRoundTrips) {
    std::string longest = "/" + std::string(191, 'p');  // 192 characters: fills the INI line
    vae_config config = defaults();
    set(&config, "data.path=" + longest);
    ASSERT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
    char *text = nullptr;
    ASSERT_EQ(vae_config_to_string(&config, &text), VAE_OK) << vae_last_error();
    vae_config reloaded = defaults();
    EXPECT_EQ(vae_config_load_string(&reloaded, text, "longest"), VAE_OK) << vae_last_error();
    std::free(text);
    EXPECT_EQ(std::string(reloaded.data_path), longest);
    EXPECT_EQ(vae_config_set(&config, ("data.path=" + longest + "q").c_str()), VAE_ERROR_INVALID_ARGUMENT);
}

// Loads text; an accepted config must also write and read back unchanged.
static void load_without_crashing(const std::string &text) {
    vae_config config = defaults();
    vae_status status = vae_config_load_string(&config, text.c_str(), "random");
    if (status != VAE_OK) {
        EXPECT_NE(std::string(vae_last_error()), "") << "a failure leaves a message";
        return;
    }
    char *written = nullptr;
    ASSERT_EQ(vae_config_to_string(&config, &written), VAE_OK) << vae_last_error();
    vae_config reloaded = defaults();
    ASSERT_EQ(vae_config_load_string(&reloaded, written, "written"), VAE_OK) << vae_last_error();
    std::free(written);
    ASSERT_EQ(std::memcmp(&config, &reloaded, sizeof config), 0) << text;
    (void)vae_config_validate(&config);
}

TEST(Config, RandomBytesAndTruncationsNeverCrash) {
    std::string real = vae_test::read_file(configs_folder() + "/large.ini");
    for (size_t length = 0; length <= real.size(); ++length) load_without_crashing(real.substr(0, length));

    const uint64_t seed = 77;
    std::mt19937_64 generator(seed);
    // Mostly INI-ish fragments and the schema's own words, some raw bytes.
    const std::vector<std::string> words = {"[", "]", "=", ":", ";", "#", "\n", "\r\n", " ", "\t", ",", "-",
                                            "[model]", "[train]", "[data]", "latent_dim", "hidden", "lr", "seed",
                                            "path", "1", "0", "512", "1e-3", "nan", "relu", "cosine", "\xEF\xBB\xBF",
                                            "encoder", "decoder", "decoder_hidden", "conv", "convt", "dense", "out",
                                            "k4", "s2", "p1", "k3", "64x7x7", "x", "\nencoder = conv 8 k3 s2 p1, dense 16",
                                            "\ndecoder = dense 8x2x2, convt out k4 s2 p1"};
    for (int trial = 0; trial < 3000; ++trial) {
        std::string text;
        int pieces = (int)(generator() % 40);
        for (int p = 0; p < pieces; ++p) {
            if (generator() % 4 == 0) text += (char)(1 + generator() % 255);  // no NUL: it ends the text
            else text += words[generator() % words.size()];
        }
        SCOPED_TRACE("seed " + std::to_string(seed) + " trial " + std::to_string(trial));
        load_without_crashing(text);
        if (testing::Test::HasFatalFailure()) return;
    }
    // Lines longer than inih's buffer, in every position.
    load_without_crashing(std::string(5000, 'x'));
    load_without_crashing("[model]\nhidden = " + std::string(4000, '1') + "\n");
    load_without_crashing(std::string(1000, '\n') + "[train]\nlr=2\n");
}

// ------------------------------------------------------------ layer lists

namespace {

vae_layer_spec conv(int outputs, int kernel, int stride, int padding, vae_layer_kind kind = VAE_LAYER_CONV) {
    vae_layer_spec layer{};
    layer.kind = kind;
    layer.outputs = outputs;
    layer.kernel_size = kernel;
    layer.stride = stride;
    layer.padding = padding;
    return layer;
}

vae_layer_spec dense(int width) {
    vae_layer_spec layer{};
    layer.kind = VAE_LAYER_DENSE;
    layer.outputs = width;
    return layer;
}

vae_layer_spec dense_shaped(int channels, int height, int width) {
    vae_layer_spec layer = dense(channels * height * width);
    layer.unflatten_channels = channels;
    layer.unflatten_height = height;
    layer.unflatten_width = width;
    return layer;
}

void expect_layer(const vae_layer_spec &got, const vae_layer_spec &expected, const std::string &what) {
    EXPECT_EQ(got.kind, expected.kind) << what;
    EXPECT_EQ(got.outputs, expected.outputs) << what;
    EXPECT_EQ(got.kernel_size, expected.kernel_size) << what;
    EXPECT_EQ(got.stride, expected.stride) << what;
    EXPECT_EQ(got.padding, expected.padding) << what;
    EXPECT_EQ(got.unflatten_channels, expected.unflatten_channels) << what;
    EXPECT_EQ(got.unflatten_height, expected.unflatten_height) << what;
    EXPECT_EQ(got.unflatten_width, expected.unflatten_width) << what;
}

const char *const documented_encoder = "conv 32 k4 s2 p1, conv 64 k4 s2 p1, dense 256";
const char *const documented_decoder = "dense 256, dense 64x7x7, convt 32 k4 s2 p1, convt out k4 s2 p1";

std::string model_text(const std::string &encoder, const std::string &decoder) {
    return "[model]\nlatent_dim = 16\nencoder = " + encoder + "\ndecoder = " + decoder + "\n";
}

void expect_documented_lists(const vae_config &config) {
    ASSERT_EQ(config.encoder_layer_count, 3);
    expect_layer(config.encoder_layers[0], conv(32, 4, 2, 1), "encoder 1");
    expect_layer(config.encoder_layers[1], conv(64, 4, 2, 1), "encoder 2");
    expect_layer(config.encoder_layers[2], dense(256), "encoder 3");
    ASSERT_EQ(config.decoder_layer_count, 4);
    expect_layer(config.decoder_layers[0], dense(256), "decoder 1");
    expect_layer(config.decoder_layers[1], dense_shaped(64, 7, 7), "decoder 2");
    expect_layer(config.decoder_layers[2], conv(32, 4, 2, 1, VAE_LAYER_CONV_TRANSPOSE), "decoder 3");
    expect_layer(config.decoder_layers[3], conv(0, 4, 2, 1, VAE_LAYER_CONV_TRANSPOSE), "decoder 4 (out)");
    // The lists replace the widths of their side.
    EXPECT_EQ(config.hidden_count, 0);
    EXPECT_EQ(config.decoder_hidden_count, 0);
}

// The [model] lines of a written config, in order.
std::vector<std::string> model_lines(const vae_config &config) {
    char *text = nullptr;
    EXPECT_EQ(vae_config_to_string(&config, &text), VAE_OK) << vae_last_error();
    std::vector<std::string> lines;
    if (!text) return lines;
    std::string all(text);
    std::free(text);
    size_t start = all.find("[model]\n");
    size_t end = all.find("\n[", start + 1);
    if (start == std::string::npos) return lines;
    std::string model = all.substr(start + 8, end - start - 8);
    for (size_t at = 0; at < model.size();) {
        size_t newline = model.find('\n', at);
        if (newline == std::string::npos) newline = model.size();
        if (newline > at) lines.push_back(model.substr(at, newline - at));
        at = newline + 1;
    }
    return lines;
}

}  // namespace

TEST(ConfigLayers, ParsesTheDocumentedSyntax) {
    vae_config config = defaults();
    ASSERT_EQ(vae_config_load_string(&config, model_text(documented_encoder, documented_decoder).c_str(), "doc"), VAE_OK)
        << vae_last_error();
    expect_documented_lists(config);
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();

    // Words in any case, blanks anywhere, s and p optional (1 and 0), any order of k, s, p.
    config = defaults();
    ASSERT_EQ(vae_config_load_string(&config,
                                     "[model]\nencoder =  CONV 3 K5,Conv 8 p2 k5 S3 ,\tdense 10\n"
                                     "decoder = Dense 2X3X4, ConvT OUT k3\n",
                                     "spelling"),
              VAE_OK)
        << vae_last_error();
    ASSERT_EQ(config.encoder_layer_count, 3);
    expect_layer(config.encoder_layers[0], conv(3, 5, 1, 0), "defaults");
    expect_layer(config.encoder_layers[1], conv(8, 5, 3, 2), "options in any order");
    expect_layer(config.encoder_layers[2], dense(10), "dense");
    ASSERT_EQ(config.decoder_layer_count, 2);
    expect_layer(config.decoder_layers[0], dense_shaped(2, 3, 4), "shaped dense");
    expect_layer(config.decoder_layers[1], conv(0, 3, 1, 0, VAE_LAYER_CONV_TRANSPOSE), "out");
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
    // Written back in the canonical spelling (s1 and p0 left out).
    std::vector<std::string> lines = model_lines(config);
    EXPECT_NE(std::find(lines.begin(), lines.end(), "encoder = conv 3 k5, conv 8 k5 s3 p2, dense 10"), lines.end());
    EXPECT_NE(std::find(lines.begin(), lines.end(), "decoder = dense 2x3x4, convt out k3"), lines.end());

    // A dense-only decoder list ends with dense N: the output layer follows, as for widths.
    config = defaults();
    ASSERT_EQ(vae_config_load_string(&config, "[model]\nencoder = conv 4 k3, dense 32\ndecoder = dense 32, dense 64\n",
                                     "dense decoder"),
              VAE_OK)
        << vae_last_error();
    EXPECT_EQ(config.decoder_layer_count, 2);
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
}

TEST(ConfigLayers, ListsRoundTripThroughFileStringAndCheckpointText) {
    vae_config config = everything_changed();
    set(&config, std::string("model.encoder=") + documented_encoder);
    set(&config, std::string("model.decoder=") + documented_decoder);
    expect_documented_lists(config);
    ASSERT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();

    std::string path = vae_test::temporary_folder("config_layers_round_trip") + "/config.ini";
    ASSERT_EQ(vae_config_write_file(&config, path.c_str()), VAE_OK) << vae_last_error();
    std::string written = vae_test::read_file(path);
    expect_contains(written, {std::string("\nencoder = ") + documented_encoder + "\n",
                              std::string("\ndecoder = ") + documented_decoder + "\n", "\nhidden =\n",
                              "\ndecoder_hidden =\n"});
    vae_config reloaded = defaults();
    ASSERT_EQ(vae_config_load_file(&reloaded, path.c_str()), VAE_OK) << vae_last_error();
    expect_same_config(config, reloaded);

    char *text = nullptr;
    ASSERT_EQ(vae_config_to_string(&config, &text), VAE_OK) << vae_last_error();
    EXPECT_EQ(std::string(text), written);
    vae_config from_string = defaults();
    ASSERT_EQ(vae_config_load_string(&from_string, text, "checkpoint config"), VAE_OK) << vae_last_error();
    std::free(text);
    expect_same_config(config, from_string);

    // Every kind and option at its range's ends survives the round trip.
    vae_config extremes = defaults();
    set(&extremes, "model.encoder=conv 65536 k32 s32 p31, convt 1 k1, dense 65536");
    set(&extremes, "model.decoder=dense 1x1x1, conv 7 k2 s1 p1, dense 1x256x256, convt out k32 s32 p31");
    ASSERT_EQ(vae_config_to_string(&extremes, &text), VAE_OK) << vae_last_error();
    vae_config extremes_reloaded = defaults();
    ASSERT_EQ(vae_config_load_string(&extremes_reloaded, text, "extremes"), VAE_OK) << vae_last_error() << text;
    std::free(text);
    expect_same_config(extremes, extremes_reloaded);
}

TEST(ConfigLayers, DenseConfigsWriteWhatTheyWroteBefore) {
    // No list: no encoder or decoder line, the [model] lines exactly as before lists existed.
    vae_config config = defaults();
    const std::vector<std::string> expected = {
        "latent_dim = 20",  "hidden = 400", "decoder_hidden = 400", "activation = relu",
        "likelihood = bernoulli", "gaussian_fixed_logvar = 0", "samples = 1", "beta = 1",
        "kl_warmup_steps = 0", "init_scale = 0"};
    EXPECT_EQ(model_lines(config), expected);
    EXPECT_EQ(config.encoder_layer_count, 0);
    EXPECT_EQ(config.decoder_layer_count, 0);
    for (const auto &path : shipped_configs()) {
        SCOPED_TRACE(path);
        vae_config shipped = defaults();
        ASSERT_EQ(vae_config_load_file(&shipped, path.c_str()), VAE_OK) << vae_last_error();
        if (shipped.encoder_layer_count || shipped.decoder_layer_count) continue;  // a conv config
        for (const std::string &line : model_lines(shipped)) {
            EXPECT_NE(line.rfind("encoder", 0), 0u) << line;
            EXPECT_NE(line.rfind("decoder =", 0), 0u) << line;
        }
    }
    // An emptied list is no list.
    set(&config, "model.encoder=");
    EXPECT_EQ(config.encoder_layer_count, 0);
    ASSERT_EQ(config.hidden_count, 1) << "an empty list leaves the widths";
    EXPECT_EQ(model_lines(config), expected);
}

TEST(ConfigLayers, SetReplacesTheWidthsOfItsSideAndBack) {
    vae_config config = defaults();
    set(&config, "model.hidden=300,200");
    set(&config, std::string("  model.encoder = ") + documented_encoder);
    EXPECT_EQ(config.hidden_count, 0) << "the later source wins: the list replaces the widths";
    EXPECT_EQ(config.encoder_layer_count, 3);
    ASSERT_EQ(config.decoder_hidden_count, 2) << "the decoder is untouched by an encoder list";
    EXPECT_EQ(vae_config_validate(&config), VAE_ERROR_INVALID_ARGUMENT) << "a conv encoder needs a decoder list";
    expect_contains(vae_last_error(), {"[model] decoder", "conv"});
    set(&config, std::string("model.decoder=") + documented_decoder);
    EXPECT_EQ(config.decoder_hidden_count, 0);
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
    expect_documented_lists(config);

    // Widths set later replace the list; the decoder's list stays (a dense
    // encoder may feed a conv decoder) and is not overwritten by the mirror rule.
    set(&config, "model.hidden=128");
    EXPECT_EQ(config.encoder_layer_count, 0);
    ASSERT_EQ(config.hidden_count, 1);
    EXPECT_EQ(config.decoder_layer_count, 4);
    EXPECT_EQ(config.decoder_hidden_count, 0);
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();
    set(&config, "model.decoder_hidden=64");
    EXPECT_EQ(config.decoder_layer_count, 0);

    // In one file a list beside an empty widths key is fine (that is how the
    // resolved config writes it); with widths it is refused, naming both lines.
    config = defaults();
    ASSERT_EQ(vae_config_load_string(&config, "[model]\nhidden =\nencoder = dense 64\n", "empty widths"), VAE_OK)
        << vae_last_error();
    EXPECT_EQ(config.encoder_layer_count, 1);
    ASSERT_EQ(config.decoder_hidden_count, 1) << "an empty hidden beside a list is not mirrored into the decoder";
    EXPECT_EQ(config.decoder_hidden[0], 400);
    LoadResult both = load_text_as_file("[model]\nhidden = 512\nlatent_dim = 4\nencoder = dense 512\n");
    EXPECT_EQ(both.status, VAE_ERROR_INVALID_ARGUMENT);
    expect_contains(both.message, {":4:", "[model] encoder", "hidden", "line 2", "not both"});
    both = load_text_as_file("[model]\ndecoder = dense 64\ndecoder_hidden = 64\n");
    EXPECT_EQ(both.status, VAE_ERROR_INVALID_ARGUMENT);
    expect_contains(both.message, {":2:", "[model] decoder", "decoder_hidden", "line 3"});

    // --set errors name the override, the key and the layer.
    vae_config before = config;
    EXPECT_EQ(vae_config_set(&config, "model.encoder=conv 8 k3, conv x k3"), VAE_ERROR_INVALID_ARGUMENT);
    expect_contains(vae_last_error(), {"--set model.encoder=conv 8 k3, conv x k3", "[model] encoder", "layer 2",
                                       "'conv x k3'", "channel count", "got 'x'"});
    EXPECT_EQ(std::memcmp(&config, &before, sizeof config), 0) << "a refused list changes nothing";
}

TEST(ConfigLayers, EachMalformedSpecNamesFileLineKeyAndLayer) {
    struct Case {
        const char *what;
        std::string key, value;
        std::vector<std::string> parts;  // besides the file, ":3:" and "[model] KEY"
    };
    std::string seventeen = "dense 8";
    for (int i = 1; i < 17; ++i) seventeen += ", dense 8";
    std::string long_list = "conv 64 k3 s2 p1";
    for (int i = 1; i < 11; ++i) long_list += ",conv 64 k3 s2 p1";  // fits the line only without blanks
    const std::vector<Case> cases = {
        {"unknown kind", "encoder", "conv 8 k3, pool 2", {"layer 2", "'pool 2'", "conv, convt or dense", "got 'pool'"}},
        {"unknown option", "encoder", "conv 8 k3 d2", {"layer 1", "'conv 8 k3 d2'", "kK", "got 'd2'"}},
        {"missing kernel", "encoder", "conv 32 s2 p1", {"layer 1", "'conv 32 s2 p1'", "kernel size"}},
        {"kernel twice", "encoder", "dense 5, conv 8 k4 k3", {"layer 2", "'conv 8 k4 k3'", "twice", "got 'k3'"}},
        {"stride twice", "encoder", "conv 8 k4 s2 s2", {"layer 1", "one stride"}},
        {"padding twice", "decoder", "dense 1x2x2, convt out k4 p1 p0", {"layer 2", "one padding"}},
        {"missing channels", "encoder", "conv", {"layer 1", "channel count"}},
        {"channels not a number", "encoder", "conv k4", {"layer 1", "channel count", "got 'k4'"}},
        {"zero channels", "encoder", "conv 0 k3", {"layer 1", "got '0'"}},
        {"negative channels", "encoder", "conv -8 k3", {"layer 1", "got '-8'"}},
        {"too many channels", "encoder", "conv 65537 k3", {"layer 1", "1..65536"}},
        {"huge number", "encoder", "conv 99999999999999999999 k3", {"layer 1", "1..65536"}},
        {"zero kernel", "encoder", "conv 8 k0", {"layer 1", "kernel size", "1..32"}},
        {"kernel too large", "encoder", "conv 8 k33", {"layer 1", "1..32"}},
        {"empty kernel", "encoder", "conv 8 k", {"layer 1", "got 'k'"}},
        {"zero stride", "encoder", "conv 8 k3 s0", {"layer 1", "stride", "1..32"}},
        {"padding as large as the kernel", "encoder", "conv 8 k3 p3",
         {"layer 1", "'conv 8 k3 p3'", "padding", "0..2"}},
        {"words after the options", "encoder", "conv 8 k3 s1 p0 relu", {"layer 1", "at most", "got 'relu'"}},
        {"zero width", "encoder", "dense 0", {"layer 1", "width in 1..65536"}},
        {"width too large", "encoder", "dense 65537", {"layer 1", "1..65536"}},
        {"dense without width", "encoder", "dense", {"layer 1", "width"}},
        {"dense with options", "encoder", "dense 8 k3", {"layer 1", "nothing after", "got 'k3'"}},
        {"bad shape", "decoder", "dense 4x4, convt out k3", {"layer 1", "CxHxW", "got '4x4'"}},
        {"zero in shape", "decoder", "dense 4x0x4, convt out k3", {"layer 1", "positive"}},
        {"shape too large", "decoder", "dense 64x64x64, convt out k3", {"layer 1", "65536"}},
        // Found by fuzzing: sizes whose product overflows 64 bits.
        {"shape overflowing", "decoder", "dense 252222222x22222222x2222222223, convt out k3", {"layer 1", "65536"}},
        {"shape overflowing 2", "encoder", "dense 2544444444464x7x7444444444444, conv 3 k3", {"layer 1", "65536"}},
        {"dense out", "decoder", "dense out", {"layer 1", "'out'", "last conv"}},
        {"out in the encoder", "encoder", "conv out k3", {"layer 1", "'out' is only for the decoder's last layer"}},
        {"out before the last layer", "decoder", "dense 8x2x2, convt out k3, convt out k3",
         {"layer 2", "'convt out k3'", "only for the decoder's last layer"}},
        {"last conv without out", "decoder", "dense 8x2x2, convt 3 k3", {"layer 2", "'out' as the channel count"}},
        {"decoder starts with conv", "decoder", "convt 8 k3, convt out k3", {"layer 1", "latent vector"}},
        {"conv after plain dense", "encoder", "dense 64, conv 8 k3", {"layer 2", "dense CxHxW"}},
        {"shaped dense last", "encoder", "conv 8 k3, dense 8x2x2", {"layer 2", "conv or convt layer after"}},
        {"shaped dense before dense", "decoder", "dense 8x2x2, dense 4", {"layer 1", "conv or convt layer after"}},
        {"empty layer", "encoder", "conv 8 k3,, dense 4", {"layer 2", "two commas"}},
        {"trailing comma", "encoder", "conv 8 k3, dense 4,", {"layer 3", "comma at the end"}},
        {"leading comma", "encoder", ", dense 4", {"layer 1", "empty layer"}},
        {"seventeen layers", "encoder", seventeen, {"layer 17", "at most 16 layers"}},
        {"longer than the line when written", "encoder", long_list, {"at most 189 characters", "INI line"}},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.what);
        std::string path;
        LoadResult result = load_text_as_file("[model]\nlatent_dim = 4\n" + c.key + " = " + c.value + "\n", &path);
        EXPECT_EQ(result.status, VAE_ERROR_INVALID_ARGUMENT) << result.message;
        expect_contains(result.message, c.parts);
        expect_contains(result.message, {path + ":3:", "[model] " + c.key + ": "});
        // The same through --set, with the override named.
        vae_config config = defaults();
        vae_config before = config;
        std::string assignment = "model." + c.key + "=" + c.value;
        EXPECT_EQ(vae_config_set(&config, assignment.c_str()), VAE_ERROR_INVALID_ARGUMENT);
        expect_contains(vae_last_error(), c.parts);
        expect_contains(vae_last_error(), {"--set model." + c.key});
        EXPECT_EQ(std::memcmp(&config, &before, sizeof config), 0);
    }
}

TEST(ConfigLayers, SixteenLayersAndTheLongestLineLoad) {
    std::string sixteen = "conv 1 k3";
    for (int i = 1; i < 15; ++i) sixteen += ", conv 1 k3";
    sixteen += ", dense 9";
    vae_config config = defaults();
    set(&config, "model.encoder=" + sixteen);
    set(&config, "model.decoder=dense 1x2x2, convt out k2");
    EXPECT_EQ(config.encoder_layer_count, VAE_MAX_LAYER_SPECS);
    EXPECT_EQ(vae_config_validate(&config), VAE_OK) << vae_last_error();

    // A list whose written line "encoder = ..." is exactly 199 characters (inih's
    // limit) loads from a file and reads back; one character more is refused.
    auto list_with = [](const std::string &third_channels) {
        std::string list = "conv 65536 k30 s30 p29, conv 65536 k30 s30 p29, conv " + third_channels + " k30 s30 p29";
        for (int i = 3; i < 9; ++i) list += ", conv 1 k30 s30 p29";
        return list;
    };
    std::string longest = list_with("1000");
    ASSERT_EQ(("encoder = " + longest).size(), 199u);
    std::string path;
    LoadResult loaded = load_text_as_file("[model]\nencoder = " + longest + "\ndecoder = dense 1x2x2, convt out k2\n",
                                          &path);
    ASSERT_EQ(loaded.status, VAE_OK) << loaded.message;
    config = defaults();
    ASSERT_EQ(vae_config_load_file(&config, path.c_str()), VAE_OK) << vae_last_error();
    EXPECT_EQ(config.encoder_layer_count, 9);
    std::vector<std::string> lines = model_lines(config);
    EXPECT_NE(std::find(lines.begin(), lines.end(), "encoder = " + longest), lines.end());
    EXPECT_EQ(vae_config_set(&config, ("model.encoder=" + list_with("10000")).c_str()), VAE_ERROR_INVALID_ARGUMENT);
    expect_contains(vae_last_error(), {"[model] encoder", "at most 189 characters"});
}

TEST(ConfigLayers, ValidateAndWriteCheckFieldsSetInCode) {
    struct Case {
        const char *what;
        void (*change)(vae_config *);
        std::vector<std::string> parts;
    };
    const std::vector<Case> cases = {
        {"list and widths", [](vae_config *c) { c->encoder_layers[0] = dense(8); c->encoder_layer_count = 1; },
         {"[model] encoder", "hidden", "not both"}},
        {"decoder list and widths",
         [](vae_config *c) { c->decoder_layers[0] = dense(8); c->decoder_layer_count = 1; },
         {"[model] decoder", "decoder_hidden", "not both"}},
        {"too many layers", [](vae_config *c) { c->hidden_count = 0; c->encoder_layer_count = 17; },
         {"[model] encoder", "at most 16 layers"}},
        {"negative count", [](vae_config *c) { c->decoder_hidden_count = 0; c->decoder_layer_count = -1; },
         {"[model] decoder", "at most 16"}},
        {"kind out of the enum",
         [](vae_config *c) {
             c->hidden_count = 0;
             c->encoder_layers[0] = dense(8);
             c->encoder_layers[0].kind = (vae_layer_kind)3;  // within the enum's value range in C++
             c->encoder_layer_count = 1;
         },
         {"[model] encoder", "layer 1", "conv, convt or dense"}},
        {"padding too large",
         [](vae_config *c) {
             c->hidden_count = 0;
             c->encoder_layers[0] = conv(8, 3, 1, 5);
             c->encoder_layer_count = 1;
         },
         {"[model] encoder", "layer 1", "'conv 8 k3 p5'", "0..2"}},
        {"dense with a kernel",
         [](vae_config *c) {
             c->hidden_count = 0;
             c->encoder_layers[0] = dense(8);
             c->encoder_layers[0].kernel_size = 3;
             c->encoder_layer_count = 1;
         },
         {"layer 1", "without kernel size"}},
        {"shape and width disagree",
         [](vae_config *c) {
             c->decoder_hidden_count = 0;
             c->decoder_layers[0] = dense_shaped(2, 2, 2);
             c->decoder_layers[0].outputs = 9;
             c->decoder_layers[1] = conv(0, 2, 1, 0, VAE_LAYER_CONV_TRANSPOSE);
             c->decoder_layer_count = 2;
         },
         {"[model] decoder", "layer 1", "C*H*W"}},
        {"shape of huge sizes",
         [](vae_config *c) {
             c->decoder_hidden_count = 0;
             c->decoder_layers[0] = dense(8);
             c->decoder_layers[0].unflatten_channels = INT_MAX;
             c->decoder_layers[0].unflatten_height = INT_MAX;
             c->decoder_layers[0].unflatten_width = INT_MAX;
             c->decoder_layers[1] = conv(0, 2, 1, 0, VAE_LAYER_CONV_TRANSPOSE);
             c->decoder_layer_count = 2;
         },
         {"[model] decoder", "layer 1", "at most 65536 values"}},
        {"conv encoder without decoder",
         [](vae_config *c) {
             c->hidden_count = 0;
             c->encoder_layers[0] = conv(8, 3, 1, 0);
             c->encoder_layer_count = 1;
         },
         {"[model] decoder", "expected a layer list", "conv"}},
    };
    for (const auto &c : cases) {
        SCOPED_TRACE(c.what);
        vae_config config = defaults();
        c.change(&config);
        EXPECT_EQ(vae_config_validate(&config), VAE_ERROR_INVALID_ARGUMENT);
        expect_contains(vae_last_error(), c.parts);
    }
    // A list that breaks a rule of its own is not written (it would not load back).
    vae_config config = defaults();
    config.hidden_count = 0;
    config.encoder_layers[0] = conv(0, 3, 1, 0);  // 'out' in the encoder
    config.encoder_layer_count = 1;
    char *text = reinterpret_cast<char *>(1);
    EXPECT_EQ(vae_config_to_string(&config, &text), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(text, nullptr);
    expect_contains(vae_last_error(), {"[model] encoder", "layer 1", "'conv out k3'"});
}
