// TensorBoard event files: the CRC32C (Intel ISA-L) against the standard
// check value and a bitwise reference, the TFRecord framing, and the Events
// written, read back with the protobuf-c code generated from the same .proto.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "base/error.h"
#include "io/event_file.h"
#include "io/record_framing.h"
#include "tensorboard_event.pb-c.h"
}
#include "test_support.h"

namespace {

// CRC32C bit by bit (reflected polynomial 0x82F63B78, initial value and final
// xor 0xFFFFFFFF): slow and plain, the reference for ISA-L's.
uint32_t reference_crc32c(const unsigned char *bytes, size_t length) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < length; ++i) {
        crc ^= bytes[i];
        for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return ~crc;
}

uint32_t unmask(uint32_t masked) {
    uint32_t rotated = masked - 0xa282ead8u;
    return (rotated >> 17) | (rotated << 15);
}

uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t le64(const unsigned char *p) {
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = value << 8 | p[i];
    return value;
}

// The records of a TFRecord file, each checked against its two CRCs.
std::vector<std::string> read_records(const std::string &bytes) {
    std::vector<std::string> records;
    size_t at = 0;
    const unsigned char *data = reinterpret_cast<const unsigned char *>(bytes.data());
    while (at < bytes.size()) {
        EXPECT_GE(bytes.size() - at, 12u) << "a cut record header at byte " << at;
        if (bytes.size() - at < 12) break;
        uint64_t length = le64(data + at);
        EXPECT_EQ(unmask(le32(data + at + 8)), reference_crc32c(data + at, 8)) << "length CRC at byte " << at;
        EXPECT_GE(bytes.size() - at - 12, length + 4) << "a cut record at byte " << at;
        if (bytes.size() - at - 12 < length + 4) break;
        EXPECT_EQ(unmask(le32(data + at + 12 + length)), reference_crc32c(data + at + 12, length))
            << "data CRC at byte " << at;
        records.emplace_back(bytes, at + 12, length);
        at += 12 + length + 4;
    }
    return records;
}

Vae__Tensorboard__Event *unpack(const std::string &record) {
    return vae__tensorboard__event__unpack(nullptr, record.size(), reinterpret_cast<const uint8_t *>(record.data()));
}

std::string only_event_file(const std::string &folder) {
    std::string found;
    for (const auto &entry : std::filesystem::directory_iterator(folder)) {
        std::string name = entry.path().filename().string();
        if (name.rfind("events.out.tfevents.", 0) == 0) {
            EXPECT_TRUE(found.empty()) << "two event files in " << folder;
            found = entry.path().string();
        }
    }
    return found;
}

TEST(Crc32c, StandardCheckValue) {
    // The check value of every CRC catalogue for CRC-32C (iSCSI, Castagnoli).
    EXPECT_EQ(vae_crc32c("123456789", 9), 0xE3069283u);
    EXPECT_EQ(vae_crc32c("", 0), 0u);
}

TEST(Crc32c, MatchesTheBitwiseReferenceOnRandomLengths) {
    std::mt19937 generator(5);
    std::vector<unsigned char> bytes(70000);
    for (unsigned char &byte : bytes) byte = (unsigned char)generator();
    for (size_t length : {1ul, 3ul, 7ul, 8ul, 15ul, 16ul, 63ul, 64ul, 255ul, 1000ul, 4097ul, 70000ul})
        EXPECT_EQ(vae_crc32c(bytes.data(), length), reference_crc32c(bytes.data(), length)) << length << " bytes";
    // Unaligned starts too.
    for (size_t offset = 1; offset < 8; ++offset)
        EXPECT_EQ(vae_crc32c(bytes.data() + offset, 333), reference_crc32c(bytes.data() + offset, 333));
}

TEST(RecordFraming, MaskRotatesAndAddsTheConstant) {
    EXPECT_EQ(vae_record_masked_crc(0u), 0xa282ead8u);
    EXPECT_EQ(vae_record_masked_crc(1u), 0xa282ead8u + (1u << 17));
    EXPECT_EQ(vae_record_masked_crc(1u << 15), 0xa282ead8u + 1u);
    for (uint32_t crc : {0x12345678u, 0xE3069283u, 0xFFFFFFFFu}) EXPECT_EQ(unmask(vae_record_masked_crc(crc)), crc);
}

TEST(RecordFraming, HeaderIsLittleEndianLengthAndItsMaskedCrc) {
    unsigned char header[VAE_RECORD_HEADER_BYTES];
    vae_record_header(0x0102030405ull, header);
    const unsigned char length[8] = {0x05, 0x04, 0x03, 0x02, 0x01, 0, 0, 0};
    EXPECT_EQ(std::memcmp(header, length, 8), 0);
    EXPECT_EQ(le32(header + 8), vae_record_masked_crc(reference_crc32c(length, 8)));
    unsigned char footer[VAE_RECORD_FOOTER_BYTES];
    vae_record_footer("abc", 3, footer);
    EXPECT_EQ(le32(footer), vae_record_masked_crc(reference_crc32c(reinterpret_cast<const unsigned char *>("abc"), 3)));
}

TEST(RecordFraming, WritesRecordsThatReadBack) {
    std::string folder = vae_test::temporary_folder("record_framing");
    std::string path = folder + "/records";
    FILE *stream = std::fopen(path.c_str(), "wb");
    ASSERT_NE(stream, nullptr);
    EXPECT_EQ(vae_record_write(stream, path.c_str(), "first", 5), VAE_OK) << vae_last_error();
    EXPECT_EQ(vae_record_write(stream, path.c_str(), "", 0), VAE_OK) << vae_last_error();
    // Flushed at once: the bytes are in the file before it is closed.
    EXPECT_EQ(vae_test::read_file(path).size(), (12u + 5 + 4) + (12u + 4));
    std::fclose(stream);
    std::vector<std::string> records = read_records(vae_test::read_file(path));
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records[0], "first");
    EXPECT_EQ(records[1], "");
}

