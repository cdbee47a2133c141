/* Layer lists of [model] encoder and decoder: parsing one value, checking a
 * list (the same rules for a parsed value and for fields set in code), and
 * writing a list back in the syntax it was read in (configs/README.md):
 *
 *     encoder = conv 32 k4 s2 p1, conv 64 k4 s2 p1, dense 256
 *     decoder = dense 256, dense 64x7x7, convt 32 k4 s2 p1, convt out k4 s2 p1
 *
 * Words are case-insensitive; s defaults to 1 and p to 0 and are written only
 * when they differ, so a written list is never longer than its source (but
 * for the ", " between layers). Shapes against the image are checked by the
 * model build, which knows the data. */
#include "config/config_schema.h"
#include "base/error.h"

#include <ini.h>

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* A layer's written value must fit the "name = value" line inih reads back. */
#define LINE_CHARACTERS_MAX (INI_MAX_LINE - 1)
#define MAX_KERNEL_SIZE 32
#define MAX_STRIDE 32
#define MAX_LAYER_TOKENS 5 /* conv C kK sS pP */

/* What is wrong with a list: the 1-based layer (0: the list as a whole),
 * what was expected and, when one token is at fault, that token. */
typedef struct layer_problem {
    int position;
    char expected[200];
    char got[48];
} layer_problem;

static int is_blank(char c) { return c == ' ' || c == '\t'; }

static int word_is(const char *token, size_t length, const char *word) {
    if (strlen(word) != length) return 0;
    for (size_t i = 0; i < length; ++i)
        if (tolower((unsigned char)token[i]) != word[i]) return 0;
    return 1;
}

/* Decimal digits [text, text+length) as an int; a number beyond 9 digits
 * reads as INT_MAX (then refused by the range check, with the layer's text). */
static int parse_count(const char *text, size_t length, int *out) {
    if (length == 0) return 0;
    long long value = 0;
    for (size_t i = 0; i < length; ++i) {
        if (!isdigit((unsigned char)text[i])) return 0;
        if (value < 1000000000) value = value * 10 + (text[i] - '0');
    }
    *out = value > INT_MAX ? INT_MAX : (int)value;
    return 1;
}

static void set_got(layer_problem *problem, const char *token, size_t length) {
    char copy[sizeof problem->got];
    if (length >= sizeof copy) length = sizeof copy - 1;
    memcpy(copy, token, length);
    copy[length] = '\0';
    config_printable(copy, problem->got, sizeof problem->got);
}

static int fail(layer_problem *problem, const char *expected) {
    snprintf(problem->expected, sizeof problem->expected, "%s", expected);
    return 0;
}

static int fail_token(layer_problem *problem, const char *expected, const char *token, size_t length) {
    set_got(problem, token, length);
    return fail(problem, expected);
}

/* "64x7x7" (x or X) into the three sizes. */
static int parse_shape(const char *text, size_t length, int sizes[3]) {
    int part = 0;
    size_t start = 0;
    for (size_t i = 0; i <= length; ++i) {
        if (i < length && text[i] != 'x' && text[i] != 'X') continue;
        if (part == 3 || !parse_count(text + start, i - start, &sizes[part])) return 0;
        ++part;
        start = i + 1;
    }
    return part == 3;
}

