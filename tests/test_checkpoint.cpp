// Safetensors checkpoints: round trips, every kind of corruption, atomic
// writes, and a reader written in Python that knows nothing of our code.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

extern "C" {
#include "io/checkpoint.h"
}
#include "test_support.h"

namespace {

struct TensorSpec {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> values;
};

using vae_test::float_bits;
using vae_test::float_from_bits;

vae_status write_checkpoint(const std::string &path, const std::vector<TensorSpec> &specs,
                            const std::vector<std::pair<std::string, std::string>> &metadata = {}) {
    std::vector<vae_checkpoint_tensor> tensors(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
        std::memset(&tensors[i], 0, sizeof tensors[i]);
        std::snprintf(tensors[i].name, sizeof tensors[i].name, "%s", specs[i].name.c_str());
        tensors[i].rank = (int)specs[i].shape.size();
        for (size_t d = 0; d < specs[i].shape.size() && d < VAE_CHECKPOINT_MAX_RANK; ++d)
            tensors[i].shape[d] = specs[i].shape[d];
        tensors[i].data = specs[i].values.data();
    }
    std::vector<const char *> keys, values;
    for (const auto &entry : metadata) {
        keys.push_back(entry.first.c_str());
        values.push_back(entry.second.c_str());
    }
    return vae_checkpoint_write(path.c_str(), tensors.data(), (int)tensors.size(), keys.data(), values.data(),
                                (int)keys.size());
}

// Tensors covering the interesting float values and ranks 0, 1, 2 (and 4).
std::vector<TensorSpec> sample_tensors() {
    std::vector<TensorSpec> specs;
    specs.push_back({"encoder.0.weight", {2, 3}, {1.5f, -0.0f, 0.0f, 3.25f, -7.0f, 1e-3f}});
    specs.push_back({"special", {6},
                     {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                      std::numeric_limits<float>::denorm_min(), -float_from_bits(0x007fffffu),
                      std::numeric_limits<float>::max(), float_from_bits(0x7fc00001u) /* a NaN payload */}});
    specs.push_back({"scalar", {}, {42.0f}});
    specs.push_back({"empty", {0, 5}, {}});
    specs.push_back({"four", {1, 2, 1, 2}, {0.1f, 0.2f, 0.3f, 0.4f}});
    return specs;
}

const std::vector<std::pair<std::string, std::string>> sample_metadata = {
    {"step", "1234"}, {"config", "[model]\nlatent_dim = 20\nname = \"quoted\" \\ back"}, {"seed", "7"}};

void expect_matches(const vae_checkpoint &checkpoint, const std::vector<TensorSpec> &specs) {
    ASSERT_EQ(checkpoint.tensor_count, (int)specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
        const vae_checkpoint_tensor &tensor = checkpoint.tensors[i];  // file order is the written order
        EXPECT_EQ(std::string(tensor.name), specs[i].name);
        ASSERT_EQ(tensor.rank, (int)specs[i].shape.size()) << specs[i].name;
        for (size_t d = 0; d < specs[i].shape.size(); ++d) EXPECT_EQ(tensor.shape[d], specs[i].shape[d]);
        for (size_t k = 0; k < specs[i].values.size(); ++k)
            EXPECT_EQ(float_bits(tensor.data[k]), float_bits(specs[i].values[k])) << specs[i].name << "[" << k << "]";
    }
}

std::string little_endian_u64(uint64_t value) {
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = (char)(value >> (8 * i));
    return bytes;
}

std::string float_bytes(const std::vector<float> &values) {
    std::string bytes;
    for (float value : values) {
        uint32_t bits = float_bits(value);
        for (int i = 0; i < 4; ++i) bytes.push_back((char)(bits >> (8 * i)));
    }
    return bytes;
}

// A file from a hand-written header; "@CRC@" becomes the data's true checksum.
std::string craft_file(std::string header, const std::string &data) {
    char checksum[32];
    std::snprintf(checksum, sizeof checksum, "crc32:%08lx",
                  crc32(0L, reinterpret_cast<const Bytef *>(data.data()), (uInt)data.size()));
    size_t at = header.find("@CRC@");
    if (at != std::string::npos) header.replace(at, 5, checksum);
    return little_endian_u64(header.size()) + header + data;
}

vae_status parse_bytes(const std::string &bytes, vae_checkpoint *checkpoint, const char *name = "crafted.safetensors") {
    return vae_checkpoint_parse(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), name, checkpoint);
}

