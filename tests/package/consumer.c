/* A program outside the tree that uses the installed package: it includes
 * only <vae/...> headers and links vae::vae (CMake) or `pkg-config --libs vae`.
 * It writes a small data set with the library's .npy writer, trains a tiny
 * model on it in a run folder, evaluates it and prints one line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vae/output.h>
#include <vae/run_folder.h>
#include <vae/vae.h>
#include <vae/version.h>

#define EXAMPLES 64
#define FEATURES 16

static int fail(const char *what, vae_status status) {
    fprintf(stderr, "consumer: %s failed (%s): %s\n", what, vae_status_name(status), vae_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: consumer WORK_FOLDER\n");
        return 2;
    }
    const char *work = argv[1];
    /* The library is the version of the headers this program was built with. */
    if (strcmp(vae_version(), VAE_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: library %s, headers %s\n", vae_version(), VAE_VERSION_STRING);
        return 1;
    }
    char path[1024];
    /* Pixels in [0,1]: stripes, so that there is something to learn. */
    static float values[EXAMPLES * FEATURES];
    for (int i = 0; i < EXAMPLES; ++i)
        for (int j = 0; j < FEATURES; ++j) values[i * FEATURES + j] = ((i + j) % 4 == 0) ? 0.9f : 0.1f;
    snprintf(path, sizeof path, "%s/train.npy", work);
    vae_status status = vae_npy_write_f32(path, values, EXAMPLES, FEATURES);
    if (status != VAE_OK) return fail("writing train.npy", status);
    snprintf(path, sizeof path, "%s/test.npy", work);
    status = vae_npy_write_f32(path, values, EXAMPLES, FEATURES);
    if (status != VAE_OK) return fail("writing test.npy", status);

    vae_config config;
    vae_config_defaults(&config);
    snprintf(config.data_path, sizeof config.data_path, "%s", work);
    const char *settings[] = {"data.binarize=none", "model.hidden=8", "model.latent_dim=2", "train.batch_size=16",
                              "train.epochs=2", "train.log_every_steps=4", "train.eval_batch_size=16"};
    for (size_t i = 0; i < sizeof settings / sizeof settings[0] && status == VAE_OK; ++i)
        status = vae_config_set(&config, settings[i]);
    if (status == VAE_OK) status = vae_config_validate(&config);
    if (status != VAE_OK) return fail("the config", status);

    vae_trainer *trainer = NULL;
    status = vae_trainer_create(&trainer, &config, VAE_DEVICE_CPU);
    if (status != VAE_OK) return fail("vae_trainer_create", status);
    snprintf(path, sizeof path, "%s/run", work);
    vae_train_options options = {0};
    options.out_dir = path;
    options.quiet = 1;
    status = vae_trainer_train(trainer, &options);
    vae_eval_result result;
    if (status == VAE_OK) status = vae_trainer_evaluate(trainer, "test", 0, &result);
    char *json = NULL;
    unsigned long long steps = (unsigned long long)vae_trainer_step(trainer);
    if (status == VAE_OK) status = vae_eval_result_to_json(&result, "test", steps, &json);
    if (status == VAE_OK) printf("consumer: vae %s, %llu steps on %s: %s\n", vae_version(), steps, vae_trainer_device_name(trainer), json);
    free(json);
    vae_trainer_destroy(trainer);
    if (status != VAE_OK) return fail("training", status);
    /* The run folder holds what the trainer promises. */
    snprintf(path, sizeof path, "%s/run/checkpoint.safetensors", work);
    FILE *checkpoint = fopen(path, "rb");
    if (!checkpoint) {
        fprintf(stderr, "consumer: no %s\n", path);
        return 1;
    }
    fclose(checkpoint);
    return steps == 8 ? 0 : 1;
}
