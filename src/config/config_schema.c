/* The config schema: the key table, defaults, validation and writing
 * (vae_config_to_string, vae_config_write_file). Parsing and --set
 * overrides are in config.c; config_schema.h says why one table serves both. */
#include "config/config_schema.h"
#include "vae/arrays.h"
#include "base/error.h"
#include "io/atomic_file.h"
#include "vae_math.h"

#include <ini.h>

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* inih hands the reader a buffer of INI_MAX_LINE bytes: a line holds one
 * byte less. data.path must fit on its "path = ..." line. */
#define LINE_CHARACTERS_MAX (INI_MAX_LINE - 1)
#define PATH_CHARACTERS_MAX (LINE_CHARACTERS_MAX - (int)(sizeof "path = " - 1))

/* Choice names are indexed by the enum values of vae.h. */
_Static_assert(VAE_DATA_HOST == 1, "enum order");
_Static_assert(VAE_BINARIZE_DYNAMIC == 2 && VAE_NONFINITE_SKIP == 1, "enum order");
_Static_assert(VAE_PRECISION_TF32 == 1 && VAE_PRECISION_BF16 == 2, "enum order");
_Static_assert(VAE_ACTIVATION_GELU == 3 && VAE_LIKELIHOOD_GAUSSIAN_FIXED == 2 && VAE_LR_COSINE == 1, "enum order");
_Static_assert(VAE_OPTIMIZER_ADAMW == 1 && VAE_OBJECTIVE_IWAE == 1, "enum order");
/* A choice is stored through an int lvalue (config.c): every enum field of
 * vae_config has the size of an int. */
_Static_assert(sizeof(vae_binarize) == sizeof(int) && sizeof(vae_activation) == sizeof(int) &&
                   sizeof(vae_likelihood) == sizeof(int) && sizeof(vae_lr_schedule) == sizeof(int) &&
                   sizeof(vae_optimizer) == sizeof(int) && sizeof(vae_precision) == sizeof(int) &&
                   sizeof(vae_nonfinite_policy) == sizeof(int) && sizeof(vae_data_placement) == sizeof(int) &&
                   sizeof(vae_objective) == sizeof(int),
               "config enums are stored as int");
static const char *const binarize_names[] = {"none", "static", "dynamic", NULL};
static const char *const activation_names[] = {"relu", "tanh", "softplus", "gelu", NULL};
static const char *const likelihood_names[] = {"bernoulli", "gaussian", "gaussian_fixed", NULL};
static const char *const schedule_names[] = {"constant", "cosine", NULL};
static const char *const optimizer_names[] = {"adam", "adamw", NULL};
static const char *const precision_names[] = {"fp32", "tf32", "bf16", NULL};
static const char *const nonfinite_names[] = {"stop", "skip", NULL};
static const char *const placement_names[] = {"auto", "host", NULL};
static const char *const objective_names[] = {"elbo", "iwae", NULL};
static const char *const switch_names[] = {"off", "on", NULL};

const char *vae_precision_name(vae_precision precision) {
    return precision >= VAE_PRECISION_FP32 && precision <= VAE_PRECISION_BF16 ? precision_names[precision] : "unknown";
}

#define FIELD(f) offsetof(vae_config, f)
#define INT_KEY(s, n, f, lo, hi) {s, n, KEY_INT, FIELD(f), 0, lo, hi, 0, 0, NULL}
#define FLOAT_KEY(s, n, f, lo, hi, open_lo, open_hi) {s, n, KEY_FLOAT, FIELD(f), 0, lo, hi, open_lo, open_hi, NULL}
#define CHOICE_KEY(s, n, f, names) {s, n, KEY_CHOICE, FIELD(f), 0, 0, 0, 0, 0, names}
#define WIDTHS_KEY(s, n, f, count) {s, n, KEY_WIDTHS, FIELD(f), FIELD(count), 1, MAX_LAYER_WIDTH, 0, 0, NULL}
#define LAYERS_KEY(s, n, f, count) {s, n, KEY_LAYERS, FIELD(f), FIELD(count), 0, 0, 0, 0, NULL}