// Expects the crafted file to be refused with a message naming the file and containing `expected`.
void expect_refused(const std::string &bytes, const std::string &expected) {
    vae_checkpoint checkpoint;
    vae_status status = parse_bytes(bytes, &checkpoint);
    EXPECT_EQ(status, VAE_ERROR_BAD_INPUT) << "expected refusal: " << expected;
    std::string message = vae_last_error();
    EXPECT_NE(message.find("crafted.safetensors: "), std::string::npos) << message;
    EXPECT_NE(message.find(expected), std::string::npos) << "message: " << message << "\nexpected: " << expected;
    EXPECT_EQ(checkpoint.tensors, nullptr);
    EXPECT_EQ(checkpoint.storage_, nullptr);
    vae_checkpoint_free(&checkpoint);
}

const std::string two_tensor_data = float_bytes({1, 2, 3, 4, 5, 6});  // 24 bytes

std::string two_tensor_header(const std::string &a, const std::string &b,
                              const std::string &metadata = R"({"checksum":"@CRC@"})") {
    return "{\"__metadata__\":" + metadata + ",\"a\":" + a + ",\"b\":" + b + "}";
}

std::vector<std::string> folder_entries(const std::string &folder) {
    std::vector<std::string> names;
    for (const auto &entry : std::filesystem::directory_iterator(folder)) names.push_back(entry.path().filename());
    return names;
}

}  // namespace

TEST(Checkpoint, RoundTripKeepsNamesShapesBitsAndMetadata) {
    std::string folder = vae_test::temporary_folder("checkpoint_round_trip");
    std::string path = folder + "/model.safetensors";
    std::vector<TensorSpec> specs = sample_tensors();
    ASSERT_EQ(write_checkpoint(path, specs, sample_metadata), VAE_OK) << vae_last_error();

    vae_checkpoint checkpoint;
    ASSERT_EQ(vae_checkpoint_read(path.c_str(), &checkpoint), VAE_OK) << vae_last_error();
    expect_matches(checkpoint, specs);
    for (const auto &entry : sample_metadata) {
        const char *value = vae_checkpoint_metadata(&checkpoint, entry.first.c_str());
        ASSERT_NE(value, nullptr) << entry.first;
        EXPECT_EQ(std::string(value), entry.second);
    }
    ASSERT_NE(vae_checkpoint_metadata(&checkpoint, "format"), nullptr);
    EXPECT_STREQ(vae_checkpoint_metadata(&checkpoint, "format"), "vae-engine-1");
    EXPECT_EQ(vae_checkpoint_metadata(&checkpoint, "absent"), nullptr);
    const vae_checkpoint_tensor *scalar = vae_checkpoint_find(&checkpoint, "scalar");
    ASSERT_NE(scalar, nullptr);
    EXPECT_EQ(scalar->rank, 0);
    EXPECT_EQ(scalar->data[0], 42.0f);
    EXPECT_EQ(vae_checkpoint_find(&checkpoint, "missing"), nullptr);
    vae_checkpoint_free(&checkpoint);
    vae_checkpoint_free(&checkpoint);  // idempotent
    EXPECT_EQ(checkpoint.tensor_count, 0);
}

