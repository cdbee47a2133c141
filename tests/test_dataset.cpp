// The dataset layer: IDX and NPY readers (round trips and every malformed
// input we can think of), data.path resolution, limits and splits, and the
// per-epoch permutation.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backend.h"
#include "dataset.h"
#include "error.h"
#include "vae_philox.h"
}

namespace {

// ---------------------------------------------------------------- builders

std::string big_endian(uint32_t value) {
    std::string bytes(4, '\0');
    for (int i = 0; i < 4; ++i) bytes[i] = (char)(value >> (24 - 8 * i));
    return bytes;
}

std::string idx_file(uint32_t magic, const std::vector<uint32_t> &dims, const std::string &payload) {
    std::string bytes = big_endian(magic);
    for (uint32_t d : dims) bytes += big_endian(d);
    return bytes + payload;
}

// count images of rows x cols with value (i*7 + j*3) % 256: every byte known.
std::string image_payload(uint32_t count, uint32_t rows, uint32_t cols) {
    std::string payload;
    for (uint32_t i = 0; i < count; ++i)
        for (uint32_t j = 0; j < rows * cols; ++j) payload += (char)(uint8_t)((i * 7 + j * 3) % 256);
    return payload;
}

std::string label_payload(uint32_t count) {
    std::string payload;
    for (uint32_t i = 0; i < count; ++i) payload += (char)(uint8_t)((i * 5 + 2) % 10);
    return payload;
}

std::string idx_images(uint32_t count, uint32_t rows, uint32_t cols) {
    return idx_file(0x803, {count, rows, cols}, image_payload(count, rows, cols));
}

std::string idx_labels(uint32_t count) { return idx_file(0x801, {count}, label_payload(count)); }

void write_gzip(const std::string &path, const std::string &bytes) {
    gzFile file = gzopen(path.c_str(), "wb");
    ASSERT_NE(file, nullptr) << path;
    if (!bytes.empty()) {
        ASSERT_EQ(gzwrite(file, bytes.data(), (unsigned)bytes.size()), (int)bytes.size());
    }
    ASSERT_EQ(gzclose(file), Z_OK);
}

// An NPY file: preamble for the version, the header padded with spaces and a
// newline so that the data starts at a multiple of 64.
std::string npy_file(const std::string &header_dict, const std::string &payload, int major = 1) {
    std::string preamble = std::string("\x93NUMPY", 6) + (char)major + '\0';
    size_t length_bytes = major == 1 ? 2 : 4;
    size_t unpadded = preamble.size() + length_bytes + header_dict.size() + 1;
    size_t padded = (unpadded + 63) / 64 * 64;
    std::string header = header_dict + std::string(padded - unpadded, ' ') + "\n";
    uint32_t length = (uint32_t)header.size();
    std::string length_field;
    for (size_t i = 0; i < length_bytes; ++i) length_field += (char)(length >> (8 * i));
    return preamble + length_field + header + payload;
}

std::string npy_dict(const std::string &descr, const std::string &shape, const std::string &order = "False") {
    return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
}

template <typename T>
std::string raw_bytes(const std::vector<T> &values) {
    return std::string((const char *)values.data(), values.size() * sizeof(T));
}

std::vector<float> float_values(size_t count) {
    std::vector<float> values(count);
    for (size_t i = 0; i < count; ++i) values[i] = (float)((i * 37) % 101) / 100.0f;
    return values;
}

// A loaded dataset freed when the test ends, pass or fail.
struct scoped_dataset {
    vae_dataset dataset{};
    ~scoped_dataset() { vae_dataset_free(&dataset); }
};

struct scoped_splits {
    vae_data_splits splits{};
    ~scoped_splits() { vae_data_splits_free(&splits); }
};

vae_config data_config(const std::string &folder) {
    vae_config config;
    std::memset(&config, 0, sizeof config);
    std::snprintf(config.data_path, sizeof config.data_path, "%s", folder.c_str());
    return config;
}

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

vae_status load_npy(const std::string &path, vae_dataset *out) {
    vae_error_clear();
    return vae_dataset_load_npy(path.c_str(), out);
}

void expect_u8_images(const vae_dataset &dataset, uint32_t count, uint32_t rows, uint32_t cols) {
    ASSERT_EQ(dataset.count, (long)count);
    ASSERT_EQ(dataset.dim, (int)(rows * cols));
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
        {"too_many_values", idx_file(0x803, {65536, 256, 256}, ""), {"more than"}},
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
        int rows, cols, dim;
    };
    for (const shape_case &item : std::vector<shape_case>{{"(3, 16)", 4, 4, 16},
                                                          {"(3,16)", 4, 4, 16},
                                                          {"(3, 2, 8)", 2, 8, 16},
                                                          {"(6, 8)", 0, 0, 8}}) {
        SCOPED_TRACE(item.shape);
        std::string path = folder + "/data.npy";
        vae_test::write_file(path, npy_file(npy_dict("<f4", item.shape), raw_bytes(values)));
        scoped_dataset loaded;
        ASSERT_EQ(load_npy(path, &loaded.dataset), VAE_OK) << vae_last_error();
        EXPECT_EQ(loaded.dataset.count, 3 * 16 / item.dim);
        EXPECT_EQ(loaded.dataset.dim, item.dim);
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
        {"shape_rank4", npy_file(npy_dict("|u1", "(1, 2, 2, 2)"), payload), {"shape", "4 dimensions"}},
        {"shape_negative", npy_file(npy_dict("|u1", "(-2, 4)"), payload), {"negative"}},
        {"shape_zero", npy_file(npy_dict("|u1", "(0, 4)"), ""), {"zero"}},
        {"shape_overflow", npy_file(npy_dict("|u1", "(99999999999999999999999, 4)"), payload), {"shape"}},
        {"shape_product", npy_file(npy_dict("|u1", "(2000000000, 2000000000)"), payload), {"shape", "more than"}},
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

// ---------------------------------------------------------------- data.path

void write_npy_folder(const std::string &folder, long train, long test, bool labels) {
    std::vector<float> train_values = float_values((size_t)train * 4);
    std::vector<float> test_values = float_values((size_t)test * 4);
    vae_test::write_file(folder + "/train.npy",
                         npy_file(npy_dict("<f4", "(" + std::to_string(train) + ", 4)"), raw_bytes(train_values)));
    vae_test::write_file(folder + "/test.npy",
                         npy_file(npy_dict("<f4", "(" + std::to_string(test) + ", 2, 2)"), raw_bytes(test_values)));
    if (labels) {
        std::vector<int64_t> train_labels(train), test_labels(test);
        for (long i = 0; i < train; ++i) train_labels[i] = i % 10;
        for (long i = 0; i < test; ++i) test_labels[i] = (i + 3) % 10;
        vae_test::write_file(folder + "/train_labels.npy",
                             npy_file(npy_dict("<i8", "(" + std::to_string(train) + ",)"), raw_bytes(train_labels)));
        vae_test::write_file(folder + "/test_labels.npy",
                             npy_file(npy_dict("<i8", "(" + std::to_string(test) + ",)"), raw_bytes(test_labels)));
    }
}

TEST(DatasetLoad, NpyFolderWithSplits) {
    std::string folder = vae_test::temporary_folder("dataset_load_npy");
    write_npy_folder(folder, 20, 7, true);
    std::vector<float> train_values = float_values(20 * 4);

    vae_config config = data_config(folder);
    config.validation_size = 5;
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    const vae_data_splits &s = loaded.splits;
    EXPECT_EQ(s.train.count, 15);
    EXPECT_EQ(s.validation.count, 5);
    EXPECT_EQ(s.test.count, 7);
    EXPECT_EQ(s.train.dim, 4);
    EXPECT_EQ(s.validation.dim, 4);
    EXPECT_EQ(s.train.rows, 2);  // 4 is a perfect square
    EXPECT_EQ(s.test.rows, 2);
    EXPECT_EQ(s.validation.dtype, VAE_DTYPE_F32);
    // Validation holds the last 5 training examples, in order, with their labels.
    EXPECT_EQ(std::memcmp(s.train.values, train_values.data(), 15 * 4 * sizeof(float)), 0);
    EXPECT_EQ(std::memcmp(s.validation.values, train_values.data() + 15 * 4, 5 * 4 * sizeof(float)), 0);
    ASSERT_NE(s.validation.labels, nullptr);
    ASSERT_NE(s.train.labels, nullptr);
    ASSERT_NE(s.test.labels, nullptr);
    for (int i = 0; i < 5; ++i) EXPECT_EQ(s.validation.labels[i], (15 + i) % 10);
    for (int i = 0; i < 15; ++i) EXPECT_EQ(s.train.labels[i], i % 10);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(s.test.labels[i], (i + 3) % 10);

    std::vector<float> scaled(4);
    vae_dataset_example_scaled(&s.validation, 2, scaled.data());
    EXPECT_EQ(std::vector<float>(train_values.begin() + 17 * 4, train_values.begin() + 18 * 4), scaled);
}

TEST(DatasetLoad, NpyFolderLimitsAndNoLabels) {
    std::string folder = vae_test::temporary_folder("dataset_load_npy_limits");
    write_npy_folder(folder, 20, 7, false);
    vae_config config = data_config(folder);
    config.train_limit = 12;
    config.test_limit = 3;
    config.validation_size = 2;
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(loaded.splits.train.count, 10);
    EXPECT_EQ(loaded.splits.validation.count, 2);
    EXPECT_EQ(loaded.splits.test.count, 3);
    EXPECT_EQ(loaded.splits.train.labels, nullptr);
    // Validation is taken from the end of the limited set: examples 10 and 11.
    std::vector<float> train_values = float_values(20 * 4);
    EXPECT_EQ(std::memcmp(loaded.splits.validation.values, train_values.data() + 10 * 4, 2 * 4 * sizeof(float)), 0);

    // Limits above the counts keep everything; no validation gives an empty split.
    config.train_limit = 1000;
    config.test_limit = 1000;
    config.validation_size = 0;
    scoped_splits all;
    ASSERT_EQ(vae_data_load(&config, &all.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(all.splits.train.count, 20);
    EXPECT_EQ(all.splits.test.count, 7);
    EXPECT_EQ(all.splits.validation.count, 0);
    EXPECT_EQ(all.splits.validation.dim, 4);

    config.train_limit = 12;
    config.validation_size = 12;
    scoped_splits too_big;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &too_big.splits), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("validation_size"), std::string::npos) << vae_last_error();
    EXPECT_EQ(too_big.splits.train.values, nullptr) << "a failed load frees what it loaded";
}

TEST(DatasetLoad, NpyDimensionMismatch) {
    std::string folder = vae_test::temporary_folder("dataset_load_npy_mismatch");
    vae_test::write_file(folder + "/train.npy", npy_file(npy_dict("|u1", "(2, 4)"), image_payload(2, 2, 2)));
    vae_test::write_file(folder + "/test.npy", npy_file(npy_dict("|u1", "(2, 3)"), image_payload(2, 1, 3)));
    vae_config config = data_config(folder);
    scoped_splits loaded;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &loaded.splits), VAE_ERROR_BAD_INPUT);
    std::string message = vae_last_error();
    EXPECT_NE(message.find("train.npy"), std::string::npos) << message;
    EXPECT_NE(message.find("test.npy"), std::string::npos) << message;