/* Sections appear in this order in written files. */
const config_key config_keys[] = {
    {"data", "path", KEY_PATH, FIELD(data_path), 0, 0, 0, 0, 0, NULL},
    CHOICE_KEY("data", "binarize", binarize, binarize_names),
    FLOAT_KEY("data", "binarize_threshold", binarize_threshold, 0, 1, 0, 0),
    INT_KEY("data", "validation_size", validation_size, 0, INT_MAX),
    INT_KEY("data", "train_limit", train_limit, 0, INT_MAX),
    INT_KEY("data", "test_limit", test_limit, 0, INT_MAX),
    CHOICE_KEY("data", "on_device", data_on_device, placement_names),
    INT_KEY("model", "latent_dim", latent_dim, 1, 65536),
    WIDTHS_KEY("model", "hidden", hidden, hidden_count),
    WIDTHS_KEY("model", "decoder_hidden", decoder_hidden, decoder_hidden_count),
    LAYERS_KEY("model", "encoder", encoder_layers, encoder_layer_count),
    LAYERS_KEY("model", "decoder", decoder_layers, decoder_layer_count),
    CHOICE_KEY("model", "activation", activation, activation_names),
    CHOICE_KEY("model", "likelihood", likelihood, likelihood_names),
    FLOAT_KEY("model", "gaussian_fixed_logvar", gaussian_fixed_logvar, -30, 30, 0, 0),
    INT_KEY("model", "samples", samples, 1, 4096),
    FLOAT_KEY("model", "beta", beta, 0, FLT_MAX, 0, 0),
    INT_KEY("model", "kl_warmup_steps", kl_warmup_steps, 0, INT_MAX),
    FLOAT_KEY("model", "init_scale", init_scale, 0, FLT_MAX, 0, 0),
    CHOICE_KEY("model", "objective", objective, objective_names),
    WIDTHS_KEY("model", "latent_groups", latent_groups, latent_group_count),
    INT_KEY("model", "hierarchy_width", hierarchy_width, 1, MAX_LAYER_WIDTH),
    CHOICE_KEY("model", "residual_posterior", residual_posterior, switch_names),
    FLOAT_KEY("model", "free_bits", free_bits, 0, FLT_MAX, 0, 0),
    INT_KEY("train", "epochs", epochs, 1, 1000000),
    INT_KEY("train", "batch_size", batch_size, 1, 1 << 20),
    {"train", "seed", KEY_UINT64, FIELD(seed), 0, 0, 0, 0, 0, NULL},
    FLOAT_KEY("train", "lr", lr, 0, FLT_MAX, 1, 0),
    FLOAT_KEY("train", "lr_min", lr_min, 0, FLT_MAX, 0, 0),
    CHOICE_KEY("train", "lr_schedule", lr_schedule, schedule_names),
    INT_KEY("train", "warmup_steps", warmup_steps, 0, INT_MAX),
    CHOICE_KEY("train", "optimizer", optimizer, optimizer_names),
    FLOAT_KEY("train", "adam_beta1", adam_beta1, 0, 1, 0, 1),
    FLOAT_KEY("train", "adam_beta2", adam_beta2, 0, 1, 0, 1),
    FLOAT_KEY("train", "adam_epsilon", adam_epsilon, 0, FLT_MAX, 1, 0),
    FLOAT_KEY("train", "weight_decay", weight_decay, 0, FLT_MAX, 0, 0),
    FLOAT_KEY("train", "grad_clip", grad_clip, 0, FLT_MAX, 0, 0),
    FLOAT_KEY("train", "skip_grad_norm", skip_grad_norm, 0, FLT_MAX, 0, 0),
    INT_KEY("train", "log_every_steps", log_every_steps, 1, INT_MAX),
    INT_KEY("train", "eval_every_epochs", eval_every_epochs, 0, INT_MAX),
    INT_KEY("train", "eval_batch_size", eval_batch_size, 1, 1 << 20),
    CHOICE_KEY("train", "precision", precision, precision_names),
    CHOICE_KEY("train", "nonfinite", nonfinite_policy, nonfinite_names),
    FLOAT_KEY("train", "logvar_clamp", logvar_clamp, 0, FLT_MAX, 0, 0),
    INT_KEY("checkpoint", "every_steps", checkpoint_every_steps, 0, INT_MAX),
    INT_KEY("checkpoint", "keep", checkpoint_keep, 0, INT_MAX),
    INT_KEY("output", "image_every_epochs", image_every_epochs, 0, INT_MAX),
    CHOICE_KEY("output", "tensorboard", tensorboard, switch_names),
};
#define KEY_COUNT (sizeof config_keys / sizeof config_keys[0])
_Static_assert(KEY_COUNT == CONFIG_KEY_COUNT, "update CONFIG_KEY_COUNT in config_schema.h");