TEST(Checkpoint, FileLayoutIsSafetensors) {
    std::string folder = vae_test::temporary_folder("checkpoint_layout");
    std::string path = folder + "/layout.safetensors";
    ASSERT_EQ(write_checkpoint(path, {{"w", {2}, {1.0f, -2.0f}}}, {{"step", "3"}}), VAE_OK) << vae_last_error();
    std::string bytes = vae_test::read_file(path);
    ASSERT_GE(bytes.size(), 16u);
    uint64_t header_length = 0;
    for (int i = 7; i >= 0; --i) header_length = header_length << 8 | (uint8_t)bytes[i];
    EXPECT_EQ(header_length % 8, 0u);
    ASSERT_EQ(bytes.size(), 8 + header_length + 8);
    std::string header = bytes.substr(8, header_length);
    EXPECT_EQ(header.front(), '{');
    EXPECT_NE(header.find("\"dtype\":\"F32\""), std::string::npos) << header;
    EXPECT_NE(header.find("\"data_offsets\":[0,8]"), std::string::npos) << header;
    EXPECT_NE(header.find("\"format\":\"vae-engine-1\""), std::string::npos) << header;
    // Data section: explicit little-endian float32.
    EXPECT_EQ(bytes.substr(8 + header_length), float_bytes({1.0f, -2.0f}));
    char checksum[32];
    std::snprintf(checksum, sizeof checksum, "\"checksum\":\"crc32:%08lx\"",
                  crc32(0L, reinterpret_cast<const Bytef *>(bytes.data() + 8 + header_length), 8));
    EXPECT_NE(header.find(checksum), std::string::npos) << header;
}

TEST(Checkpoint, EmptyCheckpointRoundTrips) {
    std::string folder = vae_test::temporary_folder("checkpoint_empty");
    std::string path = folder + "/empty.safetensors";
    ASSERT_EQ(write_checkpoint(path, {}), VAE_OK) << vae_last_error();
    vae_checkpoint checkpoint;
    ASSERT_EQ(vae_checkpoint_read(path.c_str(), &checkpoint), VAE_OK) << vae_last_error();
    EXPECT_EQ(checkpoint.tensor_count, 0);
    vae_checkpoint_free(&checkpoint);
}

TEST(Checkpoint, FreeIsSafeOnZeroedStruct) {
    vae_checkpoint checkpoint;
    std::memset(&checkpoint, 0, sizeof checkpoint);
    vae_checkpoint_free(&checkpoint);
    vae_checkpoint_free(nullptr);
    SUCCEED();
}

