/* The config schema shared by the INI layer's two files: config_schema.c
 * (the key table, defaults, validation, writing) and config.c (parsing and
 * --set overrides).
 *
 * One table describes every key (section, name, type, field, range). The
 * parser, the validator and the writer all walk it, so they cannot disagree
 * about the schema; configs/README.md documents the same table. */
#ifndef VAE_CONFIG_SCHEMA_H
#define VAE_CONFIG_SCHEMA_H

#include "vae/vae.h"

#include <stddef.h>

#define MAX_LAYER_WIDTH 65536

typedef enum key_type { KEY_INT, KEY_UINT64, KEY_FLOAT, KEY_CHOICE, KEY_PATH, KEY_WIDTHS, KEY_LAYERS } key_type;

typedef struct config_key {
    const char *section;
    const char *name;
    key_type type;
    size_t offset;               /* the field in vae_config */
    size_t count_offset;         /* KEY_WIDTHS, KEY_LAYERS: the field holding the count */
    double minimum, maximum;     /* KEY_INT, KEY_FLOAT; KEY_WIDTHS per width */
    int open_below, open_above;  /* exclusive bounds (lr > 0, beta1 < 1) */
    const char *const *choices;  /* KEY_CHOICE: names indexed by value, NULL-ended */
} config_key;

/* The parser sizes its per-key arrays with this; config_schema.c checks that
 * the table has exactly this many entries. */
#define CONFIG_KEY_COUNT 48
extern const config_key config_keys[];

/* Index of the section name[0..length) or of the key section.name; -1: none. */
int config_find_section(const char *name, size_t length);
int config_find_key(const char *section, const char *name);

/* text made safe to quote in a message, in buffer. */
const char *config_printable(const char *text, char *buffer, size_t size);
/* NULL for a storable data.path, else what is expected of it. */
const char *config_path_problem(const char *path);
/* What key accepts, for a message ("an integer in 1..65536"). */
void config_describe_expected(const config_key *key, char *buffer, size_t size);
int config_float_in_range(const config_key *key, float value);
/* "location: [section] name: expected EXPECTED, got 'VALUE'". */
vae_status config_value_error(const char *location, const config_key *key, const char *expected, const char *value);

/* Layer lists (config_layers.c): a value parsed into the key's fields (the
 * message names location, key, the layer's position and text, and what was
 * expected); the fields checked (location "config"); a list written back in
 * the syntax it is read in. */
vae_status config_parse_layers(const config_key *key, const char *value, vae_config *config, const char *location);
vae_status config_check_layers(const config_key *key, const vae_config *config);
void config_format_layers(const vae_layer_spec *layers, int count, char *buffer, size_t size);
/* 1 when a list holds a conv or convt layer. */
int config_layers_use_convolution(const vae_layer_spec *layers, int count);

#endif