TEST(RecordFraming, AFailedWriteIsReportedNamingTheFile) {
    FILE *stream = std::fopen("/dev/full", "wb");
    if (!stream) GTEST_SKIP() << "no /dev/full here";
    EXPECT_EQ(vae_record_write(stream, "/dev/full", "data", 4), VAE_ERROR_IO);
    EXPECT_NE(std::string(vae_last_error()).find("/dev/full"), std::string::npos) << vae_last_error();
    std::fclose(stream);
}

TEST(EventFile, FirstEventNamesTheFormatThenScalarsAndImages) {
    std::string folder = vae_test::temporary_folder("event_file");
    vae_event_file *events = nullptr;
    ASSERT_EQ(vae_event_file_open(&events, folder.c_str()), VAE_OK) << vae_last_error();
    std::string path = vae_event_file_path(events);
    EXPECT_EQ(path, only_event_file(folder));
    const vae_event_scalar scalars[] = {{"train/loss", 123.25}, {"train/lr", 1e-3}};
    EXPECT_EQ(vae_event_file_write_scalars(events, 7, scalars, 2), VAE_OK) << vae_last_error();
    const unsigned char png[] = {0x89, 'P', 'N', 'G', 1, 2, 3};
    EXPECT_EQ(vae_event_file_write_image(events, 9, "images/samples", png, sizeof png, 30, 20, 1), VAE_OK);
    EXPECT_EQ(vae_event_file_write_image(events, 9, "bad", png, sizeof png, 30, 20, 2), VAE_ERROR_INVALID_ARGUMENT);
    // Each event is in the file before it is closed.
    std::vector<std::string> records = read_records(vae_test::read_file(path));
    EXPECT_EQ(vae_event_file_close(events), VAE_OK);
    ASSERT_EQ(records.size(), 3u);

    Vae__Tensorboard__Event *first = unpack(records[0]);
    ASSERT_NE(first, nullptr);
    ASSERT_EQ(first->what_case, VAE__TENSORBOARD__EVENT__WHAT_FILE_VERSION);
    EXPECT_STREQ(first->file_version, "brain.Event:2");
    EXPECT_GT(first->wall_time, 1.5e9);
    vae__tensorboard__event__free_unpacked(first, nullptr);

    Vae__Tensorboard__Event *scalar_event = unpack(records[1]);
    ASSERT_NE(scalar_event, nullptr);
    EXPECT_EQ(scalar_event->step, 7);
    ASSERT_EQ(scalar_event->what_case, VAE__TENSORBOARD__EVENT__WHAT_SUMMARY);
    ASSERT_EQ(scalar_event->summary->n_value, 2u);
    EXPECT_STREQ(scalar_event->summary->value[0]->tag, "train/loss");
    EXPECT_EQ(scalar_event->summary->value[0]->value_case, VAE__TENSORBOARD__SUMMARY__VALUE__VALUE_SIMPLE_VALUE);
    EXPECT_EQ(scalar_event->summary->value[0]->simple_value, 123.25f);
    EXPECT_EQ(scalar_event->summary->value[1]->simple_value, 1e-3f);
    vae__tensorboard__event__free_unpacked(scalar_event, nullptr);

    Vae__Tensorboard__Event *image_event = unpack(records[2]);
    ASSERT_NE(image_event, nullptr);
    EXPECT_EQ(image_event->step, 9);
    ASSERT_EQ(image_event->summary->n_value, 1u);
    const Vae__Tensorboard__Summary__Value *value = image_event->summary->value[0];
    EXPECT_STREQ(value->tag, "images/samples");
    ASSERT_EQ(value->value_case, VAE__TENSORBOARD__SUMMARY__VALUE__VALUE_IMAGE);
    EXPECT_EQ(value->image->width, 30);
    EXPECT_EQ(value->image->height, 20);
    EXPECT_EQ(value->image->colorspace, 1);
    EXPECT_EQ(std::string(reinterpret_cast<const char *>(value->image->encoded_image_string.data),
                          value->image->encoded_image_string.len),
              std::string(reinterpret_cast<const char *>(png), sizeof png));
    vae__tensorboard__event__free_unpacked(image_event, nullptr);
}

TEST(EventFile, TwoFilesInOneSecondGetTwoNames) {
    std::string folder = vae_test::temporary_folder("event_file_twice");
    vae_event_file *a = nullptr, *b = nullptr;
    ASSERT_EQ(vae_event_file_open(&a, folder.c_str()), VAE_OK) << vae_last_error();
    ASSERT_EQ(vae_event_file_open(&b, folder.c_str()), VAE_OK) << vae_last_error();
    EXPECT_NE(std::string(vae_event_file_path(a)), std::string(vae_event_file_path(b)));
    EXPECT_EQ(vae_event_file_close(a), VAE_OK);
    EXPECT_EQ(vae_event_file_close(b), VAE_OK);
}

TEST(EventFile, AMissingFolderIsAnErrorNamingTheFile) {
    std::string folder = vae_test::temporary_folder("event_file_missing") + "/not-there";
    vae_event_file *events = nullptr;
    EXPECT_EQ(vae_event_file_open(&events, folder.c_str()), VAE_ERROR_IO);
    EXPECT_EQ(events, nullptr);
    EXPECT_NE(std::string(vae_last_error()).find("events.out.tfevents."), std::string::npos) << vae_last_error();
}

}  // namespace
