/* The INI config layer: parse (inih), override (--set), validate, write.
 *
 * One table describes every key (section, name, type, field, range). The
 * parser, the validator and the writer all walk it, so they cannot disagree
 * about the schema; configs/README.md documents the same table.
 *
 * inih is driven through ini_parse_stream with our own line reader: the
 * reader counts lines (Debian's inih has no line-number handler), strips
 * leading blanks (so an indented line is never taken as a continuation of
 * the previous value), and checks [section] headers, which inih does not
 * report to the handler. */
#include "vae/vae.h"
#include "error.h"
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

#define MAX_LAYER_WIDTH 65536
#define CONFIG_FILE_MAX_BYTES (1 << 20)
/* inih hands the reader a buffer of INI_MAX_LINE bytes: a line holds one
 * byte less. data.path must fit on its "path = ..." line. */
#define LINE_CHARACTERS_MAX (INI_MAX_LINE - 1)
#define PATH_CHARACTERS_MAX (LINE_CHARACTERS_MAX - (int)(sizeof "path = " - 1))

typedef enum key_type { KEY_INT, KEY_UINT64, KEY_FLOAT, KEY_CHOICE, KEY_PATH, KEY_WIDTHS } key_type;

typedef struct config_key {
    const char *section;
    const char *name;
    key_type type;
    size_t offset;               /* the field in vae_config */
    size_t count_offset;         /* KEY_WIDTHS: the field holding the count */
    double minimum, maximum;     /* KEY_INT, KEY_FLOAT; KEY_WIDTHS per width */
    int open_below, open_above;  /* exclusive bounds (lr > 0, beta1 < 1) */
    const char *const *choices;  /* KEY_CHOICE: names indexed by value, NULL-ended */
} config_key;

/* Choice names are indexed by the enum values of vae.h and vae_math.h. */
_Static_assert(VAE_DATA_HOST == 1, "enum order");
_Static_assert(VAE_BINARIZE_DYNAMIC == 2 && VAE_PRECISION_TF32 == 1 && VAE_NONFINITE_SKIP == 1, "enum order");
_Static_assert(VAE_ACTIVATION_GELU == 3 && VAE_LIKELIHOOD_GAUSSIAN_FIXED == 2 && VAE_LR_COSINE == 1, "enum order");
static const char *const binarize_names[] = {"none", "static", "dynamic", NULL};
static const char *const activation_names[] = {"relu", "tanh", "softplus", "gelu", NULL};
static const char *const likelihood_names[] = {"bernoulli", "gaussian", "gaussian_fixed", NULL};
static const char *const schedule_names[] = {"constant", "cosine", NULL};
static const char *const optimizer_names[] = {"adam", "adamw", NULL};
static const char *const precision_names[] = {"fp32", "tf32", NULL};
static const char *const nonfinite_names[] = {"stop", "skip", NULL};
static const char *const placement_names[] = {"auto", "host", NULL};

#define FIELD(f) offsetof(vae_config, f)
#define INT_KEY(s, n, f, lo, hi) {s, n, KEY_INT, FIELD(f), 0, lo, hi, 0, 0, NULL}
#define FLOAT_KEY(s, n, f, lo, hi, open_lo, open_hi) {s, n, KEY_FLOAT, FIELD(f), 0, lo, hi, open_lo, open_hi, NULL}
#define CHOICE_KEY(s, n, f, names) {s, n, KEY_CHOICE, FIELD(f), 0, 0, 0, 0, 0, names}
#define WIDTHS_KEY(s, n, f, count) {s, n, KEY_WIDTHS, FIELD(f), FIELD(count), 1, MAX_LAYER_WIDTH, 0, 0, NULL}