static const char *const section_names[] = {"data", "model", "train", "checkpoint", "output"};
#define SECTION_COUNT (sizeof section_names / sizeof section_names[0])

size_t vae_config_size(void) { return sizeof(vae_config); }

void vae_config_defaults(vae_config *config) {
    /* memset first: padding and unused array slots are zero, so two configs
     * that hold the same values compare equal with memcmp. */
    memset(config, 0, sizeof *config);
    strcpy(config->data_path, "/usr/share/datasets/fashion-mnist");
    config->binarize = VAE_BINARIZE_DYNAMIC;
    config->binarize_threshold = 0.5f;
    config->latent_dim = 20;
    config->hidden[0] = 400;
    config->hidden_count = 1;
    config->decoder_hidden[0] = 400;
    config->decoder_hidden_count = 1;
    config->activation = VAE_ACTIVATION_RELU;
    config->likelihood = VAE_LIKELIHOOD_BERNOULLI;
    config->samples = 1;
    config->beta = 1.0f;
    config->epochs = 10;
    config->batch_size = 128;
    config->seed = 1;
    config->lr = 1e-3f;
    config->lr_schedule = VAE_LR_CONSTANT;
    config->adam_beta1 = 0.9f;
    config->adam_beta2 = 0.999f;
    config->adam_epsilon = 1e-8f;
    config->log_every_steps = 100;
    config->eval_every_epochs = 1;
    config->eval_batch_size = 1000;
    config->precision = VAE_PRECISION_FP32;
    config->nonfinite_policy = VAE_NONFINITE_STOP;
    config->objective = VAE_OBJECTIVE_ELBO;
    config->tensorboard = 1;
    config->hierarchy_width = 256;
    config->residual_posterior = 1;
}

/* ------------------------------------------------------------ helpers */

/* A copy of text safe to quote in a message: control bytes become '?',
 * long text is cut with "...". */
const char *config_printable(const char *text, char *buffer, size_t size) {
    size_t used = 0;
    for (; text[used] != '\0' && used + 4 < size; ++used) {
        unsigned char c = (unsigned char)text[used];
        buffer[used] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (text[used] != '\0') { memcpy(buffer + used, "...", 3); used += 3; }
    buffer[used] = '\0';
    return buffer;
}

int config_find_section(const char *name, size_t length) {
    for (size_t i = 0; i < SECTION_COUNT; ++i)
        if (strlen(section_names[i]) == length && strncmp(section_names[i], name, length) == 0) return (int)i;
    return -1;
}

int config_find_key(const char *section, const char *name) {
    for (size_t i = 0; i < KEY_COUNT; ++i)
        if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].name, name) == 0) return (int)i;
    return -1;
}

/* NULL if path can be stored and written back as an INI value, else what is
 * expected of it. */
const char *config_path_problem(const char *path) {
    const char *nul = memchr(path, '\0', VAE_PATH_MAX);
    size_t length = nul ? (size_t)(nul - path) : VAE_PATH_MAX;
    if (length == 0) return "a non-empty path";
    if (length > PATH_CHARACTERS_MAX) return "a path of at most 192 characters (the INI line limit)";
    if (isspace((unsigned char)path[0]) || isspace((unsigned char)path[length - 1]))
        return "a path without leading or trailing blanks";
    for (size_t i = 0; i < length; ++i)
        if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f) return "a path without control characters";
    /* Written as "path = VALUE": a ';' first or after a blank would start a comment. */
    if (path[0] == ';' || strstr(path, " ;") || strstr(path, "\t;"))
        return "a path without ';' at its start or after a blank (it starts an INI comment)";
    return NULL;
}
_Static_assert(PATH_CHARACTERS_MAX == 192, "update the path message");

