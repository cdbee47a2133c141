// The dataset readers: IDX and NPY files (round trips, every malformed input
// we can think of, every truncated prefix). Loading folders, splits and the
// permutation are in test_dataset_load.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "dataset_test_files.h"
#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "data/dataset.h"
#include "base/error.h"
}

namespace {

using namespace dataset_test;
using vae_test::idx_file;
using vae_test::npy_dict;
using vae_test::npy_file;
using vae_test::raw_bytes;

// Expects status and a message that names the file and contains every one of
// the given words (lower-case comparison).
void expect_failure(vae_status got, vae_status expected, const std::string &path,
                    const std::vector<std::string> &words) {
    std::string message = vae_last_error();
    EXPECT_EQ(got, expected) << message;
    EXPECT_NE(message.find(path), std::string::npos) << "message does not name " << path << ": " << message;
    std::string lower = message;
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return (char)std::tolower(c); });
    for (const std::string &word : words)
        EXPECT_NE(lower.find(word), std::string::npos) << "message lacks '" << word << "': " << message;
}

vae_status load_images(const std::string &path, vae_dataset *out) {
    vae_error_clear();
    return vae_dataset_load_idx_images(path.c_str(), out);
}

void expect_u8_images(const vae_dataset &dataset, uint32_t count, uint32_t rows, uint32_t cols) {
    ASSERT_EQ(dataset.count, (long)count);
    ASSERT_EQ(dataset.dim, (int)(rows * cols));
    EXPECT_EQ(dataset.channels, 1) << "IDX and NPY (N, H, W) images are grey: 1 x rows x cols";
    EXPECT_EQ(dataset.rows, (int)rows);
    EXPECT_EQ(dataset.cols, (int)cols);
    EXPECT_EQ(dataset.dtype, VAE_DTYPE_U8);
    EXPECT_FLOAT_EQ(dataset.scale, 1.0f / 255.0f);
    ASSERT_NE(dataset.values, nullptr);
    std::string expected = image_payload(count, rows, cols);
    EXPECT_EQ(std::memcmp(dataset.values, expected.data(), expected.size()), 0);
}

// ---------------------------------------------------------------- IDX

TEST(DatasetIdx, PlainAndGzipRoundTrip) {
    std::string folder = vae_test::temporary_folder("dataset_idx_round_trip");
    for (bool compressed : {false, true}) {
        SCOPED_TRACE(compressed ? "gzip" : "plain");
        std::string images = folder + (compressed ? "/images.gz" : "/images");
        std::string labels = folder + (compressed ? "/labels.gz" : "/labels");
        if (compressed) {
            write_gzip(images, idx_images(5, 3, 4));
            write_gzip(labels, idx_labels(5));
        } else {
            vae_test::write_file(images, idx_images(5, 3, 4));
            vae_test::write_file(labels, idx_labels(5));
        }
        scoped_dataset loaded;
        ASSERT_EQ(load_images(images, &loaded.dataset), VAE_OK) << vae_last_error();
        expect_u8_images(loaded.dataset, 5, 3, 4);
        EXPECT_EQ(loaded.dataset.labels, nullptr);
        ASSERT_EQ(vae_dataset_load_idx_labels(labels.c_str(), &loaded.dataset), VAE_OK) << vae_last_error();
        ASSERT_NE(loaded.dataset.labels, nullptr);
        for (int i = 0; i < 5; ++i) EXPECT_EQ(loaded.dataset.labels[i], (i * 5 + 2) % 10) << i;
    }
}

TEST(DatasetIdx, CompressionIsDetectedFromBytesNotName) {
    std::string folder = vae_test::temporary_folder("dataset_idx_by_bytes");
    std::string plain_named_gz = folder + "/images.gz";
    std::string gzip_named_plain = folder + "/images";
    vae_test::write_file(plain_named_gz, idx_images(2, 2, 2));
    write_gzip(gzip_named_plain, idx_images(2, 2, 2));
    ASSERT_EQ(vae_test::read_file(gzip_named_plain).substr(0, 2), std::string("\x1f\x8b"));
    for (const std::string &path : {plain_named_gz, gzip_named_plain}) {
        scoped_dataset loaded;
        ASSERT_EQ(load_images(path, &loaded.dataset), VAE_OK) << path << ": " << vae_last_error();
        expect_u8_images(loaded.dataset, 2, 2, 2);
    }
}