TEST(Checkpoint, WriterRefusesBadArguments) {
    std::string folder = vae_test::temporary_folder("checkpoint_bad_arguments");
    std::string path = folder + "/bad.safetensors";
    EXPECT_EQ(write_checkpoint(path, {{"x", {1, 1, 1, 1, 1}, {1.0f}}}), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(write_checkpoint(path, {{"x", {-1}, {}}}), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(write_checkpoint(path, {{"", {1}, {1.0f}}}), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(write_checkpoint(path, {{"__metadata__", {1}, {1.0f}}}), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(write_checkpoint(path, {{"x", {1}, {1.0f}}, {"x", {1}, {2.0f}}}), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(vae_last_error()).find("twice"), std::string::npos) << vae_last_error();
    EXPECT_EQ(write_checkpoint(path, {{"x", {3}, {}}}), VAE_ERROR_INVALID_ARGUMENT);  // no data
    EXPECT_EQ(write_checkpoint(path, {{"x", {1}, {1.0f}}}, {{"checksum", "0"}}), VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_EQ(write_checkpoint(path, {{"x", {1}, {1.0f}}}, {{std::string(64, 'k'), "0"}}),
              VAE_ERROR_INVALID_ARGUMENT);
    EXPECT_FALSE(std::filesystem::exists(path));
    EXPECT_TRUE(folder_entries(folder).empty());
}

// ------------------------------------------------------------------ corruption

class CheckpointCorruption : public ::testing::Test {
protected:
    void SetUp() override {
        std::string folder = vae_test::temporary_folder("checkpoint_corruption");
        std::string path = folder + "/good.safetensors";
        specs_ = {{"enc.weight", {2, 3}, {1, 2, 3, 4, 5, 6}}, {"enc.bias", {3}, {-1, -2, -3}}, {"s", {}, {0.5f}}};
        ASSERT_EQ(write_checkpoint(path, specs_, {{"step", "9"}}), VAE_OK) << vae_last_error();
        bytes_ = vae_test::read_file(path);
        for (int i = 7; i >= 0; --i) header_length_ = header_length_ << 8 | (uint8_t)bytes_[i];
        ASSERT_LT(8 + header_length_, bytes_.size());
    }
    std::vector<TensorSpec> specs_;
    std::string bytes_;
    uint64_t header_length_ = 0;
};

TEST_F(CheckpointCorruption, EveryTruncationFails) {
    vae_checkpoint checkpoint;
    ASSERT_EQ(parse_bytes(bytes_, &checkpoint), VAE_OK) << vae_last_error();
    vae_checkpoint_free(&checkpoint);
    for (size_t length = 0; length < bytes_.size(); ++length) {
        // An exact-size heap copy so that AddressSanitizer sees any over-read.
        std::vector<uint8_t> prefix(bytes_.begin(), bytes_.begin() + (std::ptrdiff_t)length);
        uint8_t *copy = length ? new uint8_t[length] : nullptr;
        if (length) std::memcpy(copy, prefix.data(), length);
        EXPECT_EQ(vae_checkpoint_parse(copy, length, "truncated", &checkpoint), VAE_ERROR_BAD_INPUT)
            << "length " << length;
        EXPECT_EQ(std::string(vae_last_error()).rfind("truncated: ", 0), 0u) << vae_last_error();
        vae_checkpoint_free(&checkpoint);
        delete[] copy;
    }
}

TEST_F(CheckpointCorruption, EveryBitFlipInTheDataIsCaught) {
    for (size_t byte = 8 + header_length_; byte < bytes_.size(); ++byte) {
        for (int bit = 0; bit < 8; ++bit) {
            std::string flipped = bytes_;
            flipped[byte] = (char)(flipped[byte] ^ (1 << bit));
            vae_checkpoint checkpoint;
            EXPECT_EQ(parse_bytes(flipped, &checkpoint), VAE_ERROR_BAD_INPUT) << "byte " << byte << " bit " << bit;
            EXPECT_NE(std::string(vae_last_error()).find("checksum mismatch: the file is corrupted"),
                      std::string::npos)
                << vae_last_error();
            vae_checkpoint_free(&checkpoint);
        }
    }
}

TEST_F(CheckpointCorruption, BitFlipsInTheHeaderFailOrKeepTheMeaning) {
    int refused = 0, accepted = 0;
    for (size_t byte = 0; byte < 8 + header_length_; ++byte) {
        for (int bit = 0; bit < 8; ++bit) {
            std::string flipped = bytes_;
            flipped[byte] = (char)(flipped[byte] ^ (1 << bit));
            vae_checkpoint checkpoint;
            vae_status status = parse_bytes(flipped, &checkpoint);
            if (status != VAE_OK) {
                EXPECT_EQ(status, VAE_ERROR_BAD_INPUT);
                ++refused;
                continue;
            }
            // Still valid: a flip inside a name or a metadata string, never in the numbers.
            ++accepted;
            ASSERT_EQ(checkpoint.tensor_count, (int)specs_.size()) << "byte " << byte << " bit " << bit;
            for (size_t i = 0; i < specs_.size(); ++i) {
                ASSERT_EQ(checkpoint.tensors[i].rank, (int)specs_[i].shape.size());
                for (size_t d = 0; d < specs_[i].shape.size(); ++d)
                    EXPECT_EQ(checkpoint.tensors[i].shape[d], specs_[i].shape[d]);
                for (size_t k = 0; k < specs_[i].values.size(); ++k)
                    EXPECT_EQ(checkpoint.tensors[i].data[k], specs_[i].values[k]);
            }
            vae_checkpoint_free(&checkpoint);
        }
    }
    EXPECT_GT(refused, accepted) << "most header flips must be refused";
}

TEST(CheckpointCrafted, ReferenceFileParses) {
    // The helper itself produces a valid file, so each refusal below is due to its one defect.
    std::string file = craft_file(two_tensor_header(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})",
                                                    R"({"dtype":"F32","shape":[2],"data_offsets":[16,24]})"),
                                  two_tensor_data);
    vae_checkpoint checkpoint;
    ASSERT_EQ(parse_bytes(file, &checkpoint), VAE_OK) << vae_last_error();
    ASSERT_EQ(checkpoint.tensor_count, 2);
    EXPECT_EQ(vae_checkpoint_find(&checkpoint, "b")->data[1], 6.0f);
    vae_checkpoint_free(&checkpoint);

    // Tensors out of file order and an unpadded header are fine too.
    file = craft_file(two_tensor_header(R"({"dtype":"F32","shape":[2],"data_offsets":[16,24]})",
                                        R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})"),
                      two_tensor_data);
    ASSERT_EQ(parse_bytes(file, &checkpoint), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_checkpoint_find(&checkpoint, "a")->data[0], 5.0f);
    EXPECT_EQ(vae_checkpoint_find(&checkpoint, "b")->data[3], 4.0f);
    vae_checkpoint_free(&checkpoint);
}

TEST(CheckpointCrafted, BadHeaderLengths) {
    std::string good = craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})",
                                                    R"({"dtype":"F32","shape":[2],"data_offsets":[16,24]})"),
                                  two_tensor_data);
    std::string rest = good.substr(8);
    expect_refused(little_endian_u64(UINT64_MAX) + rest, "header length");
    expect_refused(little_endian_u64((uint64_t)200 << 20) + rest, "header length");
    expect_refused(little_endian_u64(rest.size() + 1) + rest, "header length");
    expect_refused(little_endian_u64(1) + rest, "header length");
    expect_refused(little_endian_u64(0) + rest, "header length");
    expect_refused(std::string("\x10\0\0", 3), "too short");
}

