#include "cli_common.h"
#include "vae/distributed.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cli_exit_code_for(vae_status status) {
    if (status == VAE_OK) return 0;
    if (status == VAE_ERROR_INVALID_ARGUMENT || status == VAE_ERROR_BAD_INPUT) return 2;
    return 1;
}

static char cli_message[512];

vae_status cli_error(vae_status status, const char *format, ...) {
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(cli_message, sizeof cli_message, format, arguments);
    va_end(arguments);
    return status;
}

int cli_fail(vae_status status) {
    /* Data parallel: an error the ranks agreed on is printed once, by the
     * rank it happened on; an error of one rank alone names the rank. */
    const char *message = cli_message[0] ? cli_message : vae_last_error();
    if (vae_distributed_error_is_shared() && !cli_message[0]) return cli_exit_code_for(status);
    if (vae_distributed_size() > 1)
        fprintf(stderr, "vae: error: [rank %d] %s\n", vae_distributed_rank(), message);
    else
        fprintf(stderr, "vae: error: %s\n", message);
    cli_message[0] = '\0';
    return cli_exit_code_for(status);
}

int cli_usage_error(const char *usage, const char *message, const char *argument) {
    fprintf(stderr, "vae: %s%s%s\n\n%s", message, argument ? " " : "", argument ? argument : "", usage);
    return 2;
}

static int parse_int(const char *text, int low, int high, int *out) {
    char *end = NULL;
    long value = strtol(text, &end, 10);
    if (!text[0] || *end != '\0' || value < low || value > high) return 0;
    *out = (int)value;
    return 1;
}

/* A precision by its config name (fp32, tf32, bf16). */
static int parse_precision(const char *text, vae_precision *out) {
    for (int precision = VAE_PRECISION_FP32; precision <= VAE_PRECISION_BF16; ++precision)
        if (strcmp(text, vae_precision_name((vae_precision)precision)) == 0) {
            *out = (vae_precision)precision;
            return 1;
        }
    return 0;
}

/* "i,j": two different non-negative latent indices. */
static int parse_dims(const char *text, int dims[2]) {
    const char *comma = strchr(text, ',');
    if (!comma || comma == text) return 0;
    char first[32];
    size_t length = (size_t)(comma - text);
    if (length >= sizeof first) return 0;
    memcpy(first, text, length);
    first[length] = '\0';
    int i, j;
    if (!parse_int(first, 0, 1000000, &i) || !parse_int(comma + 1, 0, 1000000, &j) || i == j) return 0;
    dims[0] = i;
    dims[1] = j;
    return 1;
}

/* Whether a command's usage text names OPTION as a whole word (so that
 * "--n" is not found inside "--no-such"). */
static int usage_names_option(const char *usage, const char *option) {
    size_t length = strlen(option);
    for (const char *at = strstr(usage, option); at; at = strstr(at + 1, option)) {
        char before = at == usage ? ' ' : at[-1], after = at[length];
        if (strchr(" [|", before) && strchr(" ]|\n", after)) return 1;
    }
    return 0;
}

/* Parses options shared by all commands; returns -1 for --help, 0 on
 * success, 2 on a usage error (already printed). One parser serves every
 * command, so an option the command's usage does not name is refused: it
 * would otherwise be read and then ignored (eval --set data.test_limit=...). */