/* Sections appear in this order in written files. */
static const config_key config_keys[] = {
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
    CHOICE_KEY("model", "activation", activation, activation_names),
    CHOICE_KEY("model", "likelihood", likelihood, likelihood_names),
    FLOAT_KEY("model", "gaussian_fixed_logvar", gaussian_fixed_logvar, -30, 30, 0, 0),
    INT_KEY("model", "samples", samples, 1, 4096),
    FLOAT_KEY("model", "beta", beta, 0, FLT_MAX, 0, 0),
    INT_KEY("model", "kl_warmup_steps", kl_warmup_steps, 0, INT_MAX),
    FLOAT_KEY("model", "init_scale", init_scale, 0, FLT_MAX, 0, 0),
    INT_KEY("train", "epochs", epochs, 1, 1000000),
    INT_KEY("train", "batch_size", batch_size, 1, 1 << 20),
    {"train", "seed", KEY_UINT64, FIELD(seed), 0, 0, 0, 0, 0, NULL},
    FLOAT_KEY("train", "lr", lr, 0, FLT_MAX, 1, 0),
    FLOAT_KEY("train", "lr_min", lr_min, 0, FLT_MAX, 0, 0),
    CHOICE_KEY("train", "lr_schedule", lr_schedule, schedule_names),
    INT_KEY("train", "warmup_steps", warmup_steps, 0, INT_MAX),
    CHOICE_KEY("train", "optimizer", optimizer_adamw, optimizer_names),
    FLOAT_KEY("train", "adam_beta1", adam_beta1, 0, 1, 0, 1),
    FLOAT_KEY("train", "adam_beta2", adam_beta2, 0, 1, 0, 1),
    FLOAT_KEY("train", "adam_epsilon", adam_epsilon, 0, FLT_MAX, 1, 0),
    FLOAT_KEY("train", "weight_decay", weight_decay, 0, FLT_MAX, 0, 0),
    FLOAT_KEY("train", "grad_clip", grad_clip, 0, FLT_MAX, 0, 0),
    INT_KEY("train", "log_every_steps", log_every_steps, 1, INT_MAX),
    INT_KEY("train", "eval_every_epochs", eval_every_epochs, 0, INT_MAX),
    INT_KEY("train", "eval_batch_size", eval_batch_size, 1, 1 << 20),
    CHOICE_KEY("train", "precision", precision, precision_names),
    CHOICE_KEY("train", "nonfinite", nonfinite_policy, nonfinite_names),
    FLOAT_KEY("train", "logvar_clamp", logvar_clamp, 0, FLT_MAX, 0, 0),
    INT_KEY("checkpoint", "every_steps", checkpoint_every_steps, 0, INT_MAX),
    INT_KEY("checkpoint", "keep", checkpoint_keep, 0, INT_MAX),
    INT_KEY("output", "image_every_epochs", image_every_epochs, 0, INT_MAX),
};
#define KEY_COUNT (sizeof config_keys / sizeof config_keys[0])

static const char *const section_names[] = {"data", "model", "train", "checkpoint", "output"};
#define SECTION_COUNT (sizeof section_names / sizeof section_names[0])

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
}

/* ------------------------------------------------------------ helpers */

/* A copy of text safe to quote in a message: control bytes become '?',
 * long text is cut with "...". */
static const char *printable(const char *text, char *buffer, size_t size) {
    size_t used = 0;
    for (; text[used] != '\0' && used + 4 < size; ++used) {
        unsigned char c = (unsigned char)text[used];
        buffer[used] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (text[used] != '\0') { memcpy(buffer + used, "...", 3); used += 3; }
    buffer[used] = '\0';
    return buffer;
}

static int find_section(const char *name, size_t length) {
    for (size_t i = 0; i < SECTION_COUNT; ++i)
        if (strlen(section_names[i]) == length && strncmp(section_names[i], name, length) == 0) return (int)i;
    return -1;
}

static int find_key(const char *section, const char *name) {
    for (size_t i = 0; i < KEY_COUNT; ++i)
        if (strcmp(config_keys[i].section, section) == 0 && strcmp(config_keys[i].name, name) == 0) return (int)i;
    return -1;
}

static int parse_integer(const char *text, long long *out) {
    if (!isdigit((unsigned char)text[0]) && !((text[0] == '-' || text[0] == '+') && isdigit((unsigned char)text[1])))
        return 0;
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno == ERANGE || *end != '\0') return 0;
    *out = value;
    return 1;
}

static int parse_uint64(const char *text, uint64_t *out) {
    if (!isdigit((unsigned char)text[0])) return 0; /* strtoull would wrap "-1" */
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno == ERANGE || *end != '\0') return 0;
    *out = (uint64_t)value;
    return 1;
}

static int parse_float(const char *text, float *out) {
    if (text[0] == '\0' || isspace((unsigned char)text[0])) return 0;
    char *end;
    errno = 0;
    float value = strtof(text, &end); /* underflow to 0 or a subnormal is accepted */
    if (end == text || *end != '\0' || !isfinite(value)) return 0;
    *out = value;
    return 1;
}