TEST(DatasetIdx, MalformedFilesNameFileAndProblem) {
    std::string folder = vae_test::temporary_folder("dataset_idx_malformed");
    struct bad_case {
        const char *name;
        std::string bytes;
        std::vector<std::string> words;
    };
    std::string good = idx_images(3, 2, 2);
    std::vector<bad_case> cases = {
        {"bad_magic", idx_file(0x801, {3, 2, 2}, image_payload(3, 2, 2)), {"magic"}},
        {"float_magic", idx_file(0x0d03, {3, 2, 2}, image_payload(3, 2, 2)), {"magic"}},
        {"short_magic", good.substr(0, 3), {"truncated header"}},
        {"short_dims", good.substr(0, 10), {"truncated header"}},
        {"short_data", good.substr(0, good.size() - 1), {"truncated", "expected 12 bytes of image data, found 11"}},
        {"trailing", good + "xyz", {"3 trailing bytes"}},
        {"zero_count", idx_file(0x803, {0, 2, 2}, ""), {"zero"}},
        {"zero_rows", idx_file(0x803, {3, 0, 2}, ""), {"zero"}},
        {"huge_dims", idx_file(0x803, {0xffffffffu, 0xffffffffu, 0xffffffffu}, image_payload(1, 2, 2)),
         {"more than"}},
        {"too_many_examples", idx_file(0x803, {0x80000000u, 1, 1}, image_payload(1, 1, 1)),
         {"more than 2147483647 examples"}},
        {"huge_example", idx_file(0x803, {1, 65536, 65536}, image_payload(1, 1, 1)), {"more than"}},
        // 2^32 values are allowed now (no 2^31 limit); a file that holds few
        // of them is refused as truncated, without allocating what it claims.
        {"many_values_short_file", idx_file(0x803, {65536, 256, 256}, ""),
         {"truncated", "expected 4294967296 bytes"}},
    };
    for (const bad_case &item : cases) {
        SCOPED_TRACE(item.name);
        std::string path = folder + "/" + item.name;
        vae_test::write_file(path, item.bytes);
        scoped_dataset loaded;
        expect_failure(load_images(path, &loaded.dataset), VAE_ERROR_BAD_INPUT, path, item.words);
        EXPECT_EQ(loaded.dataset.values, nullptr);
        EXPECT_EQ(loaded.dataset.count, 0);
    }
}

TEST(DatasetIdx, CorruptAndTruncatedGzip) {
    std::string folder = vae_test::temporary_folder("dataset_idx_gzip_bad");
    std::string path = folder + "/images.gz";
    write_gzip(path, idx_images(4, 5, 5));
    std::string compressed = vae_test::read_file(path);

    std::string truncated = folder + "/truncated.gz";
    vae_test::write_file(truncated, compressed.substr(0, compressed.size() / 2));
    scoped_dataset first;
    expect_failure(load_images(truncated, &first.dataset), VAE_ERROR_BAD_INPUT, truncated, {"truncated"});

    std::string corrupt = folder + "/corrupt.gz";
    std::string flipped = compressed;
    for (size_t i = 12; i < flipped.size() - 8; ++i) flipped[i] = (char)(flipped[i] ^ 0x5a);
    vae_test::write_file(corrupt, flipped);
    scoped_dataset second;
    vae_status status = load_images(corrupt, &second.dataset);
    EXPECT_EQ(status, VAE_ERROR_BAD_INPUT) << vae_last_error();
    EXPECT_NE(std::string(vae_last_error()).find(corrupt), std::string::npos) << vae_last_error();
}