TEST(CheckpointCrafted, MalformedJson) {
    expect_refused(craft_file("{\"a\": ", ""), "not valid JSON");
    expect_refused(craft_file("[1, 2, 3]", ""), "not a JSON object");
    expect_refused(craft_file(R"({"__metadata__":{"checksum":"@CRC@"}} x)", ""), "after the header JSON");
    expect_refused(craft_file(std::string("{}\0\0", 4), ""), "after the header JSON");
    std::string deep(5000, '[');
    expect_refused(craft_file(deep, ""), "not valid JSON");
}

TEST(CheckpointCrafted, WrongDtypeNamesTensorAndDtype) {
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F16","shape":[8],"data_offsets":[0,16]})",
                                                R"({"dtype":"F32","shape":[2],"data_offsets":[16,24]})"),
                              two_tensor_data),
                   "tensor a: dtype F16");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})",
                                                R"({"dtype":"f32","shape":[2],"data_offsets":[16,24]})"),
                              two_tensor_data),
                   "tensor b: dtype f32");
    expect_refused(craft_file(two_tensor_header(R"({"shape":[4],"data_offsets":[0,16]})",
                                                R"({"dtype":"F32","shape":[2],"data_offsets":[16,24]})"),
                              two_tensor_data),
                   "dtype");
}