/* "a, b ,c": up to VAE_MAX_HIDDEN_LAYERS widths; "" is no layer. */
static int parse_widths(const char *text, int *widths, int *count) {
    int parsed[VAE_MAX_HIDDEN_LAYERS];
    int n = 0;
    const char *p = text;
    while (*p == ' ' || *p == '\t') ++p;
    while (*p != '\0') {
        while (*p == ' ' || *p == '\t') ++p;
        if (!isdigit((unsigned char)*p) || n == VAE_MAX_HIDDEN_LAYERS) return 0;
        char *end;
        errno = 0;
        long width = strtol(p, &end, 10);
        if (errno == ERANGE || width < 1 || width > MAX_LAYER_WIDTH) return 0;
        parsed[n++] = (int)width;
        p = end;
        while (*p == ' ' || *p == '\t') ++p;
        if (*p == ',') {
            ++p;
            while (*p == ' ' || *p == '\t') ++p;
            if (*p == '\0') return 0; /* trailing comma */
        } else if (*p != '\0') {
            return 0;
        }
    }
    memset(widths, 0, VAE_MAX_HIDDEN_LAYERS * sizeof *widths);
    memcpy(widths, parsed, (size_t)n * sizeof *widths);
    *count = n;
    return 1;
}

/* NULL if path can be stored and written back as an INI value, else what is
 * expected of it. */
static const char *path_problem(const char *path) {
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

static void describe_expected(const config_key *key, char *buffer, size_t size) {
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
    }
}

static int float_in_range(const config_key *key, float value) {
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
    }
}

static vae_status value_error(const char *location, const config_key *key, const char *expected, const char *value) {
    char shown[96];
    return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: expected %s, got '%s'", location, key->section,
                     key->name, expected, printable(value, shown, sizeof shown));
}

/* Parses value for key into config; location prefixes the message. */
static vae_status apply_value(const config_key *key, const char *value, vae_config *config, const char *location) {
    char *field = (char *)config + key->offset;
    char expected[160];
    describe_expected(key, expected, sizeof expected);
    switch (key->type) {
    case KEY_INT: {
        long long parsed;
        if (!parse_integer(value, &parsed) || parsed < key->minimum || parsed > key->maximum)
            return value_error(location, key, expected, value);
        *(int *)field = (int)parsed;
        break;
    }
    case KEY_UINT64:
        if (!parse_uint64(value, (uint64_t *)field)) return value_error(location, key, expected, value);
        break;
    case KEY_FLOAT: {
        float parsed;
        if (!parse_float(value, &parsed) || !float_in_range(key, parsed))
            return value_error(location, key, expected, value);
        *(float *)field = parsed;
        break;
    }
    case KEY_CHOICE:
        for (int i = 0; key->choices[i]; ++i)
            if (strcmp(key->choices[i], value) == 0) { *(int *)field = i; return VAE_OK; }
        return value_error(location, key, expected, value);
    case KEY_PATH: {
        const char *problem = path_problem(value);
        if (problem) return value_error(location, key, problem, value);
        memset(field, 0, VAE_PATH_MAX);
        memcpy(field, value, strlen(value));
        break;
    }
    case KEY_WIDTHS:
        if (!parse_widths(value, (int *)field, (int *)((char *)config + key->count_offset)))
            return value_error(location, key, expected, value);
        break;
    }
    return VAE_OK;
}