void config_describe_expected(const config_key *key, char *buffer, size_t size) {
    switch (key->type) {
    case KEY_INT:
        if (key->maximum >= INT_MAX) snprintf(buffer, size, "an integer >= %.0f", key->minimum);
        else snprintf(buffer, size, "an integer in %.0f..%.0f", key->minimum, key->maximum);
        break;
    case KEY_UINT64: snprintf(buffer, size, "an unsigned 64-bit integer"); break;
    case KEY_FLOAT:
        if (key->maximum >= FLT_MAX)
            snprintf(buffer, size, "a number %s %g", key->open_below ? ">" : ">=", key->minimum);
        else
            snprintf(buffer, size, "a number in %c%g, %g%c", key->open_below ? '(' : '[', key->minimum,
                     key->maximum, key->open_above ? ')' : ']');
        break;
    case KEY_CHOICE: {
        size_t used = (size_t)snprintf(buffer, size, "one of ");
        for (int i = 0; key->choices[i] && used < size; ++i)
            used += (size_t)snprintf(buffer + used, size - used, "%s%s", i ? "|" : "", key->choices[i]);
        break;
    }
    case KEY_PATH: snprintf(buffer, size, "a non-empty path"); break;
    case KEY_WIDTHS:
        snprintf(buffer, size, "at most %d comma-separated widths in 1..%d (empty: none)", VAE_MAX_HIDDEN_LAYERS,
                 MAX_LAYER_WIDTH);
        break;
    case KEY_LAYERS:
        snprintf(buffer, size,
                 "at most %d comma-separated layers: conv C kK [sS] [pP], convt C kK [sS] [pP], dense N or dense "
                 "CxHxW (empty: none)",
                 VAE_MAX_LAYER_SPECS);
        break;
    }
}

int config_float_in_range(const config_key *key, float value) {
    if (!isfinite(value)) return 0;
    if (key->open_below ? !(value > key->minimum) : !(value >= key->minimum)) return 0;
    if (key->open_above ? !(value < key->maximum) : !(value <= key->maximum)) return 0;
    return 1;
}

/* The shortest decimal that reads back (strtof) to exactly value: 9
 * significant digits always do, fewer usually do ("0.001", not
 * "0.00100000005"). */
static void format_float(float value, char *buffer, size_t size) {
    for (int digits = 1; digits <= 9; ++digits) {
        snprintf(buffer, size, "%.*g", digits, (double)value);
        if (strtof(buffer, NULL) == value) return;
    }
}

/* The value as written to a file (printable, for a message, when quoting). */
static void format_value(const config_key *key, const vae_config *config, char *buffer, size_t size) {
    const char *field = (const char *)config + key->offset;
    buffer[0] = '\0';
    switch (key->type) {
    case KEY_INT: snprintf(buffer, size, "%d", *(const int *)field); break;
    case KEY_UINT64: snprintf(buffer, size, "%llu", (unsigned long long)*(const uint64_t *)field); break;
    case KEY_FLOAT: format_float(*(const float *)field, buffer, size); break;
    case KEY_CHOICE: {
        int value = *(const int *)field, count = 0;
        while (key->choices[count]) ++count;
        if (value >= 0 && value < count) snprintf(buffer, size, "%s", key->choices[value]);
        else snprintf(buffer, size, "%d", value);
        break;
    }
    case KEY_PATH: snprintf(buffer, size, "%.*s", VAE_PATH_MAX - 1, field); break;
    case KEY_WIDTHS: {
        const int *widths = (const int *)field;
        int count = *(const int *)((const char *)config + key->count_offset);
        if (count < 0 || count > VAE_MAX_HIDDEN_LAYERS) { snprintf(buffer, size, "(%d layers)", count); break; }
        size_t used = 0;
        for (int i = 0; i < count && used < size; ++i)
            used += (size_t)snprintf(buffer + used, size - used, "%s%d", i ? ", " : "", widths[i]);
        break;
    }
    case KEY_LAYERS:
        config_format_layers((const vae_layer_spec *)field, *(const int *)((const char *)config + key->count_offset),
                             buffer, size);
        break;
    }
}

