/* Shared pieces of the vae command line: option parsing, config loading,
 * error reporting and the exit-code policy (0 success; 2 bad usage, a bad
 * config or a malformed input file; 1 anything else). */
#ifndef VAE_CLI_COMMON_H
#define VAE_CLI_COMMON_H

#include "vae/vae.h"

#define MAX_OVERRIDES 256

typedef struct cli_options {
    const char *config_path, *checkpoint_path, *out, *split;
    const char *overrides[MAX_OVERRIDES];
    int override_count;
    vae_device_kind device;
    int precision_given;             /* --precision: the GEMMs' precision instead of the stored one */
    vae_precision precision;
    int resume, force, quiet, max_steps, iwae_k, count, warmup_steps, steps;
    unsigned long long seed;
    /* Pictures and latents (src/cli/cli_pictures.c). */
    int count_given, steps_given;    /* --n / --steps were on the command line (per-command defaults) */
    int pairs;                       /* --pairs, default 8 */
    int dims[2];                     /* --dims i,j, default 0,1 */
    const char *logvar_path, *labels_path; /* --logvar FILE.npy, --labels FILE.npy */
    float temperature;               /* vae sample --temperature, default 1 */
    int groups;                      /* vae sample --groups: what each latent group controls */
} cli_options;

int cli_exit_code_for(vae_status status);
/* A failure found by the CLI itself: keeps the message for cli_fail (the
 * library's vae_last_error() is the library's own) and returns status. */
vae_status cli_error(vae_status status, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Prints "vae: error: <message>" (cli_error's, else the library's last
 * error) and returns the exit code for status. */
int cli_fail(vae_status status);
/* Prints the message and the command's usage; returns 2. */
int cli_usage_error(const char *usage, const char *message, const char *argument);
/* Parses the options shared by all commands (argv[2..]); returns -1 after
 * printing --help, 0 on success, 2 on a usage error (already printed). */
int cli_parse_options(int argc, char **argv, const char *usage, cli_options *options);
/* --config FILE, then each --set, then validation. */
vae_status cli_load_config(const cli_options *options, vae_config *config);
/* Loads a checkpoint's trainer (--checkpoint, --device) or reports why not. */
vae_status cli_load_checkpoint(const cli_options *options, vae_trainer **trainer);

/* Commands living in their own files. */
int cli_command_reconstruct(int argc, char **argv);
int cli_command_interpolate(int argc, char **argv);
int cli_command_manifold(int argc, char **argv);
int cli_command_scatter(int argc, char **argv);
int cli_command_encode(int argc, char **argv);

#endif
