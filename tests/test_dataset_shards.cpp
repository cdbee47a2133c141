// Sharded NPY data sets: data.path holding train-00000.npy, train-00001.npy,
// ... (and test-NNNNN.npy, train_labels-NNNNN.npy, test_labels-NNNNN.npy) is
// read as one data set in shard order, without copying; shards that disagree,
// a gap in the numbering, a misnamed or empty shard and both forms at once
// are refused with the offending file named. Training reads the shards in
// place and matches training on the same data in one file exactly.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "dataset_test_files.h"
#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "base/error.h"
#include "data/dataset.h"
}

namespace {

using dataset_test::data_config;
using dataset_test::scoped_splits;
using vae_test::npy_dict;
using vae_test::npy_file;
using vae_test::raw_bytes;

// Example i of a data set of width dim: every byte known and distinct enough.
uint8_t value_of(int64_t example, int column) { return (uint8_t)((example * 29 + column * 3 + 5) % 256); }

std::string u8_rows(int64_t first, int64_t count, int dim) {
    std::string bytes;
    for (int64_t i = first; i < first + count; ++i)
        for (int j = 0; j < dim; ++j) bytes += (char)value_of(i, j);
    return bytes;
}

std::string u8_npy(int64_t first, int64_t count, int dim) {
    return npy_file(npy_dict("|u1", "(" + std::to_string(count) + ", " + std::to_string(dim) + ")"),
                    u8_rows(first, count, dim));
}

std::string label_npy(int64_t first, int64_t count) {
    std::vector<int32_t> labels;
    for (int64_t i = first; i < first + count; ++i) labels.push_back((int32_t)(i % 7));
    return npy_file(npy_dict("<i4", "(" + std::to_string(count) + ",)"), raw_bytes(labels));
}

std::string shard_name(const std::string &name, int index) {
    char suffix[16];
    std::snprintf(suffix, sizeof suffix, "-%05d.npy", index);
    return name + suffix;
}

// Writes name-00000.npy ... with the given lengths (and labels when asked),
// holding examples first, first+1, ... in order.
void write_shards(const std::string &folder, const std::string &name, const std::vector<int64_t> &lengths, int dim,
                  const std::string &labels_name = "") {
    int64_t first = 0;
    for (size_t s = 0; s < lengths.size(); ++s) {
        vae_test::write_file(folder + "/" + shard_name(name, (int)s), u8_npy(first, lengths[s], dim));
        if (!labels_name.empty())
            vae_test::write_file(folder + "/" + shard_name(labels_name, (int)s), label_npy(first, lengths[s]));
        first += lengths[s];
    }
}

void expect_examples(const vae_dataset &data, int64_t first_value, int64_t count) {
    ASSERT_EQ(data.count, count);
    for (int64_t i = 0; i < count; ++i) {
        const uint8_t *row = (const uint8_t *)vae_dataset_example(&data, (long)i);
        ASSERT_NE(row, nullptr) << i;
        for (int j = 0; j < data.dim; ++j) ASSERT_EQ(row[j], value_of(first_value + i, j)) << "example " << i;
    }
}

// The message of a failed load, with the load's status checked.
std::string load_error(const std::string &folder) {
    vae_config config = data_config(folder);
    scoped_splits loaded;
    vae_status status = vae_data_load(&config, &loaded.splits);
    EXPECT_NE(status, VAE_OK) << folder;
    EXPECT_EQ(loaded.splits.train.values, nullptr) << "a failed load frees what it loaded";
    return vae_last_error();
}

TEST(DatasetShards, ReadInOrderAsOneDataSetWithLabels) {
    std::string folder = vae_test::temporary_folder("shards_order");
    // Unequal lengths so that a wrong order or offset shows; 12 shards, so
    // that "-00010" sorting after "-00002" as text cannot hide a wrong order.
    std::vector<int64_t> lengths = {5, 1, 7, 3, 2, 4, 6, 1, 1, 8, 2, 3};
    write_shards(folder, "train", lengths, 6, "train_labels");
    write_shards(folder, "test", {4, 5}, 6, "test_labels");
    vae_config config = data_config(folder);
    config.validation_size = 10;  // spans the last three shards
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    const vae_data_splits &s = loaded.splits;
    EXPECT_EQ(s.train.segment_count, 10);  // the last shards hold only validation examples
    EXPECT_EQ(s.train.values, nullptr) << "several segments: no single block";
    for (int i = 0; i < s.train.storage_count; ++i) EXPECT_EQ(s.train.storage[i].mapped, 1) << "shard " << i;
    expect_examples(s.train, 0, 43 - 10);
    expect_examples(s.validation, 33, 10);
    expect_examples(s.test, 0, 9);
    ASSERT_NE(s.train.labels, nullptr);
    ASSERT_NE(s.validation.labels, nullptr);
    ASSERT_NE(s.test.labels, nullptr);
    for (int i = 0; i < 33; ++i) EXPECT_EQ(s.train.labels[i], i % 7) << i;
    for (int i = 0; i < 10; ++i) EXPECT_EQ(s.validation.labels[i], (33 + i) % 7) << i;
    for (int i = 0; i < 9; ++i) EXPECT_EQ(s.test.labels[i], i % 7) << i;

    // train_limit inside a shard keeps the shards before it and part of it.
    config.validation_size = 0;
    config.train_limit = 14;
    scoped_splits limited;
    ASSERT_EQ(vae_data_load(&config, &limited.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(limited.splits.train.segment_count, 4);  // 5 + 1 + 7 + 1 of 3
    expect_examples(limited.splits.train, 0, 14);
    EXPECT_EQ(vae_dataset_example(&limited.splits.train, 14), nullptr);
}

TEST(DatasetShards, OneLabelsFileForShardedData) {
    std::string folder = vae_test::temporary_folder("shards_one_labels");
    write_shards(folder, "train", {3, 4}, 4);
    vae_test::write_file(folder + "/train_labels.npy", label_npy(0, 7));
    write_shards(folder, "test", {2}, 4);
    vae_config config = data_config(folder);
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    ASSERT_NE(loaded.splits.train.labels, nullptr);
    for (int i = 0; i < 7; ++i) EXPECT_EQ(loaded.splits.train.labels[i], i % 7);
    EXPECT_EQ(loaded.splits.test.labels, nullptr);  // labels stay optional
}

TEST(DatasetShards, MismatchedShardsAreNamed) {
    struct bad_case {
        const char *name;
        std::string shard1;  // replaces train-00001.npy
        std::vector<std::string> words;
    };
    std::vector<bad_case> cases = {
        {"width", u8_npy(3, 4, 5), {"train-00001.npy", "shard 1", "(N, 5)", "train-00000.npy", "(N, 6)"}},
        {"dtype", npy_file(npy_dict("<f4", "(2, 6)"), raw_bytes(dataset_test::float_values(12))),
         {"train-00001.npy", "shard 1", "float32", "uint8"}},
        {"rank", npy_file(npy_dict("|u1", "(2, 2, 3)"), u8_rows(3, 2, 6)), {"train-00001.npy", "(N, 2, 3)", "(N, 6)"}},
        {"empty", npy_file(npy_dict("|u1", "(0, 6)"), ""), {"train-00001.npy", "no examples"}},
        {"bad_value", npy_file(npy_dict("<f4", "(1, 6)"), raw_bytes(std::vector<float>{0, 0.5f, 1, 1.5f, 0, 0})),
         {"train-00001.npy"}},  // refused as a type mismatch before values matter
    };
    for (const bad_case &item : cases) {
        SCOPED_TRACE(item.name);
        std::string folder = vae_test::temporary_folder(std::string("shards_mismatch_") + item.name);
        write_shards(folder, "train", {3, 2, 4}, 6);
        write_shards(folder, "test", {2}, 6);
        vae_test::write_file(folder + "/train-00001.npy", item.shard1);
        std::string message = load_error(folder);
        for (const std::string &word : item.words) EXPECT_NE(message.find(word), std::string::npos) << message;
    }
}

// (N, C, H, W) shards: one C x H x W data set; the validation split and the
// limits keep the shape; a shard or a split of another shape is named.
std::string nchw_npy(int64_t first, int64_t count, const std::string &example_shape, int dim) {
    return npy_file(npy_dict("|u1", "(" + std::to_string(count) + ", " + example_shape + ")"), u8_rows(first, count, dim));
}

TEST(DatasetShards, FourDimensionalShardsKeepChannelsRowsCols) {
    std::string folder = vae_test::temporary_folder("shards_nchw");
    const int dim = 2 * 3 * 4;
    vae_test::write_file(folder + "/" + shard_name("train", 0), nchw_npy(0, 3, "2, 3, 4", dim));
    vae_test::write_file(folder + "/" + shard_name("train", 1), nchw_npy(3, 4, "2, 3, 4", dim));
    vae_test::write_file(folder + "/test.npy", nchw_npy(0, 2, "2, 3, 4", dim));
    vae_config config = data_config(folder);
    config.validation_size = 2;
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    const vae_data_splits &s = loaded.splits;
    for (const vae_dataset *split : {&s.train, &s.validation, &s.test}) {
        EXPECT_EQ(split->channels, 2);
        EXPECT_EQ(split->rows, 3);
        EXPECT_EQ(split->cols, 4);
        EXPECT_EQ(split->dim, dim);
    }
    expect_examples(s.train, 0, 5);
    expect_examples(s.validation, 5, 2);
    expect_examples(s.test, 0, 2);

    // Shards that disagree on C, H or W (or on the rank) are named with both shapes.
    struct bad_case {
        const char *name;
        std::string shard1;
        std::vector<std::string> words;
    };
    std::vector<bad_case> cases = {
        {"channels", nchw_npy(3, 4, "3, 2, 4", dim), {"train-00001.npy", "shard 1", "(N, 3, 2, 4)", "(N, 2, 3, 4)"}},
        {"rows_cols", nchw_npy(3, 4, "2, 4, 3", dim), {"train-00001.npy", "(N, 2, 4, 3)", "(N, 2, 3, 4)"}},
        {"rank", nchw_npy(3, 4, "6, 4", dim), {"train-00001.npy", "(N, 6, 4)", "(N, 2, 3, 4)"}},
        {"rank5", nchw_npy(3, 1, "2, 3, 4, 1", dim), {"train-00001.npy", "5 dimensions", "(N, 2, 3, 4, 1)"}},
    };
    for (const bad_case &item : cases) {
        SCOPED_TRACE(item.name);
        std::string bad = vae_test::temporary_folder(std::string("shards_nchw_") + item.name);
        vae_test::write_file(bad + "/" + shard_name("train", 0), nchw_npy(0, 3, "2, 3, 4", dim));
        vae_test::write_file(bad + "/" + shard_name("train", 1), item.shard1);
        vae_test::write_file(bad + "/test.npy", nchw_npy(0, 2, "2, 3, 4", dim));
        std::string message = load_error(bad);
        for (const std::string &word : item.words) EXPECT_NE(message.find(word), std::string::npos) << message;
    }

    // Train and test of the same size but another image shape are refused;
    // a test split without a shape (N, D) only has to agree on D.
    std::string other = vae_test::temporary_folder("shards_nchw_test_shape");
    vae_test::write_file(other + "/train.npy", nchw_npy(0, 3, "2, 3, 4", dim));
    vae_test::write_file(other + "/test.npy", nchw_npy(0, 2, "2, 4, 3", dim));
    std::string message = load_error(other);
    for (const char *word : {"train.npy", "test.npy", "2 x 3 x 4", "2 x 4 x 3"})
        EXPECT_NE(message.find(word), std::string::npos) << message;
    vae_test::write_file(other + "/test.npy", u8_npy(0, 2, dim));
    vae_config flat_test = data_config(other);
    scoped_splits mixed;
    ASSERT_EQ(vae_data_load(&flat_test, &mixed.splits), VAE_OK) << vae_last_error();
    EXPECT_EQ(mixed.splits.train.channels, 2);
    EXPECT_EQ(mixed.splits.test.channels, 0);
}

TEST(DatasetShards, BadFloatValueIsNamedByShardExampleAndPosition) {
    std::string folder = vae_test::temporary_folder("shards_bad_value");
    std::vector<float> good = dataset_test::float_values(3 * 4), bad = dataset_test::float_values(2 * 4);
    bad[1 * 4 + 2] = 1.5f;  // example 1 of shard 1, position 2
    vae_test::write_file(folder + "/train-00000.npy", npy_file(npy_dict("<f4", "(3, 4)"), raw_bytes(good)));
    vae_test::write_file(folder + "/train-00001.npy", npy_file(npy_dict("<f4", "(2, 4)"), raw_bytes(bad)));
    vae_test::write_file(folder + "/test.npy", npy_file(npy_dict("<f4", "(3, 4)"), raw_bytes(good)));
    std::string message = load_error(folder);
    for (const char *word : {"train-00001.npy", "1.5", "example 1", "position 2", "[0,1]"})
        EXPECT_NE(message.find(word), std::string::npos) << message;
}

TEST(DatasetShards, NumberingErrorsNameTheFile) {
    struct bad_case {
        const char *name;
        std::vector<std::string> files;  // written besides test.npy
        std::vector<std::string> words;
    };
    std::vector<bad_case> cases = {
        {"gap", {"train-00000.npy", "train-00001.npy", "train-00003.npy"}, {"train-00002.npy", "missing"}},
        {"no_first", {"train-00001.npy", "train-00002.npy"}, {"train-00000.npy", "missing"}},
        {"digits", {"train-00000.npy", "train-0001.npy"}, {"train-0001.npy", "5 digits"}},
        {"both_forms", {"train-00000.npy", "train.npy"}, {"train.npy", "train-NNNNN.npy", "one form"}},
        {"labels_gap", {"train-00000.npy", "train-00001.npy", "train_labels-00000.npy", "train_labels-00002.npy"},
         {"train_labels-00001.npy", "missing"}},
        {"labels_count", {"train-00000.npy", "train-00001.npy", "train_labels-00000.npy"},
         {"train_labels-00000.npy", "1 label shards for 2 data shards"}},
        {"labels_length", {"train-00000.npy", "train-00001.npy", "train_labels-00000.npy", "train_labels-00001.npy",
                           "short"},
         {"train_labels-00001.npy", "2 labels", "data shard 1 has 3 examples"}},
    };
    for (const bad_case &item : cases) {
        SCOPED_TRACE(item.name);
        std::string folder = vae_test::temporary_folder(std::string("shards_numbering_") + item.name);
        vae_test::write_file(folder + "/test.npy", u8_npy(0, 2, 6));
        for (const std::string &file : item.files) {
            if (file == "short") {  // replaces the last labels shard by a shorter one
                vae_test::write_file(folder + "/train_labels-00001.npy", label_npy(0, 2));
                continue;
            }
            bool labels = file.find("labels") != std::string::npos;
            vae_test::write_file(folder + "/" + file, labels ? label_npy(0, 3) : u8_npy(0, 3, 6));
        }
        std::string message = load_error(folder);
        EXPECT_NE(message.find(folder), std::string::npos) << message;
        for (const std::string &word : item.words) EXPECT_NE(message.find(word), std::string::npos) << message;
    }
    // A missing test split is named when the training shards are there.
    std::string folder = vae_test::temporary_folder("shards_no_test");
    write_shards(folder, "train", {3, 3}, 6);
    std::string message = load_error(folder);
    EXPECT_NE(message.find("test-00000.npy"), std::string::npos) << message;
    // Another file that only starts like a shard is not one, and is ignored.
    std::string other = vae_test::temporary_folder("shards_other_files");
    write_shards(other, "train", {3, 3}, 6);
    write_shards(other, "test", {2}, 6);
    vae_test::write_file(other + "/train-notes.npy", "not read");
    vae_test::write_file(other + "/train-00002.npy.bak", "not read");
    vae_config config = data_config(other);
    scoped_splits loaded;
    ASSERT_EQ(vae_data_load(&config, &loaded.splits), VAE_OK) << vae_last_error();
    expect_examples(loaded.splits.train, 0, 6);
}

// Training on shards (read in place through several segments) gives exactly
// the losses (printed to 9 digits, every logged step and evaluation) of
// training on the same examples in one file.
TEST(DatasetShards, TrainingOnShardsMatchesOneFile) {
    std::string sharded = vae_test::temporary_folder("shards_train_sharded");
    std::string single = vae_test::temporary_folder("shards_train_single");
    const int dim = 16;
    write_shards(sharded, "train", {37, 50, 13, 60}, dim);
    write_shards(sharded, "test", {20, 20}, dim);
    vae_test::write_file(single + "/train.npy", u8_npy(0, 160, dim));
    vae_test::write_file(single + "/test.npy", u8_npy(0, 40, dim));
    std::string common = " --config " + std::string(VAE_SOURCE_DIR) +
                         "/configs/tiny_test.ini --device cpu --quiet --set data.train_limit=0 --set "
                         "data.test_limit=0 --set data.validation_size=0 --set train.batch_size=16 --set "
                         "train.epochs=2 --set train.eval_batch_size=20 --set model.hidden=8 --set model.latent_dim=2";
    auto a = vae_test::run_vae("train" + common + " --set data.path=" + sharded + " --out " + sharded + "/out");
    ASSERT_EQ(a.exit_code, 0) << a.output;
    auto b = vae_test::run_vae("train" + common + " --set data.path=" + single + " --out " + single + "/out");
    ASSERT_EQ(b.exit_code, 0) << b.output;
    auto metrics = [](const std::string &folder) {
        std::string text = vae_test::read_file(folder + "/out/metrics.jsonl"), kept;
        // Drop timings, keep the losses.
        size_t position = 0;
        while ((position = text.find("\"loss\":", position)) != std::string::npos) {
            kept += text.substr(position, text.find(',', position) - position) + "\n";
            ++position;
        }
        return kept;
    };
    EXPECT_FALSE(metrics(sharded).empty());
    EXPECT_EQ(metrics(sharded), metrics(single));
}

}  // namespace