vae_status config_value_error(const char *location, const config_key *key, const char *expected, const char *value) {
    char shown[96];
    return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: expected %s, got '%s'", location, key->section,
                     key->name, expected, config_printable(value, shown, sizeof shown));
}

/* ------------------------------------------------------------ validation */

/* Every field within its key's range (what a written file needs to load). */
static vae_status check_fields(const vae_config *config) {
    for (size_t i = 0; i < KEY_COUNT; ++i) {
        const config_key *key = &config_keys[i];
        const char *field = (const char *)config + key->offset;
        int ok = 1;
        char expected[160];
        config_describe_expected(key, expected, sizeof expected);
        switch (key->type) {
        case KEY_INT: ok = *(const int *)field >= key->minimum && *(const int *)field <= key->maximum; break;
        case KEY_UINT64: break;
        case KEY_FLOAT: ok = config_float_in_range(key, *(const float *)field); break;
        case KEY_CHOICE: {
            int count = 0;
            while (key->choices[count]) ++count;
            ok = *(const int *)field >= 0 && *(const int *)field < count;
            break;
        }
        case KEY_PATH: {
            const char *problem = config_path_problem(field);
            if (problem) snprintf(expected, sizeof expected, "%s", problem);
            ok = problem == NULL;
            break;
        }
        case KEY_WIDTHS: {
            int count = *(const int *)((const char *)config + key->count_offset);
            ok = count >= 0 && count <= VAE_MAX_HIDDEN_LAYERS;
            for (int w = 0; ok && w < count; ++w)
                ok = ((const int *)field)[w] >= 1 && ((const int *)field)[w] <= MAX_LAYER_WIDTH;
            break;
        }
        case KEY_LAYERS: VAE_TRY(config_check_layers(key, config)); break;
        }
        if (!ok) {
            char value[VAE_PATH_MAX + 16];
            format_value(key, config, value, sizeof value);
            return config_value_error("config", key, expected, value);
        }
    }
    return VAE_OK;
}

/* The layer lists against the widths they replace, and a conv encoder's
 * decoder (a conv encoder has no mirror image to default to). */
static vae_status check_layer_lists(const vae_config *config) {
    if (config->encoder_layer_count > 0 && config->hidden_count > 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "config: [model] encoder: expected either encoder (a layer list) or hidden (widths), not both "
                         "(hidden has %d widths; set hidden = to use the list)",
                         config->hidden_count);
    if (config->decoder_layer_count > 0 && config->decoder_hidden_count > 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "config: [model] decoder: expected either decoder (a layer list) or decoder_hidden (widths), "
                         "not both (decoder_hidden has %d widths; set decoder_hidden = to use the list)",
                         config->decoder_hidden_count);
    if (config_layers_use_convolution(config->encoder_layers, config->encoder_layer_count) &&
        config->decoder_layer_count == 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "config: [model] decoder: expected a layer list, since the encoder has conv layers (a conv "
                         "encoder has no mirror image to default to; e.g. decoder = dense 64x7x7, convt 32 k4 s2 p1, "
                         "convt out k4 s2 p1)");
    return VAE_OK;
}