/* One layer's words (syntax only; ranges and order are checked on the list). */
static int parse_layer(const char *text, size_t length, vae_layer_spec *spec, layer_problem *problem) {
    const char *tokens[MAX_LAYER_TOKENS + 1];
    size_t lengths[MAX_LAYER_TOKENS + 1];
    int count = 0;
    for (size_t i = 0; i < length;) {
        while (i < length && is_blank(text[i])) ++i;
        if (i == length) break;
        size_t start = i;
        while (i < length && !is_blank(text[i])) ++i;
        if (count == MAX_LAYER_TOKENS + 1) break;
        tokens[count] = text + start;
        lengths[count++] = i - start;
    }
    memset(spec, 0, sizeof *spec);
    if (count == 0)
        return fail(problem, "a layer: conv C kK [sS] [pP], convt C kK [sS] [pP], dense N or dense CxHxW "
                             "(an empty layer: two commas in a row or a comma at the end?)");
    if (word_is(tokens[0], lengths[0], "dense")) {
        spec->kind = VAE_LAYER_DENSE;
        if (count < 2) return fail(problem, "a width after 'dense': dense N or dense CxHxW");
        if (count > 2) return fail_token(problem, "nothing after the width of a dense layer", tokens[2], lengths[2]);
        int sizes[3];
        if (parse_count(tokens[1], lengths[1], &spec->outputs)) return 1;
        if (parse_shape(tokens[1], lengths[1], sizes)) {
            spec->unflatten_channels = sizes[0];
            spec->unflatten_height = sizes[1];
            spec->unflatten_width = sizes[2];
            /* Sizes beyond the limit would overflow the product; the range
             * check refuses them (the product is then only a placeholder). */
            int fits = sizes[0] <= MAX_LAYER_WIDTH && sizes[1] <= MAX_LAYER_WIDTH && sizes[2] <= MAX_LAYER_WIDTH;
            long long product = fits ? (long long)sizes[0] * sizes[1] * sizes[2] : INT_MAX; /* < 2^49 */
            spec->outputs = product > INT_MAX ? INT_MAX : (int)product;
            return 1;
        }
        if (word_is(tokens[1], lengths[1], "out"))
            return fail_token(problem, "a width N or a shape CxHxW ('out' is the channel count of a decoder's "
                                       "last conv or convt layer)", tokens[1], lengths[1]);
        return fail_token(problem, "a width N or a shape CxHxW (e.g. dense 256, dense 64x7x7)", tokens[1],
                          lengths[1]);
    }
    int transpose = word_is(tokens[0], lengths[0], "convt");
    if (!transpose && !word_is(tokens[0], lengths[0], "conv"))
        return fail_token(problem, "a layer kind: conv, convt or dense", tokens[0], lengths[0]);
    spec->kind = transpose ? VAE_LAYER_CONV_TRANSPOSE : VAE_LAYER_CONV;
    if (count < 2) return fail(problem, "a channel count after the layer kind: conv C kK [sS] [pP]");
    if (word_is(tokens[1], lengths[1], "out")) spec->outputs = 0;
    else if (!parse_count(tokens[1], lengths[1], &spec->outputs) || spec->outputs == 0)
        return fail_token(problem, "a channel count C >= 1 or 'out' after the layer kind: conv C kK [sS] [pP]",
                          tokens[1], lengths[1]);
    int have_kernel = 0, have_stride = 0, have_padding = 0;
    spec->stride = 1;
    for (int t = 2; t < count; ++t) {
        char option = (char)tolower((unsigned char)tokens[t][0]);
        int *field = option == 'k' ? &spec->kernel_size : option == 's' ? &spec->stride : option == 'p' ? &spec->padding
                                                                                                        : NULL;
        int *seen = option == 'k' ? &have_kernel : option == 's' ? &have_stride : &have_padding;
        if (field == NULL || !parse_count(tokens[t] + 1, lengths[t] - 1, field))
            return fail_token(problem, t == MAX_LAYER_TOKENS ? "at most a kernel size, a stride and a padding: "
                                                               "conv C kK [sS] [pP]"
                                                             : "a kernel size kK, a stride sS or a padding pP "
                                                               "(e.g. k4 s2 p1)",
                              tokens[t], lengths[t]);
        if (*seen)
            return fail_token(problem,
                              option == 'k'   ? "one kernel size (k is given twice)"
                              : option == 's' ? "one stride (s is given twice)"
                                              : "one padding (p is given twice)",
                              tokens[t], lengths[t]);
        *seen = 1;
    }
    if (!have_kernel) return fail(problem, "a kernel size kK (e.g. conv 32 k4 s2 p1)");
    return 1;
}

/* The fields of one layer within their ranges and consistent with its kind. */
static int check_layer(const vae_layer_spec *layer, layer_problem *problem) {
    if (layer->kind == VAE_LAYER_DENSE) {
        if (layer->kernel_size != 0 || layer->stride != 0 || layer->padding != 0)
            return fail(problem, "a dense layer without kernel size, stride or padding");
        int shaped = layer->unflatten_channels != 0 || layer->unflatten_height != 0 || layer->unflatten_width != 0;
        if (!shaped) {
            if (layer->outputs < 1 || layer->outputs > MAX_LAYER_WIDTH) {
                snprintf(problem->expected, sizeof problem->expected, "a width in 1..%d", MAX_LAYER_WIDTH);
                return 0;
            }
            return 1;
        }
        if (layer->unflatten_channels < 1 || layer->unflatten_height < 1 || layer->unflatten_width < 1)
            return fail(problem, "a shape CxHxW of positive sizes");
        long long product = (long long)layer->unflatten_channels * layer->unflatten_height; /* < 2^62 */
        if (product <= MAX_LAYER_WIDTH) product *= layer->unflatten_width; /* each factor below 2^31: no overflow */
        if (product > MAX_LAYER_WIDTH) {
            snprintf(problem->expected, sizeof problem->expected, "a shape CxHxW of at most %d values (C*H*W)",
                     MAX_LAYER_WIDTH);
            return 0;
        }
        if (layer->outputs != (int)product) return fail(problem, "a width equal to C*H*W");
        return 1;
    }
    if (layer->kind != VAE_LAYER_CONV && layer->kind != VAE_LAYER_CONV_TRANSPOSE)
        return fail(problem, "a layer kind: conv, convt or dense");
    if (layer->unflatten_channels != 0 || layer->unflatten_height != 0 || layer->unflatten_width != 0)
        return fail(problem, "a conv layer without a CxHxW shape");
    if (layer->outputs < 0 || layer->outputs > MAX_LAYER_WIDTH) {
        snprintf(problem->expected, sizeof problem->expected, "a channel count in 1..%d", MAX_LAYER_WIDTH);
        return 0;
    }
    if (layer->kernel_size < 1 || layer->kernel_size > MAX_KERNEL_SIZE) {
        snprintf(problem->expected, sizeof problem->expected, "a kernel size kK with K in 1..%d", MAX_KERNEL_SIZE);
        return 0;
    }
    if (layer->stride < 1 || layer->stride > MAX_STRIDE) {
        snprintf(problem->expected, sizeof problem->expected, "a stride sS with S in 1..%d", MAX_STRIDE);
        return 0;
    }
    if (layer->padding < 0 || layer->padding >= layer->kernel_size) {
        snprintf(problem->expected, sizeof problem->expected,
                 "a padding pP with P in 0..%d (less than the kernel size %d)", layer->kernel_size - 1,
                 layer->kernel_size);
        return 0;
    }
    return 1;
}

