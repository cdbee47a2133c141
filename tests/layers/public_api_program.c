/* A C11 program that sees only the public headers (include/ and the
 * generated vae/version.h; CMake gives it no other include folder) and uses
 * the public API: the version, the config and its enum-typed fields. Exit 0
 * when every check holds; each failed check prints what differed. */
#include <stdio.h>
#include <string.h>

#include "vae/latent.h"
#include "vae/vae.h"

static int failures = 0;

#define CHECK(condition, ...)                                                   \
    do {                                                                        \
        if (!(condition)) {                                                     \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #condition); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            ++failures;                                                         \
        }                                                                       \
    } while (0)

int main(void) {
    /* The version: the macros, the string, the library and project(VERSION). */
    char from_macros[64];
    snprintf(from_macros, sizeof from_macros, "%d.%d.%d", VAE_VERSION_MAJOR, VAE_VERSION_MINOR, VAE_VERSION_PATCH);
    CHECK(strcmp(from_macros, VAE_VERSION_STRING) == 0, "macros say %s, VAE_VERSION_STRING %s", from_macros,
          VAE_VERSION_STRING);
    CHECK(strcmp(vae_version(), VAE_PROJECT_VERSION) == 0, "vae_version() is %s, project(VERSION) is %s",
          vae_version(), VAE_PROJECT_VERSION);
    CHECK(VAE_VERSION_NUMBER == VAE_VERSION_MAJOR * 10000 + VAE_VERSION_MINOR * 100 + VAE_VERSION_PATCH,
          "VAE_VERSION_NUMBER %d", VAE_VERSION_NUMBER);

    /* The config's choices are public enum types. */
    vae_config config;
    vae_config_defaults(&config);
    CHECK(config.activation == VAE_ACTIVATION_RELU, "default activation %d", (int)config.activation);
    CHECK(config.optimizer == VAE_OPTIMIZER_ADAM, "default optimizer %d", (int)config.optimizer);
    vae_status status = vae_config_set(&config, "model.activation=gelu");
    CHECK(status == VAE_OK, "%s", vae_last_error());
    status = vae_config_set(&config, "train.optimizer=adamw");
    CHECK(status == VAE_OK, "%s", vae_last_error());
    status = vae_config_set(&config, "model.likelihood=gaussian");
    CHECK(status == VAE_OK, "%s", vae_last_error());
    status = vae_config_set(&config, "train.lr_schedule=cosine");
    CHECK(status == VAE_OK, "%s", vae_last_error());
    vae_activation activation = config.activation;
    vae_optimizer optimizer = config.optimizer;
    vae_likelihood likelihood = config.likelihood;
    vae_lr_schedule schedule = config.lr_schedule;
    CHECK(activation == VAE_ACTIVATION_GELU, "activation %d", (int)activation);
    CHECK(optimizer == VAE_OPTIMIZER_ADAMW, "optimizer %d", (int)optimizer);
    CHECK(likelihood == VAE_LIKELIHOOD_GAUSSIAN, "likelihood %d", (int)likelihood);
    CHECK(schedule == VAE_LR_COSINE, "schedule %d", (int)schedule);
    config.precision = VAE_PRECISION_TF32;
    config.activation = VAE_ACTIVATION_IDENTITY; /* not a choice a config may make */
    CHECK(vae_config_validate(&config) == VAE_ERROR_INVALID_ARGUMENT, "an identity activation was accepted");
    CHECK(strcmp(vae_status_name(VAE_ERROR_INTERRUPTED), "") != 0, "no name for VAE_ERROR_INTERRUPTED");

    if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
    else printf("public API from C11: version %s, config enums OK\n", vae_version());
    return failures ? 1 : 0;
}