TEST(DatasetIdx, LabelProblems) {
    std::string folder = vae_test::temporary_folder("dataset_idx_labels_bad");
    std::string images = folder + "/images";
    vae_test::write_file(images, idx_images(4, 2, 2));
    scoped_dataset loaded;
    ASSERT_EQ(load_images(images, &loaded.dataset), VAE_OK) << vae_last_error();

    struct bad_case {
        const char *name;
        std::string bytes;
        std::vector<std::string> words;
    };
    std::vector<bad_case> cases = {
        {"count_mismatch", idx_labels(5), {"5 labels", "4 examples"}},
        {"image_magic", idx_file(0x803, {4}, label_payload(4)), {"magic"}},
        {"short_header", idx_labels(4).substr(0, 6), {"truncated header"}},
        {"short_data", idx_labels(4).substr(0, 10), {"truncated", "expected 4 bytes of label data, found 2"}},
        {"trailing", idx_labels(4) + "!", {"1 trailing bytes"}},
        {"zero_count", idx_file(0x801, {0}, ""), {"zero"}},
    };
    for (const bad_case &item : cases) {
        SCOPED_TRACE(item.name);
        std::string path = folder + "/" + item.name;
        vae_test::write_file(path, item.bytes);
        vae_error_clear();
        expect_failure(vae_dataset_load_idx_labels(path.c_str(), &loaded.dataset), VAE_ERROR_BAD_INPUT, path,
                       item.words);
        EXPECT_EQ(loaded.dataset.labels, nullptr);
    }
}

TEST(DatasetIdx, MissingFileIsIoError) {
    std::string path = vae_test::temporary_folder("dataset_idx_missing") + "/nothing-here";
    scoped_dataset loaded;
    expect_failure(load_images(path, &loaded.dataset), VAE_ERROR_IO, path, {"cannot open"});
}

TEST(DatasetIdx, EveryPrefixIsRejected) {
    std::string folder = vae_test::temporary_folder("dataset_idx_prefixes");
    std::string images = idx_images(2, 3, 3);
    std::string labels = idx_labels(2);
    for (size_t length = 0; length < images.size(); ++length) {
        std::string path = folder + "/images_" + std::to_string(length);
        vae_test::write_file(path, images.substr(0, length));
        scoped_dataset loaded;
        EXPECT_EQ(load_images(path, &loaded.dataset), VAE_ERROR_BAD_INPUT) << "prefix " << length;
        EXPECT_NE(std::string(vae_last_error()).find(path), std::string::npos) << vae_last_error();
    }
    std::string compressed_path = folder + "/whole.gz";
    write_gzip(compressed_path, images);
    std::string compressed = vae_test::read_file(compressed_path);
    for (size_t length = 0; length < compressed.size(); ++length) {
        std::string path = folder + "/gz_" + std::to_string(length);
        vae_test::write_file(path, compressed.substr(0, length));
        scoped_dataset loaded;
        // Includes prefixes that lack only the gzip trailer (CRC and size).
        EXPECT_EQ(load_images(path, &loaded.dataset), VAE_ERROR_BAD_INPUT) << "gzip prefix " << length;
        EXPECT_NE(std::string(vae_last_error()).find(path), std::string::npos) << vae_last_error();
    }
    std::string bad_checksum = compressed;
    bad_checksum[bad_checksum.size() - 6] ^= 0x01;
    std::string checksum_path = folder + "/bad_checksum.gz";
    vae_test::write_file(checksum_path, bad_checksum);
    scoped_dataset checksum;
    expect_failure(load_images(checksum_path, &checksum.dataset), VAE_ERROR_BAD_INPUT, checksum_path, {"gzip"});
    scoped_dataset base;
    vae_test::write_file(folder + "/base", images);
    ASSERT_EQ(load_images(folder + "/base", &base.dataset), VAE_OK) << vae_last_error();
    for (size_t length = 0; length < labels.size(); ++length) {
        std::string path = folder + "/labels_" + std::to_string(length);
        vae_test::write_file(path, labels.substr(0, length));
        EXPECT_EQ(vae_dataset_load_idx_labels(path.c_str(), &base.dataset), VAE_ERROR_BAD_INPUT) << length;
        EXPECT_EQ(base.dataset.labels, nullptr);
    }
}

// ---------------------------------------------------------------- NPY

