// PNG pictures: written grids are read back with libpng and checked pixel by pixel.
#include <gtest/gtest.h>

#include <png.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

extern "C" {
#include "vae/output.h"
}
#include "test_support.h"

namespace {

// The margin grey documented in src/io/image_png.c.
constexpr int kMarginGrey = 224;

struct Picture {
    int width = 0, height = 0;
    std::vector<unsigned char> pixels;
};

// Reads a PNG with libpng's simplified API, converted to the given format.
bool read_png(const std::string &path, png_uint_32 format, Picture *picture, png_uint_32 *original_format) {
    png_image image;
    std::memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&image, path.c_str())) return false;
    *original_format = image.format;
    image.format = format;
    picture->width = (int)image.width;
    picture->height = (int)image.height;
    picture->pixels.resize(PNG_IMAGE_SIZE(image));
    if (!png_image_finish_read(&image, nullptr, picture->pixels.data(), 0, nullptr)) {
        png_image_free(&image);
        return false;
    }
    return true;
}

unsigned char expected_grey(float value) {
    if (std::isnan(value) || value <= 0.0f) return 0;
    if (value >= 1.0f) return 255;
    return (unsigned char)std::lround(value * 255.0f);
}

std::vector<std::string> folder_entries(const std::string &folder) {
    std::vector<std::string> names;
    for (const auto &entry : std::filesystem::directory_iterator(folder)) names.push_back(entry.path().filename());
    return names;
}

// Checks a grid: each image's pixels in its cell, margin grey everywhere else.
void check_grid(const std::string &path, const std::vector<float> &images, int count, int rows, int cols,
                int columns, int margin) {
    Picture picture;
    png_uint_32 format = 0;
    ASSERT_TRUE(read_png(path, PNG_FORMAT_GRAY, &picture, &format)) << path;
    EXPECT_EQ(format, (png_uint_32)PNG_FORMAT_GRAY) << "stored as 8-bit grey";
    int grid_rows = (count + columns - 1) / columns;
    ASSERT_EQ(picture.width, margin + columns * (cols + margin));
    ASSERT_EQ(picture.height, margin + grid_rows * (rows + margin));
    std::vector<int> owner(picture.pixels.size(), -1);  // which image value a pixel shows, -1 for margin
    for (int image = 0; image < count; ++image) {
        int top = margin + (image / columns) * (rows + margin);
        int left = margin + (image % columns) * (cols + margin);
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
                owner[(size_t)(top + r) * picture.width + left + c] = (image * rows + r) * cols + c;
    }
    int margin_pixels = 0;
    for (size_t i = 0; i < picture.pixels.size(); ++i) {
        if (owner[i] < 0) {
            ++margin_pixels;
            ASSERT_EQ(picture.pixels[i], kMarginGrey) << "margin pixel " << i % picture.width << "," << i / picture.width;
        } else {
            ASSERT_EQ(picture.pixels[i], expected_grey(images[(size_t)owner[i]]))
                << "pixel " << i % picture.width << "," << i / picture.width;
        }
    }
    EXPECT_EQ(margin_pixels, picture.width * picture.height - count * rows * cols);
}

std::vector<float> grid_values(int count, int rows, int cols) {
    std::vector<float> values = vae_test::random_uniform((size_t)count * rows * cols, 11, -0.3f, 1.3f);
    // Exact edge cases, including ones that must be clamped.
    values[0] = 0.0f;
    values[1] = 1.0f;
    values[2] = 0.5f;
    values[3] = NAN;
    values[4] = -INFINITY;
    values[5] = INFINITY;
    return values;
}

}  // namespace

TEST(ImagePng, GridWithPartialLastRow) {
    std::string folder = vae_test::temporary_folder("png_grid");
    std::string path = folder + "/grid.png";
    const int count = 5, rows = 3, cols = 4, columns = 2, margin = 2;
    std::vector<float> images = grid_values(count, rows, cols);
    ASSERT_EQ(vae_png_write_grid(path.c_str(), images.data(), count, rows, cols, columns, margin), VAE_OK)
        << vae_last_error();
    check_grid(path, images, count, rows, cols, columns, margin);
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"grid.png"}) << "no temporary file left";
}

TEST(ImagePng, GridWithoutMarginAndNonSquareImages) {
    std::string folder = vae_test::temporary_folder("png_grid_no_margin");
    std::string path = folder + "/grid.png";
    const int count = 6, rows = 5, cols = 2, columns = 3, margin = 0;
    std::vector<float> images = grid_values(count, rows, cols);
    ASSERT_EQ(vae_png_write_grid(path.c_str(), images.data(), count, rows, cols, columns, margin), VAE_OK)
        << vae_last_error();
    check_grid(path, images, count, rows, cols, columns, margin);
}

TEST(ImagePng, FewerImagesThanColumnsUsesOneRow) {
    std::string folder = vae_test::temporary_folder("png_grid_few");
    std::string path = folder + "/grid.png";
    const int count = 3, rows = 28, cols = 28, margin = 2;
    std::vector<float> images = grid_values(count, rows, cols);
    ASSERT_EQ(vae_png_write_grid(path.c_str(), images.data(), count, rows, cols, 8, margin), VAE_OK)
        << vae_last_error();
    check_grid(path, images, count, rows, cols, /*columns=*/3, margin);
}