static int is_convolution(const vae_layer_spec *layer) {
    return layer->kind == VAE_LAYER_CONV || layer->kind == VAE_LAYER_CONV_TRANSPOSE;
}

static int is_shaped_dense(const vae_layer_spec *layer) {
    return layer->kind == VAE_LAYER_DENSE && layer->unflatten_channels != 0;
}

/* The written value: "conv 32 k4 s2 p1, dense 256"; s1 and p0 are left out. */
static void format_layer(const vae_layer_spec *layer, char *buffer, size_t size) {
    if (layer->kind == VAE_LAYER_DENSE) {
        if (is_shaped_dense(layer))
            snprintf(buffer, size, "dense %dx%dx%d", layer->unflatten_channels, layer->unflatten_height,
                     layer->unflatten_width);
        else snprintf(buffer, size, "dense %d", layer->outputs);
        return;
    }
    size_t used = (size_t)snprintf(buffer, size, "%s ", layer->kind == VAE_LAYER_CONV ? "conv" : "convt");
    if (used < size) used += (size_t)(layer->outputs == 0 ? snprintf(buffer + used, size - used, "out")
                                                           : snprintf(buffer + used, size - used, "%d", layer->outputs));
    if (used < size) used += (size_t)snprintf(buffer + used, size - used, " k%d", layer->kernel_size);
    if (used < size && layer->stride != 1) used += (size_t)snprintf(buffer + used, size - used, " s%d", layer->stride);
    if (used < size && layer->padding != 0) snprintf(buffer + used, size - used, " p%d", layer->padding);
}

void config_format_layers(const vae_layer_spec *layers, int count, char *buffer, size_t size) {
    size_t used = 0;
    buffer[0] = '\0';
    if (count < 0 || count > VAE_MAX_LAYER_SPECS) {
        snprintf(buffer, size, "(%d layers)", count);
        return;
    }
    for (int i = 0; i < count && used + 1 < size; ++i) {
        if (i) used += (size_t)snprintf(buffer + used, size - used, ", ");
        if (used + 1 < size) format_layer(&layers[i], buffer + used, size - used);
        used += strlen(buffer + used);
    }
}

/* Every rule of a list: each layer's fields, then the order of kinds. */
static int check_list(const config_key *key, const vae_layer_spec *layers, int count, layer_problem *problem) {
    int decoder = strcmp(key->name, "decoder") == 0;
    problem->position = 0;
    problem->got[0] = '\0';
    if (count < 0 || count > VAE_MAX_LAYER_SPECS) {
        snprintf(problem->expected, sizeof problem->expected, "at most %d layers", VAE_MAX_LAYER_SPECS);
        return 0;
    }
    for (int i = 0; i < count; ++i) {
        const vae_layer_spec *layer = &layers[i];
        problem->position = i + 1;
        if (!check_layer(layer, problem)) return 0;
        if (is_convolution(layer) && layer->outputs == 0 && (!decoder || i != count - 1))
            return fail(problem, decoder ? "a channel count ('out' is only for the decoder's last layer)"
                                         : "a channel count ('out' is only for the decoder's last layer, not the "
                                           "encoder's)");
        if (decoder && i == count - 1 && is_convolution(layer) && layer->outputs != 0)
            return fail(problem, "'out' as the channel count of the decoder's last layer (a conv or convt layer "
                                 "that ends the decoder emits the image: its channels, x2 for likelihood gaussian)");
        if (is_convolution(layer) && i == 0 && decoder)
            return fail(problem, "a dense CxHxW layer before the first conv or convt layer (the decoder's input is "
                                 "the latent vector; e.g. dense 64x7x7)");
        if (is_convolution(layer) && i > 0 && layers[i - 1].kind == VAE_LAYER_DENSE && !is_shaped_dense(&layers[i - 1]))
            return fail(problem, "an image as input: write the dense layer before it as dense CxHxW");
        if (is_shaped_dense(layer) && (i == count - 1 || !is_convolution(&layers[i + 1])))
            return fail(problem, "a conv or convt layer after a dense CxHxW layer (the shape is for the next "
                                 "conv layer; a plain dense layer is dense N)");
    }
    char written[VAE_MAX_LAYER_SPECS * 64];
    config_format_layers(layers, count, written, sizeof written);
    int limit = LINE_CHARACTERS_MAX - (int)strlen(key->name) - 3; /* "name = " */
    if ((int)strlen(written) > limit) {
        problem->position = 0;
        snprintf(problem->expected, sizeof problem->expected,
                 "a list of at most %d characters as written back ('%s = ' and the list fill one INI line of %d)",
                 limit, key->name, LINE_CHARACTERS_MAX);
        return 0;
    }
    return 1;
}