TEST(DatasetNpy, Uint8RoundTripAllVersions) {
    std::string folder = vae_test::temporary_folder("dataset_npy_u8");
    for (int major : {1, 2, 3}) {
        for (const char *descr : {"|u1", "u1", "<u1"}) {
            SCOPED_TRACE(std::string("version ") + std::to_string(major) + " " + descr);
            std::string path = folder + "/data_" + std::to_string(major) + ".npy";
            vae_test::write_file(path, npy_file(npy_dict(descr, "(5, 3, 4)"), image_payload(5, 3, 4), major));
            scoped_dataset loaded;
            ASSERT_EQ(load_npy(path, &loaded.dataset), VAE_OK) << vae_last_error();
            expect_u8_images(loaded.dataset, 5, 3, 4);
        }
    }
}

TEST(DatasetNpy, Float32RoundTripAndSquareShape) {
    std::string folder = vae_test::temporary_folder("dataset_npy_f32");
    std::vector<float> values = float_values(3 * 16);
    struct shape_case {
        std::string shape;
        int channels, rows, cols, dim;
    };
    // (N, D) has no image shape (channels 0; a square D still gives rows and
    // cols for pictures); (N, H, W) is grey; (N, C, H, W) is NCHW.
    for (const shape_case &item : std::vector<shape_case>{{"(3, 16)", 0, 4, 4, 16},
                                                          {"(3,16)", 0, 4, 4, 16},
                                                          {"(3, 2, 8)", 1, 2, 8, 16},
                                                          {"(6, 8)", 0, 0, 0, 8},
                                                          {"(3, 1, 4, 4)", 1, 4, 4, 16},
                                                          {"(2, 3, 2, 4)", 3, 2, 4, 24},
                                                          {"(1, 3, 4, 4,)", 3, 4, 4, 48}}) {
        SCOPED_TRACE(item.shape);
        std::string path = folder + "/data.npy";
        vae_test::write_file(path, npy_file(npy_dict("<f4", item.shape), raw_bytes(values)));
        scoped_dataset loaded;
        ASSERT_EQ(load_npy(path, &loaded.dataset), VAE_OK) << vae_last_error();
        EXPECT_EQ(loaded.dataset.count, 3 * 16 / item.dim);
        EXPECT_EQ(loaded.dataset.dim, item.dim);
        EXPECT_EQ(loaded.dataset.channels, item.channels);
        EXPECT_EQ(loaded.dataset.rows, item.rows);
        EXPECT_EQ(loaded.dataset.cols, item.cols);
        EXPECT_EQ(loaded.dataset.dtype, VAE_DTYPE_F32);
        EXPECT_EQ(loaded.dataset.scale, 1.0f);
        EXPECT_EQ(std::memcmp(loaded.dataset.values, values.data(), values.size() * sizeof(float)), 0);
    }
    // Keys in another order, double quotes, no trailing comma.
    std::string path = folder + "/reordered.npy";
    vae_test::write_file(path, npy_file("{\"shape\": (2, 24), \"fortran_order\": False, \"descr\": \"<f4\"}",
                                        raw_bytes(values)));
    scoped_dataset loaded;
    ASSERT_EQ(load_npy(path, &loaded.dataset), VAE_OK) << vae_last_error();
    EXPECT_EQ(loaded.dataset.count, 2);
    EXPECT_EQ(loaded.dataset.dim, 24);
}