TEST(CheckpointCrafted, ShapesAndOffsets) {
    const char *b = R"({"dtype":"F32","shape":[2],"data_offsets":[16,24]})";
    // shape says 12 bytes, offsets span 16
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[3],"data_offsets":[0,16]})", b),
                              two_tensor_data),
                   "shape needs 12 bytes");
    // overlap
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})",
                                                R"({"dtype":"F32","shape":[4],"data_offsets":[8,24]})"),
                              two_tensor_data),
                   "overlaps");
    // gap at the start, and a gap at the end
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[3],"data_offsets":[4,16]})", b),
                              two_tensor_data),
                   "unused bytes");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[3],"data_offsets":[0,12]})",
                                                R"({"dtype":"F32","shape":[2],"data_offsets":[12,20]})"),
                              two_tensor_data),
                   "cover 20 of 24");
    // past the end
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})",
                                                R"({"dtype":"F32","shape":[4],"data_offsets":[16,32]})"),
                              two_tensor_data),
                   "data_offsets");
    // negative, reversed, non-integer, non-numeric, wrong arity
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[-16,0]})", b),
                              two_tensor_data),
                   "data_offsets");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[16,0]})", b),
                              two_tensor_data),
                   "data_offsets");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})", b),
                              two_tensor_data),
                   "shape[0]");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[2,2.5],"data_offsets":[0,16]})", b),
                              two_tensor_data),
                   "shape[1]");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":["4"],"data_offsets":[0,16]})", b),
                              two_tensor_data),
                   "shape[0]");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[1e400],"data_offsets":[0,16]})", b),
                              two_tensor_data),
                   "shape[0]");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[0,16,24]})", b),
                              two_tensor_data),
                   "data_offsets");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[4],"data_offsets":[0.5,16]})", b),
                              two_tensor_data),
                   "data_offsets");
    // rank 5, and a product that overflows 64 bits
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[1,1,1,1,4],"data_offsets":[0,16]})", b),
                              two_tensor_data),
                   "rank 5");
    expect_refused(
        craft_file(two_tensor_header(
                       R"({"dtype":"F32","shape":[1099511627775,1099511627775,1099511627775,4],"data_offsets":[0,16]})",
                       b),
                   two_tensor_data),
        "shape needs");
    expect_refused(craft_file(two_tensor_header(R"({"dtype":"F32","shape":[1099511627776],"data_offsets":[0,16]})", b),
                              two_tensor_data),
                   "shape[0]");
    // not an object, duplicate name, long name
    expect_refused(craft_file(two_tensor_header("[1]", b), two_tensor_data), "tensor a: expected an object");
    expect_refused(craft_file(R"({"__metadata__":{"checksum":"@CRC@"},"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"a":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                              two_tensor_data),
                   "appears twice");
    std::string long_name(128, 'n');
    expect_refused(craft_file("{\"__metadata__\":{\"checksum\":\"@CRC@\"},\"" + long_name +
                                  R"(":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}})",
                              two_tensor_data),
                   "name longer than 127");
}

TEST(CheckpointCrafted, Metadata) {
    const char *a = R"({"dtype":"F32","shape":[4],"data_offsets":[0,16]})";
    const char *b = R"({"dtype":"F32","shape":[2],"data_offsets":[16,24]})";
    expect_refused(craft_file(two_tensor_header(a, b, R"({"step":"1"})"), two_tensor_data), "no checksum");
    expect_refused(craft_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
                              two_tensor_data),
                   "no checksum");
    expect_refused(craft_file(two_tensor_header(a, b, R"({"checksum":"@CRC@","step":1})"), two_tensor_data),
                   "metadata step: value must be a string");
    expect_refused(craft_file(two_tensor_header(a, b, R"({"checksum":"@CRC@","x":null})"), two_tensor_data),
                   "value must be a string");
    expect_refused(craft_file(two_tensor_header(a, b, R"("@CRC@")"), two_tensor_data), "__metadata__ must be an object");
    expect_refused(craft_file(two_tensor_header(a, b, R"({"checksum":"crc32:0000000g"})"), two_tensor_data),
                   "checksum");
    expect_refused(craft_file(two_tensor_header(a, b, R"({"checksum":"md5:00000000"})"), two_tensor_data), "checksum");
    expect_refused(craft_file(two_tensor_header(a, b, R"({"checksum":"crc32:00000000"})"), two_tensor_data),
                   "checksum mismatch");
    expect_refused(craft_file(two_tensor_header(a, b, R"({"checksum":"@CRC@","format":"other-2"})"), two_tensor_data),
                   "format other-2");
    expect_refused(craft_file(two_tensor_header(a, b, R"({"checksum":"@CRC@","k":"1","k":"2"})"), two_tensor_data),
                   "metadata key k appears twice");
    expect_refused(craft_file(two_tensor_header(a, b, "{\"checksum\":\"@CRC@\",\"" + std::string(64, 'k') + "\":\"1\"}"),
                              two_tensor_data),
                   "metadata key longer");
}