/* Every field within its key's range (what a written file needs to load). */
static vae_status check_fields(const vae_config *config) {
    for (size_t i = 0; i < KEY_COUNT; ++i) {
        const config_key *key = &config_keys[i];
        const char *field = (const char *)config + key->offset;
        int ok = 1;
        char expected[160];
        describe_expected(key, expected, sizeof expected);
        switch (key->type) {
        case KEY_INT: ok = *(const int *)field >= key->minimum && *(const int *)field <= key->maximum; break;
        case KEY_UINT64: break;
        case KEY_FLOAT: ok = float_in_range(key, *(const float *)field); break;
        case KEY_CHOICE: {
            int count = 0;
            while (key->choices[count]) ++count;
            ok = *(const int *)field >= 0 && *(const int *)field < count;
            break;
        }
        case KEY_PATH: {
            const char *problem = path_problem(field);
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
        }
        if (!ok) {
            char value[VAE_PATH_MAX + 16];
            format_value(key, config, value, sizeof value);
            return value_error("config", key, expected, value);
        }
    }
    return VAE_OK;
}

vae_status vae_config_validate(const vae_config *config) {
    if (!config) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_config_validate: config is NULL");
    VAE_TRY(check_fields(config));
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
        long long examples = config->train_limit - config->validation_size;
        long long total_steps = (long long)config->epochs * ((examples + config->batch_size - 1) / config->batch_size);
        if (config->warmup_steps > total_steps)
            return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                             "config: [train] warmup_steps: expected at most the %lld steps of the run "
                             "(epochs x batches of train_limit - validation_size), got %d",
                             total_steps, config->warmup_steps);
    }
    return VAE_OK;
}

/* ------------------------------------------------------------ parsing */

typedef struct parse_session {
    vae_config work;           /* parsed into; copied out only on success */
    const vae_config *before;  /* the config as it was before this source */
    const char *name;          /* file name, or "--set ..." for an override */
    int is_override;
    const char *cursor;        /* the reader's position in the text */
    int line;                  /* the line the reader handed over last */
    int set_line[KEY_COUNT];   /* where each key was set in this source; 0: not */
    int settings;              /* key = value lines seen */
    int failed_line;           /* first line with an error; 0: none */
    vae_status status;
} parse_session;

static void format_location(const parse_session *session, char *buffer, size_t size) {
    if (session->is_override) snprintf(buffer, size, "%s", session->name);
    else snprintf(buffer, size, "%s:%d", session->name, session->line);
}

static vae_status apply_setting(parse_session *session, const char *section, const char *name, const char *value) {
    char location[VAE_PATH_MAX + 32], shown_section[64], shown_name[64];
    format_location(session, location, sizeof location);
    printable(section, shown_section, sizeof shown_section);
    printable(name, shown_name, sizeof shown_name);
    if (section[0] == '\0')
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: key '%s' comes before any [section]", location, shown_name);
    if (find_section(section, strlen(section)) < 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s: [%s] %s: unknown section; expected [data], [model], [train], [checkpoint] or [output]",
                         location, shown_section, shown_name);
    int index = find_key(section, name);
    if (index < 0) {
        char known[512];
        size_t used = 0;
        known[0] = '\0';
        for (size_t i = 0; i < KEY_COUNT && used < sizeof known; ++i)
            if (strcmp(config_keys[i].section, section) == 0)
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "",
                                         config_keys[i].name);
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: unknown key; expected one of %s", location,
                         shown_section, shown_name, known);
    }
    if (session->set_line[index])
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: set twice (first on line %d); a key appears once",
                         location, shown_section, shown_name, session->set_line[index]);
    VAE_TRY(apply_value(&config_keys[index], value, &session->work, location));
    session->set_line[index] = session->is_override ? 1 : session->line;
    return VAE_OK;
}

static int decoder_mirrors_encoder(const vae_config *config) {
    if (config->decoder_hidden_count != config->hidden_count) return 0;
    for (int i = 0; i < config->hidden_count && i < VAE_MAX_HIDDEN_LAYERS; ++i)
        if (config->decoder_hidden[i] != config->hidden[config->hidden_count - 1 - i]) return 0;
    return 1;
}

/* The decoder follows the encoder: when this source set [model] hidden but
 * not decoder_hidden, and the decoder was the encoder's mirror image, it
 * becomes the mirror of the new encoder. Then the result is committed. */
static void finish_session(parse_session *session, vae_config *config) {
    int hidden = find_key("model", "hidden"), decoder = find_key("model", "decoder_hidden");
    vae_config *work = &session->work;
    if (session->set_line[hidden] && !session->set_line[decoder] && decoder_mirrors_encoder(session->before)) {
        memset(work->decoder_hidden, 0, sizeof work->decoder_hidden);
        for (int i = 0; i < work->hidden_count; ++i) work->decoder_hidden[i] = work->hidden[work->hidden_count - 1 - i];
        work->decoder_hidden_count = work->hidden_count;
    }
    memcpy(config, work, sizeof *config);
}