// (N, C, H, W) uint8: C x H x W images whose values are the file's bytes in
// NCHW order (channel planes one after another), every shard alike.
TEST(DatasetNpy, FourDimensionalUint8IsChannelsRowsCols) {
    std::string folder = vae_test::temporary_folder("dataset_npy_nchw_u8");
    const int count = 4, channels = 3, rows = 5, cols = 2;  // rows != cols: a swapped axis shows
    std::string payload;
    for (int i = 0; i < count; ++i)
        for (int c = 0; c < channels; ++c)
            for (int y = 0; y < rows; ++y)
                for (int x = 0; x < cols; ++x) payload += (char)(uint8_t)(i * 60 + c * 20 + y * 3 + x);
    std::string path = folder + "/images.npy";
    vae_test::write_file(path, npy_file(npy_dict("|u1", "(4, 3, 5, 2)"), payload));
    scoped_dataset loaded;
    ASSERT_EQ(load_npy(path, &loaded.dataset), VAE_OK) << vae_last_error();
    const vae_dataset &d = loaded.dataset;
    EXPECT_EQ(d.count, count);
    EXPECT_EQ(d.channels, channels);
    EXPECT_EQ(d.rows, rows);
    EXPECT_EQ(d.cols, cols);
    EXPECT_EQ(d.dim, channels * rows * cols);
    EXPECT_EQ(d.dtype, VAE_DTYPE_U8);
    EXPECT_FLOAT_EQ(d.scale, 1.0f / 255.0f);
    // Example 2, channel 1, row 4, col 1 at (c*rows + y)*cols + x.
    const uint8_t *example = (const uint8_t *)vae_dataset_example(&d, 2);
    ASSERT_NE(example, nullptr);
    EXPECT_EQ(example[(1 * rows + 4) * cols + 1], 2 * 60 + 1 * 20 + 4 * 3 + 1);
    EXPECT_EQ(std::memcmp(d.values, payload.data(), payload.size()), 0);
    std::vector<float> scaled(d.dim);
    vae_dataset_example_scaled(&d, 3, scaled.data());
    EXPECT_FLOAT_EQ(scaled[(2 * rows + 0) * cols + 1], (float)(3 * 60 + 2 * 20 + 1) / 255.0f);
}

TEST(DatasetNpy, FourDimensionalFloat32IsChannelsRowsCols) {
    std::string folder = vae_test::temporary_folder("dataset_npy_nchw_f32");
    std::vector<float> values = float_values(2 * 3 * 3 * 5);
    std::string path = folder + "/images.npy";
    vae_test::write_file(path, npy_file(npy_dict("<f4", "(2, 3, 3, 5)"), raw_bytes(values), 2));
    scoped_dataset loaded;
    ASSERT_EQ(load_npy(path, &loaded.dataset), VAE_OK) << vae_last_error();
    const vae_dataset &d = loaded.dataset;
    EXPECT_EQ(d.count, 2);
    EXPECT_EQ(d.channels, 3);
    EXPECT_EQ(d.rows, 3);
    EXPECT_EQ(d.cols, 5);
    EXPECT_EQ(d.dim, 45);
    EXPECT_EQ(d.dtype, VAE_DTYPE_F32);
    EXPECT_EQ(d.scale, 1.0f);
    const float *second = (const float *)vae_dataset_example(&d, 1);
    ASSERT_NE(second, nullptr);
    EXPECT_EQ(std::memcmp(second, values.data() + 45, 45 * sizeof(float)), 0);
    // Values are checked as for any float data: one outside [0,1] is named.
    std::vector<float> bad = values;
    bad[45 + 17] = 2.0f;
    std::string bad_path = folder + "/bad.npy";
    vae_test::write_file(bad_path, npy_file(npy_dict("<f4", "(2, 3, 3, 5)"), raw_bytes(bad)));
    scoped_dataset refused;
    expect_failure(load_npy(bad_path, &refused.dataset), VAE_ERROR_BAD_INPUT, bad_path,
                   {"example 1", "position 17", "outside [0,1]"});
}