/* Hierarchical latents: several groups whose sizes add up to latent_dim. */
static vae_status check_latent_groups(const vae_config *config) {
    int count = config->latent_group_count;
    if (count == 0) return VAE_OK;
    if (count == 1 || count > VAE_MAX_LATENT_GROUPS)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "config: [model] latent_groups: expected 2..%d group sizes (or none: one latent of "
                         "latent_dim), got %d", VAE_MAX_LATENT_GROUPS, count);
    long long sum = 0;
    for (int g = 0; g < count; ++g) sum += config->latent_groups[g];
    if (sum != config->latent_dim)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "config: [model] latent_dim: expected the sum of latent_groups (%lld), got %d", sum,
                         config->latent_dim);
    /* Free bits floor a group's closed-form KL; the importance-weighted
     * objective has none (its log weights sum each group's sampled log p -
     * log q), so there is nothing for the floor to hold. */
    if (config->objective == VAE_OBJECTIVE_IWAE && config->free_bits > 0.0f) {
        char free_bits[32];
        format_float(config->free_bits, free_bits, sizeof free_bits);
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "config: [model] free_bits: expected 0 with objective = iwae and latent_groups (free bits "
                         "floor each group's closed-form KL, which the importance-weighted objective does not "
                         "use), got %s",
                         free_bits);
    }
    return VAE_OK;
}

/* The run's step count when the config alone knows it (data.train_limit > 0,
 * more examples than validation_size), else -1. */
static long long known_run_steps(const vae_config *config) {
    if (config->train_limit <= 0 || config->validation_size >= config->train_limit || config->batch_size <= 0) return -1;
    long long examples = config->train_limit - config->validation_size;
    return (long long)config->epochs * ((examples + config->batch_size - 1) / config->batch_size);
}

int vae_config_fit_warmup_to_overrides(vae_config *config, const vae_config *before, char *note, size_t note_size) {
    if (!config || !before) return 0;
    long long steps = known_run_steps(config), steps_before = known_run_steps(before);
    if (steps < 0 || config->warmup_steps <= steps) return 0;
    /* The file's own run must hold its warm-up (else the file is wrong), and
     * an override that set the warm-up itself asked for it. */
    if (config->warmup_steps != before->warmup_steps) return 0;
    if (steps_before >= 0 && before->warmup_steps > steps_before) return 0;
    if (note && note_size > 0)
        snprintf(note, note_size,
                 "[train] warmup_steps shortened from %d to %lld, the steps of the run the overrides leave "
                 "(epochs x batches of train_limit - validation_size)",
                 config->warmup_steps, steps);
    config->warmup_steps = (int)steps;
    return 1;
}

vae_status vae_config_validate(const vae_config *config) {
    if (!config) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_config_validate: config is NULL");
    VAE_TRY(check_fields(config));
    VAE_TRY(check_layer_lists(config));
    VAE_TRY(check_latent_groups(config));
    if (config->lr_min > config->lr) {
        char lr[32], lr_min[32];
        format_float(config->lr, lr, sizeof lr);
        format_float(config->lr_min, lr_min, sizeof lr_min);
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "config: [train] lr_min: expected at most lr (%s), got %s", lr,
                         lr_min);
    }
    if ((long long)config->samples * config->batch_size > INT_MAX)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "config: [model] samples: expected samples x batch_size <= %d rows, got %d x %d", INT_MAX,
                         config->samples, config->batch_size);
    if (config->train_limit > 0) {
        if (config->validation_size >= config->train_limit)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                             "config: [data] validation_size: expected fewer than train_limit (%d) examples, got %d",
                             config->train_limit, config->validation_size);
        /* With a known training-set size, a warm-up longer than the whole run
         * is surely a mistake (the rate would never reach lr). */
        long long total_steps = known_run_steps(config);
        if (config->warmup_steps > total_steps)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                             "config: [train] warmup_steps: expected at most the %lld steps of the run "
                             "(epochs x batches of train_limit - validation_size), got %d",
                             total_steps, config->warmup_steps);
    }
    return VAE_OK;
}

int vae_config_first_difference(const vae_config *a, const vae_config *b, char *key, size_t key_size, char *a_value,
                                char *b_value, size_t value_size) {
    for (size_t s = 0; s < SECTION_COUNT; ++s)
        for (size_t i = 0; i < KEY_COUNT; ++i) {
            if (strcmp(config_keys[i].section, section_names[s]) != 0) continue;
            char a_text[VAE_PATH_MAX + 16], b_text[VAE_PATH_MAX + 16];
            format_value(&config_keys[i], a, a_text, sizeof a_text);
            format_value(&config_keys[i], b, b_text, sizeof b_text);
            if (strcmp(a_text, b_text) == 0) continue;
            snprintf(key, key_size, "%s.%s", config_keys[i].section, config_keys[i].name);
            snprintf(a_value, value_size, "%s", a_text);
            snprintf(b_value, value_size, "%s", b_text);
            return 1;
        }
    return 0;
}

