// scripts/plot_metrics.py: a PNG from metrics.jsonl files, clear errors on
// bad lines, and a message naming the Debian package when matplotlib is
// missing. The plotting cases skip, visibly, without matplotlib.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "test_support.h"

namespace {

const char *const kPython = "/usr/bin/python3";

using vae_test::CommandResult;

std::string script_path() { return std::string(VAE_SOURCE_DIR) + "/scripts/plot_metrics.py"; }

bool matplotlib_available() {
    return std::system((std::string(kPython) + " -c 'import matplotlib' >/dev/null 2>&1").c_str()) == 0;
}

// Two epochs of a small run: 4 train lines, 2 evaluations (one with an IWAE
// estimate), one eval line from `vae eval` (epoch -1), a null value.
std::string small_metrics() {
    return "{\"kind\":\"train\",\"epoch\":1,\"step\":5,\"loss\":540.5,\"elbo\":-540.5,\"reconstruction\":-538.1,"
           "\"kl\":2.4,\"beta\":1,\"lr\":0.001,\"samples_per_s\":1400,\"seconds\":0.3,\"skipped_steps\":0}\n"
           "{\"kind\":\"train\",\"epoch\":1,\"step\":10,\"loss\":510.2,\"elbo\":-510.2,\"reconstruction\":-503.0,"
           "\"kl\":7.2,\"beta\":1,\"lr\":0.001,\"samples_per_s\":1450,\"seconds\":0.6,\"skipped_steps\":0}\n"
           "{\"kind\":\"eval\",\"split\":\"test\",\"epoch\":1,\"step\":10,\"loss\":490.0,\"elbo\":-490.0,"
           "\"reconstruction\":-480.0,\"kl\":10.0,\"beta\":1,\"seconds\":0.01,\"active_units\":6}\n"
           "\n"
           "{\"kind\":\"train\",\"epoch\":2,\"step\":15,\"loss\":480.9,\"elbo\":-480.9,\"reconstruction\":-470.1,"
           "\"kl\":10.8,\"beta\":1,\"lr\":0.001,\"samples_per_s\":null,\"seconds\":0.9,\"skipped_steps\":0}\n"
           "{\"kind\":\"train\",\"epoch\":2,\"step\":20,\"loss\":470.3,\"elbo\":-470.3,\"reconstruction\":-458.2,"
           "\"kl\":12.1,\"beta\":1,\"lr\":0.001,\"samples_per_s\":1460,\"seconds\":1.2,\"skipped_steps\":0}\n"
           "{\"kind\":\"eval\",\"split\":\"test\",\"epoch\":2,\"step\":20,\"loss\":465.0,\"elbo\":-465.0,"
           "\"reconstruction\":-453.0,\"kl\":12.0,\"beta\":1,\"seconds\":0.01,\"log_likelihood\":-455.5,"
           "\"iwae_k\":50,\"active_units\":6}\n"
           "{\"kind\":\"eval\",\"split\":\"test\",\"epoch\":-1,\"step\":-1,\"loss\":465.0,\"elbo\":-465.0,"
           "\"reconstruction\":-453.0,\"kl\":12.0,\"seconds\":0.01,\"points\":200}\n";
}

// Width and height from a PNG's IHDR chunk; 0 when it is not a PNG.
void png_size(const std::string &bytes, uint32_t *width, uint32_t *height) {
    *width = *height = 0;
    if (bytes.size() < 24 || bytes.compare(0, 8, "\x89PNG\r\n\x1a\n", 8) != 0 || bytes.compare(12, 4, "IHDR") != 0)
        return;
    auto big_endian = [&](size_t at) {
        return (uint32_t)(uint8_t)bytes[at] << 24 | (uint32_t)(uint8_t)bytes[at + 1] << 16 |
               (uint32_t)(uint8_t)bytes[at + 2] << 8 | (uint32_t)(uint8_t)bytes[at + 3];
    };
    *width = big_endian(16);
    *height = big_endian(20);
}

TEST(PlotMetrics, WritesAPngOfEveryRecord) {
    if (!matplotlib_available()) GTEST_SKIP() << "matplotlib is not installed for " << kPython << " (python3-matplotlib)";
    std::string folder = vae_test::temporary_folder("plot_metrics_png");
    std::filesystem::create_directories(folder + "/run_a");
    std::filesystem::create_directories(folder + "/run_b");
    vae_test::write_file(folder + "/run_a/metrics.jsonl", small_metrics());
    vae_test::write_file(folder + "/run_b/metrics.jsonl", small_metrics());
    std::string out = folder + "/curves.png";
    CommandResult run = vae_test::run_command(std::string(kPython) + " " + script_path() + " " + folder + "/run_a/metrics.jsonl " +
                                        folder + "/run_b/metrics.jsonl --out " + out + " --title two-runs", false);
    ASSERT_EQ(run.exit_code, 0) << run.output << run.errors;
    ASSERT_TRUE(std::filesystem::exists(out));
    uint32_t width, height;
    png_size(vae_test::read_file(out), &width, &height);
    EXPECT_GE(width, 800u);
    EXPECT_GE(height, 300u);
    EXPECT_GT(std::filesystem::file_size(out), 10000u);  // three panels of curves, not an empty canvas
    // What was plotted: 4 train points and 3 eval records per file, of which
    // 2 have an epoch.
    EXPECT_NE(run.output.find("\"files\": 2"), std::string::npos) << run.output;
    EXPECT_NE(run.output.find("\"train_points\": 8"), std::string::npos) << run.output;
    EXPECT_NE(run.output.find("\"eval_points\": 6"), std::string::npos) << run.output;
    EXPECT_NE(run.output.find("\"eval_epoch_points\": 4"), std::string::npos) << run.output;

    // Default output: curves.png beside the (first) metrics file.
    CommandResult default_out =
        vae_test::run_command(std::string(kPython) + " " + script_path() + " " + folder + "/run_a/metrics.jsonl", false);
    EXPECT_EQ(default_out.exit_code, 0) << default_out.errors;
    EXPECT_TRUE(std::filesystem::exists(folder + "/run_a/curves.png"));
}

TEST(PlotMetrics, BadInputNamesTheFileAndLine) {
    if (!matplotlib_available()) GTEST_SKIP() << "matplotlib is not installed for " << kPython << " (python3-matplotlib)";
    std::string folder = vae_test::temporary_folder("plot_metrics_bad");
    std::string path = folder + "/metrics.jsonl";
    vae_test::write_file(path, small_metrics() + "{\"kind\":\"train\",\"step\":25,\n");
    CommandResult run = vae_test::run_command(std::string(kPython) + " " + script_path() + " " + path + " --out " + folder + "/x.png", false);
    EXPECT_EQ(run.exit_code, 2);
    EXPECT_NE(run.errors.find("metrics.jsonl:9"), std::string::npos) << run.errors;
    EXPECT_FALSE(std::filesystem::exists(folder + "/x.png"));

    CommandResult missing = vae_test::run_command(std::string(kPython) + " " + script_path() + " " + folder + "/absent.jsonl --out " +
                                            folder + "/y.png", false);
    EXPECT_EQ(missing.exit_code, 2);
    EXPECT_NE(missing.errors.find("absent.jsonl"), std::string::npos) << missing.errors;
}

TEST(PlotMetrics, MissingMatplotlibIsReportedWithThePackageName) {
    // Runs the script with matplotlib made unimportable, whether or not it is
    // installed here.
    std::string folder = vae_test::temporary_folder("plot_metrics_no_matplotlib");
    std::string path = folder + "/metrics.jsonl";
    vae_test::write_file(path, small_metrics());
    std::string program = "import runpy, sys; sys.modules['matplotlib'] = None; "
                          "sys.argv = ['plot_metrics.py', '" + path + "', '--out', '" + folder + "/z.png']; "
                          "runpy.run_path('" + script_path() + "', run_name='__main__')";
    CommandResult run = vae_test::run_command(std::string(kPython) + " -c \"" + program + "\"", false);
    EXPECT_EQ(run.exit_code, 2) << run.output << run.errors;
    EXPECT_NE(run.errors.find("python3-matplotlib"), std::string::npos) << run.errors;
    EXPECT_FALSE(std::filesystem::exists(folder + "/z.png"));
}

}  // namespace