TEST(DatasetNpy, LabelsAllDtypes) {
    std::string folder = vae_test::temporary_folder("dataset_npy_labels");
    std::string data = folder + "/data.npy";
    vae_test::write_file(data, npy_file(npy_dict("|u1", "(4, 9)"), image_payload(4, 3, 3)));
    scoped_dataset loaded;
    ASSERT_EQ(load_npy(data, &loaded.dataset), VAE_OK) << vae_last_error();
    EXPECT_EQ(loaded.dataset.rows, 3);

    std::vector<int32_t> expected = {7, 0, 3, 9};
    std::vector<std::pair<std::string, std::string>> files = {
        {"|u1", raw_bytes(std::vector<uint8_t>(expected.begin(), expected.end()))},
        {"<i4", raw_bytes(expected)},
        {"<i8", raw_bytes(std::vector<int64_t>(expected.begin(), expected.end()))},
    };
    for (const auto &[descr, payload] : files) {
        SCOPED_TRACE(descr);
        std::string path = folder + "/labels.npy";
        vae_test::write_file(path, npy_file(npy_dict(descr, "(4,)"), payload));
        vae_error_clear();
        ASSERT_EQ(vae_dataset_load_npy_labels(path.c_str(), &loaded.dataset), VAE_OK) << vae_last_error();
        ASSERT_NE(loaded.dataset.labels, nullptr);
        EXPECT_EQ(std::vector<int32_t>(loaded.dataset.labels, loaded.dataset.labels + 4), expected);
    }

    struct bad_case {
        const char *name;
        std::string bytes;
        std::vector<std::string> words;
    };
    std::vector<bad_case> cases = {
        {"float_labels", npy_file(npy_dict("<f4", "(4,)"), raw_bytes(std::vector<float>(4, 1.0f))), {"descr"}},
        {"rank2_labels", npy_file(npy_dict("<i4", "(4, 1)"), raw_bytes(expected)), {"shape"}},
        {"count_labels", npy_file(npy_dict("<i4", "(3,)"), raw_bytes(std::vector<int32_t>{1, 2, 3})),
         {"3 labels", "4 examples"}},
        {"wide_labels", npy_file(npy_dict("<i8", "(4,)"), raw_bytes(std::vector<int64_t>{1, 2, 1LL << 40, 3})),
         {"index 2"}},
        {"negative_labels", npy_file(npy_dict("<i4", "(4,)"), raw_bytes(std::vector<int32_t>{1, -1, 2, 3})),
         {"index 1"}},
    };
    int32_t *kept = loaded.dataset.labels;
    for (const bad_case &item : cases) {
        SCOPED_TRACE(item.name);
        std::string path = folder + "/" + item.name + ".npy";
        vae_test::write_file(path, item.bytes);
        vae_error_clear();
        expect_failure(vae_dataset_load_npy_labels(path.c_str(), &loaded.dataset), VAE_ERROR_BAD_INPUT, path,
                       item.words);
        EXPECT_EQ(loaded.dataset.labels, kept) << "a failed load must leave the old labels alone";
    }
}