static void fail_line(parse_session *session, vae_status status) {
    session->failed_line = session->line;
    session->status = status;
}

/* A [section] header: known name, nothing after the ']' but a comment. */
static void check_section_header(parse_session *session, const char *line) {
    const char *close = strchr(line, ']');
    if (!close) return; /* inih reports the unterminated header */
    char shown[96];
    const char *after = close + 1;
    while (*after == ' ' || *after == '\t') ++after;
    if (*after != '\0' && *after != ';' && *after != '#') {
        vae_error(VAE_ERROR_BAD_INPUT, "%s:%d: expected only a comment after the section header, got '%s'",
                  session->name, session->line, printable(line, shown, sizeof shown));
        fail_line(session, VAE_ERROR_BAD_INPUT);
    } else if (find_section(line + 1, (size_t)(close - line - 1)) < 0) {
        vae_error(VAE_ERROR_INVALID_ARGUMENT,
                  "%s:%d: unknown section '%s'; expected [data], [model], [train], [checkpoint] or [output]",
                  session->name, session->line, printable(line, shown, sizeof shown));
        fail_line(session, VAE_ERROR_INVALID_ARGUMENT);
    }
}

/* inih's fgets-style reader: one line of the text per call. */
static char *read_line(char *buffer, int size, void *stream) {
    parse_session *session = stream;
    if (session->failed_line || *session->cursor == '\0') return NULL;
    const char *start = session->cursor;
    const char *end = strchr(start, '\n');
    if (!end) end = start + strlen(start);
    session->cursor = *end ? end + 1 : end;
    session->line++;
    if (session->line == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0) start += 3; /* UTF-8 byte order mark */
    while (start < end && (*start == ' ' || *start == '\t')) ++start;
    size_t length = (size_t)(end - start);
    if (length > 0 && start[length - 1] == '\r') --length;
    if (length >= (size_t)size) {
        vae_error(VAE_ERROR_BAD_INPUT, "%s:%d: expected a line of at most %d characters, got %zu", session->name,
                  session->line, size - 1, length);
        fail_line(session, VAE_ERROR_BAD_INPUT);
        return NULL;
    }
    memcpy(buffer, start, length);
    buffer[length] = '\0';
    if (buffer[0] == '[') {
        check_section_header(session, buffer);
        if (session->failed_line) return NULL;
    }
    return buffer;
}

static int handle_setting(void *user, const char *section, const char *name, const char *value) {
    parse_session *session = user;
    if (session->failed_line) return 0;
    session->settings++;
    vae_status status = apply_setting(session, section, name, value);
    if (status != VAE_OK) {
        fail_line(session, status);
        return 0;
    }
    return 1;
}

static void start_session(parse_session *session, const vae_config *config, const char *name) {
    memset(session, 0, sizeof *session);
    memcpy(&session->work, config, sizeof *config);
    session->before = config;
    session->name = name;
}

vae_status vae_config_load_string(vae_config *config, const char *text, const char *name) {
    if (!config || !text) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_config_load_string: config or text is NULL");
    if (!name) name = "<string>";
    parse_session session;
    start_session(&session, config, name);
    session.cursor = text;
    int result = ini_parse_stream(read_line, &session, handle_setting, &session);
    if (result < 0) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: the INI parser could not get its line buffer", name);
    if (result > 0 && (session.failed_line == 0 || result < session.failed_line)) {
        /* A line inih could not read (no '=', no closing ']'): quote it. */
        const char *line = text;
        for (int i = 1; i < result && strchr(line, '\n'); ++i) line = strchr(line, '\n') + 1;
        char copy[96];
        size_t length = strcspn(line, "\r\n");
        if (length >= sizeof copy) length = sizeof copy - 1;
        memcpy(copy, line, length);
        copy[length] = '\0';
        char shown[96];
        return vae_error(VAE_ERROR_BAD_INPUT, "%s:%d: expected '[section]', 'key = value' or a comment, got '%s'", name,
                         result, printable(copy, shown, sizeof shown));
    }
    if (session.failed_line) return session.status;
    if (session.settings == 0)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: expected 'key = value' lines, got none (an empty or truncated config?)",
                         name);
    finish_session(&session, config);
    return VAE_OK;
}