    // Same dim, different value types.
    vae_test::write_file(folder + "/test.npy", npy_file(npy_dict("<f4", "(2, 4)"), raw_bytes(float_values(8))));
    scoped_splits mixed;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &mixed.splits), VAE_ERROR_BAD_INPUT);
    EXPECT_NE(std::string(vae_last_error()).find("float32"), std::string::npos) << vae_last_error();
}

TEST(DatasetLoad, IdxFolderPlainAndGzip) {
    for (bool compressed : {false, true}) {
        SCOPED_TRACE(compressed ? "gzip" : "plain");
        std::string folder = vae_test::temporary_folder(compressed ? "dataset_load_idx_gz" : "dataset_load_idx");
        auto put = [&](const std::string &name, const std::string &bytes) {
            if (compressed) write_gzip(folder + "/" + name + ".gz", bytes);
            else vae_test::write_file(folder + "/" + name, bytes);
        };
        put("train-images-idx3-ubyte", idx_images(9, 3, 3));
        put("train-labels-idx1-ubyte", idx_labels(9));
        put("t10k-images-idx3-ubyte", idx_images(4, 3, 3));
        put("t10k-labels-idx1-ubyte", idx_labels(4));
        vae_config config = data_config(folder);
        config.validation_size = 3;
        config.test_limit = 2;
        scoped_splits loaded;
        ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
        const vae_data_splits &s = loaded.splits;
        EXPECT_EQ(s.train.count, 6);
        EXPECT_EQ(s.validation.count, 3);
        EXPECT_EQ(s.test.count, 2);
        EXPECT_EQ(s.train.rows, 3);
        EXPECT_EQ(s.train.cols, 3);
        EXPECT_EQ(s.train.dtype, VAE_DTYPE_U8);
        std::string all = image_payload(9, 3, 3);
        EXPECT_EQ(std::memcmp(s.validation.values, all.data() + 6 * 9, 3 * 9), 0);
        ASSERT_NE(s.validation.labels, nullptr);
        for (int i = 0; i < 3; ++i) EXPECT_EQ(s.validation.labels[i], ((6 + i) * 5 + 2) % 10);
        std::vector<float> scaled(9);
        vae_dataset_example_scaled(&s.validation, 1, scaled.data());
        for (int j = 0; j < 9; ++j) EXPECT_FLOAT_EQ(scaled[j], (float)(uint8_t)all[7 * 9 + j] / 255.0f) << j;
    }
}