/* ------------------------------------------------------------ writing */

/* snprintf at *used; past the end, *used only grows (the caller checks). */
static void append(char *text, size_t capacity, size_t *used, const char *format, ...) VAE_PRINTF_LIKE(4, 5);
static void append(char *text, size_t capacity, size_t *used, const char *format, ...) {
    va_list args;
    va_start(args, format);
    int wrote = *used < capacity ? vsnprintf(text + *used, capacity - *used, format, args) : 0;
    va_end(args);
    *used += wrote > 0 ? (size_t)wrote : 0;
    if (*used >= capacity) *used = capacity;
}

vae_status vae_config_to_string(const vae_config *config, char **out_text) {
    if (!config || !out_text) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_config_to_string: config or out_text is NULL");
    *out_text = NULL;
    /* A field out of range would write a file that does not load back. */
    vae_status status = check_fields(config);
    if (status != VAE_OK) return vae_error_context(status, "cannot write the config");
    /* Upper bound: checked fields keep every line within the line limit. */
    size_t capacity = 256 + (KEY_COUNT + 2 * SECTION_COUNT) * (LINE_CHARACTERS_MAX + 2);
    char *text = malloc(capacity);
    if (!text) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "vae_config_to_string: no memory");
    size_t used = 0;
    append(text, capacity, &used, "# vae-engine config: every key with its resolved value (schema: configs/README.md)\n");
    for (size_t s = 0; s < SECTION_COUNT; ++s) {
        append(text, capacity, &used, "\n[%s]\n", section_names[s]);
        for (size_t i = 0; i < KEY_COUNT; ++i) {
            if (strcmp(config_keys[i].section, section_names[s]) != 0) continue;
            /* An unused layer list is left out: a config without lists writes
             * the same text as before the lists existed. */
            if (config_keys[i].type == KEY_LAYERS &&
                *(const int *)((const char *)config + config_keys[i].count_offset) == 0)
                continue;
            /* Likewise the default objective: an elbo config writes the text
             * it wrote before model.objective existed (and loads back to elbo). */
            if (config_keys[i].offset == FIELD(objective) && config->objective == VAE_OBJECTIVE_ELBO) continue;
            /* And the hierarchy's keys, for a model with one latent group. */
            if (config->latent_group_count == 0 &&
                (config_keys[i].offset == FIELD(latent_groups) || config_keys[i].offset == FIELD(hierarchy_width) ||
                 config_keys[i].offset == FIELD(residual_posterior) || config_keys[i].offset == FIELD(free_bits)))
                continue;
            /* And train.skip_grad_norm = 0, the default. */
            if (config_keys[i].offset == FIELD(skip_grad_norm) && config->skip_grad_norm == 0.0f) continue;
            /* And output.tensorboard = on, the default. */
            if (config_keys[i].offset == FIELD(tensorboard) && config->tensorboard == 1) continue;
            char value[VAE_PATH_MAX + 16];
            format_value(&config_keys[i], config, value, sizeof value);
            append(text, capacity, &used, "%s =%s%s\n", config_keys[i].name, value[0] ? " " : "", value);
        }
    }
    if (used >= capacity) {
        free(text);
        return vae_error(VAE_ERROR_INTERNAL, "vae_config_to_string: text outgrew its bound");
    }
    *out_text = text;
    return VAE_OK;
}

vae_status vae_config_write_file(const vae_config *config, const char *path) {
    if (!config || !path) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_config_write_file: config or path is NULL");
    char *text;
    VAE_TRY(vae_config_to_string(config, &text));
    /* Atomically: a reader never sees half a config. */
    vae_status status = vae_atomic_write(path, text, strlen(text), "config");
    free(text);
    return status;
}