TEST(CheckpointRead, MissingFileIsAnIoError) {
    std::string folder = vae_test::temporary_folder("checkpoint_missing");
    vae_checkpoint checkpoint;
    std::string path = folder + "/nothing.safetensors";
    EXPECT_EQ(vae_checkpoint_read(path.c_str(), &checkpoint), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(path), std::string::npos) << vae_last_error();
    vae_checkpoint_free(&checkpoint);
    // A folder is not a checkpoint either.
    EXPECT_NE(vae_checkpoint_read(folder.c_str(), &checkpoint), VAE_OK);
    vae_checkpoint_free(&checkpoint);
}

// ------------------------------------------------------------------ atomicity

TEST(CheckpointAtomic, MissingFolderIsAnIoError) {
    std::string folder = vae_test::temporary_folder("checkpoint_no_folder");
    std::string path = folder + "/does/not/exist/model.safetensors";
    EXPECT_EQ(write_checkpoint(path, sample_tensors()), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find(folder + "/does/not/exist/model.safetensors"), std::string::npos) << message;
    EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
}

TEST(CheckpointAtomic, SuccessLeavesNoTemporaryFile) {
    std::string folder = vae_test::temporary_folder("checkpoint_no_tmp");
    std::string path = folder + "/model.safetensors";
    ASSERT_EQ(write_checkpoint(path, sample_tensors(), sample_metadata), VAE_OK) << vae_last_error();
    ASSERT_EQ(write_checkpoint(path, {{"replaced", {1}, {9.0f}}}), VAE_OK) << vae_last_error();  // over the old one
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"model.safetensors"});
    vae_checkpoint checkpoint;
    ASSERT_EQ(vae_checkpoint_read(path.c_str(), &checkpoint), VAE_OK) << vae_last_error();
    expect_matches(checkpoint, {{"replaced", {1}, {9.0f}}});
    vae_checkpoint_free(&checkpoint);
}

TEST(CheckpointAtomic, FailedWriteLeavesOldCheckpointIntact) {
    // The temporary file cannot be created because a folder is in its place;
    // this fails even for root, unlike a read-only folder.
    std::string folder = vae_test::temporary_folder("checkpoint_blocked_tmp");
    std::string path = folder + "/model.safetensors";
    std::vector<TensorSpec> old_specs = sample_tensors();
    ASSERT_EQ(write_checkpoint(path, old_specs), VAE_OK) << vae_last_error();
    std::string old_bytes = vae_test::read_file(path);
    std::string temporary = path + ".tmp-" + std::to_string((long)getpid());
    ASSERT_TRUE(std::filesystem::create_directory(temporary));
    EXPECT_EQ(write_checkpoint(path, {{"new", {1}, {1.0f}}}), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find(temporary), std::string::npos) << vae_last_error();
    EXPECT_EQ(vae_test::read_file(path), old_bytes);
    std::filesystem::remove(temporary);
}

TEST(CheckpointAtomic, DiskFullIsReportedAndCleanedUp) {
    if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full on this system";
    std::string folder = vae_test::temporary_folder("checkpoint_disk_full");
    std::string path = folder + "/model.safetensors";
    ASSERT_EQ(write_checkpoint(path, {{"old", {1}, {3.0f}}}), VAE_OK) << vae_last_error();
    std::string old_bytes = vae_test::read_file(path);
    // The temporary name points at /dev/full: every write fails with ENOSPC.
    std::string temporary = path + ".tmp-" + std::to_string((long)getpid());
    std::filesystem::create_symlink("/dev/full", temporary);
    std::vector<float> big(100000, 1.0f);
    EXPECT_EQ(write_checkpoint(path, {{"big", {100000}, big}}), VAE_ERROR_IO);
    std::string message = vae_last_error();
    EXPECT_NE(message.find("disk full"), std::string::npos) << message;
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_FALSE(std::filesystem::is_symlink(temporary)) << "temporary file left behind";
    EXPECT_EQ(vae_test::read_file(path), old_bytes);
}