TEST(DatasetLoad, IdxFolderLabelsOptionalTestImagesRequired) {
    std::string folder = vae_test::temporary_folder("dataset_load_idx_partial");
    vae_test::write_file(folder + "/train-images-idx3-ubyte", idx_images(4, 2, 2));
    vae_config config = data_config(folder);
    scoped_splits missing_test;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &missing_test.splits), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find("t10k-images-idx3-ubyte"), std::string::npos) << vae_last_error();

    vae_test::write_file(folder + "/t10k-images-idx3-ubyte", idx_images(2, 2, 2));
    scoped_splits no_labels;
    ASSERT_EQ(vae_data_load(&config, &no_labels.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(no_labels.splits.train.labels, nullptr);
    EXPECT_EQ(no_labels.splits.test.count, 2);

    // A label file that disagrees with its images is an error, not ignored.
    vae_test::write_file(folder + "/train-labels-idx1-ubyte", idx_labels(3));
    scoped_splits bad_labels;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &bad_labels.splits), VAE_ERROR_BAD_INPUT);
    EXPECT_NE(std::string(vae_last_error()).find("train-labels-idx1-ubyte"), std::string::npos) << vae_last_error();
}

TEST(DatasetLoad, MissingFolderOrFiles) {
    std::string base = vae_test::temporary_folder("dataset_load_missing");
    std::string missing = base + "/no-such-folder";
    vae_config config = data_config(missing);
    scoped_splits loaded;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &loaded.splits), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(missing), std::string::npos) << message;
    EXPECT_NE(message.find("train-images-idx3-ubyte"), std::string::npos) << message;
    EXPECT_NE(message.find("train.npy"), std::string::npos) << message;

    // An existing but empty folder.
    config = data_config(base);
    scoped_splits empty;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &empty.splits), VAE_ERROR_IO);
    message = vae_last_error();
    EXPECT_NE(message.find(base), std::string::npos) << message;
    EXPECT_NE(message.find("train.npy"), std::string::npos) << message;

    // A file instead of a folder.
    std::string file = base + "/a-file";
    vae_test::write_file(file, "x");
    config = data_config(file);
    scoped_splits not_folder;
    vae_error_clear();
    EXPECT_EQ(vae_data_load(&config, &not_folder.splits), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(file), std::string::npos) << vae_last_error();
}