TEST(DatasetNpy, MalformedFilesNameFileAndField) {
    std::string folder = vae_test::temporary_folder("dataset_npy_malformed");
    std::string payload = image_payload(2, 2, 2);
    std::string good = npy_file(npy_dict("|u1", "(2, 2, 2)"), payload);
    std::string bad_version = good;
    bad_version[6] = 4;
    std::string bad_minor = good;
    bad_minor[7] = 1;
    std::string long_header = good;
    long_header[8] = (char)0xff;
    long_header[9] = (char)0x7f;
    std::string long_header_v2 = npy_file(npy_dict("|u1", "(2, 2, 2)"), payload, 2);
    long_header_v2[11] = (char)0x40;
    std::vector<float> floats = float_values(8);
    std::vector<float> out_of_range = floats;
    out_of_range[5] = 1.5f;
    std::vector<float> negative = floats;
    negative[3] = -0.25f;
    std::vector<float> with_nan = floats;
    with_nan[6] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> with_infinity = floats;
    with_infinity[1] = std::numeric_limits<float>::infinity();

    struct bad_case {
        const char *name;
        std::string bytes;
        std::vector<std::string> words;
    };
    std::vector<bad_case> cases = {
        {"bad_magic", std::string("\x93NUMPZ") + good.substr(6), {"magic"}},
        {"not_npy", std::string("hello, this is plain text and not a numpy file"), {"magic"}},
        {"bad_version", bad_version, {"version 4.0"}},
        {"bad_minor", bad_minor, {"version 1.1"}},
        {"fortran", npy_file(npy_dict("|u1", "(2, 2, 2)", "True"), payload), {"fortran_order"}},
        {"fortran_word", npy_file(npy_dict("|u1", "(2, 2, 2)", "Maybe"), payload), {"fortran_order"}},
        {"big_endian", npy_file(npy_dict(">f4", "(2, 4)"), raw_bytes(floats)), {"big-endian"}},
        {"float64", npy_file(npy_dict("<f8", "(2, 2)"), raw_bytes(floats)), {"descr", "<f8"}},
        {"int_data", npy_file(npy_dict("<i4", "(2, 4)"), raw_bytes(floats)), {"descr"}},
        {"shape_text", npy_file(npy_dict("|u1", "(2, two, 2)"), payload), {"shape"}},
        {"shape_not_tuple", npy_file(npy_dict("|u1", "[2, 4]"), payload), {"shape"}},
        {"shape_unclosed", npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 4", payload), {"shape"}},
        {"shape_rank1", npy_file(npy_dict("|u1", "(8,)"), payload), {"shape", "1 dimensions"}},
        {"shape_rank5", npy_file(npy_dict("|u1", "(1, 2, 2, 2, 1)"), payload),
         {"shape", "(n, 2, 2, 2, 1)", "5 dimensions", "(n, channels, rows, cols)"}},
        {"shape_negative", npy_file(npy_dict("|u1", "(-2, 4)"), payload), {"negative"}},
        {"shape_zero", npy_file(npy_dict("|u1", "(0, 4)"), ""), {"zero"}},
        {"shape_overflow", npy_file(npy_dict("|u1", "(99999999999999999999999, 4)"), payload), {"shape"}},
        {"shape_product", npy_file(npy_dict("|u1", "(5000000000, 5000000000)"), payload), {"shape", "more than"}},
        {"shape_product_f32", npy_file(npy_dict("<f4", "(3000000000, 1000000000)"), payload), {"shape", "more than"}},
        // More than 2^31 values is allowed; the file must still hold them.
        {"many_values_short_file", npy_file(npy_dict("|u1", "(2000000000, 2000000000)"), payload),
         {"truncated", "expected 4000000000000000000 bytes"}},
        {"missing_key", npy_file("{'descr': '|u1', 'shape': (2, 4), }", payload), {"missing", "fortran_order"}},
        {"extra_key", npy_file("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 4), 'x': 1}", payload),
         {"'x'"}},
        {"not_a_dict", npy_file("descr=|u1 shape=(2,4)", payload), {"header"}},
        {"header_beyond_file", long_header, {"header length", "past the end"}},
        {"header_beyond_file_v2", long_header_v2, {"header length", "past the end"}},
        {"truncated_data", good.substr(0, good.size() - 3), {"truncated", "expected 8 bytes of data, found 5"}},
        {"trailing_data", good + "zz", {"2 trailing bytes"}},
        {"float_above_one", npy_file(npy_dict("<f4", "(2, 4)"), raw_bytes(out_of_range)), {"index 5", "[0,1]"}},
        {"float_negative", npy_file(npy_dict("<f4", "(2, 4)"), raw_bytes(negative)), {"index 3", "[0,1]"}},
        {"float_nan", npy_file(npy_dict("<f4", "(2, 4)"), raw_bytes(with_nan)), {"index 6", "nan"}},
        {"float_infinity", npy_file(npy_dict("<f4", "(2, 4)"), raw_bytes(with_infinity)), {"index 1", "infinite"}},
    };
    for (const bad_case &item : cases) {
        SCOPED_TRACE(item.name);
        std::string path = folder + "/" + item.name + ".npy";
        vae_test::write_file(path, item.bytes);
        scoped_dataset loaded;
        expect_failure(load_npy(path, &loaded.dataset), VAE_ERROR_BAD_INPUT, path, item.words);
        EXPECT_EQ(loaded.dataset.values, nullptr);
    }
    std::string missing = folder + "/missing.npy";
    scoped_dataset loaded;
    expect_failure(load_npy(missing, &loaded.dataset), VAE_ERROR_IO, missing, {"cannot open"});
}

TEST(DatasetNpy, EveryPrefixIsRejected) {
    std::string folder = vae_test::temporary_folder("dataset_npy_prefixes");
    for (int major : {1, 2}) {
        std::string bytes = npy_file(npy_dict("<f4", "(2, 3)"), raw_bytes(float_values(6)), major);
        for (size_t length = 0; length < bytes.size(); ++length) {
            std::string path = folder + "/v" + std::to_string(major) + "_" + std::to_string(length) + ".npy";
            vae_test::write_file(path, bytes.substr(0, length));
            scoped_dataset loaded;
            EXPECT_EQ(load_npy(path, &loaded.dataset), VAE_ERROR_BAD_INPUT) << "version " << major << " prefix "
                                                                            << length;
            EXPECT_NE(std::string(vae_last_error()).find(path), std::string::npos) << vae_last_error();
        }
    }
}

}  // namespace