int cli_parse_options(int argc, char **argv, const char *usage, cli_options *o) {
    memset(o, 0, sizeof *o);
    o->device = VAE_DEVICE_AUTO;
    o->split = "test";
    o->count = 64;
    o->warmup_steps = 20;
    o->steps = 200;
    o->seed = 1;
    o->pairs = 8;
    o->temperature = 1.0f;
    o->dims[0] = 0;
    o->dims[1] = 1;
    for (int i = 2; i < argc; ++i) {
        const char *a = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = 1;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { fputs(usage, stdout); return -1; }
        else if (strncmp(a, "--", 2) == 0 && !usage_names_option(usage, a)) {
            fprintf(stderr, "vae: %s does not take %s (its options are below)\n\n%s", argv[1], a, usage);
            return 2;
        } else if (strcmp(a, "--resume") == 0) { o->resume = 1; takes_value = 0; }
        else if (strcmp(a, "--force") == 0) { o->force = 1; takes_value = 0; }
        else if (strcmp(a, "--quiet") == 0) { o->quiet = 1; takes_value = 0; }
        else if (strcmp(a, "--groups") == 0) { o->groups = 1; takes_value = 0; }
        else if (!value) return cli_usage_error(usage, "missing value after", a);
        else if (strcmp(a, "--config") == 0) o->config_path = value;
        else if (strcmp(a, "--checkpoint") == 0) o->checkpoint_path = value;
        else if (strcmp(a, "--out") == 0) o->out = value;
        else if (strcmp(a, "--split") == 0) o->split = value;
        else if (strcmp(a, "--set") == 0) {
            if (o->override_count == MAX_OVERRIDES) return cli_usage_error(usage, "too many --set options", NULL);
            o->overrides[o->override_count++] = value;
        } else if (strcmp(a, "--device") == 0) {
            if (strcmp(value, "cpu") == 0) o->device = VAE_DEVICE_CPU;
            else if (strcmp(value, "cuda") == 0) o->device = VAE_DEVICE_CUDA;
            else if (strcmp(value, "auto") == 0) o->device = VAE_DEVICE_AUTO;
            else return cli_usage_error(usage, "--device expects cpu, cuda or auto, got", value);
        } else if (strcmp(a, "--precision") == 0) {
            if (!parse_precision(value, &o->precision)) return cli_usage_error(usage, "--precision expects fp32, tf32 or bf16, got", value);
            o->precision_given = 1;
        } else if (strcmp(a, "--max-steps") == 0) {
            if (!parse_int(value, 1, 2000000000, &o->max_steps)) return cli_usage_error(usage, "--max-steps expects a positive integer, got", value);
        } else if (strcmp(a, "--iwae-k") == 0) {
            if (!parse_int(value, 1, 1000000, &o->iwae_k)) return cli_usage_error(usage, "--iwae-k expects an integer in 1..1000000, got", value);
        } else if (strcmp(a, "--n") == 0) {
            if (!parse_int(value, 1, 10000, &o->count)) return cli_usage_error(usage, "--n expects an integer in 1..10000, got", value);
            o->count_given = 1;
        } else if (strcmp(a, "--warmup-steps") == 0) {
            if (!parse_int(value, 0, 1000000, &o->warmup_steps)) return cli_usage_error(usage, "--warmup-steps expects an integer >= 0, got", value);
        } else if (strcmp(a, "--steps") == 0) {
            if (!parse_int(value, 1, 1000000, &o->steps)) return cli_usage_error(usage, "--steps expects a positive integer, got", value);
            o->steps_given = 1;
        } else if (strcmp(a, "--pairs") == 0) {
            if (!parse_int(value, 1, 10000, &o->pairs)) return cli_usage_error(usage, "--pairs expects an integer in 1..10000, got", value);
        } else if (strcmp(a, "--dims") == 0) {
            if (!parse_dims(value, o->dims)) return cli_usage_error(usage, "--dims expects two different latent indices i,j (as 0,1), got", value);
        } else if (strcmp(a, "--logvar") == 0) {
            o->logvar_path = value;
        } else if (strcmp(a, "--labels") == 0) {
            o->labels_path = value;
        } else if (strcmp(a, "--temperature") == 0) {
            char *end = NULL;
            double t = strtod(value, &end);
            if (!value[0] || *end != '\0' || !(t > 0.0) || t > 100.0)
                return cli_usage_error(usage, "--temperature expects a number in (0, 100], got", value);
            o->temperature = (float)t;
        } else if (strcmp(a, "--seed") == 0) {
            char *end = NULL;
            o->seed = strtoull(value, &end, 10);
            if (!value[0] || *end != '\0' || value[0] == '-') return cli_usage_error(usage, "--seed expects an unsigned integer, got", value);
        } else return cli_usage_error(usage, "unknown option", a);
        if (takes_value) ++i;
    }
    return 0;
}

vae_status cli_load_config(const cli_options *o, vae_config *config) {
    vae_config_defaults(config);
    vae_status status = vae_config_load_file(config, o->config_path);
    vae_config from_file = *config;
    for (int i = 0; status == VAE_OK && i < o->override_count; ++i) status = vae_config_set(config, o->overrides[i]);
    /* A smoke run (--set train.epochs=1) shortens the warm-up with a warning
     * rather than being refused. */
    char note[256];
    if (status == VAE_OK && vae_config_fit_warmup_to_overrides(config, &from_file, note, sizeof note) && !o->quiet &&
        vae_distributed_rank() == 0)
        fprintf(stderr, "vae: warning: %s\n", note);
    if (status == VAE_OK) status = vae_config_validate(config);
    return status;
}

vae_status cli_load_checkpoint(const cli_options *o, vae_trainer **trainer) {
    if (o->precision_given) return vae_trainer_load_with_precision(trainer, o->checkpoint_path, o->device, o->precision);
    return vae_trainer_load(trainer, o->checkpoint_path, o->device);
}