// ---------------------------------------------------------------- slices

TEST(DatasetSlice, CopiesRangeAndChecksBounds) {
    std::string folder = vae_test::temporary_folder("dataset_slice");
    vae_test::write_file(folder + "/d.npy", npy_file(npy_dict("|u1", "(6, 2, 2)"), image_payload(6, 2, 2)));
    vae_test::write_file(folder + "/l.npy", npy_file(npy_dict("<i4", "(6,)"),
                                                      raw_bytes(std::vector<int32_t>{5, 4, 3, 2, 1, 0})));
    scoped_dataset source;
    ASSERT_EQ(load_npy(folder + "/d.npy", &source.dataset), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_dataset_load_npy_labels((folder + "/l.npy").c_str(), &source.dataset), VAE_OK);
    scoped_dataset slice;
    ASSERT_EQ(vae_dataset_slice(&source.dataset, 2, 3, &slice.dataset), VAE_OK) << vae_last_error();
    EXPECT_EQ(slice.dataset.count, 3);
    EXPECT_EQ(slice.dataset.rows, 2);
    EXPECT_NE(slice.dataset.values, source.dataset.values);
    EXPECT_EQ(std::memcmp(slice.dataset.values, (const char *)source.dataset.values + 8, 12), 0);
    EXPECT_EQ(std::vector<int32_t>(slice.dataset.labels, slice.dataset.labels + 3), (std::vector<int32_t>{3, 2, 1}));
    scoped_dataset bad;
    EXPECT_EQ(vae_dataset_slice(&source.dataset, 4, 3, &bad.dataset), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(vae_dataset_slice(&source.dataset, -1, 2, &bad.dataset), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(bad.dataset.values, nullptr);
}

// ---------------------------------------------------------------- shuffling

bool is_permutation_of_range(const std::vector<int32_t> &values) {
    std::vector<int32_t> sorted = values;
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i < sorted.size(); ++i)
        if (sorted[i] != (int32_t)i) return false;
    return true;
}

std::vector<int32_t> permutation(uint64_t seed, uint64_t epoch, long count) {
    std::vector<int32_t> values(count, -1);
    vae_permutation_for_epoch(seed, epoch, values.data(), count);
    return values;
}

TEST(DatasetPermutation, IsDeterministicPermutation) {
    for (long count : {1L, 2L, 7L, 1000L, 60000L}) {
        SCOPED_TRACE(count);
        std::vector<int32_t> first = permutation(1234, 3, count);
        EXPECT_TRUE(is_permutation_of_range(first));
        EXPECT_EQ(first, permutation(1234, 3, count));
        if (count >= 7) {
            EXPECT_NE(first, permutation(1234, 4, count)) << "epochs must differ";
            EXPECT_NE(first, permutation(1235, 3, count)) << "seeds must differ";
            std::vector<int32_t> identity(count);
            for (long i = 0; i < count; ++i) identity[i] = (int32_t)i;
            EXPECT_NE(first, identity);
        }
    }
}

// The documented stream: the first swap of Fisher-Yates puts position
// floor(word0 * count / 2^32) (Philox at subsequence (epoch, purpose 5, row
// 0), column 0) into the last slot, unless that draw was rejected (which has
// probability count / 2^32 and does not happen for these seeds).
TEST(DatasetPermutation, UsesDocumentedPhiloxStream) {
    const long count = 1000;
    for (uint64_t epoch : {0u, 1u, 17u}) {
        uint64_t seed = 0x9e3779b97f4a7c15ull + epoch;
        vae_philox_block block = vae_philox_block_at(seed, vae_philox_subsequence(epoch, 5, 0), 0);
        uint64_t product = (uint64_t)block.word[0] * (uint64_t)count;
        ASSERT_GE((uint32_t)product, (uint32_t)count) << "pick another seed: the first draw is rejected";
        int32_t expected_last = (int32_t)(product >> 32);
        EXPECT_EQ(permutation(seed, epoch, count)[count - 1], expected_last) << "epoch " << epoch;
    }
}

// A draw whose low product word falls below 2^32 mod count is rejected (it
// would make some results more likely) and the next word is used. With
// count = 2^20 + 1 about one seed in 4000 rejects its first word: find one.
TEST(DatasetPermutation, RejectsBiasedDraws) {
    const uint32_t count = (1u << 20) + 1;
    const uint32_t threshold = (uint32_t)(-count) % count;
    const uint64_t epoch = 2;
    for (uint64_t seed = 0; seed < 1000000; ++seed) {
        vae_philox_block block = vae_philox_block_at(seed, vae_philox_subsequence(epoch, 5, 0), 0);
        uint64_t first = (uint64_t)block.word[0] * count, second = (uint64_t)block.word[1] * count;
        if ((uint32_t)first >= threshold || (uint32_t)second < threshold) continue;
        ASSERT_NE(first >> 32, second >> 32) << "seed " << seed << " cannot tell the two draws apart";
        EXPECT_EQ(permutation(seed, epoch, count)[count - 1], (int32_t)(second >> 32)) << "seed " << seed;
        return;
    }
    FAIL() << "no seed with a rejected first draw found";
}

// Every ordering of three items is equally likely over many epochs; a biased
// shuffle (for example Sattolo's, or j drawn from [0, count)) fails this.
TEST(DatasetPermutation, AllOrdersEquallyLikely) {
    std::map<std::vector<int32_t>, int> seen;
    const int epochs = 12000;
    for (int epoch = 0; epoch < epochs; ++epoch) seen[permutation(42, (uint64_t)epoch, 3)]++;
    ASSERT_EQ(seen.size(), 6u);
    for (const auto &[order, times] : seen) EXPECT_NEAR(times, epochs / 6, 200) << order[0] << order[1] << order[2];
}

// ---------------------------------------------------------------- real data

TEST(DatasetFashionMnist, LoadsTheDebianPackage) {
    std::string folder = vae_test::fashion_mnist_folder();
    if (folder.empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)";
    vae_config config = data_config(folder);
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    const vae_data_splits &s = loaded.splits;
    EXPECT_EQ(s.train.count, 60000);
    EXPECT_EQ(s.test.count, 10000);
    EXPECT_EQ(s.validation.count, 0);
    EXPECT_EQ(s.train.dim, 784);
    EXPECT_EQ(s.train.rows, 28);
    EXPECT_EQ(s.train.cols, 28);
    EXPECT_EQ(s.train.dtype, VAE_DTYPE_U8);
    ASSERT_NE(s.train.labels, nullptr);
    ASSERT_NE(s.test.labels, nullptr);
    std::vector<int> per_class(10, 0);
    for (long i = 0; i < s.train.count; ++i) {
        ASSERT_GE(s.train.labels[i], 0);
        ASSERT_LE(s.train.labels[i], 9);
        per_class[s.train.labels[i]]++;
    }
    for (int c = 0; c < 10; ++c) EXPECT_EQ(per_class[c], 6000) << "class " << c;  // Fashion-MNIST is balanced
    for (long i = 0; i < s.test.count; ++i) ASSERT_TRUE(s.test.labels[i] >= 0 && s.test.labels[i] <= 9);

    // Compare against the raw bytes read independently through zlib.
    auto first_bytes = [](const std::string &path, size_t count) {
        std::string bytes(count, '\0');
        gzFile file = gzopen(path.c_str(), "rb");
        EXPECT_NE(file, nullptr);
        if (file == nullptr) return std::string();
        EXPECT_EQ(gzread(file, bytes.data(), (unsigned)count), (int)count);
        gzclose(file);
        return bytes;
    };
    std::string labels = first_bytes(folder + "/train-labels-idx1-ubyte.gz", 9);
    EXPECT_EQ(s.train.labels[0], (uint8_t)labels[8]);
    std::string images = first_bytes(folder + "/train-images-idx3-ubyte.gz", 16 + 784);
    EXPECT_EQ(std::memcmp(s.train.values, images.data() + 16, 784), 0);
    std::string test_labels = first_bytes(folder + "/t10k-labels-idx1-ubyte.gz", 9);
    EXPECT_EQ(s.test.labels[0], (uint8_t)test_labels[8]);
}

}  // namespace
