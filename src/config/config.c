/* The INI config layer's parsing: config files (vae_config_load_file,
 * vae_config_load_string) and --set overrides (vae_config_set). The key
 * table, defaults, validation and writing are in config_schema.c.
 *
 * inih is driven through ini_parse_stream with our own line reader: the
 * reader counts lines (Debian's inih has no line-number handler), strips
 * leading blanks (so an indented line is never taken as a continuation of
 * the previous value), and checks [section] headers, which inih does not
 * report to the handler. */
#include "config/config_schema.h"
#include "base/error.h"

#include <ini.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_FILE_MAX_BYTES (1 << 20)

/* ------------------------------------------------------------ values */

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

/* Parses value for key into config; location prefixes the message. */
static vae_status apply_value(const config_key *key, const char *value, vae_config *config, const char *location) {
    char *field = (char *)config + key->offset;
    char expected[160];
    config_describe_expected(key, expected, sizeof expected);
    switch (key->type) {
    case KEY_INT: {
        long long parsed;
        if (!parse_integer(value, &parsed) || parsed < key->minimum || parsed > key->maximum)
            return config_value_error(location, key, expected, value);
        *(int *)field = (int)parsed;
        break;
    }
    case KEY_UINT64:
        if (!parse_uint64(value, (uint64_t *)field)) return config_value_error(location, key, expected, value);
        break;
    case KEY_FLOAT: {
        float parsed;
        if (!parse_float(value, &parsed) || !config_float_in_range(key, parsed))
            return config_value_error(location, key, expected, value);
        *(float *)field = parsed;
        break;
    }
    case KEY_CHOICE:
        for (int i = 0; key->choices[i]; ++i)
            if (strcmp(key->choices[i], value) == 0) { *(int *)field = i; return VAE_OK; }
        return config_value_error(location, key, expected, value);
    case KEY_PATH: {
        const char *problem = config_path_problem(value);
        if (problem) return config_value_error(location, key, problem, value);
        memset(field, 0, VAE_PATH_MAX);
        memcpy(field, value, strlen(value));
        break;
    }
    case KEY_WIDTHS:
        if (!parse_widths(value, (int *)field, (int *)((char *)config + key->count_offset)))
            return config_value_error(location, key, expected, value);
        break;
    case KEY_LAYERS: return config_parse_layers(key, value, config, location);
    }
    return VAE_OK;
}

/* ------------------------------------------------------------ parsing */

typedef struct parse_session {
    vae_config work;                /* parsed into; copied out only on success */
    const vae_config *before;       /* the config as it was before this source */
    const char *name;               /* file name, or "--set ..." for an override */
    int is_override;
    const char *cursor;             /* the reader's position in the text */
    int line;                       /* the line the reader handed over last */
    int set_line[CONFIG_KEY_COUNT]; /* where each key was set in this source; 0: not */
    int settings;                   /* key = value lines seen */
    int failed_line;                /* first line with an error; 0: none */
    vae_status status;
} parse_session;

static void format_location(const parse_session *session, char *buffer, size_t size) {
    if (session->is_override) snprintf(buffer, size, "%s", session->name);
    else snprintf(buffer, size, "%s:%d", session->name, session->line);
}