vae_status vae_config_load_file(vae_config *config, const char *path) {
    if (!config || !path) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_config_load_file: config or path is NULL");
    FILE *file = fopen(path, "rb");
    if (!file) return vae_error(VAE_ERROR_IO, "%s: cannot open config: %s", path, strerror(errno));
    size_t capacity = 4096, length = 0;
    char *text = malloc(capacity);
    vae_status status = VAE_OK;
    while (text) {
        if (length + 1 == capacity) {
            if (capacity > CONFIG_FILE_MAX_BYTES) {
                status = vae_error(VAE_ERROR_BAD_INPUT, "%s: expected a config of at most %d bytes; this is larger",
                                   path, CONFIG_FILE_MAX_BYTES);
                break;
            }
            char *grown = realloc(text, capacity * 2);
            if (!grown) { free(text); text = NULL; break; }
            text = grown;
            capacity *= 2;
        }
        size_t got = fread(text + length, 1, capacity - 1 - length, file);
        length += got;
        if (got == 0) {
            if (ferror(file)) status = vae_error(VAE_ERROR_IO, "%s: cannot read config: %s", path, strerror(errno));
            break;
        }
    }
    fclose(file); /* read-only: nothing to lose if closing fails */
    if (!text) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: no memory to read the config", path);
    if (status == VAE_OK) {
        text[length] = '\0';
        const char *nul = memchr(text, '\0', length);
        if (nul) {
            int line = 1;
            for (const char *p = text; p < nul; ++p) line += *p == '\n';
            status = vae_error(VAE_ERROR_BAD_INPUT, "%s:%d: expected text, got a NUL byte (not an INI file?)", path, line);
        } else {
            status = vae_config_load_string(config, text, path);
        }
    }
    free(text);
    return status;
}

vae_status vae_config_set(vae_config *config, const char *assignment) {
    if (!config || !assignment) return vae_error(VAE_ERROR_INVALID_ARGUMENT, "vae_config_set: config or assignment is NULL");
    char shown[256], name[sizeof shown + 8];
    snprintf(name, sizeof name, "--set %s", printable(assignment, shown, sizeof shown));
    const char *equals = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!equals || !dot || dot > equals)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: expected section.key=value (e.g. train.lr=0.001)", name);
    char *copy = malloc(strlen(assignment) + 1);
    if (!copy) return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: no memory", name);
    strcpy(copy, assignment);
    /* Split into section, key and value, each trimmed as inih trims. */
    char *parts[3] = {copy, copy + (dot - assignment) + 1, copy + (equals - assignment) + 1};
    copy[dot - assignment] = '\0';
    copy[equals - assignment] = '\0';
    for (int i = 0; i < 3; ++i) {
        while (isspace((unsigned char)*parts[i])) ++parts[i];
        size_t length = strlen(parts[i]);
        while (length > 0 && isspace((unsigned char)parts[i][length - 1])) parts[i][--length] = '\0';
    }
    parse_session session;
    start_session(&session, config, name);
    session.is_override = 1;
    vae_status status = apply_setting(&session, parts[0], parts[1], parts[2]);
    if (status == VAE_OK) finish_session(&session, config);
    free(copy);
    return status;
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
    /* Write a temporary file and rename it over path: a reader never sees
     * half a config. */
    char *temporary = malloc(strlen(path) + sizeof ".tmp");
    if (!temporary) { free(text); return vae_error(VAE_ERROR_OUT_OF_MEMORY, "%s: no memory", path); }
    sprintf(temporary, "%s.tmp", path);
    vae_status status = VAE_OK;
    FILE *file = fopen(temporary, "wb");
    if (!file) {
        status = vae_error(VAE_ERROR_IO, "%s: cannot create: %s", temporary, strerror(errno));
    } else {
        size_t length = strlen(text);
        int written = fwrite(text, 1, length, file) == length && fflush(file) == 0;
        int saved_errno = errno;
        if (fclose(file) != 0 && written) { written = 0; saved_errno = errno; }
        if (!written) status = vae_error(VAE_ERROR_IO, "%s: cannot write: %s", temporary, strerror(saved_errno));
        else if (rename(temporary, path) != 0)
            status = vae_error(VAE_ERROR_IO, "%s: cannot rename to %s: %s", temporary, path, strerror(errno));
        if (status != VAE_OK) remove(temporary);
    }
    free(temporary);
    free(text);
    return status;
}