static vae_status layer_error(const char *location, const config_key *key, const layer_problem *problem,
                              const char *layer_text, const char *list_text) {
    char shown[160];
    if (problem->position == 0)
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: expected %s, got '%s'", location, key->section,
                         key->name, problem->expected, config_printable(list_text, shown, sizeof shown));
    if (problem->got[0] != '\0')
        return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: layer %d '%s': expected %s, got '%s'", location,
                         key->section, key->name, problem->position, config_printable(layer_text, shown, sizeof shown),
                         problem->expected, problem->got);
    return vae_error(VAE_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: layer %d '%s': expected %s", location, key->section,
                     key->name, problem->position, config_printable(layer_text, shown, sizeof shown),
                     problem->expected);
}

vae_status config_parse_layers(const config_key *key, const char *value, vae_config *config, const char *location) {
    vae_layer_spec parsed[VAE_MAX_LAYER_SPECS];
    char texts[VAE_MAX_LAYER_SPECS][96]; /* each layer's source text, for messages */
    memset(parsed, 0, sizeof parsed);
    int count = 0;
    layer_problem problem;
    memset(&problem, 0, sizeof problem);
    const char *cursor = value;
    while (is_blank(*cursor)) ++cursor;
    if (*cursor != '\0') {
        for (;;) {
            const char *end = strchr(cursor, ',');
            if (end == NULL) end = cursor + strlen(cursor);
            const char *start = cursor, *stop = end;
            while (start < stop && is_blank(*start)) ++start;
            while (stop > start && is_blank(stop[-1])) --stop;
            char text[96];
            size_t length = (size_t)(stop - start) < sizeof text - 1 ? (size_t)(stop - start) : sizeof text - 1;
            memcpy(text, start, length);
            text[length] = '\0';
            problem.position = count + 1;
            if (count == VAE_MAX_LAYER_SPECS) {
                snprintf(problem.expected, sizeof problem.expected, "at most %d layers", VAE_MAX_LAYER_SPECS);
                return layer_error(location, key, &problem, text, value);
            }
            if (!parse_layer(start, (size_t)(stop - start), &parsed[count], &problem))
                return layer_error(location, key, &problem, text, value);
            memcpy(texts[count++], text, sizeof text);
            if (*end == '\0') break;
            cursor = end + 1;
        }
    }
    if (!check_list(key, parsed, count, &problem))
        return layer_error(location, key, &problem, problem.position ? texts[problem.position - 1] : "", value);
    memcpy((char *)config + key->offset, parsed, sizeof parsed);
    *(int *)((char *)config + key->count_offset) = count;
    return VAE_OK;
}

vae_status config_check_layers(const config_key *key, const vae_config *config) {
    const vae_layer_spec *layers = (const vae_layer_spec *)((const char *)config + key->offset);
    int count = *(const int *)((const char *)config + key->count_offset);
    layer_problem problem;
    memset(&problem, 0, sizeof problem);
    if (check_list(key, layers, count, &problem)) return VAE_OK;
    char layer_text[96] = "", list_text[VAE_MAX_LAYER_SPECS * 64];
    if (problem.position > 0) format_layer(&layers[problem.position - 1], layer_text, sizeof layer_text);
    config_format_layers(layers, count, list_text, sizeof list_text);
    return layer_error("config", key, &problem, layer_text, list_text);
}

int config_layers_use_convolution(const vae_layer_spec *layers, int count) {
    for (int i = 0; i < count && i < VAE_MAX_LAYER_SPECS; ++i)
        if (is_convolution(&layers[i])) return 1;
    return 0;
}