static vae_status apply_setting(parse_session *session, const char *section, const char *name, const char *value) {
    char location[VAE_PATH_MAX + 32], shown_section[64], shown_name[64];
    format_location(session, location, sizeof location);
    config_printable(section, shown_section, sizeof shown_section);
    config_printable(name, shown_name, sizeof shown_name);
    if (section[0] == '\0')
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: key '%s' comes before any [section]", location, shown_name);
    if (config_find_section(section, strlen(section)) < 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                         "%s: [%s] %s: unknown section; expected [data], [model], [train], [checkpoint] or [output]",
                         location, shown_section, shown_name);
    int index = config_find_key(section, name);
    if (index < 0) {
        char known[512];
        size_t used = 0;
        known[0] = '\0';
        for (size_t i = 0; i < CONFIG_KEY_COUNT && used < sizeof known; ++i)
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

/* A layer list and the widths it replaces, as set by one source. */
typedef struct list_pair {
    int list_key, widths_key;
    vae_layer_spec *layers;
    int *layer_count;
    int *widths, *width_count;
} list_pair;

static list_pair encoder_pair(vae_config *config) {
    return (list_pair){config_find_key("model", "encoder"), config_find_key("model", "hidden"), config->encoder_layers,
                       &config->encoder_layer_count, config->hidden, &config->hidden_count};
}

static list_pair decoder_pair(vae_config *config) {
    return (list_pair){config_find_key("model", "decoder"), config_find_key("model", "decoder_hidden"),
                       config->decoder_layers, &config->decoder_layer_count, config->decoder_hidden,
                       &config->decoder_hidden_count};
}

/* One source may not set both a list and its widths (each non-empty). */
static vae_status check_exclusive(const parse_session *session, list_pair pair) {
    int list_line = session->set_line[pair.list_key], widths_line = session->set_line[pair.widths_key];
    if (!list_line || !widths_line || *pair.layer_count == 0 || *pair.width_count == 0) return VAE_OK;
    const config_key *list = &config_keys[pair.list_key], *widths = &config_keys[pair.widths_key];
    char location[VAE_PATH_MAX + 32];
    snprintf(location, sizeof location, "%s:%d", session->name, list_line);
    return vae_error(VAE_ERROR_INVALID_ARGUMENT,
                     "%s: [model] %s: expected either %s (a layer list) or %s (widths), not both (%s is set on line "
                     "%d); a dense-only list is written 'dense 512, dense 256'",
                     location, list->name, list->name, widths->name, widths->name, widths_line);
}

/* The later source wins between a list and its widths: a source that sets
 * one (non-empty for a list) and not the other clears the other. */
static void clear_replaced(const parse_session *session, list_pair pair) {
    int list_set = session->set_line[pair.list_key] != 0, widths_set = session->set_line[pair.widths_key] != 0;
    if (list_set && !widths_set && *pair.layer_count > 0) {
        memset(pair.widths, 0, VAE_MAX_HIDDEN_LAYERS * sizeof *pair.widths);
        *pair.width_count = 0;
    }
    if (widths_set && !list_set) {
        memset(pair.layers, 0, VAE_MAX_LAYER_SPECS * sizeof *pair.layers);
        *pair.layer_count = 0;
    }
}

static int decoder_mirrors_encoder(const vae_config *config) {
    if (config->decoder_hidden_count != config->hidden_count) return 0;
    for (int i = 0; i < config->hidden_count && i < VAE_MAX_HIDDEN_LAYERS; ++i)
        if (config->decoder_hidden[i] != config->hidden[config->hidden_count - 1 - i]) return 0;
    return 1;
}

/* The decoder follows the encoder: when this source set [model] hidden but
 * not decoder_hidden (nor a decoder list), no list is in use, and the decoder
 * was the encoder's mirror image, it becomes the mirror of the new encoder. A list replaces
 * the widths of its side (clear_replaced). Then the result is committed. */
static void finish_session(parse_session *session, vae_config *config) {
    int hidden = config_find_key("model", "hidden"), decoder_hidden = config_find_key("model", "decoder_hidden");
    int decoder = config_find_key("model", "decoder");
    vae_config *work = &session->work;
    clear_replaced(session, encoder_pair(work));
    clear_replaced(session, decoder_pair(work));
    if (session->set_line[hidden] && !session->set_line[decoder_hidden] && !session->set_line[decoder] &&
        work->encoder_layer_count == 0 && work->decoder_layer_count == 0 &&
        decoder_mirrors_encoder(session->before)) {
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
                  session->name, session->line, config_printable(line, shown, sizeof shown));
        fail_line(session, VAE_ERROR_BAD_INPUT);
    } else if (config_find_section(line + 1, (size_t)(close - line - 1)) < 0) {
        vae_error(VAE_ERROR_INVALID_ARGUMENT,
                  "%s:%d: unknown section '%s'; expected [data], [model], [train], [checkpoint] or [output]",
                  session->name, session->line, config_printable(line, shown, sizeof shown));
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
                         result, config_printable(copy, shown, sizeof shown));
    }
    if (session.failed_line) return session.status;
    if (session.settings == 0)
        return vae_error(VAE_ERROR_BAD_INPUT, "%s: expected 'key = value' lines, got none (an empty or truncated config?)",
                         name);
    VAE_TRY(check_exclusive(&session, encoder_pair(&session.work)));
    VAE_TRY(check_exclusive(&session, decoder_pair(&session.work)));
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
    snprintf(name, sizeof name, "--set %s", config_printable(assignment, shown, sizeof shown));
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