TEST(ImagePng, OverwritesAnExistingPicture) {
    std::string folder = vae_test::temporary_folder("png_overwrite");
    std::string path = folder + "/grid.png";
    std::vector<float> first(4, 0.0f), second(4, 1.0f);
    ASSERT_EQ(vae_png_write_grid(path.c_str(), first.data(), 1, 2, 2, 1, 1), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_png_write_grid(path.c_str(), second.data(), 1, 2, 2, 1, 1), VAE_OK) << vae_last_error();
    check_grid(path, second, 1, 2, 2, 1, 1);
}

TEST(ImagePng, RgbRoundTrip) {
    std::string folder = vae_test::temporary_folder("png_rgb");
    std::string path = folder + "/colour.png";
    const int width = 5, height = 3;
    std::vector<unsigned char> pixels((size_t)width * height * 3);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = (unsigned char)(i * 37 + 11);
    ASSERT_EQ(vae_png_write_rgb(path.c_str(), pixels.data(), width, height), VAE_OK) << vae_last_error();
    Picture picture;
    png_uint_32 format = 0;
    ASSERT_TRUE(read_png(path, PNG_FORMAT_RGB, &picture, &format));
    EXPECT_EQ(format, (png_uint_32)PNG_FORMAT_RGB);
    EXPECT_EQ(picture.width, width);
    EXPECT_EQ(picture.height, height);
    EXPECT_EQ(picture.pixels, pixels);
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"colour.png"});
}

// Channel planes (NCHW, as the model's rows) become interleaved RGB pixels.
TEST(ImagePng, ThreeChannelGridIsRgbFromChannelPlanes) {
    std::string folder = vae_test::temporary_folder("png_rgb_grid");
    std::string path = folder + "/grid.png";
    const int count = 3, channels = 3, rows = 2, cols = 3, columns = 2, margin = 1;
    std::vector<float> images((size_t)count * channels * rows * cols);
    for (size_t i = 0; i < images.size(); ++i) images[i] = (float)((i * 7919) % 256) / 255.0f;
    ASSERT_EQ(vae_png_write_image_grid(path.c_str(), images.data(), count, channels, rows, cols, columns, margin), VAE_OK)
        << vae_last_error();
    Picture picture;
    png_uint_32 format = 0;
    ASSERT_TRUE(read_png(path, PNG_FORMAT_RGB, &picture, &format));
    EXPECT_EQ(format, (png_uint_32)PNG_FORMAT_RGB);
    ASSERT_EQ(picture.width, margin + columns * (cols + margin));
    ASSERT_EQ(picture.height, margin + 2 * (rows + margin));
    for (int image = 0; image < count; ++image)
        for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
                for (int k = 0; k < channels; ++k) {
                    int y = margin + (image / columns) * (rows + margin) + r;
                    int x = margin + (image % columns) * (cols + margin) + c;
                    float value = images[(((size_t)image * channels + k) * rows + r) * cols + c];
                    EXPECT_EQ(picture.pixels[((size_t)y * picture.width + x) * 3 + k], expected_grey(value))
                        << "image " << image << " pixel " << r << "," << c << " channel " << k;
                }
    EXPECT_EQ(picture.pixels[0], kMarginGrey);
    // Two channels have no picture format: refused, naming the file.
    EXPECT_EQ(vae_png_write_image_grid(path.c_str(), images.data(), 1, 2, rows, cols, 1, 0), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("2 channels"), std::string::npos) << vae_last_error();
}

TEST(ImagePng, BadPathIsAnIoError) {
    std::string folder = vae_test::temporary_folder("png_bad_path");
    std::string path = folder + "/missing/folder/grid.png";
    std::vector<float> images(16, 0.5f);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), images.data(), 1, 4, 4, 1, 2), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(path), std::string::npos) << vae_last_error();
    std::vector<unsigned char> pixels(12, 0);
    EXPECT_EQ(vae_png_write_rgb(path.c_str(), pixels.data(), 2, 2), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(path), std::string::npos) << vae_last_error();
}

TEST(ImagePng, DiskFullIsAnIoErrorAndLeavesNothing) {
    if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
    std::string folder = vae_test::temporary_folder("png_disk_full");
    std::string path = folder + "/grid.png";
    // The temporary name points at /dev/full, so libpng's writes fail.
    std::filesystem::create_symlink("/dev/full", path + ".tmp-" + std::to_string((long)getpid()));
    std::vector<float> images = vae_test::random_uniform(64 * 64 * 16, 3, 0.0f, 1.0f);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), images.data(), 16, 64, 64, 4, 2), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("disk full"), std::string::npos) << message;
    EXPECT_TRUE(folder_entries(folder).empty()) << "no half-written picture";
}

TEST(ImagePng, BadArgumentsAreRefused) {
    std::string folder = vae_test::temporary_folder("png_bad_arguments");
    std::string path = folder + "/grid.png";
    std::vector<float> images(16, 0.5f);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), images.data(), 0, 4, 4, 1, 2), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), images.data(), 1, 0, 4, 1, 2), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), images.data(), 1, 4, 4, 0, 2), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), images.data(), 1, 4, 4, 1, -1), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), nullptr, 1, 4, 4, 1, 2), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_png_write_grid(path.c_str(), images.data(), 1, 4, 4, 1, 1 << 30), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_png_write_rgb(path.c_str(), nullptr, 2, 2), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(folder_entries(folder).empty());
}
