// Whole training runs on the GPU: 200 steps stay with the CPU reference from
// the same seed, two GPU runs are bitwise identical, and a training set in
// page-locked host memory trains exactly like one in device memory. Skipped,
// visibly, where there is no usable GPU.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "test_support.h"

extern "C" {
#include "backends/backend.h"
#include "io/checkpoint.h"
#include "vae/vae.h"
}

namespace {

vae_config small_config() {
    vae_config config;
    vae_config_defaults(&config);
    std::snprintf(config.data_path, sizeof config.data_path, "%s", vae_test::fashion_mnist_folder().c_str());
    const char *settings[] = {"data.train_limit=6400", "data.test_limit=500", "data.binarize=dynamic",
                              "model.hidden=200,100", "model.latent_dim=13", "model.samples=2",
                              "train.batch_size=64", "train.epochs=2", "train.eval_every_epochs=0",
                              "train.log_every_steps=50", "train.precision=fp32"};
    for (const char *setting : settings) EXPECT_EQ(vae_config_set(&config, setting), VAE_OK) << vae_last_error();
    return config;
}

std::vector<float> parameters_after(const vae_config &config, vae_device_kind device, int steps, const std::string &name) {
    vae_trainer *trainer = nullptr;
    EXPECT_EQ(vae_trainer_create(&trainer, &config, device), VAE_OK) << vae_last_error();
    if (!trainer) return {};
    std::string folder = vae_test::temporary_folder(name);
    vae_train_options options = {};
    options.out_dir = folder.c_str();
    options.quiet = 1;
    options.max_steps = steps;
    EXPECT_EQ(vae_trainer_train(trainer, &options), VAE_OK) << vae_last_error();
    vae_trainer_destroy(trainer);
    vae_checkpoint checkpoint;
    std::memset(&checkpoint, 0, sizeof checkpoint);
    EXPECT_EQ(vae_checkpoint_read((folder + "/checkpoint.safetensors").c_str(), &checkpoint), VAE_OK);
    std::vector<float> values;
    for (int i = 0; i < checkpoint.tensor_count; ++i) {
        const vae_checkpoint_tensor &t = checkpoint.tensors[i];
        if (std::strncmp(t.name, "optimizer.", 10) == 0) continue;
        size_t count = 1;
        for (int d = 0; d < t.rank; ++d) count *= (size_t)t.shape[d];
        values.insert(values.end(), t.data, t.data + count);
    }
    vae_checkpoint_free(&checkpoint);
    return values;
}

class CudaTraining : public ::testing::Test {
  protected:
    void SetUp() override {
        if (!vae_backend_cuda_available()) GTEST_SKIP() << "no CUDA GPU";
        if (vae_test::fashion_mnist_folder().empty()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    }
};

TEST_F(CudaTraining, TwoHundredStepsStayWithTheCpuReference) {
    vae_config config = small_config();
    std::vector<float> cpu = parameters_after(config, VAE_DEVICE_CPU, 200, "cuda_vs_cpu_cpu");
    std::vector<float> gpu = parameters_after(config, VAE_DEVICE_CUDA, 200, "cuda_vs_cpu_gpu");
    std::vector<float> initial = parameters_after(config, VAE_DEVICE_CPU, 1, "cuda_vs_cpu_start");
    ASSERT_EQ(cpu.size(), gpu.size());
    double error = vae_test::relative_error(gpu, cpu);
    double travelled = vae_test::relative_error(initial, cpu);
    std::printf("fp32: GPU vs CPU after 200 steps %.3g (distance travelled %.3g)\n", error, travelled);
    // Same eps (to float rounding), same batches: the runs differ only by
    // summation order and the GPU's sincos; 200 Adam steps keep them within
    // 1e-3 of each other while the parameters moved far more.
    EXPECT_LT(error, 1e-3);
    EXPECT_GT(travelled, 100 * error);
}

TEST_F(CudaTraining, TwoGpuRunsAreBitwiseIdentical) {
    vae_config config = small_config();
    std::vector<float> first = parameters_after(config, VAE_DEVICE_CUDA, 150, "cuda_repeat_a");
    std::vector<float> second = parameters_after(config, VAE_DEVICE_CUDA, 150, "cuda_repeat_b");
    ASSERT_EQ(first.size(), second.size());
    ASSERT_FALSE(first.empty());
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
}

TEST_F(CudaTraining, HostResidentDataTrainsExactlyLikeDeviceResident) {
    vae_config config = small_config();
    std::vector<float> device_resident = parameters_after(config, VAE_DEVICE_CUDA, 120, "cuda_data_device");
    config.data_on_device = VAE_DATA_HOST;
    std::vector<float> host_resident = parameters_after(config, VAE_DEVICE_CUDA, 120, "cuda_data_host");
    ASSERT_EQ(device_resident.size(), host_resident.size());
    EXPECT_EQ(std::memcmp(device_resident.data(), host_resident.data(), device_resident.size() * sizeof(float)), 0);
}

}  // namespace