TEST(CheckpointAtomic, ReadOnlyFolderLeavesOldCheckpointIntact) {
    if (geteuid() == 0) GTEST_SKIP() << "running as root: permissions are not enforced";
    std::string folder = vae_test::temporary_folder("checkpoint_read_only");
    std::string path = folder + "/model.safetensors";
    ASSERT_EQ(write_checkpoint(path, sample_tensors()), VAE_OK) << vae_last_error();
    std::string old_bytes = vae_test::read_file(path);
    ASSERT_EQ(chmod(folder.c_str(), 0555), 0);
    vae_status status = write_checkpoint(path, {{"new", {1}, {1.0f}}});
    std::string message = vae_last_error();
    chmod(folder.c_str(), 0755);
    EXPECT_EQ(status, VAE_ERROR_IO);
    EXPECT_NE(message.find(folder), std::string::npos) << message;
    EXPECT_EQ(vae_test::read_file(path), old_bytes);
    EXPECT_EQ(folder_entries(folder), std::vector<std::string>{"model.safetensors"});
}

// ------------------------------------------------------------------ Python

TEST(CheckpointPython, IndependentReaderAgrees) {
    const char *python = "/usr/bin/python3";
    if (access(python, X_OK) != 0 ||
        std::system("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "/usr/bin/python3 with torch and numpy is not available";
    std::string folder = vae_test::temporary_folder("checkpoint_python");
    std::string path = folder + "/model.safetensors";
    // Values the script recomputes: (i % 17) * 0.5 - 4, exact in float32.
    auto values = [](size_t count, size_t offset) {
        std::vector<float> out(count);
        for (size_t i = 0; i < count; ++i) out[i] = (float)((i + offset) % 17) * 0.5f - 4.0f;
        return out;
    };
    ASSERT_EQ(write_checkpoint(path, {{"encoder.0.weight", {4, 3}, values(12, 0)}, {"encoder.0.bias", {4}, values(4, 5)},
                                      {"step_scalar", {}, values(1, 9)}},
                               {{"step", "77"}}),
              VAE_OK)
        << vae_last_error();
    std::string script = R"PY(
import json, struct, sys, zlib
import numpy as np
import torch
path = sys.argv[1]
with open(path, 'rb') as f:
    raw = f.read()
(n,) = struct.unpack('<Q', raw[:8])
header = json.loads(raw[8:8 + n].decode('utf-8'))
data = raw[8 + n:]
meta = header.pop('__metadata__')
assert meta['step'] == '77', meta
assert meta['checksum'] == 'crc32:%08x' % (zlib.crc32(data) & 0xffffffff), meta
expect = {'encoder.0.weight': ([4, 3], 0), 'encoder.0.bias': ([4], 5), 'step_scalar': ([], 9)}
assert set(header) == set(expect), header.keys()
for name, (shape, offset) in expect.items():
    entry = header[name]
    assert entry['dtype'] == 'F32' and entry['shape'] == shape, entry
    begin, end = entry['data_offsets']
    array = np.frombuffer(data[begin:end], dtype='<f4').reshape(shape)
    count = int(np.prod(shape))
    want = ((np.arange(count) + offset) % 17).astype(np.float32) * np.float32(0.5) - np.float32(4)
    tensor = torch.from_numpy(array.copy())
    assert torch.equal(tensor.flatten(), torch.from_numpy(want)), (name, tensor, want)
print('python reader ok')
)PY";
    std::string script_path = folder + "/read.py";
    vae_test::write_file(script_path, script);
    std::string command = std::string(python) + " " + script_path + " " + path;
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
}
